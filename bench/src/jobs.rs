//! `jobs`: the queue's SQL API against the raw limits of the same cluster and
//! against pg-boss and graphile-worker (the shared peer scripts, when Node is here).
//!
//! - single enqueue: pgbench, one client, `SELECT spine.enqueue(…)` vs a raw
//!   single-row INSERT into a plain table, three 5-s turns each, alternating;
//!   the figures are the medians; in the simple and in the prepared protocol;
//! - batch enqueue: `spine.enqueue_batch` with 1,000 payloads per call;
//! - drain: 4 loops of `fetch_jobs(…, 100)` + `complete_jobs(ids)` (no-op handler,
//!   the peers' pattern) vs a raw `DELETE … SKIP LOCKED` of 100 rows per statement;
//!   batch enqueue, drain and raw delete are medians of three rounds of `jobs` jobs
//!   each, every round on a fresh queue;
//! - the cost of a NOTIFY on a single-row commit (what every enqueue now sends to
//!   wake runners): pgbench, raw INSERT with and without `pg_notify` in its
//!   transaction, in turns;
//! - pickup latency (commit → handler start) with 1 and 4 `spine-worker`
//!   processes, idle and at 1,000 jobs/s ([`crate::pickup`]), beside
//!   graphile-worker's on the same database.

use crate::stats::per_second;
use std::process::Command;
use std::time::Instant;
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
    /// PostgreSQL's binaries (pgbench).
    #[arg(long, env = "SPINE_PG_BINDIR", value_name = "SPINE_PG_BINDIR")]
    pub pg_bindir: String,
    /// The shared peer scripts (pg-boss, graphile-worker) with their npm
    /// dependencies; unset skips the peers.
    #[arg(long, env = "SPINE_PEERS_DIR", value_name = "DIR")]
    pub peers_dir: Option<String>,
    /// The spine-worker binary to run (cargo xtask bench passes the release build).
    #[arg(long, env = "SPINE_WORKER_BIN", value_name = "SPINE_WORKER_BIN")]
    pub worker_bin: String,
    /// Jobs per figure.
    #[arg(
        long,
        env = "SPINE_BENCH_JOBS",
        default_value_t = 20_000,
        value_name = "N"
    )]
    pub jobs: usize,
}

const LOOPS: usize = 4;
/// Turns of raw INSERT and `spine.enqueue` (5 s each).
const PAIRED_RUNS: usize = 3;
const FETCH: i32 = 100;
/// Rounds of batch enqueue, drain and raw delete, each of `jobs` jobs.
const DRAIN_ROUNDS: usize = 3;

pub async fn run(s: Settings) -> anyhow::Result<()> {
    let db = db(&s.database_url).await?;
    println!(
        "jobs benchmark: {} jobs, {LOOPS} loops, batches of {FETCH}\n",
        s.jobs
    );
    // Single enqueues go to a queue of their own: the drain below measures the
    // same number of jobs the peers drain, not the tens of thousands pgbench adds.
    let single_queue = new_queue(&db).await?;
    // One client's single-row rate depends on the WAL flush, which drifts from
    // second to second on a VM: the two are measured in turns, and each figure is
    // the median of its turns. Both in pgbench's simple protocol (each call parsed
    // and planned, as with psql or an unnamed statement) and with prepared
    // statements (as PostgREST and drivers with a statement cache call it).
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS spine_bench_raw (id bigserial PRIMARY KEY, payload jsonb NOT NULL); \
         TRUNCATE spine_bench_raw",
    )
    .await?;
    let mut single_rows = Vec::new();
    for protocol in ["simple", "prepared"] {
        let (mut raw_runs, mut single_runs) = (Vec::new(), Vec::new());
        for _ in 0..PAIRED_RUNS {
            raw_runs.push(
                pgbench(
                    &s,
                    protocol,
                    "INSERT INTO spine_bench_raw (payload) VALUES ('{\"i\":1}')",
                )
                .await?,
            );
            single_runs.push(
                pgbench(
                    &s,
                    protocol,
                    &format!("SELECT spine.enqueue('{single_queue}', '{{\"i\":1}}')"),
                )
                .await?,
            );
        }
        single_rows.push((protocol, raw_runs, single_runs));
    }
    // What the wake-up NOTIFY costs a single-row commit: the same raw INSERT in a
    // transaction with and without a pg_notify, in turns (prepared protocol).
    let (mut plain_runs, mut notify_runs) = (Vec::new(), Vec::new());
    for _ in 0..PAIRED_RUNS {
        let insert = "INSERT INTO spine_bench_raw (payload) VALUES ('{\"i\":1}')";
        plain_runs.push(pgbench(&s, "prepared", &format!("BEGIN;\n{insert};\nCOMMIT")).await?);
        notify_runs.push(
            pgbench(
                &s,
                "prepared",
                &format!(
                    "BEGIN;\n{insert};\nSELECT pg_notify('spine_jobs', 'bench_notify');\nCOMMIT"
                ),
            )
            .await?,
        );
    }
    drop_queue(&db, &single_queue).await?;
    // A drain of a few tenths of a second moves with whatever else the machine
    // does: each figure is the median of its rounds, each on a fresh queue.
    let (mut batch_runs, mut warm_runs, mut cold_runs, mut delete_runs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..DRAIN_ROUNDS {
        // Each round starts on a table without the dead rows of the ones before
        // (pg-boss drains a queue table of its own, created by its script), and
        // without an autovacuum of them running in the middle of the round.
        db.batch_execute("VACUUM spine.jobs").await?;
        let queue = new_queue(&db).await?;
        batch_runs.push(batch_enqueue(&db, &queue, s.jobs).await?);
        let rates = drain(&s.database_url, &queue, s.jobs).await?;
        warm_runs.push(rates.warm);
        cold_runs.push(rates.cold);
        drop_queue(&db, &queue).await?;
        delete_runs.push(raw_skip_locked_delete(&s.database_url, s.jobs).await?);
    }
    let batch = median(&mut batch_runs);
    let drain = Rates {
        warm: median(&mut warm_runs),
        cold: median(&mut cold_runs),
    };
    let raw_delete = median(&mut delete_runs);

    // The peers drain a few thousand jobs a second: a large backlog would take them
    // many minutes, so they run only at the default size.
    let peers = match s.peers_dir.as_deref() {
        Some(dir) if s.jobs <= 100_000 => peer_figures(dir, &s.database_url, s.jobs),
        Some(_) => {
            println!(
                "SKIP peers: {} jobs is more than they drain in reasonable time",
                s.jobs
            );
            Vec::new()
        }
        None => Vec::new(),
    };
    let peer = |name: &str| peers.iter().find(|(n, _)| n == name).map(|(_, v)| *v);

    println!("{:<44} {:>12}  compared with", "figure", "per second");
    let row = |name: &str, value: f64, note: String| {
        println!("{name:<44} {value:>12.0}  {note}");
    };
    for (protocol, raw_runs, single_runs) in &mut single_rows {
        let (raw_insert, single) = (median(raw_runs), median(single_runs));
        row(
            &format!("raw single-row INSERT (pgbench -M {protocol})"),
            raw_insert,
            format!("the limit for single enqueue; median of {}", list(raw_runs)),
        );
        row(
            &format!("spine.enqueue (pgbench -M {protocol})"),
            single,
            format!(
                "{:.0}% of raw INSERT (target ≥ 90%); median of {}",
                100.0 * single / raw_insert,
                list(single_runs)
            ),
        );
    }
    row(
        "spine.enqueue_batch (1,000 per call)",
        batch,
        format!(
            "{}; median of {}",
            peer_ratio(batch, peer("pgboss insert_batch"), "pg-boss batch insert"),
            list(&batch_runs)
        ),
    );
    row(
        "raw DELETE … SKIP LOCKED (100/stmt, 4, warm)",
        raw_delete,
        format!(
            "one write per job; a leased job needs two; median of {}",
            list(&delete_runs)
        ),
    );
    row(
        "spine drain, warm (fetch_jobs+complete_jobs)",
        drain.warm,
        format!(
            "{:.0}% of raw delete; {}; {}; median of {}",
            100.0 * drain.warm / raw_delete,
            peer_ratio(drain.warm, peer("pgboss drain"), "pg-boss (target ≥ 3×)"),
            peer_ratio(
                drain.warm,
                peer("graphile drain"),
                "graphile-worker (target ≥ 10×)"
            ),
            list(&warm_runs)
        ),
    );
    row(
        "spine drain, cold (+ connect, first calls)",
        drain.cold,
        format!(
            "{}; median of {}",
            peer_ratio(drain.cold, peer("pgboss drain"), "pg-boss"),
            list(&cold_runs)
        ),
    );
    for (name, value) in &peers {
        row(&format!("peer: {name}"), *value, String::new());
    }
    let (plain, notified) = (median(&mut plain_runs), median(&mut notify_runs));
    row(
        "raw INSERT in a transaction (-M prepared)",
        plain,
        format!("median of {}", list(&plain_runs)),
    );
    row(
        "  the same + pg_notify (the wake-up)",
        notified,
        format!(
            "{:.0}% of it; median of {}",
            100.0 * notified / plain,
            list(&notify_runs)
        ),
    );

    println!("\npickup latency, commit → handler start (http job to a hook here):");
    for p in crate::pickup::run(&s.database_url, &s.worker_bin).await? {
        println!(
            "{:<44} p50 {:>7.2} ms  p99 {:>7.2} ms  ({}/{} started)",
            p.label,
            p.p50.as_secs_f64() * 1e3,
            p.p99.as_secs_f64() * 1e3,
            p.started,
            p.sent
        );
    }
    match s.peers_dir.as_deref() {
        Some(dir) => {
            for line in crate::pickup::graphile(dir, &s.database_url) {
                println!("peer: {line}");
            }
        }
        None => println!("SKIP graphile-worker pickup: no peers directory"),
    }
    Ok(())
}

fn list(runs: &[f64]) -> String {
    runs.iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn peer_ratio(ours: f64, theirs: Option<f64>, who: &str) -> String {
    match theirs {
        Some(t) if t > 0.0 => format!("{:.2}× {who}", ours / t),
        _ => format!("{who}: not measured"),
    }
}

async fn new_queue(db: &Client) -> anyhow::Result<String> {
    let queue = format!("bench_{}", Uuid::new_v4().simple());
    db.execute("SELECT spine.create_queue($1, retention => '0')", &[&queue])
        .await?;
    Ok(queue)
}

async fn drop_queue(db: &Client, queue: &str) -> anyhow::Result<()> {
    db.execute("DELETE FROM spine.jobs WHERE queue = $1", &[&queue])
        .await?;
    db.execute("DELETE FROM spine.queues WHERE name = $1", &[&queue])
        .await?;
    Ok(())
}

async fn db(url: &str) -> anyhow::Result<Client> {
    let client = spine_tests::connect_to(url).await?;
    Ok(client)
}

/// Runs one statement for 5 s with pgbench (one client, the given `-M` protocol)
/// and returns its tps.
async fn pgbench(s: &Settings, protocol: &str, statement: &str) -> anyhow::Result<f64> {
    let script = std::env::temp_dir().join(format!("spine-bench-{}.sql", Uuid::new_v4().simple()));
    std::fs::write(&script, format!("{statement};\n"))?;
    let out = Command::new(format!("{}/pgbench", s.pg_bindir))
        .args(["-n", "-M", protocol, "-c", "1", "-j", "1", "-T", "5", "-f"])
        .arg(&script)
        .arg(&s.database_url)
        .output()?;
    std::fs::remove_file(&script).ok();
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output: {text}"))
}

fn median(runs: &mut [f64]) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

async fn batch_enqueue(db: &Client, queue: &str, n: usize) -> anyhow::Result<f64> {
    let payloads: Vec<serde_json::Value> =
        (0..1000).map(|i| serde_json::json!({ "i": i })).collect();
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let k = (n - done).min(1000);
        db.execute(
            "SELECT spine.enqueue_batch($1, $2)",
            &[&queue, &payloads[..k].to_vec()],
        )
        .await?;
        done += k;
    }
    Ok(per_second(n, started.elapsed()))
}

/// Rates of one timed run of `LOOPS` sessions: `warm` is timed from the moment all
/// sessions are connected and have prepared (and, for the drain, called each
/// function once: a running worker's state); `cold` also counts that setup.
struct Rates {
    warm: f64,
    cold: f64,
}

/// Lets `LOOPS` sessions start their timed work together. Every session reaches
/// the start line, also one whose setup failed (it then returns the error), so a
/// failed connect ends the run with that error instead of leaving the others
/// waiting for it. Made before the sessions connect: the `cold` rate counts from then.
#[derive(Clone)]
struct StartLine {
    barrier: std::sync::Arc<tokio::sync::Barrier>,
    made: Instant,
}

impl StartLine {
    fn new() -> Self {
        Self {
            barrier: std::sync::Arc::new(tokio::sync::Barrier::new(LOOPS + 1)),
            made: Instant::now(),
        }
    }

    async fn reached<T>(&self, setup: anyhow::Result<T>) -> anyhow::Result<T> {
        self.barrier.wait().await;
        setup
    }
}

/// Awaits the sessions' job counts after the start line; the rates over `total`.
async fn timed_loops(
    start: StartLine,
    loops: Vec<tokio::task::JoinHandle<anyhow::Result<usize>>>,
    total: usize,
) -> anyhow::Result<Rates> {
    start.barrier.wait().await;
    let warm_start = Instant::now();
    let mut done = 0;
    for l in loops {
        done += l.await??;
    }
    let (warm, cold) = (warm_start.elapsed(), start.made.elapsed());
    anyhow::ensure!(done == total, "drained {done} of {total} jobs");
    Ok(Rates {
        warm: per_second(done, warm),
        cold: per_second(done, cold),
    })
}

async fn drain(url: &str, queue: &str, total: usize) -> anyhow::Result<Rates> {
    let admin = db(url).await?;
    let warm_queue = new_queue(&admin).await?;
    let start = StartLine::new();
    let mut loops = Vec::new();
    for l in 0..LOOPS {
        let (url, queue, warm_queue, start) = (
            url.to_string(),
            queue.to_string(),
            warm_queue.clone(),
            start.clone(),
        );
        let worker = format!("bench-{l}");
        loops.push(tokio::spawn(async move {
            let setup = async {
                let db = db(&url).await?;
                let fetch = db
                    .prepare("SELECT id FROM spine.fetch_jobs(ARRAY[$1], $2, $3)")
                    .await?;
                let complete = db.prepare("SELECT spine.complete_jobs($1)").await?;
                // The first call of each function compiles it and plans its
                // statements in this session: a cost a running worker has paid.
                db.query(&fetch, &[&warm_queue, &worker, &FETCH]).await?;
                db.query_one(&complete, &[&Vec::<i64>::new()]).await?;
                anyhow::Ok((db, fetch, complete))
            }
            .await;
            let (db, fetch, complete) = start.reached(setup).await?;
            let mut done = 0usize;
            loop {
                let ids: Vec<i64> = db
                    .query(&fetch, &[&queue, &worker, &FETCH])
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if ids.is_empty() {
                    return anyhow::Ok(done);
                }
                db.query_one(&complete, &[&ids]).await?;
                done += ids.len();
            }
        }));
    }
    let rates = timed_loops(start, loops, total).await;
    drop_queue(&admin, &warm_queue).await?;
    rates
}

/// The raw limit, timed like the drain's `warm` figure (connected and prepared).
async fn raw_skip_locked_delete(url: &str, n: usize) -> anyhow::Result<f64> {
    let admin = db(url).await?;
    let table = format!("spine_bench_q_{}", Uuid::new_v4().simple());
    admin.batch_execute(&format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, payload jsonb NOT NULL); \
         INSERT INTO {table} (payload) SELECT jsonb_build_object('i', i) FROM generate_series(1, {n}) i; "
    ))
    .await?;
    // A separate statement: VACUUM cannot run in the multi-statement batch's transaction.
    admin
        .batch_execute(&format!("VACUUM ANALYZE {table}"))
        .await?;
    let start = StartLine::new();
    let mut loops = Vec::new();
    for _ in 0..LOOPS {
        let (url, table, start) = (url.to_string(), table.clone(), start.clone());
        loops.push(tokio::spawn(async move {
            let setup = async {
                let db = db(&url).await?;
                let stmt = db
                    .prepare(&format!(
                        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id \
                         LIMIT {FETCH} FOR UPDATE SKIP LOCKED) RETURNING id"
                    ))
                    .await?;
                anyhow::Ok((db, stmt))
            }
            .await;
            let (db, stmt) = start.reached(setup).await?;
            let mut done = 0usize;
            loop {
                let k = db.query(&stmt, &[]).await?.len();
                if k == 0 {
                    return anyhow::Ok(done);
                }
                done += k;
            }
        }));
    }
    let rates = timed_loops(start, loops, n).await;
    admin.batch_execute(&format!("DROP TABLE {table}")).await?;
    Ok(rates?.warm)
}

/// Runs the shared peer scripts and collects their figures, e.g.
/// ("pgboss drain", 19000.0). A peer that fails is reported and left out.
fn peer_figures(dir: &str, url: &str, n: usize) -> Vec<(String, f64)> {
    let mut figures = Vec::new();
    for script in ["pgboss.mjs", "graphile.mjs"] {
        let started = Instant::now();
        let out = Command::new("node")
            .arg(script)
            .arg(url)
            .arg(n.to_string())
            .current_dir(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                // The figures only: graphile-worker also logs every task it runs.
                for line in text
                    .lines()
                    .filter(|l| l.starts_with("pgboss ") || l.starts_with("graphile "))
                {
                    println!("{line}");
                    let words: Vec<&str> = line.split_whitespace().collect();
                    // "pgboss drain 19000 jobs/s (…)" → ("pgboss drain", 19000)
                    if words.len() >= 3 {
                        if let Ok(v) = words[2].parse::<f64>() {
                            figures.push((format!("{} {}", words[0], words[1]), v));
                        }
                    }
                }
            }
            Ok(out) => println!(
                "peer {script} failed after {:?}: {}",
                started.elapsed(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
            Err(e) => println!("peer {script} not run: {e}"),
        }
    }
    figures
}
