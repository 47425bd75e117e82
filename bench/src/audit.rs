//! `audit`: audited writes next to the same writes unaudited, on one cluster.
//!
//! The write is an application row insert (`spine_bench_items`). Audited, the
//! table has an AFTER INSERT trigger that calls `spine.audit(…)` per row — the way
//! a user audits a table of their own (supa_audit's pattern) — so each row also
//! becomes a hash-chained audit row at COMMIT. Measured for 4 clients, with
//! transactions of 100 rows and of 1 row (every commit extends the chain: the
//! serialised part), then `spine.audit_verify()` over the whole log.

use crate::stats::per_second;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

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
    /// Seconds per figure.
    #[arg(
        long,
        env = "SPINE_BENCH_SECONDS",
        default_value_t = 5,
        value_name = "SECS"
    )]
    pub seconds: u64,
}

const CLIENTS: usize = 4;

async fn db(url: &str) -> anyhow::Result<Client> {
    let client = spine_tests::connect_to(url).await?;
    Ok(client)
}

/// Rows inserted per second by CLIENTS clients for `seconds`, `per_tx` rows per
/// transaction, into `table`.
async fn insert_rate(s: &Settings, table: &'static str, per_tx: i32) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(s.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let url = s.database_url.clone();
        tasks.push(tokio::spawn(async move {
            let db = db(&url).await?;
            let insert = db
                .prepare(&format!(
                    "INSERT INTO {table} (data) \
                     SELECT jsonb_build_object('i', g, 'note', 'benchmark row') \
                       FROM generate_series(1, $1) g"
                ))
                .await?;
            let mut rows = 0u64;
            while Instant::now() < deadline {
                rows += db.execute(&insert, &[&per_tx]).await?;
            }
            anyhow::Ok(rows)
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await??;
    }
    Ok(per_second(total as usize, started.elapsed()))
}

pub async fn run(s: Settings) -> anyhow::Result<()> {
    let admin = db(&s.database_url).await?;
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS spine_bench_items, spine_bench_items_audited; \
             CREATE TABLE spine_bench_items (id bigserial PRIMARY KEY, data jsonb NOT NULL); \
             CREATE TABLE spine_bench_items_audited (id bigserial PRIMARY KEY, data jsonb NOT NULL); \
             CREATE OR REPLACE FUNCTION spine_bench_audit_item() RETURNS trigger \
                 LANGUAGE plpgsql AS $$ \
             BEGIN \
                 PERFORM spine.audit('bench.item_written', 'item:' || NEW.id, NEW.data); \
                 RETURN NULL; \
             END $$; \
             CREATE TRIGGER audited AFTER INSERT ON spine_bench_items_audited \
                 FOR EACH ROW EXECUTE FUNCTION spine_bench_audit_item();",
        )
        .await?;
    let log_before: i64 = admin
        .query_one("SELECT count(*) FROM spine.audit_log", &[])
        .await?
        .get(0);
    println!(
        "audit benchmark: {CLIENTS} clients, {} s per figure\n",
        s.seconds
    );
    println!("{:<48} {:>12}  compared with", "figure", "rows/s");
    let row = |name: &str, value: f64, note: String| println!("{name:<48} {value:>12.0}  {note}");
    for per_tx in [100, 1] {
        let plain = insert_rate(&s, "spine_bench_items", per_tx).await?;
        let audited = insert_rate(&s, "spine_bench_items_audited", per_tx).await?;
        row(
            &format!("unaudited insert, {per_tx} row(s)/transaction"),
            plain,
            "the baseline".into(),
        );
        row(
            &format!("audited insert, {per_tx} row(s)/transaction"),
            audited,
            format!(
                "{:.0}% of unaudited{}",
                100.0 * audited / plain,
                if per_tx > 1 {
                    " (target ≥ 20,000/s)"
                } else {
                    ""
                }
            ),
        );
    }
    // Rows whose commit found the head busy wait for the next sealer; seal them so
    // the verification below covers everything this run wrote.
    let waiting: i64 = admin
        .query_one("SELECT spine.audit_seal()", &[])
        .await?
        .get(0);
    let log: i64 = admin
        .query_one("SELECT count(*) FROM spine.audit_log", &[])
        .await?
        .get(0);
    let started = Instant::now();
    let broken: Option<i64> = admin
        .query_one("SELECT spine.audit_verify()", &[])
        .await?
        .get(0);
    anyhow::ensure!(broken.is_none(), "audit_verify found a break at {broken:?}");
    row(
        &format!("spine.audit_verify() over {log} rows"),
        per_second(log as usize, started.elapsed()),
        format!(
            "chain intact; {} rows written by this run, {waiting} of them still waiting for a sealer at the end",
            log - log_before
        ),
    );
    admin
        .batch_execute("DROP TABLE spine_bench_items, spine_bench_items_audited")
        .await?;
    Ok(())
}
