//! The job queue's SQL surface against the real cluster: ordering, delays,
//! idempotency, retries → dead letter → redrive, lease expiry, concurrency caps under
//! concurrent fetchers, schedules, RLS and bad input. Each test has its own queue.

use serde_json::json;
use spine_tests::{act_as, connect, one, sqlstate};
use std::time::Duration;
use tokio_postgres::Client;
use uuid::Uuid;

async fn new_queue(db: &Client, cap: Option<i32>) -> String {
    let name = format!("q{}", Uuid::new_v4().simple());
    db.execute(
        "SELECT spine.create_queue($1, $2, user_enqueue => true)",
        &[&name, &cap],
    )
    .await
    .unwrap();
    name
}

async fn enqueue(db: &Client, queue: &str, payload: serde_json::Value, priority: &str) -> i64 {
    one(
        db,
        "SELECT spine.enqueue($1, $2, $3::text::spine.job_priority)",
        &[&queue, &payload, &priority],
    )
    .await
}

/// (id, attempts) of the jobs a fetch leased, in the order fetch_jobs returned them.
async fn fetch(db: &Client, queue: &str, worker: &str, n: i32, lease: &str) -> Vec<(i64, i32)> {
    db.query(
        "SELECT id, attempts FROM spine.fetch_jobs(ARRAY[$1], $2, $3, $4::text::interval)",
        &[&queue, &worker, &n, &lease],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Enqueues `n` jobs with payloads `{"i": 1}` … `{"i": n}` in one batch.
async fn enqueue_numbered(db: &Client, queue: &str, n: i64) {
    db.execute(
        "SELECT spine.enqueue_batch($1, array_agg(jsonb_build_object('i', i))) FROM generate_series(1, $2::bigint) i",
        &[&queue, &n],
    )
    .await
    .unwrap();
}

/// How many live jobs of `queue` the connection sees (RLS applies to users).
async fn live_jobs(db: &impl tokio_postgres::GenericClient, queue: &str) -> i64 {
    one(
        db,
        "SELECT count(*) FROM spine.jobs WHERE queue = $1",
        &[&queue],
    )
    .await
}

/// Leases the one ready job of `queue` and completes it; its id.
async fn lease_and_complete(db: &Client, queue: &str) -> i64 {
    let leased = fetch(db, queue, "w", 1, "30 s").await;
    assert_eq!(leased.len(), 1, "one job to lease in {queue}");
    let done: i64 = one(
        db,
        "SELECT spine.complete_jobs(ARRAY[$1::bigint])",
        &[&leased[0].0],
    )
    .await;
    assert_eq!(done, 1);
    leased[0].0
}

/// realtime before interactive before background, then run_at, then id; a job
/// whose run_at is in the future is not served until then.
#[tokio::test]
async fn serves_by_priority_then_time_and_respects_run_at() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let bg = enqueue(&db, &q, json!({"n": 1}), "background").await;
    let inter1 = enqueue(&db, &q, json!({"n": 2}), "interactive").await;
    let rt = enqueue(&db, &q, json!({"n": 3}), "realtime").await;
    let inter2 = enqueue(&db, &q, json!({"n": 4}), "interactive").await;
    let later: i64 = one(
        &db,
        "SELECT spine.enqueue($1, '{}', 'realtime', now() + interval '600 ms')",
        &[&q],
    )
    .await;
    let got: Vec<i64> = fetch(&db, &q, "w", 10, "30 s")
        .await
        .into_iter()
        .map(|j| j.0)
        .collect();
    assert_eq!(got, vec![rt, inter1, inter2, bg]);
    assert!(
        fetch(&db, &q, "w", 10, "30 s").await.is_empty(),
        "delayed job not yet due"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(fetch(&db, &q, "w", 10, "30 s").await, vec![(later, 1)]);
}

/// The same (queue, idempotency key) returns the existing job while it is live and
/// after it completed (for the queue's retention); a batch returns ids in order.
#[tokio::test]
async fn idempotency_keys_hold_while_live_and_archived() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let key = "event-0192";
    let first: i64 = one(
        &db,
        "SELECT spine.enqueue($1, '{}', idempotency_key => $2)",
        &[&q, &key],
    )
    .await;
    let again: i64 = one(
        &db,
        "SELECT spine.enqueue($1, '{\"x\":1}', idempotency_key => $2)",
        &[&q, &key],
    )
    .await;
    assert_eq!(first, again);
    fetch(&db, &q, "w", 1, "30 s").await;
    let done: i64 = one(
        &db,
        "SELECT spine.complete_jobs(ARRAY[$1::bigint])",
        &[&first],
    )
    .await;
    assert_eq!(done, 1);
    let replay: i64 = one(
        &db,
        "SELECT spine.enqueue($1, '{}', idempotency_key => $2)",
        &[&q, &key],
    )
    .await;
    assert_eq!(replay, first, "a replay after completion enqueues nothing");
    let live = live_jobs(&db, &q).await;
    assert_eq!(live, 0);

    let ids: Vec<i64> = one(
        &db,
        "SELECT spine.enqueue_batch($1, ARRAY['{\"i\":1}', '{\"i\":2}', '{\"i\":3}']::jsonb[])",
        &[&q],
    )
    .await;
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // Each id is its payload's job.
    let order: Vec<i32> = spine_tests::column(
        &db,
        "SELECT (j.payload->>'i')::int FROM unnest($1::bigint[]) WITH ORDINALITY AS u(id, n) \
           JOIN spine.jobs j ON j.id = u.id ORDER BY u.n",
        &[&ids],
    )
    .await;
    assert_eq!(order, [1, 2, 3]);
}

/// A failing job is retried after a backoff, goes dead after max_attempts with its
/// whole error history, and redrive puts it back with fresh attempts.
#[tokio::test]
async fn retries_then_dead_letter_then_redrive() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let id: i64 = one(
        &db,
        "SELECT spine.enqueue($1, '{}', max_attempts => 3)",
        &[&q],
    )
    .await;
    // Attempt 1 fails with the default backoff: not ready again at once.
    assert_eq!(fetch(&db, &q, "w", 1, "30 s").await, vec![(id, 1)]);
    let state: String = one(
        &db,
        "SELECT spine.fail_job($1, 'smtp timeout')::text",
        &[&id],
    )
    .await;
    assert_eq!(state, "retrying");
    let wait: f64 = one(
        &db,
        "SELECT extract(epoch FROM run_at - now())::float8 FROM spine.jobs WHERE id = $1",
        &[&id],
    )
    .await;
    assert!(
        (0.4..1.6).contains(&wait),
        "first backoff ≈ 1 s ± jitter, got {wait}"
    );
    assert!(fetch(&db, &q, "w", 1, "30 s").await.is_empty());

    // Attempts 2 and 3 fail with an explicit retry_in of 0.
    for attempt in 2..=3 {
        db.execute("UPDATE spine.jobs SET run_at = now() WHERE id = $1", &[&id])
            .await
            .unwrap();
        assert_eq!(fetch(&db, &q, "w", 1, "30 s").await, vec![(id, attempt)]);
        db.query_one(
            "SELECT spine.fail_job($1, $2, '0 s')",
            &[&id, &format!("fail {attempt}")],
        )
        .await
        .unwrap();
    }
    let row = db
        .query_one(
            "SELECT state::text, jsonb_array_length(errors), errors->2->>'error' FROM spine.jobs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "dead");
    assert_eq!(row.get::<_, i32>(1), 3);
    assert_eq!(row.get::<_, String>(2), "fail 3");
    assert!(
        fetch(&db, &q, "w", 1, "30 s").await.is_empty(),
        "dead jobs are not served"
    );

    let stats = db
        .query_one(
            "SELECT sum(dead)::bigint FROM spine.queue_stats() WHERE queue = $1",
            &[&q],
        )
        .await
        .unwrap();
    assert_eq!(stats.get::<_, i64>(0), 1);
    let redriven: i64 = one(&db, "SELECT spine.redrive($1)", &[&q]).await;
    assert_eq!(redriven, 1);
    assert_eq!(fetch(&db, &q, "w", 1, "30 s").await, vec![(id, 1)]);
}

/// A worker that stops heartbeating loses its lease: the job is served again to
/// another worker, the history says why, and only one completion counts.
#[tokio::test]
async fn expired_lease_returns_the_job_once() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let id = enqueue(&db, &q, json!({}), "interactive").await;
    assert_eq!(fetch(&db, &q, "crashed", 1, "200 ms").await, vec![(id, 1)]);
    assert!(
        fetch(&db, &q, "other", 1, "30 s").await.is_empty(),
        "still leased"
    );
    // Heartbeats keep it; then they stop.
    let held: i64 = one(
        &db,
        "SELECT spine.heartbeat(ARRAY[$1::bigint], '300 ms')",
        &[&id],
    )
    .await;
    assert_eq!(held, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fetch(&db, &q, "other", 1, "30 s").await, vec![(id, 2)]);
    let why: String = one(
        &db,
        "SELECT errors->0->>'error' FROM spine.jobs WHERE id = $1",
        &[&id],
    )
    .await;
    assert!(
        why.contains("lease expired") && why.contains("crashed"),
        "{why}"
    );
    // The crashed worker coming back cannot complete or fail the new holder's run.
    let stale: i64 = one(
        &db,
        "SELECT spine.complete_jobs(ARRAY[$1::bigint], 'crashed')",
        &[&id],
    )
    .await;
    assert_eq!(stale, 0);
    let err = db
        .query_one(
            "SELECT spine.fail_job($1, 'late', worker => 'crashed')",
            &[&id],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("55000"));
    assert!(err
        .as_db_error()
        .unwrap()
        .message()
        .contains("held by worker other"));
    let first: i64 = one(
        &db,
        "SELECT spine.complete_jobs(ARRAY[$1::bigint], 'other')",
        &[&id],
    )
    .await;
    let second: i64 = one(&db, "SELECT spine.complete_jobs(ARRAY[$1::bigint])", &[&id]).await;
    assert_eq!((first, second), (1, 0));
    let archived: i64 = one(
        &db,
        "SELECT count(*) FROM spine.jobs_archive WHERE id = $1",
        &[&id],
    )
    .await;
    assert_eq!(archived, 1);
}

/// Four fetchers racing on a queue capped at 3 never hold more than 3 jobs, and
/// no job is leased twice.
#[tokio::test]
async fn concurrency_cap_holds_under_concurrent_fetchers() {
    let db = connect().await;
    let q = new_queue(&db, Some(3)).await;
    enqueue_numbered(&db, &q, 40).await;
    let mut fetchers = Vec::new();
    for w in 0..4 {
        let q = q.clone();
        fetchers.push(tokio::spawn(async move {
            let db = connect().await;
            let mut mine = Vec::new();
            for _ in 0..10 {
                mine.extend(
                    fetch(&db, &q, &format!("w{w}"), 2, "30 s")
                        .await
                        .into_iter()
                        .map(|j| j.0),
                );
            }
            mine
        }));
    }
    let mut leased = Vec::new();
    for f in fetchers {
        leased.extend(f.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = leased.iter().collect();
    assert_eq!(leased.len(), 3, "cap of 3 running jobs: {leased:?}");
    assert_eq!(unique.len(), 3);
    // Completing one makes room for exactly one more.
    db.execute(
        "SELECT spine.complete_jobs(ARRAY[$1::bigint])",
        &[&leased[0]],
    )
    .await
    .unwrap();
    assert_eq!(fetch(&db, &q, "w9", 5, "30 s").await.len(), 1);
}

/// Four loops drain a queue as workers do (fetch a batch, complete it) while one of
/// them hands half of each batch back once (`release_jobs`), so jobs return to the
/// queue while the others fetch: every job is leased by one loop at a time,
/// completed exactly once with one counted attempt, and none is left behind.
#[tokio::test]
async fn concurrent_drain_loops_complete_every_job_once() {
    const JOBS: i64 = 2_000;
    let db = connect().await;
    let q = new_queue(&db, None).await;
    enqueue_numbered(&db, &q, JOBS).await;
    let mut loops = Vec::new();
    for w in 0..4 {
        let q = q.clone();
        loops.push(tokio::spawn(async move {
            let db = connect().await;
            let worker = format!("w{w}");
            let (mut completed, mut released) = (Vec::new(), std::collections::HashSet::new());
            loop {
                let ids: Vec<i64> = fetch(&db, &q, &worker, 25, "30 s")
                    .await
                    .into_iter()
                    .map(|j| j.0)
                    .collect();
                if ids.is_empty() {
                    return completed;
                }
                let (back, done): (Vec<i64>, Vec<i64>) = if w == 0 {
                    ids.iter()
                        .partition(|id| *id % 2 == 0 && released.insert(**id))
                } else {
                    (Vec::new(), ids)
                };
                if !back.is_empty() {
                    let n: i64 =
                        one(&db, "SELECT spine.release_jobs($1, $2)", &[&back, &worker]).await;
                    assert_eq!(n, back.len() as i64, "released what {worker} held");
                }
                let n: i64 =
                    one(&db, "SELECT spine.complete_jobs($1, $2)", &[&done, &worker]).await;
                assert_eq!(n, done.len() as i64, "completed what {worker} held");
                completed.extend(done);
            }
        }));
    }
    let mut completed = Vec::new();
    for l in loops {
        completed.extend(l.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = completed.iter().collect();
    assert_eq!(completed.len() as i64, JOBS, "every job completed once");
    assert_eq!(unique.len() as i64, JOBS);
    let left = live_jobs(&db, &q).await;
    assert_eq!(left, 0, "no job left behind");
    let attempts: Vec<i32> = db
        .query(
            "SELECT DISTINCT attempts FROM spine.jobs_archive WHERE queue = $1",
            &[&q],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        attempts,
        vec![1],
        "a released lease does not count as an attempt"
    );
}

/// A transaction that holds the row of an expired lease (here: a heartbeat not yet
/// committed) does not hold up fetchers of that queue: they skip the row instead of
/// waiting to reclaim it (which, with a capped queue, could also deadlock with the
/// holder fetching next), and the job is reclaimed once the holder is done.
#[tokio::test]
async fn fetchers_do_not_wait_for_a_held_expired_lease() {
    let db = connect().await;
    let q = new_queue(&db, Some(5)).await;
    db.execute("SELECT spine.enqueue($1, '{}')", &[&q])
        .await
        .unwrap();
    let held = fetch(&db, &q, "w", 1, "1 millisecond").await;
    assert_eq!(held.len(), 1);
    let mut holder = connect().await;
    let tx = holder.transaction().await.unwrap();
    // Locks the job's row and leaves its lease expired.
    let n: i64 = one(
        &tx,
        "SELECT spine.heartbeat(ARRAY[$1::bigint], '1 millisecond')",
        &[&held[0].0],
    )
    .await;
    assert_eq!(n, 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let other = connect().await;
    let fetched = tokio::time::timeout(
        Duration::from_secs(10),
        other.query("SELECT id FROM spine.fetch_jobs(ARRAY[$1], 'w2', 1)", &[&q]),
    )
    .await
    .expect("the fetch returns while the row is held")
    .unwrap();
    assert!(fetched.is_empty(), "the held job is not handed out");
    // The holder fetches from the capped queue too: no lock of the other fetcher
    // is left to wait for (this transaction's clock stopped before its own lease
    // ran out, so it sees the job still running).
    let mine = tx
        .query("SELECT id FROM spine.fetch_jobs(ARRAY[$1], 'w', 1)", &[&q])
        .await
        .expect("no deadlock");
    assert!(mine.is_empty());
    tx.commit().await.unwrap();
    let again = fetch(&other, &q, "w2", 1, "30 s").await;
    assert_eq!(again.len(), 1, "reclaimed once the holder is done");
    assert_eq!(again[0], (held[0].0, 2), "its second attempt");
}

/// The plans auto_explain logs for the statements that `sql` runs, including those
/// inside functions, on a new connection: a function plans afresh there, over the
/// table as it is now (in the test database: small).
async fn logged_plans(
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<String> {
    let (db, mut connection) =
        tokio_postgres::connect(&spine_tests::database_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (logs_tx, mut logs) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let Ok(tokio_postgres::AsyncMessage::Notice(notice)) = message {
                let _ = logs_tx.send(notice.message().to_string());
            }
        }
    });
    db.batch_execute(
        "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
         SET auto_explain.log_nested_statements = on; SET client_min_messages = log",
    )
    .await
    .unwrap();
    db.query(sql, params).await.unwrap();
    drop(db);
    reader.await.unwrap();
    let mut plans = Vec::new();
    while let Ok(log) = logs.try_recv() {
        plans.push(log);
    }
    plans
}

/// The logged plan of the statement whose text contains `marker`.
fn plan_of<'a>(plans: &'a [String], marker: &str) -> &'a str {
    plans
        .iter()
        .find(|p| p.contains(marker))
        .unwrap_or_else(|| panic!("no logged plan contains {marker:?}: {plans:#?}"))
}

/// `fetch_jobs` keeps one generic plan per backend, made for the table as it is
/// at the first call. Made over a small table, that plan read the whole table and
/// sorted it, and kept doing so after a burst of jobs (200 ms a fetch over 500k)
/// until the next ANALYZE. The plan must walk the ready index at any size.
#[tokio::test]
async fn fetch_walks_the_ready_index_whatever_the_table_size() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    enqueue_numbered(&db, &q, 3).await;
    let plans = logged_plans("SELECT id FROM spine.fetch_jobs(ARRAY[$1], 'w', 2)", &[&q]).await;
    let fetch = plan_of(&plans, "FOR UPDATE SKIP LOCKED");
    assert!(
        fetch.contains("jobs_ready_idx") && !fetch.contains("Seq Scan on jobs"),
        "{fetch}"
    );
}

/// Completing, heartbeating and releasing jobs probe them by primary key: a plan
/// that walks all running jobs instead made a completion of 100 jobs take ~10 ms
/// with 20k jobs running, against ~1 ms.
#[tokio::test]
async fn completion_heartbeat_and_release_find_jobs_by_primary_key() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    enqueue_numbered(&db, &q, 3).await;
    let ids: Vec<i64> = fetch(&db, &q, "w", 3, "30 s")
        .await
        .into_iter()
        .map(|j| j.0)
        .collect();
    assert_eq!(ids.len(), 3);
    let by_key = |plan: &str| plan.contains("jobs_pkey") && !plan.contains("jobs_running_idx");

    let plans = logged_plans("SELECT spine.heartbeat($1)", &[&ids]).await;
    let heartbeat = plan_of(&plans, "SET lease_until");
    assert!(by_key(heartbeat), "{heartbeat}");

    let plans = logged_plans("SELECT spine.release_jobs($1)", &[&ids[..1].to_vec()]).await;
    let release = plan_of(&plans, "attempts = greatest");
    assert!(by_key(release), "{release}");

    let plans = logged_plans("SELECT spine.complete_jobs($1)", &[&ids[1..].to_vec()]).await;
    let delete = plan_of(&plans, "DELETE FROM spine.jobs");
    assert!(by_key(delete), "{delete}");
    let left = live_jobs(&db, &q).await;
    assert_eq!(left, 1, "two completed, the released one queued again");
}

/// One fetch over several queues honours each queue's cap on its own, and serves
/// the queues' jobs together in priority order.
#[tokio::test]
async fn one_fetch_over_capped_and_uncapped_queues() {
    let db = connect().await;
    let capped = new_queue(&db, Some(2)).await;
    let open = new_queue(&db, None).await;
    for (q, priority) in [(&capped, "realtime"), (&open, "background")] {
        db.execute(
            "SELECT spine.enqueue_batch($1, array_agg(jsonb_build_object('i', i)), $2::text::spine.job_priority) \
               FROM generate_series(1, 5) i",
            &[q, &priority],
        )
        .await
        .unwrap();
    }
    let queues = vec![capped.clone(), open.clone()];
    let rows = db
        .query(
            "SELECT queue, priority::text FROM spine.fetch_jobs($1, 'w', 6)",
            &[&queues],
        )
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let from = |q: &str| got.iter().filter(|(name, _)| name == q).count();
    assert_eq!((from(&capped), from(&open)), (2, 4), "{got:?}");
    assert!(
        got[..2]
            .iter()
            .all(|(q, p)| q == &capped && p == "realtime"),
        "realtime first: {got:?}"
    );
    // The capped queue is full: the next fetch serves only the other one.
    let rows = db
        .query("SELECT queue FROM spine.fetch_jobs($1, 'w', 6)", &[&queues])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), open);
}

/// A schedule becomes a pg_cron job whose command enqueues into the queue, once
/// per firing even if the command runs twice in the same second; unschedule removes it.
#[tokio::test]
async fn schedules_enqueue_through_pg_cron() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let name = format!("s{}", Uuid::new_v4().simple());
    db.execute(
        "SELECT spine.schedule($1, '*/5 * * * *', $2, '{\"digest\":true}', 'background')",
        &[&name, &q],
    )
    .await
    .unwrap();
    let command: String = one(
        &db,
        "SELECT command FROM cron.job WHERE jobname = 'spine:' || $1 AND schedule = '*/5 * * * *'",
        &[&name],
    )
    .await;
    // What pg_cron runs at each firing, run here twice within one second.
    db.batch_execute(&format!("BEGIN; {command}; {command}; COMMIT;"))
        .await
        .unwrap();
    let row = db
        .query_one(
            "SELECT count(*), min(priority::text), min(payload->>'digest') FROM spine.jobs WHERE queue = $1",
            &[&q],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, String>(1), "background");
    assert_eq!(row.get::<_, String>(2), "true");
    let removed: bool = one(&db, "SELECT spine.unschedule($1)", &[&name]).await;
    assert!(removed);
    let left: i64 = one(
        &db,
        "SELECT count(*) FROM cron.job WHERE jobname = 'spine:' || $1",
        &[&name],
    )
    .await;
    assert_eq!(left, 0);
}

/// Users enqueue and see only their own jobs, cannot cancel others', and cannot
/// run the worker's functions; service_role sees everything.
#[tokio::test]
async fn jobs_are_private_to_their_owner() {
    let mut db = connect().await;
    let q = new_queue(&db, None).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let as_user = |who: Uuid| json!({"sub": who.to_string(), "role": "authenticated"});

    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", as_user(alice)).await;
    let id: i64 = one(&t, "SELECT spine.enqueue($1, '{\"to\":\"mum\"}')", &[&q]).await;
    t.commit().await.unwrap();

    // The http queue can reach any URL the worker can: closed to users.
    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", as_user(alice)).await;
    let err = t
        .query_one(
            "SELECT spine.enqueue('http', '{\"url\":\"http://169.254.169.254/\"}')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"), "{err:?}");
    t.rollback().await.unwrap();

    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", as_user(bob)).await;
    let seen = live_jobs(&t, &q).await;
    assert_eq!(seen, 0, "bob sees none of alice's jobs");
    let stats: i64 = one(
        &t,
        "SELECT count(*) FROM spine.queue_stats() WHERE queue = $1",
        &[&q],
    )
    .await;
    assert_eq!(stats, 0);
    let cancelled: bool = one(&t, "SELECT spine.cancel_job($1)", &[&id]).await;
    assert!(!cancelled, "bob cannot cancel alice's job");
    let err = t
        .query("SELECT * FROM spine.fetch_jobs(ARRAY[$1], 'bob', 1)", &[&q])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"));
    t.rollback().await.unwrap();

    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", as_user(alice)).await;
    let owner: Uuid = one(&t, "SELECT owner_id FROM spine.jobs WHERE id = $1", &[&id]).await;
    assert_eq!(owner, alice);
    let cancelled: bool = one(&t, "SELECT spine.cancel_job($1)", &[&id]).await;
    assert!(cancelled);
    t.commit().await.unwrap();

    let t = db.transaction().await.unwrap();
    act_as(&t, "service_role", json!({"role": "service_role"})).await;
    let state: String = one(
        &t,
        "SELECT state::text FROM spine.jobs_archive WHERE id = $1",
        &[&id],
    )
    .await;
    assert_eq!(state, "cancelled");
}

/// A token that names no user (anon, or authenticated without a sub) enqueues
/// nothing, not even into a queue open to users: a job without an owner is a
/// system job, which handlers run with the worker's reach. (anon is refused by its
/// missing grant already; authenticated without a sub by the owner check.)
#[tokio::test]
async fn callers_without_a_user_cannot_enqueue() {
    let mut db = connect().await;
    let q = new_queue(&db, None).await;
    for (role, claims) in [
        ("authenticated", json!({"role": "authenticated"})),
        ("anon", json!({"role": "anon"})),
    ] {
        for (how, sql) in [
            ("enqueue", "SELECT spine.enqueue($1, '{}')"),
            (
                "enqueue with a key",
                "SELECT spine.enqueue($1, '{}', idempotency_key => 'k')",
            ),
            (
                "enqueue_batch",
                "SELECT spine.enqueue_batch($1, ARRAY['{}'::jsonb])::text",
            ),
        ] {
            let t = db.transaction().await.unwrap();
            act_as(&t, role, claims.clone()).await;
            let err = t.query_one(sql, &[&q]).await.unwrap_err();
            assert_eq!(sqlstate(&err), Some("42501"), "{role} {how}: {err:?}");
            t.rollback().await.unwrap();
        }
    }
    let jobs = live_jobs(&db, &q).await;
    assert_eq!(jobs, 0);
}

/// Dropping a queue deletes its finished jobs (maintenance purges the archive by
/// each queue's retention, which a dropped queue no longer has); other queues'
/// archives stay.
#[tokio::test]
async fn dropping_a_queue_deletes_its_archive() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let kept = new_queue(&db, None).await;
    for queue in [&q, &kept] {
        db.execute("SELECT spine.enqueue($1, '{}')", &[queue])
            .await
            .unwrap();
        lease_and_complete(&db, queue).await;
    }
    let archived = "SELECT count(*) FROM spine.jobs_archive WHERE queue = $1";
    let n: i64 = one(&db, archived, &[&q]).await;
    assert_eq!(n, 1);
    db.execute("DELETE FROM spine.queues WHERE name = $1", &[&q])
        .await
        .unwrap();
    let n: i64 = one(&db, archived, &[&q]).await;
    assert_eq!(n, 0, "gone with its queue");
    let n: i64 = one(&db, archived, &[&kept]).await;
    assert_eq!(n, 1, "another queue's archive stays");
}

/// Under REPEATABLE READ a keyed enqueue reads with the transaction's snapshot.
/// A key enqueued and completed after that snapshot fails the enqueue with 40001
/// (retry), instead of enqueueing the key again; a key whose job was live in the
/// snapshot and completed since returns that job.
#[tokio::test]
async fn keyed_enqueue_under_repeatable_read_enqueues_no_duplicate() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let mut rr = connect().await;
    let keyed = "SELECT spine.enqueue($1, '{}', idempotency_key => $2)";
    // A REPEATABLE READ transaction whose snapshot is taken.
    async fn snapshot_taken(db: &mut Client) -> tokio_postgres::Transaction<'_> {
        let tx = db
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .unwrap();
        tx.query_one("SELECT 1", &[]).await.unwrap();
        tx
    }

    let tx = snapshot_taken(&mut rr).await;
    let _: i64 = one(&db, keyed, &[&q, &"k1"]).await;
    lease_and_complete(&db, &q).await;
    let err = tx.query_one(keyed, &[&q, &"k1"]).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("40001"), "{err:?}");
    tx.rollback().await.unwrap();

    let id: i64 = one(&db, keyed, &[&q, &"k2"]).await;
    let tx = snapshot_taken(&mut rr).await;
    assert_eq!(lease_and_complete(&db, &q).await, id);
    let again: i64 = one(&tx, keyed, &[&q, &"k2"]).await;
    assert_eq!(again, id);
    tx.commit().await.unwrap();
    let live = live_jobs(&db, &q).await;
    assert_eq!(live, 0, "no duplicate enqueued");
}

/// Enqueues `{}` into `queue` as the user of `claims`; the SQLSTATE when refused.
async fn enqueue_as(
    db: &mut Client,
    queue: &str,
    claims: &serde_json::Value,
) -> Result<i64, Option<String>> {
    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", claims.clone()).await;
    let result = t
        .query_one("SELECT spine.enqueue($1, '{}')", &[&queue])
        .await
        .map(|r| r.get::<_, i64>(0));
    t.commit().await.ok();
    result.map_err(|e| sqlstate(&e).map(str::to_string))
}

/// spine.enqueue keeps a per-backend copy of the queues: a change made in another
/// session, with plain SQL or through create_queue, applies to this session's next
/// enqueue (closed → open → closed → dropped).
#[tokio::test]
async fn enqueue_sees_queue_changes_made_elsewhere() {
    let admin = connect().await;
    let mut user = connect().await;
    let q = format!("q{}", Uuid::new_v4().simple());
    let me = json!({"sub": Uuid::new_v4().to_string(), "role": "authenticated"});
    let set_open = async |open: bool| {
        admin
            .execute(
                "SELECT spine.create_queue($1, user_enqueue => $2)",
                &[&q, &open],
            )
            .await
            .unwrap();
    };
    // Each change below follows an enqueue that left "open" in the user session's
    // copy: only the copy being refreshed makes the next enqueue see the change.
    set_open(true).await;
    assert!(enqueue_as(&mut user, &q, &me).await.is_ok(), "open");
    admin
        .execute(
            "UPDATE spine.queues SET user_enqueue = false WHERE name = $1",
            &[&q],
        )
        .await
        .unwrap();
    let refused = enqueue_as(&mut user, &q, &me).await;
    assert_eq!(refused, Err(Some("42501".into())), "closed with plain SQL");
    set_open(true).await;
    assert!(enqueue_as(&mut user, &q, &me).await.is_ok(), "opened again");
    set_open(false).await;
    let refused = enqueue_as(&mut user, &q, &me).await;
    assert_eq!(refused, Err(Some("42501".into())), "closed by create_queue");
    set_open(true).await;
    assert!(
        enqueue_as(&mut user, &q, &me).await.is_ok(),
        "open once more"
    );
    admin
        .execute("DELETE FROM spine.jobs WHERE queue = $1", &[&q])
        .await
        .unwrap();
    admin
        .execute("DELETE FROM spine.queues WHERE name = $1", &[&q])
        .await
        .unwrap();
    let refused = enqueue_as(&mut user, &q, &me).await;
    assert_eq!(refused, Err(Some("42704".into())), "dropped");
}

/// spine.enqueue runs with its owner's rights but the caller's search_path (it has
/// no SET clause, for speed): objects a caller puts first on the path — an `=`
/// for text, `now()`, `to_regclass`, temp tables named like Spine's — are never
/// used. The session is fresh, so the path is in force when its plans are made.
#[tokio::test]
async fn enqueue_ignores_the_callers_search_path() {
    let admin = connect().await;
    let q = new_queue(&admin, None).await;
    let schema = format!("evil_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE FUNCTION {schema}.trap(a text, b text) RETURNS boolean LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'trap: text = text'; END $$;
             CREATE OPERATOR {schema}.= (LEFTARG = text, RIGHTARG = text, FUNCTION = {schema}.trap);
             CREATE FUNCTION {schema}.now() RETURNS timestamptz LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'trap: now()'; END $$;
             CREATE FUNCTION {schema}.to_regclass(text) RETURNS regclass LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'trap: to_regclass'; END $$;
             GRANT USAGE ON SCHEMA {schema} TO authenticated;
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO authenticated;"
        ))
        .await
        .unwrap();
    let mut user = connect().await;
    let t = user.transaction().await.unwrap();
    t.batch_execute(&format!(
        "CREATE TEMP TABLE queues (name text, user_enqueue boolean);
         CREATE TEMP TABLE jobs (id bigint);
         SET LOCAL search_path = {schema}, pg_catalog"
    ))
    .await
    .unwrap();
    act_as(
        &t,
        "authenticated",
        json!({"sub": Uuid::new_v4().to_string(), "role": "authenticated"}),
    )
    .await;
    let id: i64 = one(
        &t,
        "SELECT spine.enqueue($1, '{\"n\":1}', run_at => NULL)",
        &[&q],
    )
    .await;
    let keyed: i64 = one(
        &t,
        "SELECT spine.enqueue($1, '{}', idempotency_key => 'k1')",
        &[&q],
    )
    .await;
    assert_ne!(keyed, id);
    let refused = t
        .query_one("SELECT spine.enqueue('http', '{}')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused), Some("42501"), "{refused:?}");
    t.rollback().await.unwrap();
    assert!(id > 0);
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// Every kind of bad input has its own SQLSTATE and a message naming the problem.
#[tokio::test]
async fn bad_job_input_is_refused() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    db.execute("SELECT spine.enqueue($1, '{}')", &[&q])
        .await
        .unwrap();
    let running: i64 = one(&db, "SELECT spine.enqueue($1, '{}')", &[&q]).await;
    let queued: i64 = one(
        &db,
        "SELECT spine.enqueue($1, '{}', run_at => now() + interval '1 hour')",
        &[&q],
    )
    .await;
    fetch(&db, &q, "w", 2, "30 s").await;
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "SELECT spine.enqueue('no_such_queue', '{}')".to_string(),
            "42704",
            "does not exist",
        ),
        (
            format!("SELECT spine.enqueue('{q}', NULL)"),
            "22004",
            "payload must not be NULL",
        ),
        (
            format!("SELECT spine.enqueue('{q}', '{{}}', max_attempts => -1)"),
            "22023",
            "max_attempts",
        ),
        (
            format!("SELECT spine.enqueue('{q}', '{{}}', 'urgent')"),
            "22P02",
            "job_priority",
        ),
        (
            "SELECT spine.create_queue('Bad Name')".to_string(),
            "22023",
            "queue name",
        ),
        (
            format!("SELECT spine.create_queue('{q}', 0)"),
            "22023",
            "max_concurrency",
        ),
        (
            format!("SELECT spine.schedule('s', '61 * * * *', '{q}', '{{}}')"),
            "22023",
            "minute field",
        ),
        (
            format!("SELECT spine.schedule('s', 'every day', '{q}', '{{}}')"),
            "22023",
            "fields",
        ),
        (
            format!("SELECT spine.fetch_jobs(ARRAY['{q}'], 'w', 0)"),
            "22023",
            "n must be",
        ),
        (
            "SELECT spine.fetch_jobs('{}', 'w')".to_string(),
            "22023",
            "at least one queue",
        ),
        (
            format!("SELECT spine.fail_job({queued}, 'x')"),
            "55000",
            "not running",
        ),
        (
            "SELECT spine.fail_job(-1, 'x')".to_string(),
            "42704",
            "does not exist",
        ),
        (
            format!("SELECT spine.fail_job({running}, 'x', '-1 s')"),
            "22023",
            "retry_in",
        ),
        (
            format!("SELECT spine.heartbeat(ARRAY[{running}::bigint], '0 s')"),
            "22023",
            "lease",
        ),
        (
            "SELECT spine.redrive('no_such_queue')".to_string(),
            "42704",
            "does not exist",
        ),
        // The live table holds live states only, whoever writes it.
        (
            format!("INSERT INTO spine.jobs (queue, payload, state) VALUES ('{q}', '{{}}', 'completed')"),
            "23514",
            "jobs_state_check",
        ),
        (
            format!("INSERT INTO spine.jobs (queue, payload, state) VALUES ('{q}', '{{}}', 'cancelled')"),
            "23514",
            "jobs_state_check",
        ),
    ];
    for (sql, code, needle) in cases {
        let err = db.query(sql.as_str(), &[]).await.unwrap_err();
        let db_err = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{sql}: {err:?}"));
        assert_eq!(db_err.code().code(), code, "{sql}: {}", db_err.message());
        assert!(
            db_err.message().contains(needle),
            "{sql}: {}",
            db_err.message()
        );
    }
}

/// A one-second schedule: with pg_cron 1.5 or later it enqueues a job every second;
/// with an older pg_cron (Debian 12 ships 1.4.2) it is refused up front with 0A000
/// rather than failing inside pg_cron.
#[tokio::test]
async fn one_second_schedule_runs_or_is_refused_clearly() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let name = format!("s{}", Uuid::new_v4().simple());
    let version: String = one(
        &db,
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'",
        &[],
    )
    .await;
    let seconds_supported = !version.starts_with("1.4") && !version.starts_with("1.3");
    let scheduled = db
        .execute(
            "SELECT spine.schedule($1, '1 seconds', $2, '{}')",
            &[&name, &q],
        )
        .await;
    if !seconds_supported {
        let err = scheduled.unwrap_err();
        assert_eq!(sqlstate(&err), Some("0A000"), "{err:?}");
        assert!(err.as_db_error().unwrap().message().contains("pg_cron 1.5"));
        println!(
            "pg_cron {version}: one-second schedules refused with 0A000 (need pg_cron >= 1.5)"
        );
        return;
    }
    scheduled.unwrap();
    let mut count = 0i64;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        count = live_jobs(&db, &q).await;
        if count >= 2 {
            break;
        }
    }
    db.execute("SELECT spine.unschedule($1)", &[&name])
        .await
        .unwrap();
    assert!(count >= 2, "pg_cron {version} enqueued {count} jobs in 5 s");
}

/// pg_cron's scheduler is attached to this database, so schedules and the
/// maintenance job actually run.
#[tokio::test]
async fn pg_cron_scheduler_serves_this_database() {
    let db = connect().await;
    let launchers: i64 = one(
        &db,
        "SELECT count(*) FROM pg_stat_activity \
             WHERE backend_type = 'pg_cron launcher' AND datname = current_database()",
        &[],
    )
    .await;
    assert_eq!(launchers, 1);
    let maintenance: i64 = one(
        &db,
        "SELECT count(*) FROM cron.job WHERE jobname = 'spine-jobs-maintenance' AND active",
        &[],
    )
    .await;
    assert_eq!(maintenance, 1);
}

/// A replayed enqueue racing the completion of the same key waits for it and then
/// returns the archived job instead of enqueuing a duplicate.
#[tokio::test]
async fn replay_racing_completion_enqueues_nothing() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let id: i64 = one(
        &db,
        "SELECT spine.enqueue($1, '{}', idempotency_key => 'evt-1')",
        &[&q],
    )
    .await;
    fetch(&db, &q, "w", 1, "30 s").await;
    let mut completer = connect().await;
    let tx = completer.transaction().await.unwrap();
    let done: i64 = one(&tx, "SELECT spine.complete_jobs(ARRAY[$1::bigint])", &[&id]).await;
    assert_eq!(done, 1);
    // The replay starts while the completion is not committed yet.
    let replay = {
        let q = q.clone();
        tokio::spawn(async move {
            let db = connect().await;
            let again: i64 = one(
                &db,
                "SELECT spine.enqueue($1, '{}', idempotency_key => 'evt-1')",
                &[&q],
            )
            .await;
            again
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!replay.is_finished(), "the replay waits for the key");
    tx.commit().await.unwrap();
    assert_eq!(replay.await.unwrap(), id);
    let live = live_jobs(&db, &q).await;
    assert_eq!(live, 0, "no duplicate enqueued");
}
