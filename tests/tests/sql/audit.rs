//! The audit log against the real cluster: append-only even for its owner, the
//! hash chain detects altered, forged and removed rows, concurrent writers keep
//! one chain, and an audit row lives and dies with its transaction (rows wait in
//! spine.audit_pending and join the chain at COMMIT).

use serde_json::json;
use spine_tests::{column, connect, one, seal_audit, sqlstate};
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

async fn verify(db: &impl tokio_postgres::GenericClient) -> Option<i64> {
    one(db, "SELECT spine.audit_verify()", &[]).await
}

async fn audit(db: &impl tokio_postgres::GenericClient, target: &str, n: i64) {
    db.execute(
        "SELECT spine.audit('test.happened', $1, $2)",
        &[&target, &json!({ "n": n })],
    )
    .await
    .unwrap();
}

/// The seqs the chain gave to rows with this target (after sealing what waits).
async fn seqs_of(db: &impl tokio_postgres::GenericClient, target: &str) -> Vec<i64> {
    seal_audit(db).await;
    column(
        db,
        "SELECT seq FROM spine.audit_log WHERE target = $1 ORDER BY seq",
        &[&target],
    )
    .await
}

/// UPDATE, DELETE and TRUNCATE are refused with 42501 even for the superuser that
/// owns the table; service_role and users have no write privilege at all.
#[tokio::test]
async fn audit_log_is_append_only_even_for_its_owner() {
    let mut db = connect().await;
    let target = format!("append-only-{}", Uuid::new_v4().simple());
    audit(&db, &target, 1).await;
    let seq = seqs_of(&db, &target).await[0];
    for sql in [
        format!("UPDATE spine.audit_log SET target = 'x' WHERE seq = {seq}"),
        format!("DELETE FROM spine.audit_log WHERE seq = {seq}"),
        "TRUNCATE spine.audit_log".to_string(),
        "DELETE FROM spine.audit_head".to_string(),
        "TRUNCATE spine.audit_head".to_string(),
    ] {
        let err = db.batch_execute(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some("42501"), "{sql}: {err:?}");
    }
    for role in ["service_role", "authenticated", "anon"] {
        let tx = db.transaction().await.unwrap();
        tx.batch_execute(&format!("SET LOCAL ROLE {role}"))
            .await
            .unwrap();
        let err = tx
            .execute(
                "INSERT INTO spine.audit_log (seq, at, role, action, prev_hash, hash) \
                 VALUES (-1, now(), 'x', 'forged.row', '\\x00', '\\x00')",
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some("42501"), "{role}: {err:?}");
        tx.rollback().await.unwrap();
    }
    let still: i64 = one(
        &db,
        "SELECT count(*) FROM spine.audit_log WHERE seq = $1",
        &[&seq],
    )
    .await;
    assert_eq!(still, 1);
}

/// Runs `tamper` inside a savepoint of `tx` (triggers off, as only a superuser
/// can) and returns what audit_verify() reports, then undoes the tampering.
async fn verify_after(tx: &mut Transaction<'_>, tamper: &str) -> Option<i64> {
    let sp = tx.savepoint("tamper").await.unwrap();
    sp.batch_execute(tamper).await.unwrap();
    let broken = verify(&sp).await;
    sp.rollback().await.unwrap();
    broken
}

/// Each kind of tampering is found, at the row where it happened: an altered
/// field, a forged row with a wrong hash, a row removed from the middle, and a row
/// cut off the end.
#[tokio::test]
async fn verify_finds_altered_forged_and_removed_rows() {
    let mut db = connect().await;
    // One transaction: the tampering is never committed, so the shared log stays
    // intact for the other tests. Its audit writes hold the chain's head until
    // the rollback.
    let mut tx = db.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .unwrap();
    let target = format!("tamper-{}", Uuid::new_v4().simple());
    audit(&tx, &target, 1).await;
    audit(&tx, &target, 2).await;
    // Sealed inside the transaction (what COMMIT would do), never committed.
    let (first, last) = match seqs_of(&tx, &target).await[..] {
        [a, b] => (a, b),
        ref other => panic!("expected two rows, got {other:?}"),
    };
    // The seal also appended other tests' committed rows waiting for a sealer
    // (in recording order, so some may lie between ours);
    // the chain ends at the head, which this transaction now holds.
    let end: i64 = one(&tx, "SELECT seq FROM spine.audit_head", &[]).await;
    assert_eq!(verify(&tx).await, None, "intact before tampering");

    let altered = verify_after(
        &mut tx,
        &format!("UPDATE spine.audit_log SET details = '{{\"n\": 99}}' WHERE seq = {first}"),
    )
    .await;
    assert_eq!(altered, Some(first), "altered details");
    let actor = verify_after(
        &mut tx,
        &format!(
            "UPDATE spine.audit_log SET actor = '{}' WHERE seq = {last}",
            Uuid::new_v4()
        ),
    )
    .await;
    assert_eq!(actor, Some(last), "altered actor");
    let forged = verify_after(
        &mut tx,
        &format!(
            "INSERT INTO spine.audit_log (seq, at, role, action, prev_hash, hash) \
             VALUES ({}, now(), 'postgres', 'forged.row', '\\x00', '\\x00')",
            end + 1
        ),
    )
    .await;
    assert_eq!(forged, Some(end + 1), "forged row with a wrong hash");
    let middle = verify_after(
        &mut tx,
        &format!("DELETE FROM spine.audit_log WHERE seq = {first}"),
    )
    .await;
    assert_eq!(middle, Some(first), "row removed from the middle");
    let tail = verify_after(
        &mut tx,
        &format!("DELETE FROM spine.audit_log WHERE seq = {end}"),
    )
    .await;
    assert_eq!(tail, Some(end), "row cut off the end");
    tx.rollback().await.unwrap();
}

/// 8 sessions writing 3 rows per transaction at once produce one gap-free chain;
/// a REPEATABLE READ writer that would fork the chain gets a serialization
/// failure instead.
#[tokio::test]
async fn concurrent_writers_keep_one_chain() {
    let target = format!("concurrent-{}", Uuid::new_v4().simple());
    let mut tasks = Vec::new();
    for w in 0..8 {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut db = connect().await;
            for i in 0..25 {
                let tx = db.transaction().await.unwrap();
                for k in 0..3 {
                    audit(&tx, &target, w * 1000 + i * 10 + k).await;
                }
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let db = connect().await;
    // Commits that found the head busy left their rows to the next sealer.
    seal_audit(&db).await;
    let (n, distinct): (i64, i64) = {
        let r = db
            .query_one(
                "SELECT count(*), count(DISTINCT seq) FROM spine.audit_log WHERE target = $1",
                &[&target],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((n, distinct), (600, 600));
    assert_eq!(verify(&db).await, None);

    // REPEATABLE READ: the commit does not fail (it leaves its rows to the next
    // sealer instead of taking a head moved since its snapshot) …
    let mut a = connect().await;
    let b: Client = connect().await;
    let rr_target = format!("rr-{}", Uuid::new_v4().simple());
    let ta = a
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    ta.batch_execute("SELECT 1").await.unwrap(); // takes the snapshot
    audit(&b, &target, -1).await;
    audit(&ta, &rr_target, 0).await;
    ta.commit().await.unwrap();
    assert_eq!(seqs_of(&b, &rr_target).await.len(), 1);
    assert_eq!(verify(&b).await, None);
    // … while an explicit seal under REPEATABLE READ after the head moved is a
    // serialization failure, not a fork.
    let ta = a
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    ta.batch_execute("SELECT 1").await.unwrap();
    audit(&b, &target, -2).await;
    let err = ta
        .query_one("SELECT spine.audit_seal()", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("40001"), "{err:?}");
}

/// An audit row is part of its transaction: it waits in audit_pending until
/// COMMIT; an action rolled back leaves none, a committed one exactly one.
#[tokio::test]
async fn audit_rows_live_and_die_with_their_transaction() {
    let mut db = connect().await;
    let count = |plugin: String| async move {
        let db = connect().await;
        let n: i64 = one(
            &db,
            "SELECT (SELECT count(*) FROM spine.audit_log WHERE target = 'plugin:' || $1) \
                  + (SELECT count(*) FROM spine.audit_pending WHERE target = 'plugin:' || $1)",
            &[&plugin],
        )
        .await;
        n
    };
    for commit in [false, true] {
        let plugin = format!("p{}", Uuid::new_v4().simple());
        let tx = db.transaction().await.unwrap();
        tx.execute(
            "SELECT spine.register_plugin($1)",
            &[&json!({"name": plugin, "version": "1.0.0"})],
        )
        .await
        .unwrap();
        let pending: i64 = one(
            &tx,
            "SELECT count(*) FROM spine.audit_pending WHERE target = 'plugin:' || $1",
            &[&plugin],
        )
        .await;
        assert_eq!(pending, 1);
        if commit {
            tx.commit().await.unwrap();
            seal_audit(&db).await;
            assert_eq!(seqs_of(&db, &format!("plugin:{plugin}")).await.len(), 1);
        } else {
            tx.rollback().await.unwrap();
        }
        assert_eq!(count(plugin).await, i64::from(commit));
    }
    // No seal-at-commit marker outlives its transaction. (Committed rows may wait
    // in audit_pending for the next sealer by design; sealing them is checked above.)
    let left: i64 = one(
        &db,
        "SELECT count(*) FROM spine.audit_transactions WHERE pg_xact_status(txid) <> 'in progress'",
        &[],
    )
    .await;
    assert_eq!(left, 0);
}

/// The head is published as an audit.HeadAnchored event (for NATS, outside the
/// database); an anchor checks out until the anchored row is rewritten.
#[tokio::test]
async fn anchors_keep_a_copy_of_the_head_outside() {
    let mut db = connect().await;
    audit(&db, &format!("anchor-{}", Uuid::new_v4().simple()), 1).await;
    seal_audit(&db).await;
    // pg_cron may have anchored this head first; either way it is anchored now —
    // unless other tests moved the head between the two statements: then anchor
    // the new head (a few tries at most).
    let mut anchored = None;
    for _ in 0..20 {
        db.execute("SELECT spine.audit_anchor()", &[])
            .await
            .unwrap();
        anchored = db
            .query_opt(
                "SELECT a.seq, a.hash FROM spine.audit_anchors a \
                  WHERE a.seq = (SELECT seq FROM spine.audit_head)",
                &[],
            )
            .await
            .unwrap();
        if anchored.is_some() {
            break;
        }
    }
    let (seq, hash): (i64, Vec<u8>) = {
        let r = anchored.expect("the head anchored");
        (r.get(0), r.get(1))
    };
    let published: i64 = one(
        &db,
        "SELECT count(*) FROM spine.events WHERE type = 'audit.HeadAnchored' \
            AND (data->>'seq')::bigint = $1 AND data->>'hash' = encode($2, 'hex')",
        &[&seq, &hash],
    )
    .await;
    assert_eq!(published, 1);
    let holds: bool = one(
        &db,
        "SELECT spine.audit_verify_anchor($1, $2)",
        &[&seq, &hash],
    )
    .await;
    assert!(holds);
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .unwrap();
    tx.execute(
        "UPDATE spine.audit_log SET details = '{\"rewritten\": true}', hash = sha256(hash) WHERE seq = $1",
        &[&seq],
    )
    .await
    .unwrap();
    let holds: bool = one(
        &tx,
        "SELECT spine.audit_verify_anchor($1, $2)",
        &[&seq, &hash],
    )
    .await;
    assert!(!holds, "a rewritten row no longer matches its anchor");
    tx.rollback().await.unwrap();
}
