//! Query plans, read from auto_explain: fetch walks the ready index and
//! completion, heartbeat and release probe by primary key, whatever the table size.

use super::*;
use spine_tests::{logged_plans, plan_of};

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
