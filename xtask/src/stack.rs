//! The dev stack as a whole: `up`, `down`, `status`, `env`, `psql`.

use crate::config::Config;
use crate::meili::{self, Search};
use crate::proc::{as_root, exec, is_root, step};
use crate::{migrate, nats, postgres};
use anyhow::{Context, Result};
use std::process::Command;

/// Builds and installs the extension into the system PostgreSQL 15, then starts
/// every component and brings the database up to date. Safe to run repeatedly.
pub fn up(config: &Config, nats_cluster: Option<u16>) -> Result<()> {
    install_extension(config, Profile::Debug)?;
    start_with(config, nats_cluster)
}

/// Starts every component and applies migrations, using whatever extension build
/// is installed.
pub fn start(config: &Config) -> Result<()> {
    start_with(config, None)
}

/// [`start`] with NATS of `nats_cluster` nodes (None: as last time).
pub fn start_with(config: &Config, nats_cluster: Option<u16>) -> Result<()> {
    std::fs::create_dir_all(&config.dev_dir)?;
    postgres::up(config)?;
    migrate::run(config)?;
    nats::up(config, nats_cluster)?;
    meili::up(config)?;
    // The embedder first: the gateway's functions embed with it.
    crate::embedder::up(config)?;
    crate::gateway::up(config)?;
    println!();
    status(config)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Fast to build; what tests and the demo use.
    Debug,
    /// Optimized; what benchmarks use.
    Release,
}

/// `cargo pgrx install` is incremental: warm, it only copies the files again.
pub fn install_extension(config: &Config, profile: Profile) -> Result<()> {
    // The gateway keeps pooled connections whose backends have spine.so loaded;
    // replacing the library under them and then dropping the database (when
    // its SQL changed) crashed such a backend, and with it the cluster. `start`
    // brings the gateway back.
    crate::gateway::down(config)?;
    let _s = step(format!(
        "cargo pgrx install ({profile:?} build of extension spine into PostgreSQL 15)"
    ));
    let mut cmd = Command::new("cargo");
    cmd.args(["pgrx", "install", "--pg-config"])
        .arg(&config.pg_config)
        .current_dir(config.root.join("extension"));
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    if !is_root() {
        cmd.arg("--sudo");
    }
    exec(&mut cmd)
}

pub fn down(config: &Config, clean: bool) -> Result<()> {
    let report = |what: &str, was_running: bool| {
        println!(
            "==> {what}: {}",
            if was_running {
                "stopped"
            } else {
                "not running"
            }
        )
    };
    report("gateway", crate::gateway::down(config)?);
    report("embedder", crate::embedder::down(config)?);
    report("meilisearch", meili::down(config)?);
    report("nats", nats::down(config)?);
    report("postgres", postgres::down(config)?);
    let leftovers = leftover_processes(config);
    if !leftovers.is_empty() {
        anyhow::bail!(
            "processes of the stack are still running after down: {}",
            leftovers.join("; ")
        );
    }
    if clean {
        // The cluster's files belong to postgres; remove as root.
        for dir in [postgres::pg_root(config), config.dev_dir.clone()] {
            if dir.exists() {
                exec(as_root("rm").arg("-rf").arg(&dir))
                    .with_context(|| format!("removing {}", dir.display()))?;
                println!("==> removed {}", dir.display());
            }
        }
    }
    Ok(())
}

/// Processes whose command line names the dev directory or the cluster's directory
/// (postmaster, nats-server, meilisearch all get their data paths as arguments), as
/// "pid cmdline".
pub fn leftover_processes(config: &Config) -> Vec<String> {
    let needles = [
        config.dev_dir.to_string_lossy().into_owned(),
        postgres::pg_root(config).to_string_lossy().into_owned(),
    ];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            needles
                .iter()
                .any(|n| cmdline.contains(n.as_str()))
                .then(|| format!("{pid} {}", cmdline.trim()))
        })
        .collect()
}

pub fn status(config: &Config) -> Result<()> {
    let pg = postgres::is_running(config);
    println!(
        "postgres     {}  {}",
        updown(pg),
        if pg {
            config.database_url()
        } else {
            String::new()
        }
    );
    let nats = nats::running_pid(config).is_some();
    println!(
        "nats         {}  {}",
        updown(nats),
        if nats {
            config.nats_url()
        } else {
            String::new()
        }
    );
    match meili::search(config) {
        Search::External(url) => println!("meilisearch  external  {url} (MEILI_URL)"),
        Search::Managed { url, .. } => {
            let up = meili::running_pid(config).is_some();
            println!(
                "meilisearch  {}  {}",
                updown(up),
                if up { url } else { String::new() }
            );
        }
        Search::Off => println!("meilisearch  off   {}", meili::OFF_MESSAGE),
    }
    let gw = crate::gateway::running_pid(config).is_some();
    println!(
        "gateway      {}  {}",
        updown(gw),
        if gw {
            crate::gateway::url(config)
        } else {
            String::new()
        }
    );
    let embedder = crate::embedder::running_pid(config).is_some();
    println!(
        "embedder     {}  {}",
        updown(embedder),
        if embedder {
            crate::embedder::url(config)
        } else {
            crate::embedder::OFF_MESSAGE.to_string()
        }
    );
    println!("dev dir      {}", config.dev_dir.display());
    Ok(())
}

fn updown(up: bool) -> &'static str {
    if up {
        "up  "
    } else {
        "down"
    }
}

/// The environment a client of the running stack needs, as `(name, value)` pairs.
pub fn env_vars(config: &Config) -> Result<Vec<(&'static str, String)>> {
    let mut vars = vec![
        ("DATABASE_URL", config.database_url()),
        ("NATS_URL", config.nats_url()),
        // For tests that restart the cluster (crash recovery): where it lives.
        (
            "SPINE_PG_DATA",
            postgres::data_dir(config).to_string_lossy().into_owned(),
        ),
        (
            "SPINE_PG_BINDIR",
            config.pg_bindir().to_string_lossy().into_owned(),
        ),
        // The CA of the cluster's TLS certificate (localhost, 127.0.0.1), for
        // `sslmode=verify-full&sslrootcert=…`.
        (
            "SPINE_PG_SSLROOTCERT",
            postgres::ca_file(config).to_string_lossy().into_owned(),
        ),
        // The function host verifies callers' JWTs with this (the Supabase CLI's
        // well-known local secret: the dev stack listens on loopback only).
        (
            "SPINE_JWT_SECRET",
            crate::config::DEV_JWT_SECRET.to_string(),
        ),
    ];
    vars.extend(crate::gateway::env_vars(config)?);
    vars.extend(crate::embedder::env_vars(config));
    vars.extend(crate::upgrade::env_vars(config)?);
    match meili::search(config) {
        Search::External(url) => vars.push(("MEILI_URL", url)),
        Search::Managed { url, .. } if meili::running_pid(config).is_some() => {
            vars.push(("MEILI_URL", url));
            vars.push(("MEILI_MASTER_KEY", meili::master_key(config)?));
        }
        _ => {}
    }
    Ok(vars)
}

pub fn print_env(config: &Config) -> Result<()> {
    let vars = env_vars(config)?;
    let line: Vec<String> = vars
        .iter()
        .map(|(k, v)| format!("{k}={}", shell_quote(v)))
        .collect();
    println!("export {}", line.join(" "));
    if !vars.iter().any(|(k, _)| *k == "MEILI_URL") {
        println!("unset MEILI_URL  # {}", meili::OFF_MESSAGE);
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub fn psql(config: &Config, args: &[String]) -> Result<()> {
    let status = Command::new("psql")
        .arg(config.database_url())
        .args(args)
        .status()
        .context("could not start psql")?;
    std::process::exit(status.code().unwrap_or(1));
}
