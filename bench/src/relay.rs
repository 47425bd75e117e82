//! `relay`: how close the outbox relay gets to JetStream's own limit.
//!
//! 1. raw: JetStream publishes in the relay's pattern (batches of 1,000, two in
//!    flight, Nats-Msg-Id set) of the same envelopes, same client crate, same
//!    server, no Postgres: the ceiling;
//! 2. drain: a backlog of N committed events, then a fresh relay (release build) is
//!    started and timed until its cursor reaches the last event: commit→JetStream-ack rate;
//! 3. latency: 1,000 events/s for 10 s, each its own transaction; time from COMMIT
//!    returning to the event reaching a NATS subscriber (stored and acknowledged).

use crate::stats::{per_second, quantile};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use futures_util::StreamExt;
use spine_tests::proc::free_port;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use uuid::Uuid;

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
    /// The stack's NATS.
    #[arg(
        long,
        env = "NATS_URL",
        hide_env_values = true,
        value_name = "NATS_URL"
    )]
    pub nats_url: String,
    /// The spine-worker binary to run (cargo xtask bench passes the release build).
    #[arg(long, env = "SPINE_WORKER_BIN", value_name = "SPINE_WORKER_BIN")]
    pub worker_bin: String,
    /// Events relayed per figure.
    #[arg(
        long,
        env = "SPINE_BENCH_EVENTS",
        default_value_t = 100_000,
        value_name = "N"
    )]
    pub events: usize,
    /// Measure on NATS_URL (the stack's server) instead of a fresh nats-server.
    #[arg(long)]
    pub stack_nats: bool,
}

const WINDOW: usize = 1000;

pub async fn run(mut s: Settings) -> anyhow::Result<()> {
    // A fresh nats-server (its JetStream store in a temporary directory) unless
    // asked otherwise: the stack's store grows with every run (1.6 GB after a
    // day of runs, 2026-12-07), and a large store slowed publishes and acks, so
    // runs were not comparable.
    let private = (!s.stack_nats).then(spine_tests::daemons::Nats::start);
    if let Some(nats) = &private {
        s.nats_url = nats.url();
    }
    let n = s.events;
    println!(
        "relay benchmark: {n} events; NATS {} ({}); Postgres {}\n",
        s.nats_url,
        if private.is_some() {
            "a fresh nats-server"
        } else {
            "the stack's"
        },
        s.database_url
    );
    let raw = raw_publish_rate(&s.nats_url, n).await?;
    println!(
        "raw JetStream windowed publish  {raw:>10.0} msgs/s  (batches of {WINDOW}, 2 in flight, Nats-Msg-Id set)"
    );
    let (emit, drain, read) = drain_rate(&s, n).await?;
    println!("spine.emit, 1000 per transaction {emit:>10.0} events/s  (building the backlog)");
    println!(
        "spine relay drain (commit→ack)  {drain:>10.0} events/s  ({:.0}% of raw; target ≥ 80%)",
        100.0 * drain / raw
    );
    // The same work by hand: reading costs CPU on the same two cores that the
    // raw figure already fills, so read-then-publish per event is what the
    // relay's pipeline would reach without overlapping them.
    let serial = 1.0 / (1.0 / raw + 1.0 / read);
    println!(
        "by hand: events_after alone      {read:>10.0} events/s  (the backlog again, 1000 per call, nothing published)"
    );
    println!(
        "by hand: read, then publish      {serial:>10.0} events/s  ({:.0}% of raw; the relay drains {:.0}% of this)",
        100.0 * serial / raw,
        100.0 * drain / serial
    );
    let (p50, p99, count, stages) = steady_latency(&s, 1000, Duration::from_secs(10)).await?;
    println!(
        "commit→delivery at 1000 ev/s     p50 {:.2} ms  p99 {:.2} ms  ({count} events; target p99 < 20 ms)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    println!("  where the time goes (means over the same events, from the relay's /metrics):");
    for line in stages {
        println!("    {line}");
    }
    let (plain, checked) = contract_cost(&s, n.min(20_000)).await?;
    println!(
        "spine.emit with a JSON Schema    {checked:>10.0} events/s  ({:.0}% of the same emit unbound, {plain:.0}/s: {:.1} µs/event)",
        100.0 * checked / plain,
        1e6 / checked - 1e6 / plain
    );
    Ok(())
}

/// spine.emit's rate (1,000 per transaction) for an event type without a
/// contract and for one with a JSON Schema bound, the same data; each the best
/// of three rounds, interleaved, so a passing disturbance hits both alike.
async fn contract_cost(s: &Settings, n: usize) -> anyhow::Result<(f64, f64)> {
    let db = db(&s.database_url).await?;
    let tag = &Uuid::new_v4().simple().to_string()[..8];
    let (schema, plain, checked) = (
        format!("bench-order-{tag}"),
        format!("bench{tag}.OrderPlaced"),
        format!("bench{tag}.OrderChecked"),
    );
    let order = serde_json::json!({
        "type": "object", "required": ["sku", "qty", "name"],
        "properties": {
            "sku": {"type": "string", "pattern": "^a-[0-9]+$"},
            "qty": {"type": "integer", "minimum": 1, "maximum": 10},
            "name": {"type": "string", "maxLength": 200}
        }
    });
    db.execute("SELECT spine.define_schema($1, $2)", &[&schema, &order])
        .await?;
    db.execute(
        "SELECT spine.bind_schema('event', $1, $2)",
        &[&checked, &schema],
    )
    .await?;
    let rate = |event_type: String| {
        let db = &db;
        async move {
            let started = Instant::now();
            let mut left = n as i32;
            while left > 0 {
                let k = left.min(1000);
                db.execute(
                    "SELECT spine.emit($2, jsonb_build_object('sku', 'a-' || i, 'qty', 1 + i % 5, \
                     'name', repeat('x', 100)), 'order/' || i) FROM generate_series(1, $1) i",
                    &[&k, &event_type],
                )
                .await?;
                left -= k;
            }
            anyhow::Ok(per_second(n, started.elapsed()))
        }
    };
    let (mut best_plain, mut best_checked) = (0f64, 0f64);
    for _ in 0..3 {
        best_plain = best_plain.max(rate(plain.clone()).await?);
        best_checked = best_checked.max(rate(checked.clone()).await?);
    }
    db.execute("SELECT spine.unbind_schema('event', $1)", &[&checked])
        .await?;
    db.execute("SELECT spine.drop_schema($1)", &[&schema])
        .await?;
    Ok((best_plain, best_checked))
}

async fn db(url: &str) -> anyhow::Result<Client> {
    let client = spine_tests::connect_to(url).await?;
    Ok(client)
}

/// A typical envelope: the JSON the relay would publish for a small entity event.
fn sample_envelope(id: Uuid) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "specversion": "1.0", "id": id, "source": "/spine", "type": "bench.EntityCreated",
        "subject": "entity/1", "time": "2026-11-25T12:00:00.000000Z",
        "datacontenttype": "application/json", "correlationid": id,
        "data": {"i": 1, "name": "x".repeat(100)}
    }))
    .expect("static JSON")
}

async fn raw_publish_rate(nats_url: &str, n: usize) -> anyhow::Result<f64> {
    let js = jetstream::new(async_nats::connect(nats_url).await?);
    let name = format!("BENCHRAW{}", Uuid::new_v4().simple());
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.>")],
        duplicate_window: Duration::from_secs(120),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    // The relay's own pattern, minus Postgres: batches of WINDOW, two in flight.
    let started = Instant::now();
    let mut sent = 0;
    let mut inflight = std::collections::VecDeque::new();
    while sent < n || !inflight.is_empty() {
        if sent < n && inflight.len() < 2 {
            let mut acks = Vec::with_capacity(WINDOW);
            for _ in 0..WINDOW.min(n - sent) {
                let id = Uuid::now_v7();
                let msg = PublishMessage::build()
                    .payload(sample_envelope(id).into())
                    .message_id(id.to_string());
                acks.push(
                    js.send_publish(format!("{name}.bench.EntityCreated"), msg)
                        .await?,
                );
                sent += 1;
            }
            inflight.push_back(acks);
            continue;
        }
        for ack in inflight.pop_front().expect("non-empty") {
            ack.await?;
        }
    }
    let rate = per_second(n, started.elapsed());
    js.delete_stream(&name).await?;
    Ok(rate)
}

/// Returns (emit rate while building the backlog, relay drain rate, the same
/// backlog read by hand without publishing).
async fn drain_rate(s: &Settings, n: usize) -> anyhow::Result<(f64, f64, f64)> {
    let db = db(&s.database_url).await?;
    let sink = format!("bench_{}", Uuid::new_v4().simple());
    db.execute("SELECT spine.ensure_sink($1, 'nats', false)", &[&sink])
        .await?;
    let start = db
        .query_one(
            "SELECT cursor_commit_seq, cursor_seq FROM spine.sinks WHERE name = $1",
            &[&sink],
        )
        .await?;
    let start: (i64, i64) = (start.get(0), start.get(1));
    // The backlog, committed before any relay runs, in transactions of 1,000.
    let per_txn = 1000i32;
    let mut left = n as i32;
    let emitting = Instant::now();
    while left > 0 {
        let k = left.min(per_txn);
        db.execute(
            "SELECT spine.emit('bench.EntityCreated', jsonb_build_object('i', i, 'name', repeat('x', 100)), 'entity/' || i) \
             FROM generate_series(1, $1) i",
            &[&k],
        )
        .await?;
        left -= k;
    }
    let emit_rate = per_second(n, emitting.elapsed());
    // Where the cursor stands once everything is relayed. Polling the cursor is one
    // index lookup; counting the backlog would steal CPU from the relay.
    let target = db
        .query_one(
            "SELECT c.commit_seq, max(e.seq) FROM spine.event_commits c \
             JOIN spine.events e ON e.txid = c.txid AND e.tx_started_at = c.tx_started_at \
             WHERE c.commit_seq = (SELECT max(commit_seq) FROM spine.event_commits) \
             GROUP BY c.commit_seq",
            &[],
        )
        .await?;
    let target: (i64, i64) = (target.get(0), target.get(1));
    let http = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let mut worker = std::process::Command::new(&s.worker_bin)
        .env("DATABASE_URL", &s.database_url)
        .env("NATS_URL", &s.nats_url)
        .env("SPINE_RELAY_SINK", &sink)
        // The relay alone: no search sync (the stack may have Meilisearch) and no
        // job runner competing for the machine's cores.
        .env_remove("MEILI_URL")
        .env("SPINE_JOB_QUEUES", "")
        .env("SPINE_HTTP_ADDR", &http)
        .env("RUST_LOG", "warn")
        .spawn()?;
    let elapsed = loop {
        let row = db
            .query_one(
                "SELECT cursor_commit_seq, cursor_seq FROM spine.sinks WHERE name = $1",
                &[&sink],
            )
            .await?;
        if (row.get::<_, i64>(0), row.get::<_, i64>(1)) >= target {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("relay did not drain {n} events in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    worker.kill()?;
    worker.wait()?;
    db.execute("SELECT spine.drop_sink($1)", &[&sink]).await?;
    let read = read_rate(&db, start, n).await?;
    Ok((emit_rate, per_second(n, elapsed), read))
}

/// The relay's reads alone, by hand: the same backlog from the same position
/// through `spine.events_after`, 1,000 rows per call, every column, on one
/// connection, nothing published.
async fn read_rate(db: &Client, from: (i64, i64), n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (mut at, mut read) = (from, 0usize);
    while read < n {
        let rows = db
            .query(
                "SELECT * FROM spine.events_after($1, $2, 1000)",
                &[&at.0, &at.1],
            )
            .await?;
        let Some(last) = rows.last() else { break };
        at = (last.get("commit_seq"), last.get("seq"));
        read += rows.len();
    }
    Ok(per_second(read, started.elapsed()))
}

/// Emits `rate` events per second for `duration`, spread over a few connections
/// (one commit is about one fsync), and measures COMMIT→delivered for each.
async fn steady_latency(
    s: &Settings,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<(Duration, Duration, usize, Vec<String>)> {
    let sink = format!("bench_{}", Uuid::new_v4().simple());
    let admin = db(&s.database_url).await?;
    admin
        .execute("SELECT spine.ensure_sink($1, 'nats', false)", &[&sink])
        .await?;
    let nats = async_nats::connect(&s.nats_url).await?;
    let mut sub = nats.subscribe("spine.bench.PingSent").await?;
    let received: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let rx = received.clone();
    let collector = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let at = Instant::now();
            if let Some(id) = msg.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
                rx.lock().unwrap().insert(id.to_string(), at);
            }
        }
    });
    let http = format!("127.0.0.1:{}", free_port());
    let mut worker = std::process::Command::new(&s.worker_bin)
        .env("DATABASE_URL", &s.database_url)
        .env("NATS_URL", &s.nats_url)
        .env("SPINE_RELAY_SINK", &sink)
        // The relay alone: no search sync (the stack may have Meilisearch) and no
        // job runner competing for the machine's cores.
        .env_remove("MEILI_URL")
        .env("SPINE_JOB_QUEUES", "")
        .env("SPINE_HTTP_ADDR", &http)
        .env("RUST_LOG", "warn")
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics_url = format!("http://{http}/metrics");
    let before = Stages::scrape(&metrics_url).await?;

    const CONNECTIONS: usize = 8;
    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = (rate as u64 * duration.as_secs()) as usize;
    let interval = Duration::from_secs(1) / rate;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let (url, committed) = (s.database_url.clone(), committed.clone());
        tasks.push(tokio::spawn(async move {
            let db = db(&url).await?;
            let stmt = db
                .prepare("SELECT spine.emit('bench.PingSent', '{}')")
                .await?;
            for k in (c..total).step_by(CONNECTIONS) {
                tokio::time::sleep_until((start + interval * k as u32).into()).await;
                let id: Uuid = db.query_one(&stmt, &[]).await?.get(0);
                committed
                    .lock()
                    .unwrap()
                    .insert(id.to_string(), Instant::now());
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stages = Stages::scrape(&metrics_url).await?.since(&before);
    worker.kill()?;
    worker.wait()?;
    collector.abort();
    admin
        .execute("SELECT spine.drop_sink($1)", &[&sink])
        .await?;

    let committed = committed.lock().unwrap();
    let received = received.lock().unwrap();
    let mut latencies: Vec<Duration> = committed
        .iter()
        .filter_map(|(id, at)| received.get(id).map(|r| r.saturating_duration_since(*at)))
        .collect();
    anyhow::ensure!(
        latencies.len() == committed.len(),
        "{} of {} events were not delivered",
        committed.len() - latencies.len(),
        committed.len()
    );
    let count = latencies.len();
    let mean = latencies.iter().sum::<Duration>().as_secs_f64() / count.max(1) as f64;
    Ok((
        quantile(&mut latencies, 0.5),
        quantile(&mut latencies, 0.99),
        count,
        stages.lines(mean),
    ))
}

/// The relay's stage histograms (`spine_relay_*_seconds`), as sums and counts.
#[derive(Debug, Default, Clone, PartialEq)]
struct Stages {
    /// (sum of seconds, count) per stage, in [`STAGES`] order.
    totals: Vec<(f64, f64)>,
}

/// The relay's stages, in order, as its /metrics names them.
const STAGES: [(&str, &str); 6] = [
    (
        "commit_to_wake",
        "commit → NOTIFY wake-up, per woken read (first event)",
    ),
    ("wake_to_read", "wake-up → rows read, per woken read"),
    (
        "commit_to_read",
        "commit → read (wake-up + read, or a poll), per event",
    ),
    ("read_to_sent", "read → last publish sent, per batch"),
    ("sent_to_ack", "sent → JetStream acks, per batch"),
    (
        "commit_to_ack",
        "commit → ack, per event (the relay's whole part)",
    ),
];

impl Stages {
    async fn scrape(url: &str) -> anyhow::Result<Stages> {
        // reqwest is built without a default TLS provider (plain HTTP here).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let text = reqwest::get(url).await?.error_for_status()?.text().await?;
        Ok(Stages::parse(&text))
    }

    fn parse(text: &str) -> Stages {
        let value = |name: String| {
            text.lines()
                .filter(|l| l.starts_with(&name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        Stages {
            totals: STAGES
                .iter()
                .map(|(stage, _)| {
                    let name = format!("spine_relay_{stage}_seconds");
                    (value(format!("{name}_sum")), value(format!("{name}_count")))
                })
                .collect(),
        }
    }

    fn since(&self, before: &Stages) -> Stages {
        Stages {
            totals: self
                .totals
                .iter()
                .zip(&before.totals)
                .map(|(a, b)| (a.0 - b.0, a.1 - b.1))
                .collect(),
        }
    }

    /// Mean milliseconds per stage, and the measured commit→subscriber mean
    /// beside the relay's commit→ack: JetStream forwards a message to
    /// subscribers as it stores it, in parallel with the ack, so the two are
    /// not consecutive stages (and the relay's commit time is the database's
    /// commit stamp, taken before COMMIT returns to the client).
    fn lines(&self, mean_total: f64) -> Vec<String> {
        let mean = |(sum, count): (f64, f64)| if count > 0.0 { sum / count } else { 0.0 };
        let mut lines: Vec<String> = STAGES
            .iter()
            .zip(&self.totals)
            .map(|((_, what), t)| format!("{:>8.3} ms  {what}", mean(*t) * 1e3))
            .collect();
        lines.push(format!(
            "{:>8.3} ms  commit → subscriber, measured by this benchmark (COMMIT returned → message received)",
            mean_total * 1e3
        ));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_means_come_from_histogram_sums_and_counts() {
        let text = "# TYPE spine_relay_commit_to_read_seconds histogram\n\
            spine_relay_commit_to_read_seconds_sum{sink=\"b\"} 0.5\n\
            spine_relay_commit_to_read_seconds_count{sink=\"b\"} 1000\n\
            spine_relay_commit_to_read_seconds_bucket{sink=\"b\",le=\"0.001\"} 900\n\
            spine_relay_commit_to_ack_seconds_sum{sink=\"b\"} 1.0\n\
            spine_relay_commit_to_ack_seconds_count{sink=\"b\"} 1000\n";
        let stages = Stages::parse(text).since(&Stages::parse(""));
        let at = |name: &str| STAGES.iter().position(|(s, _)| *s == name).unwrap();
        assert_eq!(stages.totals[at("commit_to_read")], (0.5, 1000.0));
        assert_eq!(stages.totals[at("wake_to_read")], (0.0, 0.0));
        let lines = stages.lines(0.0015);
        assert!(
            lines[at("commit_to_read")]
                .trim_start()
                .starts_with("0.500 ms"),
            "{lines:?}"
        );
        assert!(
            lines[STAGES.len()].trim_start().starts_with("1.500 ms"),
            "{lines:?}"
        );
    }
}
