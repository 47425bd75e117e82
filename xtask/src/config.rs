//! Where the dev stack lives and which ports it uses: flags and environment
//! variables (`cargo xtask --help` lists them with their defaults), read once.

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// The JWT secret of the dev stack (Supabase CLI's local default).
pub const DEV_JWT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

/// The database the stack creates; `cron.database_name` points at it.
pub const DATABASE: &str = "spine";

/// The settings as clap reads them (flag, else environment variable, else default).
/// Default ports sit in one block far from the usual ones (5432, 4222, 7700, and
/// the Supabase CLI's 5432x), so the stack never clashes with a system service.
#[derive(Debug, Args)]
pub struct Settings {
    /// Where the dev stack keeps data, logs and pid files (relative: to the
    /// workspace root).
    #[arg(
        long,
        env = "SPINE_DEV_DIR",
        default_value = "target/spine-dev",
        value_name = "DIR"
    )]
    pub dev_dir: PathBuf,

    /// The dev Postgres's port.
    #[arg(
        long,
        env = "SPINE_PG_PORT",
        default_value_t = 54390,
        value_name = "PORT"
    )]
    pub pg_port: u16,

    /// The dev NATS's client port.
    #[arg(
        long,
        env = "SPINE_NATS_PORT",
        default_value_t = 54391,
        value_name = "PORT"
    )]
    pub nats_port: u16,

    /// The dev NATS's monitoring port.
    #[arg(
        long,
        env = "SPINE_NATS_MONITOR_PORT",
        default_value_t = 54392,
        value_name = "PORT"
    )]
    pub nats_monitor_port: u16,

    /// The dev gateway's port (`SPINE_URL`).
    #[arg(
        long,
        env = "SPINE_GATEWAY_PORT",
        default_value_t = 54396,
        value_name = "PORT"
    )]
    pub gateway_port: u16,

    /// The dev embedding service's port (`spine-embedder`).
    #[arg(
        long,
        env = "SPINE_EMBEDDER_PORT",
        default_value_t = 54397,
        value_name = "PORT"
    )]
    pub embedder_port: u16,

    /// The dev Meilisearch's port (when the stack starts one).
    #[arg(
        long,
        env = "SPINE_MEILI_PORT",
        default_value_t = 54393,
        value_name = "PORT"
    )]
    pub meili_port: u16,

    /// pg_config of the PostgreSQL 15 the extension is built for.
    #[arg(
        long,
        env = "SPINE_PG_CONFIG",
        default_value = "/usr/lib/postgresql/15/bin/pg_config",
        value_name = "PATH"
    )]
    pub pg_config: PathBuf,

    /// Where the postgres user keeps the stack's cluster (default: <dev dir>/pg when
    /// that user can reach it, else a directory under /var/lib/postgresql/spine-dev).
    #[arg(long, env = "SPINE_PG_ROOT", value_name = "DIR")]
    pub pg_root: Option<PathBuf>,

    /// An external Meilisearch: the stack then starts none.
    #[arg(long, env = "MEILI_URL", value_name = "URL")]
    pub meili_url: Option<String>,

    /// The Meilisearch master key (default: made once per dev directory, in
    /// <dev dir>/meili/master.key).
    #[arg(
        long,
        env = "MEILI_MASTER_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub meili_master_key: Option<String>,

    /// pgrx's home, where `setup` points pgrx at the system's PostgreSQL 15 (default:
    /// $HOME/.pgrx); cargo pgrx reads it too.
    #[arg(long, env = "PGRX_HOME", value_name = "DIR")]
    pub pgrx_home: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Workspace root (where `Cargo.toml` with `[workspace]` is).
    pub root: PathBuf,
    /// Everything the stack writes: data directories, logs, pid files.
    pub dev_dir: PathBuf,
    pub pg_port: u16,
    pub nats_port: u16,
    pub nats_monitor_port: u16,
    pub meili_port: u16,
    pub gateway_port: u16,
    pub embedder_port: u16,
    /// `pg_config` of the PostgreSQL 15 the extension is built for.
    pub pg_config: PathBuf,
    /// `SPINE_PG_ROOT`: overrides where the cluster lives ([`crate::postgres::pg_root`]).
    pub pg_root: Option<PathBuf>,
    /// An external Meilisearch the user pointed us at; the stack then starts none.
    pub external_meili_url: Option<String>,
    /// `MEILI_MASTER_KEY`: the managed Meilisearch's key instead of the stored one.
    pub meili_master_key: Option<String>,
    /// pgrx's home (`PGRX_HOME`, else `$HOME/.pgrx`).
    pub pgrx_home: PathBuf,
}

impl Config {
    pub fn new(s: Settings) -> Result<Self> {
        let root = workspace_root()?;
        let pgrx_home = match s.pgrx_home {
            // cargo pgrx, run by setup and test, reads it from the environment too.
            Some(home) => {
                std::env::set_var("PGRX_HOME", &home);
                home
            }
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".pgrx"),
        };
        Ok(Self {
            dev_dir: absolute(&root, s.dev_dir),
            pg_port: s.pg_port,
            nats_port: s.nats_port,
            nats_monitor_port: s.nats_monitor_port,
            meili_port: s.meili_port,
            gateway_port: s.gateway_port,
            embedder_port: s.embedder_port,
            pg_config: s.pg_config,
            pg_root: s.pg_root,
            external_meili_url: s.meili_url.filter(|u| !u.is_empty()),
            meili_master_key: s.meili_master_key,
            pgrx_home,
            root,
        })
    }

    /// Directory holding the PostgreSQL binaries (`initdb`, `pg_ctl`, …).
    pub fn pg_bindir(&self) -> PathBuf {
        self.pg_config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
    }

    pub fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.pg_port)
    }

    /// URL of the maintenance database, for creating and dropping `spine`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.pg_port)
    }

    /// The stack's NATS: one URL, or a cluster's, comma-separated.
    pub fn nats_url(&self) -> String {
        crate::nats::client_ports(self)
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn absolute(root: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        root.join(p)
    }
}

/// The xtask crate sits one level below the workspace root.
fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}
