//! The job runner when Postgres restarts under it, with real processes. In a test
//! binary of their own (cargo runs test binaries one after another), and one at a
//! time within it ([`spine_tests::stack::POSTGRES_RESTARTS`]): they restart the
//! stack's Postgres.

use spine_tests::connect as db;
use spine_tests::daemons::{archived_attempts, job_runner, new_queue, Hook};
use spine_tests::proc::wait_until;
use spine_tests::stack::restart_postgres;
use std::time::Duration;

/// Postgres restarts while a job's handler is running: the runner reconnects,
/// keeps the job's lease, records its success, and the job runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_in_flight_survives_a_postgres_restart() {
    let _alone = spine_tests::stack::POSTGRES_RESTARTS.lock().await;
    let admin = db().await;
    let q = new_queue(&admin).await;
    let hook = Hook::start(|_| (200, Duration::from_secs(3))).await;
    let payload = serde_json::json!({ "url": hook.url });
    let id: i64 = spine_tests::one(&admin, "SELECT spine.enqueue($1, $2)", &[&q, &payload]).await;
    let _worker = job_runner(&format!("{q}=http"), &[("SPINE_JOB_LEASE_SECS", "30")]);
    wait_until("delivery under way", Duration::from_secs(20), || async {
        hook.count() >= 1
    })
    .await;
    restart_postgres();
    let db = db().await;
    let attempts = archived_attempts(&db, id, Duration::from_secs(30)).await;
    assert_eq!(attempts, 1, "completed by the first (and only) run");
    assert_eq!(hook.count(), 1, "the endpoint was called once");
}

/// With the poll at 60 s, jobs enqueued while Postgres restarts (the runner's
/// sessions are gone, its notifications lost) still start within seconds: a
/// reconnecting runner looks for work at once instead of waiting for the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_finds_the_backlog_after_a_postgres_restart() {
    let _alone = spine_tests::stack::POSTGRES_RESTARTS.lock().await;
    let admin = db().await;
    let q = new_queue(&admin).await;
    let hook = Hook::start(|_| (200, Duration::ZERO)).await;
    let _worker = job_runner(&format!("{q}=http"), &[("SPINE_JOB_POLL_MS", "60000")]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    restart_postgres();
    // Right after the restart, before the runner is back: enqueue a backlog.
    let db = db().await;
    let payload = serde_json::json!({ "url": hook.url });
    for _ in 0..5 {
        let _: i64 = spine_tests::one(&db, "SELECT spine.enqueue($1, $2)", &[&q, &payload]).await;
    }
    let enqueued = std::time::Instant::now();
    wait_until("the backlog ran", Duration::from_secs(30), || async {
        hook.count() == 5
    })
    .await;
    let took = enqueued.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the backlog ran after {took:?}"
    );
}
