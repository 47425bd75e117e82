//! The dev stack's NATS with JetStream, its store under the dev directory: one
//! server, or with `up --nats-cluster N` a cluster of N nodes on loopback
//! (routes between them, JetStream on each, stores of their own). The size is
//! remembered in the dev directory, so later `up`, `env` and `test` runs use
//! the same NATS until `up --nats-cluster 1` or `down --clean`.

use crate::config::Config;
use crate::daemon;
use crate::proc::{find_program, step};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const PROGRAM: &str = "nats-server";

/// A node's client port is the stack's NATS port plus this times its index;
/// its route port is its client port plus [`ROUTE_OFFSET`]. Far from the
/// stack's other ports (543xx).
const NODE_STRIDE: u16 = 100;
const ROUTE_OFFSET: u16 = 50;

fn dir(config: &Config) -> PathBuf {
    config.dev_dir.join("nats")
}

fn pid_file(config: &Config) -> PathBuf {
    dir(config).join("nats.pid")
}

fn node_dir(config: &Config, i: u16) -> PathBuf {
    dir(config).join("cluster").join(format!("n{i}"))
}

fn size_file(config: &Config) -> PathBuf {
    dir(config).join("cluster-size")
}

/// How many nodes the dev stack's NATS has (1: a single server).
pub fn cluster_size(config: &Config) -> u16 {
    std::fs::read_to_string(size_file(config))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|n| (1..=5).contains(n))
        .unwrap_or(1)
}

/// Each node's client port, node 0 first (the stack's NATS port).
pub fn client_ports(config: &Config) -> Vec<u16> {
    (0..cluster_size(config))
        .map(|i| config.nats_port + NODE_STRIDE * i)
        .collect()
}

/// Node 0 (the single server, or the cluster's first node) is running.
pub fn running_pid(config: &Config) -> Option<u32> {
    match cluster_size(config) {
        1 => daemon::running_pid(&pid_file(config), PROGRAM),
        _ => daemon::running_pid(&node_dir(config, 0).join("nats.pid"), PROGRAM),
    }
}

/// Starts NATS with `size` nodes (None: as last time); a change of size stops
/// the running one first (the single server and the cluster keep separate
/// stores).
pub fn up(config: &Config, size: Option<u16>) -> Result<()> {
    if let Some(size) = size.filter(|s| *s != cluster_size(config)) {
        down(config)?;
        std::fs::create_dir_all(dir(config))?;
        std::fs::write(size_file(config), size.to_string())?;
    }
    match cluster_size(config) {
        1 => up_single(config),
        n => up_cluster(config, n),
    }
}

fn up_single(config: &Config) -> Result<()> {
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

fn up_cluster(config: &Config, size: u16) -> Result<()> {
    let binary = find_program(PROGRAM).context("nats-server not found: run `cargo xtask setup`")?;
    let ports = client_ports(config);
    let routes: Vec<String> = ports
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{}", p + ROUTE_OFFSET))
        .collect();
    for (i, port) in (0..size).zip(&ports) {
        let node = node_dir(config, i);
        let pid = node.join("nats.pid");
        if daemon::running_pid(&pid, PROGRAM).is_some() {
            println!("==> nats: node n{i} running on nats://127.0.0.1:{port}");
            continue;
        }
        for p in [*port, port + ROUTE_OFFSET] {
            if daemon::port_in_use(p) {
                bail!("port {p} (NATS cluster node n{i}) is taken by another process; set SPINE_NATS_PORT");
            }
        }
        let _s = step(format!(
            "start nats-server node n{i} on nats://127.0.0.1:{port}"
        ));
        std::fs::create_dir_all(node.join("store"))?;
        // The monitoring port on node 0 only, where the single server has it.
        let monitor = match i {
            0 => format!("http: 127.0.0.1:{}\n", config.nats_monitor_port),
            _ => String::new(),
        };
        let conf = node.join("node.conf");
        std::fs::write(
            &conf,
            format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{port}\n{monitor}\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{\n  name: spine-dev\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                node.join("store").display(),
                port + ROUTE_OFFSET,
                routes.join(", ")
            ),
        )?;
        let mut cmd = Command::new(&binary);
        cmd.arg("-c").arg(&conf);
        daemon::spawn(cmd, &node.join("nats.log"), &pid)?;
        daemon::wait_for_port(*port, "nats-server", Duration::from_secs(15))?;
    }
    Ok(())
}

/// Stops the single server and every cluster node; true if any was running.
pub fn down(config: &Config) -> Result<bool> {
    let mut any = daemon::stop(&pid_file(config), PROGRAM)?;
    for i in 0..5 {
        any |= daemon::stop(&node_dir(config, i).join("nats.pid"), PROGRAM)?;
    }
    Ok(any)
}
