//! The job runner when Postgres is down as a job finishes, with real processes.
//! Alone in its test binary: it stops the stack's Postgres (cargo runs test
//! binaries one after another).

use spine_tests::connect as db;
use spine_tests::daemons::{archived_attempts, job_runner, new_queue, Hook};
use spine_tests::proc::wait_until;
use spine_tests::stack::{start_postgres, stop_postgres};
use std::time::Duration;

/// A job's handler finishes while Postgres is stopped, so recording its success
/// fails: the runner keeps the outcome (and the job's lease) and records it once
/// Postgres is back, well before the lease passes. The job runs exactly once. (A
/// runner that dropped the outcome would let the lease pass and run the job again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_that_arrives_while_postgres_is_down_is_recorded_once() {
    let admin = db().await;
    let q = new_queue(&admin).await;
    let hook = Hook::start(|_| (200, Duration::from_secs(2))).await;
    let payload = serde_json::json!({ "url": hook.url });
    let id: i64 = spine_tests::one(&admin, "SELECT spine.enqueue($1, $2)", &[&q, &payload]).await;
    drop(admin);
    let _worker = job_runner(
        &format!("{q}=http"),
        &[
            // Long waits between polls and heartbeats: the runner's first call
            // after the outage is the one that records the outcome.
            ("SPINE_JOB_POLL_MS", "10000"),
            ("SPINE_JOB_LEASE_SECS", "30"),
        ],
    );
    wait_until("delivery under way", Duration::from_secs(20), || async {
        hook.count() >= 1
    })
    .await;
    stop_postgres();
    // The handler answers after 2 s; the runner then fails to record it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    start_postgres();
    let db = db().await;
    // Well within the lease: a lost outcome would be retried only after it.
    let attempts = archived_attempts(&db, id, Duration::from_secs(20)).await;
    assert_eq!(attempts, 1, "completed by the first (and only) run");
    assert_eq!(hook.count(), 1, "the endpoint was called once");
}
