//! The job runner when Postgres restarts under it, with real processes. Alone in
//! its test binary: it restarts the stack's Postgres (cargo runs test binaries one
//! after another).

mod common;

use common::{archived_attempts, db, job_runner, new_queue, wait_until, Hook};
use std::time::Duration;

/// Postgres restarts while a job's handler is running: the runner reconnects,
/// keeps the job's lease, records its success, and the job runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_in_flight_survives_a_postgres_restart() {
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
    common::restart_postgres();
    let db = db().await;
    let attempts = archived_attempts(&db, id, Duration::from_secs(30)).await;
    assert_eq!(attempts, 1, "completed by the first (and only) run");
    assert_eq!(hook.count(), 1, "the endpoint was called once");
}
