//! The dev stack's NATS server with JetStream, its store under the dev directory.

use crate::config::Config;
use crate::daemon;
use crate::proc::{find_program, step};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const PROGRAM: &str = "nats-server";

fn dir(config: &Config) -> PathBuf {
    config.dev_dir.join("nats")
}

fn pid_file(config: &Config) -> PathBuf {
    dir(config).join("nats.pid")
}

pub fn running_pid(config: &Config) -> Option<u32> {
    daemon::running_pid(&pid_file(config), PROGRAM)
}

pub fn up(config: &Config) -> Result<()> {
    if running_pid(config).is_some() {
        println!("==> nats: running on {}", config.nats_url());
        return Ok(());
    }
    if daemon::port_in_use(config.nats_port) {
        bail!(
            "port {} is taken by another process; set SPINE_NATS_PORT",
            config.nats_port
        );
    }
    let binary = find_program(PROGRAM).context("nats-server not found: run `cargo xtask setup`")?;
    let _s = step(format!("start nats-server -js on {}", config.nats_url()));
    std::fs::create_dir_all(dir(config).join("store"))?;
    let mut cmd = Command::new(binary);
    cmd.args(["-js", "-a", "127.0.0.1"])
        .args(["-p", &config.nats_port.to_string()])
        .args(["-m", &config.nats_monitor_port.to_string()])
        .arg("-sd")
        .arg(dir(config).join("store"));
    daemon::spawn(cmd, &dir(config).join("nats.log"), &pid_file(config))?;
    daemon::wait_for_port(config.nats_port, "nats-server", Duration::from_secs(15))
}

pub fn down(config: &Config) -> Result<bool> {
    daemon::stop(&pid_file(config), PROGRAM)
}
