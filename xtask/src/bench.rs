//! `cargo xtask bench <name>`: optimized builds against the dev stack, figures
//! printed next to a baseline measured in the same run.

use crate::config::Config;
use crate::proc::{exec, find_program, step};
use crate::stack::{self, Profile};
use anyhow::{bail, Result};
use std::process::Command;

pub fn run(config: &Config, args: &[String]) -> Result<()> {
    let name = args.first().map(String::as_str).unwrap_or("");
    if name != "relay" {
        bail!("unknown benchmark `{name}` (available: relay)");
    }
    crate::setup::run(config)?;
    stack::install_extension(config, Profile::Release)?;
    stack::start(config)?;
    {
        let _s = step("cargo build --release (worker, benchmarks)");
        exec(
            Command::new("cargo")
                .args([
                    "build",
                    "--release",
                    "-p",
                    "spine-worker",
                    "-p",
                    "spine-bench",
                ])
                .current_dir(&config.root),
        )?;
    }
    let release = config.root.join("target/release");
    let mut cmd = Command::new(release.join("spine-bench"));
    cmd.arg(name)
        .env("SPINE_WORKER_BIN", release.join("spine-worker"));
    for (k, v) in stack::env_vars(config)? {
        cmd.env(k, v);
    }
    println!();
    exec(&mut cmd)?;
    peer_jetstream(config)
}

/// The shared peer benchmark (Node's nats client), for reference, when Node is here.
fn peer_jetstream(config: &Config) -> Result<()> {
    let peers = config.root.join("../shared/bench/peers");
    let (Some(node), Some(npm)) = (find_program("node"), find_program("npm")) else {
        println!("SKIP peer jetstream.mjs: node/npm not installed");
        return Ok(());
    };
    if !peers.join("jetstream.mjs").exists() {
        println!("SKIP peer jetstream.mjs: {} not found", peers.display());
        return Ok(());
    }
    if !peers.join("node_modules/nats").exists() {
        exec(
            Command::new(npm)
                .args(["install", "--no-audit", "--no-fund", "--silent"])
                .current_dir(&peers),
        )?;
    }
    println!("\npeer (shared/bench/peers/jetstream.mjs, Node nats client, same server):");
    exec(
        Command::new(node)
            .arg("jetstream.mjs")
            .arg(config.nats_url())
            .arg("20000")
            .current_dir(&peers),
    )
}
