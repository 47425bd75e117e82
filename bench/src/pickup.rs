//! Pickup latency: commit of a single enqueue → the job's handler starting, with
//! real `spine-worker` processes at their default settings (poll 500 ms).
//!
//! The jobs are `http` jobs that POST to a [`Hook`] in this process; "started" is when
//! the hook receives the request, so the figure includes the handler's HTTP round
//! trip on loopback (graphile-worker's figure is taken inside its task function).
//! Commit time is when the autocommitted `spine.enqueue` returned.
//!
//! (a) idle: one job at a time, each after the last one started, 50 ms apart;
//! (b) steady: `RATE` jobs/s for `SECONDS` s from four producer connections.
//! Each with 1 and with 4 runners.

use crate::stats::quantile;
use spine_tests::daemons::Hook;
use spine_tests::proc::{free_port, ChildGuard};
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const IDLE_JOBS: usize = 200;
const RATE: usize = 1000;
const SECONDS: usize = 5;

/// One figure: p50 and p99 of the latencies, and how many of the jobs started.
pub struct Pickup {
    pub label: String,
    pub p50: Duration,
    pub p99: Duration,
    pub started: usize,
    pub sent: usize,
}

pub async fn run(database_url: &str, worker_bin: &str) -> anyhow::Result<Vec<Pickup>> {
    let hook = Hook::start(|_| (200, Duration::ZERO)).await;
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
        figures.push(idle(&db, &queue, &hook, base, runners).await?);
        figures.push(steady(database_url, &queue, &hook, base + 500_000, runners).await?);
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
    hook: &Hook,
    base: u64,
    runners: usize,
) -> anyhow::Result<Pickup> {
    let mut committed = Vec::new();
    for i in 0..IDLE_JOBS as u64 {
        let key = base + i;
        let before = hook.count();
        committed.push((key, enqueue(db, queue, &hook.url, key).await?));
        let deadline = Instant::now() + Duration::from_secs(2);
        while hook.count() == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(figure(
        format!("idle, {runners} runner(s)"),
        &committed,
        hook,
    ))
}

async fn steady(
    url: &str,
    queue: &str,
    hook: &Hook,
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
        let (url, queue, hook) = (url.to_string(), queue.to_string(), hook.url.clone());
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
        hook,
    ))
}

fn figure(label: String, committed: &[(u64, Instant)], hook: &Hook) -> Pickup {
    let started = started_by_key(hook);
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

/// When each job, by the key in its body `{"k": key}`, first reached the hook.
fn started_by_key(hook: &Hook) -> HashMap<u64, Instant> {
    let received = hook.received.lock().unwrap();
    let arrivals = hook.arrivals.lock().unwrap();
    let mut started = HashMap::new();
    for ((_, body), at) in received.iter().zip(arrivals.iter()) {
        if let Some(k) = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["k"].as_u64())
        {
            started.entry(k).or_insert(*at);
        }
    }
    started
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
