//! `cargo xtask bench <name>`: optimized builds against the dev stack, figures
//! printed next to a baseline measured in the same run.

use crate::config::Config;
use crate::proc::{exec, find_program, step};
use crate::stack::{self, Profile};
use anyhow::{bail, Result};
use std::process::Command;

/// The benchmarks `spine-bench` has.
pub const BENCHES: [&str; 11] = [
    "relay",
    "jobs",
    "audit",
    "rules",
    "ingest",
    "functions",
    "search",
    "gateway",
    "realtime",
    "services",
    "scale",
];

pub fn run(config: &Config, name: &str) -> Result<()> {
    if !BENCHES.contains(&name) {
        bail!(
            "unknown benchmark `{name}` (available: {})",
            BENCHES.join(", ")
        );
    }
    crate::setup::run(config)?;
    stack::install_extension(config, Profile::Release)?;
    stack::start(config)?;
    // The dev stack's gateway follows the outbox too (Realtime): during
    // `bench realtime` it and its Postgres backend took ~30 % of this VM
    // (perf, 2026-12-06). Benchmarks run their own processes; `up` restarts it.
    if crate::gateway::down(config)? {
        println!("==> gateway: stopped for the benchmark (`cargo xtask up` starts it again)");
    }
    {
        // `scale` is Postgres alone: no process of Spine's to build for it.
        let packages: &[&str] = match name {
            "scale" => &["-p", "spine-bench"],
            _ => &[
                "-p",
                "spine-worker",
                "-p",
                "spine-functions",
                "-p",
                "spine-gateway",
                "-p",
                "spine-bench",
            ],
        };
        let _s = step(format!("cargo build --release {}", packages.join(" ")));
        exec(
            Command::new("cargo")
                .args(["build", "--release"])
                .args(packages)
                .current_dir(&config.root),
        )?;
    }
    let release = config.root.join("target/release");
    let mut cmd = Command::new(release.join("spine-bench"));
    cmd.arg(name)
        .env("SPINE_WORKER_BIN", release.join("spine-worker"))
        .env("SPINE_FUNCTIONS_BIN", release.join("spine-functions"))
        .env("SPINE_GATEWAY_BIN", release.join("spine-gateway"))
        .env(
            "SPINE_FUNCTIONS_DIR",
            config.root.join("edge-functions/functions"),
        );
    for (k, v) in stack::env_vars(config)? {
        cmd.env(k, v);
    }
    let peers = peers_ready(config)?;
    if let (Some(dir), "jobs") = (&peers, name) {
        cmd.env("SPINE_PEERS_DIR", dir);
    }
    println!();
    exec(&mut cmd)?;
    match (&peers, name) {
        (Some(dir), "relay") => peer_jetstream(config, dir),
        _ => Ok(()),
    }
}

/// The shared peer scripts with their npm dependencies, when Node is installed.
fn peers_ready(config: &Config) -> Result<Option<std::path::PathBuf>> {
    let peers = config.root.join("../shared/bench/peers");
    let Some(npm) = find_program("npm") else {
        println!("SKIP peer benchmarks: node/npm not installed");
        return Ok(None);
    };
    if !peers.join("package.json").exists() {
        println!("SKIP peer benchmarks: {} not found", peers.display());
        return Ok(None);
    }
    if !peers.join("node_modules/pg-boss").exists() || !peers.join("node_modules/nats").exists() {
        exec(
            Command::new(npm)
                .args(["install", "--no-audit", "--no-fund", "--silent"])
                .current_dir(&peers),
        )?;
    }
    Ok(Some(peers))
}

/// The shared JetStream peer script (Node's nats client), for reference.
fn peer_jetstream(config: &Config, peers: &std::path::Path) -> Result<()> {
    println!(
        "\npeer (shared/bench/peers/jetstream.mjs, Node nats client, the stack's nats-server):"
    );
    exec(
        Command::new("node")
            .arg("jetstream.mjs")
            .arg(format!("nats://127.0.0.1:{}", config.nats_port))
            .arg("20000")
            .current_dir(peers),
    )
}
