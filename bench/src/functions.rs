//! Edge function invocation: cold (first) and warm latency and invocations/s for
//! a trivial handler (`hello`) and a JSON-transforming one (`transform`), three
//! ways: the engine alone (the host's per-call overhead: fresh runtime, prelude,
//! module, handler), through HTTP (`spine-functions serve`, next to a GET
//! /healthz round trip as baseline), and through the job queue (a worker running
//! the `function` handler).

use crate::stats::{per_second, quantile};
use serde_json::{json, Value};
use spine_functions::engine::{Capabilities, Engine, Limits, OpError, QuickJs, Request};
use spine_tests::proc::{free_port, ChildGuard as Guard};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings without a default are required; their value names are their
/// variables, so that a missing one is named in the error.
#[derive(Debug, clap::Args)]
pub struct Settings {
    /// The database, with the extension (the dev stack's).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "DATABASE_URL"
    )]
    pub database_url: String,
    /// The spine-functions binary to run.
    #[arg(long, env = "SPINE_FUNCTIONS_BIN", value_name = "SPINE_FUNCTIONS_BIN")]
    pub functions_bin: String,
    /// The spine-worker binary to run (cargo xtask bench passes the release build).
    #[arg(long, env = "SPINE_WORKER_BIN", value_name = "SPINE_WORKER_BIN")]
    pub worker_bin: String,
    /// The folder of functions to deploy (edge-functions/functions).
    #[arg(long, env = "SPINE_FUNCTIONS_DIR", value_name = "SPINE_FUNCTIONS_DIR")]
    pub functions_dir: String,
    /// The HS256 secret the function host verifies callers' JWTs with.
    #[arg(
        long,
        env = "SPINE_JWT_SECRET",
        hide_env_values = true,
        value_name = "SPINE_JWT_SECRET"
    )]
    pub jwt_secret: String,
    /// Calls per figure.
    #[arg(
        long,
        env = "SPINE_BENCH_CALLS",
        default_value_t = 2_000,
        value_name = "N"
    )]
    pub calls: usize,
}

const ORDER: &str = r#"{"id": "o-1", "lines": [{"sku": " ab-1 ", "qty": 2, "price": 9.99},
  {"sku": "cd-2", "qty": "3", "price": "0.5"}, {"sku": "ef-3", "qty": 1, "price": 120}]}"#;

struct NoCapabilities;

impl Capabilities for NoCapabilities {
    fn call(&mut self, op: &str, _: Value, _: Instant) -> Result<Value, OpError> {
        match op {
            "user" => Ok(json!({"id": null, "role": "anon"})),
            _ => Err(OpError::new("PermissionDenied", "not in the benchmark")),
        }
    }
    fn log(&mut self, _: &str, _: &str) {}
}

fn request(body: &str) -> Request {
    Request {
        method: "POST".into(),
        url: "http://bench/functions/v1/f".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

fn row(label: &str, samples: &mut [Duration], rate: Option<f64>) {
    let p50 = quantile(samples, 0.5);
    let p99 = quantile(samples, 0.99);
    let rate = rate.map_or(String::new(), |r| format!("{r:>10.0}/s"));
    println!(
        "  {label:<44} p50 {:>8.3} ms  p99 {:>8.3} ms  {rate}",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

pub async fn run(s: Settings) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let hello = std::fs::read_to_string(format!("{}/hello/index.js", s.functions_dir))?;
    let transform = std::fs::read_to_string(format!("{}/transform/index.js", s.functions_dir))?;
    println!("functions: {} calls per figure", s.calls);

    println!("\nengine alone (a fresh QuickJS runtime per call, same thread):");
    for (label, source, body) in [("hello", &hello, "{}"), ("transform", &transform, ORDER)] {
        let engine = QuickJs;
        let invoke = || {
            engine.invoke(
                source,
                request(body),
                Limits::default(),
                Box::new(NoCapabilities),
            )
        };
        // As the host runs it: the context is prepared after each answer, so a
        // call's latency is the invocation; the rate includes the preparing.
        let mut samples = Vec::with_capacity(s.calls);
        let started = Instant::now();
        for _ in 0..s.calls {
            let t = Instant::now();
            let r = invoke()?;
            samples.push(t.elapsed());
            anyhow::ensure!(r.status == 200, "{label} answered {}", r.status);
            engine.prepare();
        }
        let rate = per_second(s.calls, started.elapsed());
        row(
            &format!("{label}: invoke, context prepared ahead"),
            &mut samples,
            Some(rate),
        );
        let mut built = Vec::with_capacity(s.calls);
        for _ in 0..s.calls {
            let t = Instant::now();
            invoke()?;
            built.push(t.elapsed());
        }
        row(
            &format!("{label}: invoke, context built in the call"),
            &mut built,
            None,
        );
    }
    // Throughput on every core: one invocation per thread at a time.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hello_arc = Arc::new(hello.clone());
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let src = hello_arc.clone();
            let n = s.calls / threads;
            std::thread::spawn(move || {
                for _ in 0..n {
                    let _ = QuickJs.invoke(
                        &src,
                        request("{}"),
                        Limits::default(),
                        Box::new(NoCapabilities),
                    );
                    QuickJs.prepare();
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    println!(
        "  hello: {threads} threads                                 {:>10.0}/s",
        per_second(s.calls / threads * threads, started.elapsed())
    );

    // Deploy the examples, then serve them.
    let status = Command::new(&s.functions_bin)
        .args(["deploy", &s.functions_dir])
        .env("DATABASE_URL", &s.database_url)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "spine-functions deploy failed");
    let port = free_port();
    let server = Guard(
        Command::new(&s.functions_bin)
            .arg("serve")
            .env("DATABASE_URL", &s.database_url)
            .env("SPINE_JWT_SECRET", &s.jwt_secret)
            .env("SPINE_FUNCTIONS_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "spine-functions did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = spine_functions::jwt::sign(&json!({"role": "anon"}), s.jwt_secret.as_bytes());

    println!("\nHTTP (POST /functions/v1/{{name}}, keep-alive, one client unless noted):");
    let mut samples = Vec::new();
    for _ in 0..s.calls {
        let t = Instant::now();
        client
            .get(format!("{base}/healthz"))
            .send()
            .await?
            .bytes()
            .await?;
        samples.push(t.elapsed());
    }
    row("baseline: GET /healthz (no function)", &mut samples, None);
    for (name, body) in [("hello", "{}"), ("transform", ORDER)] {
        let call = || {
            client
                .post(format!("{base}/functions/v1/{name}"))
                .header("authorization", format!("Bearer {token}"))
                .body(body.to_string())
                .send()
        };
        let t = Instant::now();
        let r = call().await?;
        anyhow::ensure!(r.status() == 200, "{name}: {}", r.status());
        r.bytes().await?;
        let mut cold = vec![t.elapsed()];
        row(
            &format!("{name}: cold (first call, loads the module)"),
            &mut cold,
            None,
        );
        let mut samples = Vec::with_capacity(s.calls);
        let started = Instant::now();
        for _ in 0..s.calls {
            let t = Instant::now();
            call().await?.bytes().await?;
            samples.push(t.elapsed());
        }
        let rate = per_second(s.calls, started.elapsed());
        row(&format!("{name}: warm"), &mut samples, Some(rate));
    }
    let started = Instant::now();
    let clients = 8;
    let per = s.calls / clients;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                let r = client
                    .post(format!("{base}/functions/v1/hello"))
                    .header("authorization", format!("Bearer {token}"))
                    .body("{}")
                    .send()
                    .await?;
                r.bytes().await?;
            }
            Ok::<_, reqwest::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "  hello: {clients} concurrent clients                      {:>10.0}/s",
        per_second(per * clients, started.elapsed())
    );
    drop(server);

    println!("\njob queue (function handler in the worker, 16 jobs at a time):");
    let db = spine_tests::connect_to(&s.database_url).await?;
    let queue = format!("bench_fn_{}", std::process::id());
    db.execute("SELECT spine.create_queue($1, NULL, '1 hour')", &[&queue])
        .await?;
    let worker = Guard(
        Command::new(&s.worker_bin)
            .env("DATABASE_URL", &s.database_url)
            .env("NATS_URL", "nats://127.0.0.1:1")
            .env(
                "SPINE_RELAY_SINK",
                format!("bench_fn_{}", std::process::id()),
            )
            .env("SPINE_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("SPINE_JOB_QUEUES", format!("{queue}=function"))
            .env("SPINE_JOB_POLL_MS", "5")
            .env("RUST_LOG", "error")
            .spawn()?,
    );
    for (name, body) in [
        ("hello", json!({})),
        ("transform", serde_json::from_str::<Value>(ORDER)?),
    ] {
        let payload = json!({"function": name, "payload": body});
        // Cold: the worker's first job of this function.
        let t = Instant::now();
        let id: i64 = db
            .query_one("SELECT spine.enqueue($1, $2)", &[&queue, &payload])
            .await?
            .get(0);
        wait_archived(&db, &[id]).await?;
        let mut cold = vec![t.elapsed()];
        row(
            &format!("{name}: cold (enqueue → completed)"),
            &mut cold,
            None,
        );
        let payloads: Vec<Value> = (0..s.calls).map(|_| payload.clone()).collect();
        let started = Instant::now();
        let ids: Vec<i64> = db
            .query_one("SELECT spine.enqueue_batch($1, $2)", &[&queue, &payloads])
            .await?
            .get(0);
        wait_archived(&db, &ids).await?;
        let elapsed = started.elapsed();
        let rows = db
            .query(
                "SELECT extract(epoch FROM finished_at - created_at)::float8 FROM spine.jobs_archive \
                 WHERE id = ANY($1) AND state = 'completed'",
                &[&ids],
            )
            .await?;
        anyhow::ensure!(
            rows.len() == ids.len(),
            "{} of {} jobs completed",
            rows.len(),
            ids.len()
        );
        let mut lat: Vec<Duration> = rows
            .iter()
            .map(|r| Duration::from_secs_f64(r.get::<_, f64>(0).max(0.0)))
            .collect();
        row(
            &format!("{name}: {} queued at once (enqueue → done)", s.calls),
            &mut lat,
            Some(per_second(ids.len(), elapsed)),
        );
    }
    drop(worker);
    Ok(())
}

async fn wait_archived(db: &tokio_postgres::Client, ids: &[i64]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done: i64 = db
            .query_one(
                "SELECT count(*) FROM spine.jobs_archive WHERE id = ANY($1)",
                &[&ids],
            )
            .await?
            .get(0);
        if done as usize == ids.len() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "jobs did not finish: {done} of {}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
