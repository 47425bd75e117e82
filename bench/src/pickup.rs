//! Pickup latency: commit of a single enqueue → the job's handler starting, with
//! real `spine-worker` processes at their default settings (poll 500 ms).
//!
//! The jobs are `http` jobs that POST to a hook in this process; "started" is when
//! the hook receives the request, so the figure includes the handler's HTTP round
//! trip on loopback (graphile-worker's figure is taken inside its task function).
//! Commit time is when the autocommitted `spine.enqueue` returned.
//!
//! (a) idle: one job at a time, each after the last one started, 50 ms apart;
//! (b) steady: `RATE` jobs/s for `SECONDS` s from four producer connections.
//! Each with 1 and with 4 runners.

use crate::stats::quantile;
use spine_tests::proc::{free_port, ChildGuard};
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

const IDLE_JOBS: usize = 200;
const RATE: usize = 1000;
const SECONDS: usize = 5;

/// When each job (by key) reached the hook.
type Started = Arc<Mutex<HashMap<u64, Instant>>>;

/// One figure: p50 and p99 of the latencies, and how many of the jobs started.
pub struct Pickup {
    pub label: String,
    pub p50: Duration,
    pub p99: Duration,
    pub started: usize,
    pub sent: usize,
}

pub async fn run(database_url: &str, worker_bin: &str) -> anyhow::Result<Vec<Pickup>> {
    let (hook_url, started) = hook().await?;
    let db = spine_tests::connect_to(database_url).await?;
    let mut figures = Vec::new();
    for runners in [1, 4] {
        let queue = format!("bench_pickup_{}_{runners}", std::process::id());
        db.execute("SELECT spine.create_queue($1, NULL, '1 hour')", &[&queue])
            .await?;
        let workers: Vec<ChildGuard> = (0..runners)
            .map(|i| worker(worker_bin, database_url, &queue, i))
            .collect::<anyhow::Result<_>>()?;
        // Let every runner connect, LISTEN, find nothing and go idle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let base = (runners as u64) * 1_000_000;
        figures.push(idle(&db, &queue, &hook_url, &started, base, runners).await?);
        figures.push(
            steady(
                database_url,
                &queue,
                &hook_url,
                &started,
                base + 500_000,
                runners,
            )
            .await?,
        );
        drop(workers);
        db.execute("DELETE FROM spine.jobs WHERE queue = $1", &[&queue])
            .await?;
        db.execute("DELETE FROM spine.queues WHERE name = $1", &[&queue])
            .await?;
    }
    Ok(figures)
}

fn worker(bin: &str, url: &str, queue: &str, i: usize) -> anyhow::Result<ChildGuard> {
    Ok(ChildGuard(
        Command::new(bin)
            .env("DATABASE_URL", url)
            .env("NATS_URL", "nats://127.0.0.1:1")
            .env(
                "SPINE_RELAY_SINK",
                format!("bench_pickup_{}_{i}", std::process::id()),
            )
            .env("SPINE_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("SPINE_JOB_QUEUES", format!("{queue}=http"))
            .env("SPINE_WORKER_ID", format!("pickup-{i}"))
            .env("RUST_LOG", "error")
            .spawn()?,
    ))
}

async fn enqueue(db: &Client, queue: &str, hook: &str, key: u64) -> anyhow::Result<Instant> {
    let payload = serde_json::json!({"url": hook, "body": {"k": key}});
    db.execute("SELECT spine.enqueue($1, $2)", &[&queue, &payload])
        .await?;
    Ok(Instant::now())
}

async fn idle(
    db: &Client,
    queue: &str,
    hook: &str,
    started: &Started,
    base: u64,
    runners: usize,
) -> anyhow::Result<Pickup> {
    let mut committed = Vec::new();
    for i in 0..IDLE_JOBS as u64 {
        let key = base + i;
        committed.push((key, enqueue(db, queue, hook, key).await?));
        let deadline = Instant::now() + Duration::from_secs(2);
        while !started.lock().unwrap().contains_key(&key) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(figure(
        format!("idle, {runners} runner(s)"),
        &committed,
        started,
    ))
}

async fn steady(
    url: &str,
    queue: &str,
    hook: &str,
    started: &Started,
    base: u64,
    runners: usize,
) -> anyhow::Result<Pickup> {
    // Four producers on their own connections, interleaved: one connection's
    // commits alone fall behind 1,000/s once the runners load the machine.
    const PRODUCERS: usize = 4;
    let total = RATE * SECONDS;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let (url, queue, hook) = (url.to_string(), queue.to_string(), hook.to_string());
        tasks.push(tokio::spawn(async move {
            let db = spine_tests::connect_to(&url).await?;
            let mut committed = Vec::new();
            for i in (p..total).step_by(PRODUCERS) {
                let due = t0 + Duration::from_secs_f64(i as f64 / RATE as f64);
                tokio::time::sleep_until(due.into()).await;
                let key = base + i as u64;
                committed.push((key, enqueue(&db, &queue, &hook, key).await?));
            }
            anyhow::Ok(committed)
        }));
    }
    let mut committed = Vec::with_capacity(total);
    for t in tasks {
        committed.extend(t.await??);
    }
    let achieved = total as f64 / t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(figure(
        format!("steady {achieved:.0}/s, {runners} runner(s)"),
        &committed,
        started,
    ))
}

fn figure(label: String, committed: &[(u64, Instant)], started: &Started) -> Pickup {
    let started = started.lock().unwrap();
    let mut latencies: Vec<Duration> = committed
        .iter()
        .filter_map(|(k, at)| started.get(k).map(|s| s.saturating_duration_since(*at)))
        .collect();
    Pickup {
        label,
        started: latencies.len(),
        sent: committed.len(),
        p50: quantile(&mut latencies, 0.5),
        p99: quantile(&mut latencies, 0.99),
    }
}

/// A minimal HTTP/1.1 endpoint on loopback that records when each job's body
/// `{"k": key}` arrived and answers 200 (keep-alive, as the worker's client
/// reuses connections).
async fn hook() -> anyhow::Result<(String, Started)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let started: Started = Default::default();
    let log = started.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: headers, then content-length bytes of body.
                    let request = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                let body = buf[end + 4..end + 4 + len].to_vec();
                                buf.drain(..end + 4 + len);
                                break Some(body);
                            }
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => break None,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let Some(body) = request else { return };
                    let at = Instant::now();
                    if let Some(k) = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["k"].as_u64())
                    {
                        log.lock().unwrap().entry(k).or_insert(at);
                    }
                    if socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok((url, started))
}

/// graphile-worker's pickup latency on the same database, from the shared peer
/// script: its output lines.
pub fn graphile(dir: &str, url: &str) -> Vec<String> {
    let out = Command::new("node")
        .args([
            "graphile-latency.mjs",
            url,
            &IDLE_JOBS.to_string(),
            &RATE.to_string(),
            &SECONDS.to_string(),
        ])
        .current_dir(dir)
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("graphile "))
            .map(String::from)
            .collect(),
        Ok(out) => vec![format!(
            "graphile-latency.mjs failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )],
        Err(e) => vec![format!("graphile-latency.mjs not run: {e}")],
    }
}
