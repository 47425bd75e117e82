//! The job queue's SQL surface against the real cluster: ordering, delays,
//! idempotency, retries → dead letter → redrive, lease expiry, concurrency caps under
//! concurrent fetchers, schedules, RLS and bad input. Each test has its own queue.

use serde_json::json;
use spine_tests::{act_as, connect, one, sqlstate};
use std::time::Duration;
use tokio_postgres::Client;
use uuid::Uuid;

mod access;
mod flow;
mod idempotency;
mod input;
mod lifecycle;
mod plans;
mod schedules;
mod serving;
mod wakeups;

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
