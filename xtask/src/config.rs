//! Where the dev stack lives and which ports it uses, read once from the environment.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Default ports sit in one block far from the usual ones (5432, 4222, 7700, and
/// the Supabase CLI's 5432x), so the stack never clashes with a system service.
const DEFAULT_PG_PORT: u16 = 54390;
/// The JWT secret of the dev stack (Supabase CLI's local default).
pub const DEV_JWT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";
const DEFAULT_NATS_PORT: u16 = 54391;
const DEFAULT_NATS_MONITOR_PORT: u16 = 54392;
const DEFAULT_MEILI_PORT: u16 = 54393;
const DEFAULT_PG_CONFIG: &str = "/usr/lib/postgresql/15/bin/pg_config";

/// The database the stack creates; `cron.database_name` points at it.
pub const DATABASE: &str = "spine";

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
    /// `pg_config` of the PostgreSQL 15 the extension is built for.
    pub pg_config: PathBuf,
    /// An external Meilisearch the user pointed us at; the stack then starts none.
    pub external_meili_url: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self> {
        let root = workspace_root()?;
        let dev_dir = std::env::var_os("SPINE_DEV_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/spine-dev"));
        Ok(Self {
            dev_dir: absolute(&root, dev_dir),
            pg_port: port("SPINE_PG_PORT", DEFAULT_PG_PORT)?,
            nats_port: port("SPINE_NATS_PORT", DEFAULT_NATS_PORT)?,
            nats_monitor_port: port("SPINE_NATS_MONITOR_PORT", DEFAULT_NATS_MONITOR_PORT)?,
            meili_port: port("SPINE_MEILI_PORT", DEFAULT_MEILI_PORT)?,
            pg_config: std::env::var_os("SPINE_PG_CONFIG")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PG_CONFIG)),
            external_meili_url: std::env::var("MEILI_URL").ok().filter(|s| !s.is_empty()),
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

    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats_port)
    }
}

fn port(var: &str, default: u16) -> Result<u16> {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{var}={v:?} is not a port number")),
        Err(_) => Ok(default),
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
