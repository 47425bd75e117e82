//! `spine-bench <name>`: benchmarks against the running dev stack
//! (`cargo xtask bench <name>` starts it and passes its environment).
//!
//! - [`audit`]: audited writes next to the same writes unaudited.
//! - [`functions`]: edge function invocation cold/warm, engine, HTTP and job queue.
//! - [`ingest`]: records/s through `spine.ingest` next to a plain INSERT.
//! - [`jobs`]: the queue's enqueue and drain rates next to raw Postgres limits and
//!   pg-boss / graphile-worker.
//! - [`search`]: commit → searchable latency through the search sync (needs Meilisearch).
//! - [`rules`]: the cost of 0–1,000 rules per event on event insert.
//! - [`relay`]: outbox → JetStream drain rate and commit→delivery latency, next to
//!   the raw JetStream publish rate on the same server.

mod audit;
mod functions;
mod ingest;
mod jobs;
mod pickup;
mod relay;
mod rules;
mod search;
mod stats;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_default();
    let env = |k: &str| std::env::var(k).map_err(|_| anyhow::anyhow!("{k} is not set"));
    match name.as_str() {
        "relay" => {
            relay::run(relay::Settings {
                database_url: env("DATABASE_URL")?,
                nats_url: env("NATS_URL")?,
                worker_bin: env("SPINE_WORKER_BIN")?,
                events: env("SPINE_BENCH_EVENTS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(100_000),
            })
            .await
        }
        "jobs" => {
            jobs::run(jobs::Settings {
                database_url: env("DATABASE_URL")?,
                pg_bindir: env("SPINE_PG_BINDIR")?,
                peers_dir: env("SPINE_PEERS_DIR").ok(),
                worker_bin: env("SPINE_WORKER_BIN")?,
                jobs: env("SPINE_BENCH_JOBS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(20_000),
            })
            .await
        }
        "audit" => {
            audit::run(audit::Settings {
                database_url: env("DATABASE_URL")?,
                seconds: env("SPINE_BENCH_SECONDS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(5),
            })
            .await
        }
        "rules" => {
            rules::run(rules::Settings {
                database_url: env("DATABASE_URL")?,
                events: env("SPINE_BENCH_EVENTS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(10_000),
            })
            .await
        }
        "ingest" => {
            ingest::run(ingest::Settings {
                database_url: env("DATABASE_URL")?,
                records: env("SPINE_BENCH_RECORDS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(20_000),
            })
            .await
        }
        "functions" => {
            functions::run(functions::Settings {
                database_url: env("DATABASE_URL")?,
                functions_bin: env("SPINE_FUNCTIONS_BIN")?,
                worker_bin: env("SPINE_WORKER_BIN")?,
                functions_dir: env("SPINE_FUNCTIONS_DIR")?,
                jwt_secret: env("SPINE_JWT_SECRET")?,
                calls: env("SPINE_BENCH_CALLS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(2_000),
            })
            .await
        }
        "search" => {
            search::run(search::Settings {
                database_url: env("DATABASE_URL")?,
                worker_bin: env("SPINE_WORKER_BIN")?,
                meili_url: env("MEILI_URL").ok(),
                meili_key: env("MEILI_MASTER_KEY").ok(),
                entities: env("SPINE_BENCH_ENTITIES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(500),
                per_second: env("SPINE_BENCH_RATE")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(50),
            })
            .await
        }
        other => anyhow::bail!(
            "unknown benchmark `{other}` (available: relay, jobs, audit, rules, ingest, functions, search)"
        ),
    }
}
