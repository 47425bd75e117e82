//! Query plans, read from auto_explain: fetch walks the ready index and
//! completion, heartbeat and release probe by primary key, whatever the table size.

use super::*;

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
