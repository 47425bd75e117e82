//! A job's life: retries → dead letter → redrive, expired leases, drain loops,
//! held expired leases, and what dropping a queue does to its archive.

use super::*;

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

/// Audit rows of `action` whose target is `target`: (role, actor, details).
async fn audited(
    db: &Client,
    action: &str,
    target: &str,
) -> Vec<(String, Option<Uuid>, serde_json::Value)> {
    db.query(
        "SELECT role, actor, details FROM spine.audit_log \
          WHERE action = $1 AND target = $2 ORDER BY seq",
        &[&action, &target],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// `spine.retry_job` runs one job again now: a dead one with fresh attempts, a
/// retrying one without its backoff; the owner may, another user may not, and
/// queued or finished jobs are left alone. It, `cancel_job` and `redrive` each
/// write an audit row naming who acted.
#[tokio::test]
async fn retry_cancel_and_redrive_are_audited_and_retry_runs_one_job_now() {
    let mut db = connect().await;
    let q = new_queue(&db, None).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let as_user = |who: Uuid| json!({"sub": who.to_string(), "role": "authenticated"});

    // Alice's job fails on its only attempt: dead.
    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", as_user(alice)).await;
    let id: i64 = one(
        &t,
        "SELECT spine.enqueue($1, '{}', max_attempts => 1)",
        &[&q],
    )
    .await;
    t.commit().await.unwrap();
    assert_eq!(fetch(&db, &q, "w", 1, "30 s").await, vec![(id, 1)]);
    db.execute("SELECT spine.fail_job($1, 'boom')", &[&id])
        .await
        .unwrap();

    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", as_user(bob)).await;
    let retried: bool = one(&t, "SELECT spine.retry_job($1)", &[&id]).await;
    assert!(!retried, "bob cannot retry alice's job");
    t.commit().await.unwrap();

    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", as_user(alice)).await;
    let retried: bool = one(&t, "SELECT spine.retry_job($1)", &[&id]).await;
    assert!(retried);
    t.commit().await.unwrap();
    let row = db
        .query_one(
            "SELECT state::text, attempts, errors->0->>'error' FROM spine.jobs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "queued");
    assert_eq!(row.get::<_, i32>(1), 0, "fresh attempts");
    assert_eq!(row.get::<_, String>(2), "boom", "the history stays");
    let again: bool = one(&db, "SELECT spine.retry_job($1)", &[&id]).await;
    assert!(!again, "a queued job is not retried");
    let target = format!("job:{id}");
    let rows = audited(&db, "job.retried", &target).await;
    assert_eq!(rows.len(), 1, "one row for the retry that acted: {rows:?}");
    assert_eq!(rows[0].0, "authenticated");
    assert_eq!(rows[0].1, Some(alice));
    assert_eq!(rows[0].2, json!({"queue": q, "was": "dead"}));

    // Retrying: runs now instead of after its backoff, attempts kept.
    let q2 = new_queue(&db, None).await;
    let id2 = enqueue(&db, &q2, json!({}), "interactive").await;
    assert_eq!(fetch(&db, &q2, "w", 1, "30 s").await, vec![(id2, 1)]);
    db.execute("SELECT spine.fail_job($1, 'later', '1 hour')", &[&id2])
        .await
        .unwrap();
    assert!(
        fetch(&db, &q2, "w", 1, "30 s").await.is_empty(),
        "backing off"
    );
    let retried: bool = one(&db, "SELECT spine.retry_job($1)", &[&id2]).await;
    assert!(retried);
    assert_eq!(fetch(&db, &q2, "w", 1, "30 s").await, vec![(id2, 2)]);

    // Cancel and redrive write theirs too.
    let t = db.transaction().await.unwrap();
    act_as(&t, "authenticated", as_user(alice)).await;
    let cancelled: bool = one(&t, "SELECT spine.cancel_job($1)", &[&id]).await;
    assert!(cancelled);
    t.commit().await.unwrap();
    let rows = audited(&db, "job.cancelled", &target).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, Some(alice));
    assert_eq!(rows[0].2, json!({"queue": q, "was": "queued"}));

    let id3 = enqueue(&db, &q2, json!({}), "interactive").await;
    db.execute(
        "UPDATE spine.jobs SET state = 'dead' WHERE id = $1",
        &[&id3],
    )
    .await
    .unwrap();
    let t = db.transaction().await.unwrap();
    act_as(&t, "service_role", json!({"role": "service_role"})).await;
    let n: i64 = one(&t, "SELECT spine.redrive($1)", &[&q2]).await;
    assert_eq!(n, 1);
    t.commit().await.unwrap();
    let rows = audited(&db, "queue.redriven", &format!("queue:{q2}")).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "service_role");
    assert_eq!(rows[0].2, json!({"jobs": 1}));
    let none: i64 = one(&db, "SELECT spine.redrive($1)", &[&q2]).await;
    assert_eq!(none, 0);
    assert_eq!(
        audited(&db, "queue.redriven", &format!("queue:{q2}"))
            .await
            .len(),
        1,
        "a redrive that moved nothing is not audited"
    );
}
