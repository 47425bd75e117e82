//! Serving: priority and run_at, concurrency caps under concurrent fetchers, one
//! fetch over capped and uncapped queues, queue changes seen by other sessions.

use super::*;

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
