//! Meilisearch for the dev stack. No package registry ships it, so the stack starts
//! one only when a `meilisearch` binary is on PATH, uses `MEILI_URL` when set, and
//! otherwise runs with search sync off and says so.

use crate::config::Config;
use crate::daemon;
use crate::proc::{find_program, step};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const PROGRAM: &str = "meilisearch";

/// Where search comes from for this stack.
pub enum Search {
    /// `MEILI_URL` was set: use that server, start nothing.
    External(String),
    /// A `meilisearch` binary is on PATH: the stack runs its own.
    Managed { url: String, binary: PathBuf },
    /// Neither: search sync is off.
    Off,
}

pub fn search(config: &Config) -> Search {
    if let Some(url) = &config.external_meili_url {
        return Search::External(url.clone());
    }
    match find_program(PROGRAM) {
        Some(binary) => Search::Managed {
            url: format!("http://127.0.0.1:{}", config.meili_port),
            binary,
        },
        None => Search::Off,
    }
}

pub const OFF_MESSAGE: &str = "search sync is OFF: no `meilisearch` on PATH and MEILI_URL unset \
     (see docs/operations.md, \"Meilisearch\")";

fn dir(config: &Config) -> PathBuf {
    config.dev_dir.join("meili")
}

fn pid_file(config: &Config) -> PathBuf {
    dir(config).join("meili.pid")
}

/// The master key of the managed server: fixed per dev directory, created on first start.
pub fn master_key(config: &Config) -> Result<String> {
    if let Some(key) = &config.meili_master_key {
        return Ok(key.clone());
    }
    let file = dir(config).join("master.key");
    if let Ok(key) = std::fs::read_to_string(&file) {
        return Ok(key.trim().to_string());
    }
    std::fs::create_dir_all(dir(config))?;
    let mut bytes = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&file, &key)?;
    Ok(key)
}

pub fn running_pid(config: &Config) -> Option<u32> {
    daemon::running_pid(&pid_file(config), PROGRAM)
}

pub fn up(config: &Config) -> Result<()> {
    let Search::Managed { url, binary } = search(config) else {
        if let Search::External(url) = search(config) {
            println!("==> meilisearch: using MEILI_URL={url}");
        } else {
            println!("==> {OFF_MESSAGE}");
        }
        return Ok(());
    };
    if running_pid(config).is_some() {
        println!("==> meilisearch: running on {url}");
        return Ok(());
    }
    if daemon::port_in_use(config.meili_port) {
        bail!("port {} is taken; set SPINE_MEILI_PORT", config.meili_port);
    }
    let _s = step(format!("start meilisearch on {url}"));
    let key = master_key(config)?;
    let mut cmd = Command::new(binary);
    cmd.arg("--db-path")
        .arg(dir(config).join("data.ms"))
        .args(["--http-addr", &format!("127.0.0.1:{}", config.meili_port)])
        .args(["--master-key", &key, "--no-analytics"]);
    daemon::spawn(cmd, &dir(config).join("meili.log"), &pid_file(config))?;
    daemon::wait_for_port(config.meili_port, "meilisearch", Duration::from_secs(30))
}

pub fn down(config: &Config) -> Result<bool> {
    daemon::stop(&pid_file(config), PROGRAM)
}
