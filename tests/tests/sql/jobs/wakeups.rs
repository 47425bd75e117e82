//! Wake-ups: enqueues notify `spine.jobs_channel` after commit with the queue's
//! name (and ` later` for a job not due yet), once per transaction and queue, and
//! never for a rolled-back enqueue.

use super::*;
use spine_tests::{listen, received_within};

/// How long a test waits for notifications (they arrive within milliseconds).
const QUIET: Duration = Duration::from_millis(300);

/// Seven jobs in two queues, through every enqueue path, in one transaction: two
/// notifications, one per queue, after the commit and not before.
#[tokio::test]
async fn one_notification_per_transaction_and_queue() {
    let (_listener, mut rx) = listen("spine_jobs").await;
    let mut db = connect().await;
    let (a, b) = (new_queue(&db, None).await, new_queue(&db, None).await);
    let tx = db.transaction().await.unwrap();
    for i in 0..3 {
        tx.execute("SELECT spine.enqueue($1, $2)", &[&a, &json!({ "n": i })])
            .await
            .unwrap();
    }
    tx.execute(
        "SELECT spine.enqueue($1, '{}', idempotency_key => 'k1')",
        &[&a],
    )
    .await
    .unwrap();
    tx.execute(
        "SELECT spine.enqueue_batch($1, ARRAY['{}', '{}', '{}']::jsonb[])",
        &[&b],
    )
    .await
    .unwrap();
    let early = received_within(&mut rx, QUIET).await;
    assert!(
        !early.contains(&a) && !early.contains(&b),
        "notified before commit: {early:?}"
    );
    tx.commit().await.unwrap();
    let mut got: Vec<String> = received_within(&mut rx, QUIET)
        .await
        .into_iter()
        .filter(|q| *q == a || *q == b)
        .collect();
    got.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(got, expected);
}

/// A job due later says so, once per transaction however many there are.
#[tokio::test]
async fn a_delayed_job_wakes_runners_to_look_up_its_time() {
    let (_listener, mut rx) = listen("spine_jobs").await;
    let mut db = connect().await;
    let q = new_queue(&db, None).await;
    let tx = db.transaction().await.unwrap();
    tx.execute(
        "SELECT spine.enqueue($1, '{}', run_at => now() + interval '1 hour')",
        &[&q],
    )
    .await
    .unwrap();
    tx.execute(
        "SELECT spine.enqueue_batch($1, ARRAY['{}', '{}']::jsonb[], run_at => now() + interval '1 hour')",
        &[&q],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let got = received_within(&mut rx, QUIET).await;
    let mine: Vec<&String> = got.iter().filter(|p| p.starts_with(q.as_str())).collect();
    assert_eq!(mine, vec![&format!("{q} later")]);
}

/// A rolled-back enqueue notifies nobody; a later committed one does.
#[tokio::test]
async fn a_rolled_back_enqueue_wakes_nothing() {
    let (_listener, mut rx) = listen("spine_jobs").await;
    let mut db = connect().await;
    let q = new_queue(&db, None).await;
    let tx = db.transaction().await.unwrap();
    tx.execute("SELECT spine.enqueue($1, '{}')", &[&q])
        .await
        .unwrap();
    tx.execute(
        "SELECT spine.enqueue_batch($1, ARRAY['{}']::jsonb[])",
        &[&q],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let got = received_within(&mut rx, QUIET).await;
    assert!(!got.contains(&q), "a rollback notified: {got:?}");
    db.execute("SELECT spine.enqueue($1, '{}')", &[&q])
        .await
        .unwrap();
    let got = received_within(&mut rx, QUIET).await;
    assert_eq!(got.iter().filter(|p| **p == q).count(), 1, "{got:?}");
}

/// Jobs coming back to a queue wake its runners too: a redrive of dead jobs, a
/// failed attempt that will be retried, and jobs a worker hands back.
#[tokio::test]
async fn redrive_retry_and_release_wake_the_queue() {
    let (_listener, mut rx) = listen("spine_jobs").await;
    let db = connect().await;
    let q = new_queue(&db, None).await;
    db.execute("SELECT spine.enqueue($1, '{}', max_attempts => 1)", &[&q])
        .await
        .unwrap();
    db.execute("SELECT spine.enqueue($1, '{}')", &[&q])
        .await
        .unwrap();
    let leased = fetch(&db, &q, "w", 2, "30 seconds").await;
    assert_eq!(leased.len(), 2);
    let _ = received_within(&mut rx, QUIET).await;
    // The job with one attempt dies; the other one is retried later.
    for (id, _) in &leased {
        db.execute("SELECT spine.fail_job($1, 'boom')", &[id])
            .await
            .unwrap();
    }
    // The retry is due after its backoff: the payload says so.
    let got = received_within(&mut rx, QUIET).await;
    let later = format!("{q} later");
    assert_eq!(
        got.iter().filter(|p| **p == later).count(),
        1,
        "retry: {got:?}"
    );
    assert!(!got.contains(&q), "the dead job woke runners: {got:?}");
    let redriven: i64 = one(&db, "SELECT spine.redrive($1)", &[&q]).await;
    assert_eq!(redriven, 1);
    let got = received_within(&mut rx, QUIET).await;
    assert_eq!(
        got.iter().filter(|p| **p == q).count(),
        1,
        "redrive: {got:?}"
    );
    // Lease the redriven job and hand it back.
    let again = fetch(&db, &q, "w", 1, "30 seconds").await;
    assert_eq!(again.len(), 1);
    let ids: Vec<i64> = again.iter().map(|(id, _)| *id).collect();
    let released: i64 = one(&db, "SELECT spine.release_jobs($1)", &[&ids]).await;
    assert_eq!(released, 1);
    let got = received_within(&mut rx, QUIET).await;
    assert_eq!(
        got.iter().filter(|p| **p == q).count(),
        1,
        "release: {got:?}"
    );
}
