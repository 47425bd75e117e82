//! The outbox's SQL surface against the real cluster: commit order without skips
//! across sessions, one NOTIFY per transaction, RLS, sinks, bad input.

use futures_util::StreamExt;
use serde_json::json;
use spine_tests::{
    act_as, connect, connect_to, database_url, drop_sink, fresh_sink, logged_plans, one, plan_of,
    sink_status, sqlstate,
};
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

/// Events after the sink's cursor with the given subject prefix, as (commit_seq, seq, subject).
async fn read_after(
    db: &tokio_postgres::Client,
    cursor: (i64, i64),
    prefix: &str,
) -> Vec<(i64, i64, String)> {
    db.query(
        "SELECT commit_seq, seq, subject FROM spine.events_after($1, $2, 10000) \
         WHERE subject LIKE $3 || '%'",
        &[&cursor.0, &cursor.1, &prefix],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// Emits one event in `tx` and returns its seq. Two statements: a statement does
/// not see rows its own function calls insert.
async fn emit_and_seq(
    tx: &tokio_postgres::Transaction<'_>,
    event_type: &str,
    subject: &str,
) -> i64 {
    let id: Uuid = one(
        tx,
        "SELECT spine.emit($1, '{}', $2)",
        &[&event_type, &subject],
    )
    .await;
    one(tx, "SELECT seq FROM spine.events WHERE id = $1", &[&id]).await
}

/// Two sessions commit out of order: B (later seq) commits first, A (earlier seq)
/// second. A reader that advanced its cursor past B still gets A afterwards, while a
/// naive `seq > cursor` reader would have skipped it.
#[tokio::test]
async fn late_commit_is_not_skipped() {
    let reader = connect().await;
    let mut a = connect().await;
    let mut b = connect().await;
    let tag = format!("ooo-{}/", Uuid::new_v4().simple());
    let sink = fresh_sink(&reader).await;
    let cursor = sink_status(&reader, &sink).await.cursor;

    let ta = a.transaction().await.unwrap();
    let a_seq = emit_and_seq(&ta, "test.AFirstEmitted", &format!("{tag}a")).await;
    let tb = b.transaction().await.unwrap();
    let b_seq = emit_and_seq(&tb, "test.BSecondEmitted", &format!("{tag}b")).await;
    assert!(a_seq < b_seq, "A inserted first");
    tb.commit().await.unwrap();

    let first = read_after(&reader, cursor, &tag).await;
    assert_eq!(first.len(), 1, "only B is committed: {first:?}");
    assert_eq!(first[0].2, format!("{tag}b"));
    let cursor = (first[0].0, first[0].1);

    ta.commit().await.unwrap();
    let second = read_after(&reader, cursor, &tag).await;
    reader
        .execute("SELECT spine.drop_sink($1)", &[&sink])
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "A must come after the cursor: {second:?}");
    assert_eq!(second[0].2, format!("{tag}a"));
    assert!(
        second[0].0 > cursor.0,
        "A committed later, so its commit_seq is larger"
    );
    // What a seq-only cursor would have done: A's seq is below B's, so it is lost.
    assert!(second[0].1 < cursor.1);
}

/// A transaction that emits several events sends exactly one notification, on the
/// configured channel (a unique one here, so concurrent tests do not interfere),
/// and only when it commits.
#[tokio::test]
async fn one_notify_per_transaction() {
    let (listener, mut conn) = tokio_postgres::connect(&database_url(), NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(msg)) = messages.next().await {
            if let AsyncMessage::Notification(n) = msg {
                let _ = tx.send(n.channel().to_string());
            }
        }
    });
    let channel = format!("test_{}", Uuid::new_v4().simple());
    listener
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .unwrap();

    let mut db = connect().await;
    db.batch_execute(&format!("SET spine.notify_channel = '{channel}'"))
        .await
        .unwrap();
    let t = db.transaction().await.unwrap();
    t.execute(
        "SELECT spine.emit('test.ThingHappened', jsonb_build_object('i', i)) FROM generate_series(1, 5) i",
        &[],
    )
    .await
    .unwrap();
    t.execute("SELECT spine.emit('test.OtherThingHappened', '{}')", &[])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "no notification before commit");
    t.commit().await.unwrap();

    let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .expect("a notification after commit")
        .unwrap();
    assert_eq!(got, channel);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        rx.try_recv().is_err(),
        "exactly one notification for the transaction"
    );
}

/// A rolled-back transaction leaves no event and no commit behind.
#[tokio::test]
async fn rollback_emits_nothing() {
    let mut db = connect().await;
    let subject = format!("rb-{}", Uuid::new_v4());
    let t = db.transaction().await.unwrap();
    t.execute(
        "SELECT spine.emit('test.ThingHappened', '{}', $1)",
        &[&subject],
    )
    .await
    .unwrap();
    t.rollback().await.unwrap();
    let n: i64 = one(
        &db,
        "SELECT count(*) FROM spine.events WHERE subject = $1",
        &[&subject],
    )
    .await;
    assert_eq!(n, 0);
}

/// Events of a subtransaction rolled back to a savepoint are gone; events emitted
/// after it in the same transaction are still delivered (the transaction is
/// registered again).
#[tokio::test]
async fn savepoint_rollback_keeps_later_events_deliverable() {
    let mut db = connect().await;
    let tag = format!("sp-{}/", Uuid::new_v4().simple());
    let sink = fresh_sink(&db).await;
    let head = sink_status(&db, &sink).await;
    let t = db.transaction().await.unwrap();
    t.batch_execute("SAVEPOINT s").await.unwrap();
    t.execute(
        "SELECT spine.emit('test.ThingHappened', '{}', $1)",
        &[&format!("{tag}gone")],
    )
    .await
    .unwrap();
    t.batch_execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    t.execute(
        "SELECT spine.emit('test.ThingHappened', '{}', $1)",
        &[&format!("{tag}kept")],
    )
    .await
    .unwrap();
    t.commit().await.unwrap();
    let got = read_after(&db, head.cursor, &tag).await;
    drop_sink(&db, &sink).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].2, format!("{tag}kept"));
}

/// Users read only their own events; service_role reads all; anon cannot emit.
#[tokio::test]
async fn events_are_private_to_their_owner() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let bob = Uuid::new_v4();
    let subject = format!("rls-{}", Uuid::new_v4());

    let t = db.transaction().await.unwrap();
    act_as(
        &t,
        "authenticated",
        json!({"sub": alice.to_string(), "role": "authenticated"}),
    )
    .await;
    t.execute(
        "SELECT spine.emit('test.SecretShared', '{}', $1)",
        &[&subject],
    )
    .await
    .unwrap();
    t.commit().await.unwrap();

    let count_as = |role: &'static str, sub: Option<Uuid>| {
        let subject = subject.clone();
        async move {
            let mut db = connect().await;
            let t = db.transaction().await.unwrap();
            let claims = match sub {
                Some(s) => json!({"sub": s.to_string(), "role": role}),
                None => json!({"role": role}),
            };
            act_as(&t, role, claims).await;
            let n: i64 = one(
                &t,
                "SELECT count(*) FROM spine.events WHERE subject = $1",
                &[&subject],
            )
            .await;
            n
        }
    };
    assert_eq!(count_as("authenticated", Some(alice)).await, 1);
    assert_eq!(count_as("authenticated", Some(bob)).await, 0);
    assert_eq!(count_as("service_role", None).await, 1);

    // Spine's own domains are not for users to forge.
    let t = db.transaction().await.unwrap();
    act_as(
        &t,
        "authenticated",
        json!({"sub": alice.to_string(), "role": "authenticated"}),
    )
    .await;
    let err = t
        .execute("SELECT spine.emit('data.EntityCreated', '{}')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"), "{err:?}");
    assert!(err.as_db_error().unwrap().message().contains("reserved"));
    t.rollback().await.unwrap();

    let t = db.transaction().await.unwrap();
    act_as(&t, "anon", json!({"role": "anon"})).await;
    let err = t
        .execute("SELECT spine.emit('test.ThingHappened', '{}')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"), "{err:?}");
}

/// The owner is always the caller: an authenticated user cannot write into the
/// outbox directly, only through emit().
#[tokio::test]
async fn outbox_is_written_only_through_emit() {
    let mut db = connect().await;
    let t = db.transaction().await.unwrap();
    act_as(
        &t,
        "authenticated",
        json!({"sub": Uuid::new_v4().to_string()}),
    )
    .await;
    let err = t
        .execute(
            "INSERT INTO spine.events (id, type, correlation_id) VALUES (gen_random_uuid(), 'x.Yed', gen_random_uuid())",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"), "{err:?}");
}

/// Each kind of bad input has its own SQLSTATE and a message naming the problem.
#[tokio::test]
async fn bad_emit_input_is_refused() {
    let db = connect().await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "SELECT spine.emit(NULL, '{}')",
            "22004",
            "type must not be NULL",
        ),
        (
            "SELECT spine.emit('data.EntityCreated', NULL)",
            "22004",
            "data must not be NULL",
        ),
        (
            "SELECT spine.emit('EntityCreated', '{}')",
            "22023",
            "must be domain.PastTenseName",
        ),
        (
            "SELECT spine.emit('data.CreateEntity', '{}')",
            "22023",
            "past tense",
        ),
        (
            "SELECT spine.emit('Data.EntityCreated', '{}')",
            "22023",
            "domain \"Data\"",
        ),
        (
            "SELECT spine.emit('data.EntityCreated', '{}', '')",
            "22023",
            "subject",
        ),
        (
            "SELECT spine.emit('data.EntityCreated', 'not json')",
            "22P02",
            "json",
        ),
    ];
    for (sql, code, needle) in cases {
        let err = db.query_one(*sql, &[]).await.unwrap_err();
        let db_err = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{sql}: {err:?}"));
        assert_eq!(db_err.code().code(), *code, "{sql}: {}", db_err.message());
        assert!(
            db_err.message().contains(needle),
            "{sql}: {}",
            db_err.message()
        );
    }
}

/// sink_status shows the backlog after the cursor; advance_sink moves forward only.
#[tokio::test]
async fn sink_status_tracks_backlog_and_cursor() {
    let db = connect().await;
    let sink = fresh_sink(&db).await;
    let tag = format!("sink-{}/", Uuid::new_v4().simple());
    for i in 0..3 {
        db.execute(
            "SELECT spine.emit('test.ThingHappened', '{}', $1)",
            &[&format!("{tag}{i}")],
        )
        .await
        .unwrap();
    }
    let before = sink_status(&db, &sink).await;
    let (backlog, lag, (c0, s0)) = (before.backlog, before.lag_seconds, before.cursor);
    assert!(backlog >= 3, "{backlog}");
    assert!(lag >= 0.0);
    let mine = read_after(&db, (c0, s0), &tag).await;
    assert_eq!(mine.len(), 3);
    let last = mine.last().unwrap();
    db.execute(
        "SELECT spine.advance_sink($1, $2, $3, 3)",
        &[&sink, &last.0, &last.1],
    )
    .await
    .unwrap();
    assert_eq!(sink_status(&db, &sink).await.cursor, (last.0, last.1));
    // Backwards is ignored, not applied.
    db.execute(
        "SELECT spine.advance_sink($1, $2, $3, 0)",
        &[&sink, &c0, &s0],
    )
    .await
    .unwrap();
    assert_eq!(sink_status(&db, &sink).await.cursor, (last.0, last.1));
    let err = db
        .execute("SELECT spine.advance_sink('no_such_sink', 1, 1, 1)", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42704"));
    let err = db
        .execute("SELECT spine.ensure_sink('Bad Name', 'x')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22023"));
    drop_sink(&db, &sink).await;
}

/// Retention deletes only events every sink has passed, and the schedule exists.
#[tokio::test]
async fn purge_respects_the_slowest_sink() {
    let db = connect().await;
    let jobs: i64 = one(
        &db,
        "SELECT count(*) FROM cron.job WHERE jobname = 'spine-purge-events'",
        &[],
    )
    .await;
    assert_eq!(jobs, 1, "pg_cron schedule from the migration");
    let subject = format!("purge-{}", Uuid::new_v4());
    db.execute(
        "SELECT spine.emit('test.ThingHappened', '{}', $1)",
        &[&subject],
    )
    .await
    .unwrap();
    // A sink at the head of history keeps everything after it; a sink created from
    // the start keeps everything. Purging with keep = 0 must not touch our event.
    let at_head = fresh_sink(&db).await;
    let from_start = format!("t_{}", Uuid::new_v4().simple());
    db.execute("SELECT spine.ensure_sink($1, 'test', true)", &[&from_start])
        .await
        .unwrap();
    db.query_one("SELECT spine.purge_events('0 seconds')", &[])
        .await
        .unwrap();
    for sink in [&at_head, &from_start] {
        let existed: bool = one(&db, "SELECT spine.drop_sink($1)", &[sink]).await;
        assert!(existed);
    }
    let n: i64 = one(
        &db,
        "SELECT count(*) FROM spine.events WHERE subject = $1",
        &[&subject],
    )
    .await;
    assert_eq!(n, 1, "undelivered event survived the purge");
    let err = db
        .query_one("SELECT spine.purge_events('-1 day')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22023"));
}

/// A cause the emitter cannot see (another user's event, or one purged or never
/// written) is kept as the causation id, but the event starts a chain of its own:
/// correlation ids never leak across users.
#[tokio::test]
async fn unknown_or_foreign_cause_starts_a_new_chain() {
    let mut db = spine_tests::connect().await;
    let (alice, bob) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let emit_as = async |db: &mut tokio_postgres::Client, who: uuid::Uuid, cause: uuid::Uuid| {
        let tx = db.transaction().await.unwrap();
        spine_tests::act_as(
            &tx,
            "authenticated",
            serde_json::json!({"sub": who.to_string(), "role": "authenticated"}),
        )
        .await;
        let id: uuid::Uuid = spine_tests::one(
            &tx,
            "SELECT spine.emit('test.ThingHappened', '{}', causation_id => $1)",
            &[&cause],
        )
        .await;
        tx.commit().await.unwrap();
        id
    };
    let bobs = emit_as(&mut db, bob, uuid::Uuid::new_v4()).await;
    for cause in [uuid::Uuid::new_v4(), bobs] {
        let id = emit_as(&mut db, alice, cause).await;
        let (correlation, causation): (uuid::Uuid, Option<uuid::Uuid>) = {
            let r = db
                .query_one(
                    "SELECT correlation_id, causation_id FROM spine.events WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!(correlation, id);
        assert_eq!(causation, Some(cause));
    }
}

/// `events_after` reads the next commits by index and each commit's events by
/// index, whatever the statistics say. What made the plain join hash all of
/// `spine.events` on every read (2026-12-06, relay p50 30-54 ms at 1,000 events/s):
/// statistics taken while a backlog of large transactions filled the table, so
/// few distinct transactions (here pinned with `n_distinct`, which ANALYZE of a
/// real backlog arrives at by sampling), beside thousands of small commits. A SQL
/// function plans its body without its arguments' values, so only the shape of
/// the query protects it.
#[tokio::test]
async fn events_after_walks_the_indexes_whatever_the_statistics() {
    let db = connect().await;
    db.batch_execute(
        "DO $$ BEGIN \
           FOR t IN 1..20 LOOP \
             PERFORM spine.emit('test.EntityCreated', jsonb_build_object('i', i), 'entity/' || i) \
                FROM generate_series(1, 1000) i; \
             COMMIT; \
           END LOOP; \
           FOR t IN 1..3000 LOOP \
             PERFORM spine.emit('test.PingSent', '{}'); \
             COMMIT; \
           END LOOP; \
         END $$",
    )
    .await
    .unwrap();
    db.batch_execute(
        "ALTER TABLE spine.events ALTER COLUMN txid SET (n_distinct = 100); \
         ANALYZE spine.events; ANALYZE spine.event_commits",
    )
    .await
    .unwrap();
    let head: i64 = one(&db, "SELECT max(commit_seq) FROM spine.event_commits", &[]).await;
    let plans = logged_plans(
        "SELECT * FROM spine.events_after($1, 0, 1000)",
        &[&(head - 10)],
    )
    .await;
    // The statistics go back to what ANALYZE finds before anything can fail.
    db.batch_execute(
        "ALTER TABLE spine.events ALTER COLUMN txid RESET (n_distinct); ANALYZE spine.events",
    )
    .await
    .unwrap();
    let read = plan_of(&plans, "spine.event_commits");
    assert!(
        read.contains("_txid_seq_idx")
            && !read.contains("Seq Scan on events")
            && !read.contains("Hash Join"),
        "{read}"
    );
}

/// `spine.causation_id`: events written without a cause of their own — an entity
/// write, a plain emit — take the transaction's, and its correlation id; an
/// explicit cause wins; a value that is not a uuid is refused (22023).
#[tokio::test]
async fn events_take_the_transactions_cause() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let claims = json!({"sub": alice.to_string(), "role": "authenticated"});
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "authenticated", claims.clone()).await;
    let start: Uuid = one(&tx, "SELECT spine.emit('probe.Started', '{}')", &[]).await;
    let other: Uuid = one(&tx, "SELECT spine.emit('probe.Diverted', '{}')", &[]).await;
    tx.commit().await.unwrap();

    let tx = db.transaction().await.unwrap();
    act_as(&tx, "authenticated", claims.clone()).await;
    tx.execute(
        "SELECT set_config('spine.causation_id', $1, true)",
        &[&start.to_string()],
    )
    .await
    .unwrap();
    let entity: Uuid = one(&tx, "SELECT spine.upsert_entity('note', '{}')", &[]).await;
    let plain: Uuid = one(&tx, "SELECT spine.emit('probe.Continued', '{}')", &[]).await;
    let explicit: Uuid = one(
        &tx,
        "SELECT spine.emit('probe.Continued', '{}', causation_id => $1)",
        &[&other],
    )
    .await;
    let created: Uuid = one(
        &tx,
        "SELECT id FROM spine.events WHERE subject = 'entity/' || $1::uuid::text",
        &[&entity],
    )
    .await;
    for (id, cause, chain) in [
        (created, start, start),
        (plain, start, start),
        (explicit, other, other),
    ] {
        let r = tx
            .query_one(
                "SELECT causation_id, correlation_id FROM spine.events WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(
            (r.get::<_, Option<Uuid>>(0), r.get::<_, Uuid>(1)),
            (Some(cause), chain)
        );
    }
    tx.execute("SELECT set_config('spine.causation_id', 'nope', true)", &[])
        .await
        .unwrap();
    let err = tx
        .execute("SELECT spine.emit('probe.Continued', '{}')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22023"), "{err:?}");
}

/// The register trigger remembers, per transaction, that it has registered the
/// transaction (`spine.event_commit_registered`). Only a superuser may set that:
/// a user who could would keep their transaction out of `spine.event_commits`,
/// and its events from ever being delivered. Set before the library defined it (a
/// placeholder), the value is dropped when the library loads; after, SET is 42501.
#[tokio::test]
async fn users_cannot_skip_registering_their_transaction() {
    let db = connect_to(&database_url()).await.unwrap();
    let subject = format!("forged-{}", Uuid::new_v4());
    db.batch_execute(&format!(
        "BEGIN; SET LOCAL ROLE service_role; \
         SELECT set_config('spine.event_commit_registered', pg_current_xact_id()::text, true); \
         SELECT spine.emit('test.ThingHappened', '{{}}', '{subject}'); COMMIT"
    ))
    .await
    .unwrap();
    let stamped: bool = one(
        &db,
        "SELECT c.commit_seq IS NOT NULL FROM spine.events e JOIN spine.event_commits c \
             ON c.txid = e.txid AND c.tx_started_at = e.tx_started_at WHERE e.subject = $1",
        &[&subject],
    )
    .await;
    assert!(stamped, "registered and stamped despite the forged flag");
    for role in ["anon", "authenticated", "service_role"] {
        let err = db
            .batch_execute(&format!(
                "BEGIN; SET LOCAL ROLE {role}; SET LOCAL spine.event_commit_registered = '1'"
            ))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some("42501"), "{role}");
        db.batch_execute("ROLLBACK").await.unwrap();
    }
}
