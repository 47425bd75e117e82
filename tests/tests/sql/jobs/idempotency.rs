//! Idempotency keys: live and archived, under REPEATABLE READ, and a replay
//! racing the completion of the job it names.

use super::*;

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
