//! `cargo xtask demo`: setup + up, then the main flow, printed for a person to read.
//! The SQL part is plain psql (`xtask/demo.sql`), so what it shows is what a psql
//! user types; then the worker relays the outbox to NATS JetStream and the sink's
//! status shows what was delivered.

use crate::config::Config;
use crate::postgres::{psql, query};
use crate::proc::{exec, step};
use crate::{setup, stack};
use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The worker's HTTP port during the demo.
const DEMO_HTTP_ADDR: &str = "127.0.0.1:54394";

pub fn run(config: &Config) -> Result<()> {
    setup::run(config)?;
    stack::up(config)?;
    {
        let _s = step("cargo build -p spine-worker");
        exec(
            Command::new("cargo")
                .args(["build", "--quiet", "-p", "spine-worker"])
                .current_dir(&config.root),
        )?;
    }
    println!("\n================ Spine demo: the main flow ================\n");
    exec(
        psql(&config.database_url())
            .args(["-P", "pager=off"])
            .arg("-f")
            .arg(config.root.join("xtask/demo.sql")),
    )?;

    println!(
        "\n11. The worker relays the outbox to NATS JetStream (stream SPINE, subjects spine.<type>)\n   \
         and runs the jobs (here the `messages` queue with the no-op handler):"
    );
    relay_once(config)?;
    exec(psql(&config.database_url()).args([
        "-P",
        "pager=off",
        "-P",
        "footer=off",
        "-c",
        "SELECT name, delivered, backlog, round(lag_seconds::numeric, 3) AS lag_seconds, \
         advanced_at, last_error FROM spine.sink_status WHERE name = 'nats'",
        "-c",
        "SELECT id, queue, state, attempts, payload->>'text' AS text, finished_at \
         FROM spine.jobs_archive WHERE queue = 'messages' ORDER BY id",
    ]))?;
    println!(
        "\nThe stack keeps running: `cargo xtask psql` to explore, `cargo xtask down` to stop."
    );
    Ok(())
}

/// Runs the worker until the `nats` sink has no backlog and the `messages` queue is
/// empty, then stops it (SIGTERM: it finishes its batch first).
fn relay_once(config: &Config) -> Result<()> {
    let mut worker = Command::new(config.root.join("target/debug/spine-worker"));
    for (k, v) in stack::env_vars(config)? {
        worker.env(k, v);
    }
    let mut child = worker
        .env("SPINE_HTTP_ADDR", DEMO_HTTP_ADDR)
        .env("SPINE_JOB_QUEUES", "http,messages=noop")
        .env("SPINE_JOB_POLL_MS", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting spine-worker")?;
    let url = config.database_url();
    let started = Instant::now();
    let outcome = loop {
        let pending = query(
            &url,
            "SELECT (SELECT backlog FROM spine.sink_status WHERE name = 'nats') \
             + (SELECT count(*) FROM spine.jobs WHERE queue = 'messages' AND run_at <= now())",
        )
        .unwrap_or_default();
        if pending == "0" {
            break Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow::anyhow!("spine-worker exited early: {status}"));
        }
        if started.elapsed() > Duration::from_secs(60) {
            break Err(anyhow::anyhow!(
                "the relay or the runner did not catch up within 60 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait()?;
    outcome?;
    if !status.success() {
        bail!("spine-worker stopped with {status}");
    }
    Ok(())
}
