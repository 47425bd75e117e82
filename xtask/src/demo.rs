//! `cargo xtask demo`: setup + up, then the main flow, printed for a person to read.
//! The SQL part is plain psql (`xtask/demo.sql`), so what it shows is what a psql
//! user types; then the worker relays the outbox to NATS JetStream, runs jobs and
//! delivers webhooks, and the function host answers over HTTP.

use crate::config::Config;
use crate::postgres::{psql, query};
use crate::proc::{cargo_build, exec, step};
use crate::{setup, stack};
use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The worker's HTTP port during the demo.
const DEMO_HTTP_ADDR: &str = "127.0.0.1:54394";
/// The function host's address during the demo.
const DEMO_FUNCTIONS_ADDR: &str = "127.0.0.1:54395";
/// Alice of `demo.sql`.
const ALICE: &str = "6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11";

pub fn run(config: &Config) -> Result<()> {
    setup::run(config)?;
    stack::up(config, None)?;
    cargo_build(&config.root, &["spine-worker", "spine-functions"])?;
    {
        let _s = step("spine-functions deploy edge-functions/functions");
        let mut deploy = functions_command(config)?;
        exec(
            deploy
                .arg("deploy")
                .arg(config.root.join("edge-functions/functions")),
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
        "\n12. The worker relays the outbox to NATS JetStream (stream SPINE, subjects spine.<type>),\n   \
         runs the jobs (here the `messages` queue with the no-op handler) and delivers the\n   \
         webhook (running the hello function in-process):"
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
        "-c",
        "SELECT webhook, job_id, attempt, status, succeeded, left(response, 70) AS response, \
         duration_ms FROM spine.webhook_deliveries WHERE webhook = 'demo_orders' \
         ORDER BY id DESC LIMIT 4",
    ]))?;
    println!("\n13. The function host serves the same functions at POST /functions/v1/{{name}}:");
    serve_functions(config)?;
    println!(
        "\n14. A supabase-js app talks to the gateway ({}), as it would to Supabase:",
        crate::gateway::url(config)
    );
    gateway_client(config)?;
    println!(
        "\nThe stack keeps running: `cargo xtask psql` to explore, `cargo xtask down` to stop."
    );
    Ok(())
}

/// Runs `gateway/tests/supabase-js/demo.mjs` with the real supabase-js from the
/// suite's lockfile.
fn gateway_client(config: &Config) -> Result<()> {
    let dir = config.root.join("gateway/tests/supabase-js");
    exec(
        Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--prefer-offline",
                "--silent",
            ])
            .current_dir(&dir),
    )?;
    let mut node = Command::new("node");
    node.arg("demo.mjs").current_dir(&dir);
    for (k, v) in stack::env_vars(config)? {
        node.env(k, v);
    }
    exec(&mut node)
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
        .env("SPINE_JOB_QUEUES", "http,messages=noop,function,webhook.*")
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
             + (SELECT count(*) FROM spine.jobs \
                 WHERE (queue = 'messages' OR queue LIKE 'webhook.%') AND run_at <= now())",
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

/// `spine-functions` with the stack's environment.
fn functions_command(config: &Config) -> Result<Command> {
    let mut cmd = Command::new(config.root.join("target/debug/spine-functions"));
    for (k, v) in stack::env_vars(config)? {
        cmd.env(k, v);
    }
    cmd.env("RUST_LOG", "warn");
    Ok(cmd)
}

/// Starts `spine-functions serve`, makes three calls a client would make, prints
/// each answer, and stops it.
fn serve_functions(config: &Config) -> Result<()> {
    let mut serve = functions_command(config)?;
    let mut child = serve
        .arg("serve")
        .env("SPINE_FUNCTIONS_ADDR", DEMO_FUNCTIONS_ADDR)
        .stdout(Stdio::null())
        .spawn()
        .context("starting spine-functions serve")?;
    let outcome = (|| -> Result<()> {
        let started = Instant::now();
        while http(DEMO_FUNCTIONS_ADDR, "GET", "/healthz", None, "").is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                bail!("spine-functions serve did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut token = functions_command(config)?;
        let token = crate::proc::output(token.args(["token", "authenticated", ALICE]))?;
        let token = token.trim();
        let order = r#"{"id": "o-7", "lines": [{"sku": " cup-1 ", "qty": 6, "price": 4.5}, {"sku": "jug", "qty": "1", "price": "12"}]}"#;
        for (what, path, auth, body) in [
            ("hello, as Alice", "/functions/v1/hello", Some(token), "{}"),
            (
                "transform, as Alice",
                "/functions/v1/transform",
                Some(token),
                order,
            ),
            ("hello without a token", "/functions/v1/hello", None, "{}"),
        ] {
            let (status, answer) = http(DEMO_FUNCTIONS_ADDR, "POST", path, auth, body)?;
            println!("   POST {path}  ({what})\n     → {status} {answer}");
        }
        Ok(())
    })();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    outcome
}

/// One HTTP/1.1 request without a client library: status and body of the answer.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status in the answer")?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}
