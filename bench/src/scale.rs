//! `scale`: the outbox at volume — `spine.events` partitioned by day with
//! retention by dropping partitions, next to the same rows in an unpartitioned
//! copy of the 0.1.0 tables purged by `DELETE`, in one database, in the same run.
//!
//! Simulated days (the partition key is a transaction's start, so the benchmark
//! writes rows with the day's times instead of waiting for days): each day
//! writes `events / days` events, 10 per transaction, into both layouts (the
//! same rows, staged once), moves a sink to 1,000 events behind the head (a relay
//! that keeps up), and applies a retention of `keep_days`: Spine's
//! `spine.create_event_partitions` / `spine.drop_event_partitions` for the
//! partitioned tables, 0.1.0's `DELETE` for the unpartitioned ones, with
//! autovacuum running as configured. Printed per day: the bytes of each layout,
//! the relay's read of the next 1,000 events (`events_after`, p50 of 50 reads,
//! the layouts alternating)
//! and the time each retention took.
//!
//! Then the commit ceiling: 1-16 clients each committing one-event transactions
//! (`spine.emit`), next to the same clients committing a one-row INSERT each.
//!
//! The writes bypass `spine.emit` (`session_replication_role = replica`, commit
//! rows made by hand): the benchmark is about the tables' shape over time; the
//! emit path has its own figures (`bench relay`).

use crate::stats::quantile;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

#[derive(Debug, clap::Args)]
pub struct Settings {
    /// A database of the cluster to create the benchmark's own database from
    /// (the dev stack's).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "DATABASE_URL"
    )]
    pub database_url: String,
    /// Events written in all, over `days`.
    #[arg(long, default_value_t = 10_000_000)]
    pub events: u64,
    /// Simulated days.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Retention in days.
    #[arg(long, default_value_t = 7)]
    pub keep_days: u32,
    /// Keep the benchmark's database afterwards, to look into it.
    #[arg(long)]
    pub keep_database: bool,
    /// Seconds per figure of the commit ceiling (0 skips it).
    #[arg(long, default_value_t = 3)]
    pub ceiling_seconds: u64,
}

const DATABASE: &str = "spine_bench_scale";
const EVENTS_PER_TX: i64 = 10;
/// Events the simulated relay is behind the head: what each read fetches.
const BACKLOG: i64 = 1_000;
const READS: usize = 50;

/// The 0.1.0 outbox, unpartitioned, and its reader and retention as 0.1.0 had
/// them: the baseline.
const FLAT: &str = "
CREATE SCHEMA flat;
CREATE TABLE flat.events (
    seq bigint PRIMARY KEY, id uuid NOT NULL UNIQUE, type text NOT NULL,
    source text NOT NULL DEFAULT '/spine', subject text, owner_id uuid,
    data jsonb NOT NULL DEFAULT '{}', correlation_id uuid NOT NULL, causation_id uuid,
    txid xid8 NOT NULL, occurred_at timestamptz NOT NULL);
CREATE INDEX ON flat.events (txid, seq);
CREATE INDEX ON flat.events (owner_id, seq);
CREATE TABLE flat.event_commits (txid xid8 PRIMARY KEY, commit_seq bigint UNIQUE, committed_at timestamptz);
CREATE FUNCTION flat.events_after(after_commit_seq bigint, after_seq bigint, max_events integer)
RETURNS TABLE (commit_seq bigint, seq bigint, id uuid, type text, source text, subject text,
               owner_id uuid, data jsonb, correlation_id uuid, causation_id uuid,
               occurred_at timestamptz, committed_at timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.commit_seq, e.seq, e.id, e.type, e.source, e.subject, e.owner_id, e.data,
           e.correlation_id, e.causation_id, e.occurred_at, c.committed_at
      FROM (SELECT k.commit_seq, k.txid, k.committed_at FROM flat.event_commits k
             WHERE k.commit_seq >= after_commit_seq ORDER BY k.commit_seq LIMIT max_events) AS c
      CROSS JOIN LATERAL (
            SELECT ev.seq, ev.id, ev.type, ev.source, ev.subject, ev.owner_id, ev.data,
                   ev.correlation_id, ev.causation_id, ev.occurred_at
              FROM flat.events ev
             WHERE ev.txid = c.txid AND (c.commit_seq, ev.seq) > (after_commit_seq, after_seq)
             ORDER BY ev.seq LIMIT max_events) AS e
     ORDER BY c.commit_seq, e.seq LIMIT max_events
$$;
CREATE UNLOGGED TABLE flat.staged_commits (txid xid8, commit_seq bigint, at timestamptz);
CREATE UNLOGGED TABLE flat.staged_events (seq bigint, id uuid, subject text, data jsonb,
                                          correlation_id uuid, txid xid8, at timestamptz);
";

/// One day's rows, made once for both layouts: $1 day start, $2 events.
const STAGE: &str = "
TRUNCATE flat.staged_commits, flat.staged_events;
INSERT INTO flat.staged_commits
SELECT (1000000000000 + nextval('spine.event_commit_seq'))::text::xid8, currval('spine.event_commit_seq'),
       $1::timestamptz + (g * (86400.0 / ($2 / 10)) * interval '1 second')
  FROM generate_series(0, $2 / 10 - 1) g;
INSERT INTO flat.staged_events
SELECT nextval(pg_get_serial_sequence('spine.events', 'seq')), gen_random_uuid(), 'thing/' || i,
       jsonb_build_object('i', i, 'note', repeat('x', 100)), gen_random_uuid(), c.txid, c.at
  FROM flat.staged_commits c, generate_series(1, 10) i
 ORDER BY c.commit_seq, i;
";

async fn connect(url: &str) -> anyhow::Result<Client> {
    Ok(spine_tests::connect_to(url).await?)
}

/// One simulated day's figures, for the summary.
struct Day {
    part_bytes: i64,
    flat_bytes: i64,
    read_part_ms: f64,
    read_flat_ms: f64,
}

fn mb(bytes: i64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// p50 of the relay's read of the next BACKLOG events through each layout's
/// `events_after`, the two reads alternating so that both see the same moment
/// (autovacuum, hint bits of the day's new rows).
async fn read_p50s(db: &Client, cursor: i64) -> anyhow::Result<(Duration, Duration)> {
    let part = db
        .prepare("SELECT count(*) FROM spine.events_after($1, 0, 1000)")
        .await?;
    let flat = db
        .prepare("SELECT count(*) FROM flat.events_after($1, 0, 1000)")
        .await?;
    let (mut part_samples, mut flat_samples) = (Vec::new(), Vec::new());
    for _ in 0..READS {
        for (read, samples) in [(&part, &mut part_samples), (&flat, &mut flat_samples)] {
            let t = Instant::now();
            let n: i64 = db.query_one(read, &[&cursor]).await?.get(0);
            samples.push(t.elapsed());
            anyhow::ensure!(n == BACKLOG, "read {n} events, not {BACKLOG}");
        }
    }
    Ok((
        quantile(&mut part_samples, 0.5),
        quantile(&mut flat_samples, 0.5),
    ))
}

async fn read_p50s_warm(db: &Client, cursor: i64) -> anyhow::Result<()> {
    for function in ["spine.events_after", "flat.events_after"] {
        db.query_one(
            &format!("SELECT count(*) FROM {function}($1, 0, 1000)"),
            &[&cursor],
        )
        .await?;
    }
    Ok(())
}

async fn timed(db: &Client, sql: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    db.batch_execute(sql).await?;
    Ok(t.elapsed())
}

pub async fn run(s: Settings) -> anyhow::Result<()> {
    anyhow::ensure!(
        s.days > s.keep_days,
        "--days must exceed --keep-days to see retention"
    );
    let per_day = (s.events / u64::from(s.days)) as i64 / EVENTS_PER_TX * EVENTS_PER_TX;
    let admin = connect(&s.database_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await?;
    let (base, _) = s.database_url.rsplit_once('/').expect("a database URL");
    let url = format!("{base}/{DATABASE}");
    let db = connect(&url).await?;
    db.batch_execute(&format!(
        "CREATE EXTENSION spine CASCADE; {FLAT} \
         SET spine.event_partition_interval = '1 day'; \
         SET session_replication_role = replica; \
         SELECT spine.ensure_sink('bench', 'bench')"
    ))
    .await?;
    let first_day: String = db
        .query_one(
            "SELECT (date_trunc('day', now()) - make_interval(days => $1))::text",
            &[&(s.days as i32 + 1)],
        )
        .await?
        .get(0);
    println!(
        "scale: {} events over {} simulated days ({per_day}/day, {EVENTS_PER_TX} per transaction), \
         retention {} days, relay {BACKLOG} events behind the head",
        per_day * i64::from(s.days),
        s.days,
        s.keep_days
    );
    println!(
        "{:>4} {:>10} | {:>9} {:>9} | {:>10} {:>10} | {:>9} {:>9} | {:>8} {:>8} | {:>10}",
        "day",
        "retained",
        "part MB",
        "flat MB",
        "read part",
        "read flat",
        "write pt",
        "write fl",
        "purge pt",
        "purge fl",
        "flat dead"
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for day in 0..s.days {
        let day_start: String = db
            .query_one(
                "SELECT ($1::text::timestamptz + make_interval(days => $2))::text",
                &[&first_day, &(day as i32)],
            )
            .await?
            .get(0);
        let day_end: String = db
            .query_one(
                "SELECT ($1::text::timestamptz + interval '1 day')::text",
                &[&day_start],
            )
            .await?
            .get(0);
        db.execute(
            "SELECT spine.create_event_partitions($1::text::timestamptz)",
            &[&day_start],
        )
        .await?;
        db.batch_execute(
            &STAGE
                .replace("$1", &format!("'{day_start}'"))
                .replace("$2", &per_day.to_string()),
        )
        .await?;
        let write_part = timed(
            &db,
            "INSERT INTO spine.event_commits (txid, commit_seq, committed_at, tx_started_at) \
               SELECT txid, commit_seq, at, at FROM flat.staged_commits; \
             INSERT INTO spine.events \
                    (seq, id, type, subject, data, correlation_id, txid, occurred_at, tx_started_at) \
             OVERRIDING SYSTEM VALUE \
               SELECT seq, id, 'bench.ThingHappened', subject, data, correlation_id, txid, at, at \
                 FROM flat.staged_events",
        )
        .await?;
        let write_flat = timed(
            &db,
            "INSERT INTO flat.event_commits SELECT txid, commit_seq, at FROM flat.staged_commits; \
             INSERT INTO flat.events (seq, id, type, subject, data, correlation_id, txid, occurred_at) \
               SELECT seq, id, 'bench.ThingHappened', subject, data, correlation_id, txid, at \
                 FROM flat.staged_events",
        )
        .await?;
        // The relay keeps up to BACKLOG events behind the head.
        let cursor: i64 = db
            .query_one(
                "SELECT max(commit_seq) - $1::bigint / 10 + 1 FROM flat.staged_commits",
                &[&BACKLOG],
            )
            .await?
            .get(0);
        db.execute(
            "UPDATE spine.sinks SET cursor_commit_seq = $1, cursor_seq = 0 WHERE name = 'bench'",
            &[&cursor],
        )
        .await?;
        let keep = format!("{} days", s.keep_days);
        let purge_part = timed(
            &db,
            &format!(
                "SELECT spine.drop_event_partitions('{keep}', '{day_end}'); \
                 SELECT spine.create_event_partitions('{day_end}')"
            ),
        )
        .await?;
        let purge_flat = timed(
            &db,
            &format!(
                "WITH old AS (DELETE FROM flat.event_commits \
                               WHERE commit_seq < {cursor} AND committed_at < '{day_end}'::timestamptz - '{keep}'::interval \
                               RETURNING txid) \
                 DELETE FROM flat.events e USING old WHERE e.txid = old.txid"
            ),
        )
        .await?;
        // Each read once, unmeasured: the first after a day's bulk write sets the
        // new rows' hint bits.
        read_p50s_warm(&db, cursor).await?;
        let (read_part, read_flat) = read_p50s(&db, cursor).await?;
        let row = db
            .query_one(
                "SELECT (SELECT sum(pg_total_relation_size(relid))::bigint FROM pg_partition_tree('spine.events') WHERE isleaf) \
                      + (SELECT sum(pg_total_relation_size(relid))::bigint FROM pg_partition_tree('spine.event_commits') WHERE isleaf), \
                        pg_total_relation_size('flat.events') + pg_total_relation_size('flat.event_commits'), \
                        (SELECT count(*) FROM spine.events), \
                        (SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables \
                          WHERE relid IN ('flat.events'::regclass, 'flat.event_commits'::regclass))",
                &[],
            )
            .await?;
        let (part_bytes, flat_bytes, retained, dead): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        println!(
            "{:>4} {:>10} | {:>9.0} {:>9.0} | {:>8.2}ms {:>8.2}ms | {:>8.2}s {:>8.2}s | {:>7.2}s {:>7.2}s | {:>10}",
            day + 1,
            retained,
            mb(part_bytes),
            mb(flat_bytes),
            read_part.as_secs_f64() * 1e3,
            read_flat.as_secs_f64() * 1e3,
            write_part.as_secs_f64(),
            write_flat.as_secs_f64(),
            purge_part.as_secs_f64(),
            purge_flat.as_secs_f64(),
            dead
        );
        rows.push(Day {
            part_bytes,
            flat_bytes,
            read_part_ms: read_part.as_secs_f64() * 1e3,
            read_flat_ms: read_flat.as_secs_f64() * 1e3,
        });
    }
    let steady = &rows[s.keep_days as usize + 1..];
    let range = |f: fn(&Day) -> f64| {
        let values = steady.iter().map(f);
        (
            values.clone().fold(f64::MAX, f64::min),
            values.fold(f64::MIN, f64::max),
        )
    };
    let (part_mb, flat_mb) = (range(|d| mb(d.part_bytes)), range(|d| mb(d.flat_bytes)));
    let (part_ms, flat_ms) = (range(|d| d.read_part_ms), range(|d| d.read_flat_ms));
    println!(
        "after retention starts (days {}-{}): partitioned {:.0}-{:.0} MB, unpartitioned {:.0}-{:.0} MB; \
         read p50 partitioned {:.2}-{:.2} ms, unpartitioned {:.2}-{:.2} ms ({:.0} s in all)",
        s.keep_days + 2,
        s.days,
        part_mb.0,
        part_mb.1,
        flat_mb.0,
        flat_mb.1,
        part_ms.0,
        part_ms.1,
        flat_ms.0,
        flat_ms.1,
        started.elapsed().as_secs_f64()
    );
    drop(db);
    if s.ceiling_seconds > 0 {
        commit_ceiling(&url, s.ceiling_seconds).await?;
    }
    if !s.keep_database {
        admin
            .batch_execute(&format!("DROP DATABASE {DATABASE} WITH (FORCE)"))
            .await?;
    }
    Ok(())
}

/// Emitting transactions commit one at a time (commit order: `commit_seq` is
/// stamped under one advisory lock, held until the commit is visible, so also
/// across its WAL flush). Their ceiling, next to the same clients committing a
/// plain one-row INSERT each, in the benchmark's database.
async fn commit_ceiling(url: &str, seconds: u64) -> anyhow::Result<()> {
    let db = connect(url).await?;
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS flat.plain (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, data jsonb); \
         SELECT spine.create_event_partitions()",
    )
    .await?;
    println!();
    println!(
        "commit ceiling: one-event transactions vs one-row INSERT transactions, {seconds} s each"
    );
    println!(
        "{:>8} | {:>14} | {:>14} | {:>6}",
        "clients", "emit tx/s", "insert tx/s", "ratio"
    );
    for clients in [1usize, 2, 4, 8, 16] {
        let emit = commits_per_second(
            url,
            clients,
            seconds,
            "SELECT spine.emit('bench.PingSent', '{}')",
        )
        .await?;
        let plain = commits_per_second(
            url,
            clients,
            seconds,
            "INSERT INTO flat.plain (data) VALUES ('{}')",
        )
        .await?;
        println!(
            "{clients:>8} | {emit:>14.0} | {plain:>14.0} | {:>5.0}%",
            emit / plain * 100.0
        );
    }
    Ok(())
}

async fn commits_per_second(
    url: &str,
    clients: usize,
    seconds: u64,
    sql: &'static str,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let db = connect(&url).await?;
            let statement = db.prepare(sql).await?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                db.execute(&statement, &[]).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
