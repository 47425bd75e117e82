//! Commit → searchable: entities written one per transaction at a steady rate, and
//! the time from COMMIT returning until Meilisearch returns the document, through a
//! worker running the search sync. Needs Meilisearch (`MEILI_URL`); says SKIP
//! otherwise.

use crate::stats::quantile;
use spine_tests::proc::{free_port, ChildGuard as Guard};
use std::process::Command;
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
    /// The spine-worker binary to run (cargo xtask bench passes the release build).
    #[arg(long, env = "SPINE_WORKER_BIN", value_name = "SPINE_WORKER_BIN")]
    pub worker_bin: String,
    /// Meilisearch; unset skips the benchmark.
    #[arg(long, env = "MEILI_URL", value_name = "URL")]
    pub meili_url: Option<String>,
    /// Meilisearch's master key.
    #[arg(
        long = "meili-master-key",
        env = "MEILI_MASTER_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub meili_key: Option<String>,
    /// Entities written.
    #[arg(
        long,
        env = "SPINE_BENCH_ENTITIES",
        default_value_t = 500,
        value_name = "N"
    )]
    pub entities: usize,
    /// Entities written per second.
    #[arg(
        long = "rate",
        env = "SPINE_BENCH_RATE",
        default_value_t = 50,
        value_name = "N"
    )]
    pub per_second: u64,
}

pub async fn run(s: Settings) -> anyhow::Result<()> {
    let Some(meili_url) = s.meili_url else {
        println!("SKIP search: MEILI_URL is not set (no Meilisearch; see docs/operations.md, \"Meilisearch\")");
        return Ok(());
    };
    let db = spine_tests::connect_to(&s.database_url).await?;
    let sink = format!("bench_search_{}", std::process::id());
    db.execute(
        "SELECT spine.ensure_sink($1, 'meilisearch', false)",
        &[&sink],
    )
    .await?;
    let kind = format!("benchdoc_{}", std::process::id());
    let mut worker = Command::new(&s.worker_bin);
    worker
        .env("DATABASE_URL", &s.database_url)
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env(
            "SPINE_RELAY_SINK",
            format!("bench_search_relay_{}", std::process::id()),
        )
        .env("SPINE_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("SPINE_JOB_QUEUES", "")
        .env("MEILI_URL", &meili_url)
        .env("SPINE_SEARCH_SINK", &sink)
        .env("RUST_LOG", "error");
    if let Some(k) = &s.meili_key {
        worker.env("MEILI_MASTER_KEY", k);
    }
    let _worker = Guard(worker.spawn()?);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let index = format!("spine_{kind}");
    let get = |id: String| {
        let mut req = http.get(format!("{meili_url}/indexes/{index}/documents/{id}"));
        if let Some(k) = &s.meili_key {
            req = req.bearer_auth(k);
        }
        req
    };
    let owner = uuid::Uuid::new_v4();
    let interval = Duration::from_micros(1_000_000 / s.per_second.max(1));
    println!(
        "search: {} entities, one per transaction, {}/s; commit → GET document 200 from Meilisearch",
        s.entities, s.per_second
    );
    let mut waits = Vec::new();
    let started = Instant::now();
    for i in 0..s.entities {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let id: uuid::Uuid = db
            .query_one(
                "SELECT spine.upsert_entity($1, jsonb_build_object('n', $2::int, 'text', 'bench document'), NULL, $3)",
                &[&kind, &(i as i32), &owner],
            )
            .await?
            .get(0);
        let committed = Instant::now();
        let request = get(id.to_string());
        waits.push(tokio::spawn(async move {
            loop {
                if let Some(r) = request.try_clone() {
                    if r.send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                    {
                        return Some(committed.elapsed());
                    }
                }
                if committed.elapsed() > Duration::from_secs(60) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let mut latencies = Vec::new();
    for w in waits {
        if let Some(l) = w.await? {
            latencies.push(l);
        }
    }
    anyhow::ensure!(
        latencies.len() == s.entities,
        "{} of {} documents became searchable within 60 s",
        latencies.len(),
        s.entities
    );
    println!(
        "  commit → searchable: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        quantile(&mut latencies, 0.5).as_secs_f64() * 1e3,
        quantile(&mut latencies, 0.99).as_secs_f64() * 1e3,
        quantile(&mut latencies, 1.0).as_secs_f64() * 1e3,
    );
    db.execute("SELECT spine.drop_sink($1)", &[&sink]).await?;
    Ok(())
}
