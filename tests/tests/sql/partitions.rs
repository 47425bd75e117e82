//! Time partitions: the outbox's (`spine.events` and `spine.event_commits` by
//! `tx_started_at`) and the job archive's (by `finished_at`), each test in a
//! database of its own: retention's horizon is every sink (or queue) of the
//! database, and the dev database's are other tests'.
//!
//! Partitions of 2 seconds keep the tests short; nothing in the code depends on
//! the width (`spine.event_partition_interval` and
//! `spine.job_archive_partition_interval`, 1 day by default).

use spine_tests::{connect, database_url, one, sqlstate};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// A new database with the extension; the connection has 2-second partitions.
async fn database() -> (String, Client) {
    let admin = connect().await;
    let name = format!("spine_partitions_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = database_url().replace("/spine", &format!("/{name}"));
    let db = session(&url).await;
    db.batch_execute(
        "CREATE EXTENSION spine CASCADE; SET spine.event_partition_interval = '2 seconds'",
    )
    .await
    .unwrap();
    (url, db)
}

async fn session(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn partitions(db: &Client) -> Vec<String> {
    db.query("SELECT name FROM spine.event_partitions()", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Where a transaction's events and commit row went (partition names).
async fn homes(db: &Client, subject: &str) -> (String, String) {
    let row = db
        .query_one(
            "SELECT e.tableoid::regclass::text, c.tableoid::regclass::text \
               FROM spine.events e JOIN spine.event_commits c \
                 ON c.txid = e.txid AND c.tx_started_at = e.tx_started_at \
              WHERE e.subject = $1 LIMIT 1",
            &[&subject],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Sleeps until `now()` is past the end of the 2-second range of `subject`'s
/// transaction (whether a partition or the default holds it).
async fn wait_past_range_of(db: &Client, subject: &str) {
    let secs: f64 = one(
        db,
        "SELECT greatest(extract(epoch FROM date_bin('2 seconds', tx_started_at, \
                    timestamptz '2000-01-01 00:00:00+00') + interval '2 seconds' - now()), 0)::float8 \
           FROM spine.events WHERE subject = $1 LIMIT 1",
        &[&subject],
    )
    .await;
    tokio::time::sleep(Duration::from_secs_f64(secs + 0.1)).await;
}

async fn advance_to_head(db: &Client, sink: &str) {
    db.execute(
        "SELECT spine.advance_sink($1, (SELECT max(commit_seq) + 1 FROM spine.event_commits), 0, 0)",
        &[&sink],
    )
    .await
    .unwrap();
}

/// Maintenance makes the ranges ahead; a transaction's events and commit row land
/// in the twin partitions of its start; retention drops a partition only once every
/// sink delivered it, never while someone holds it, and then as a whole: both
/// twins gone, the count of its events returned, later partitions untouched.
#[tokio::test]
async fn retention_drops_whole_partitions_once_every_sink_has_them() {
    let (url, db) = database().await;
    let made: i32 = one(&db, "SELECT spine.create_event_partitions()", &[]).await;
    assert_eq!(made, 5, "the current range and four ahead");
    assert_eq!(partitions(&db).await.len(), 6, "five and the default");
    let again: i32 = one(&db, "SELECT spine.create_event_partitions()", &[]).await;
    assert!(
        again <= 1,
        "idempotent: at most a range the clock moved into"
    );

    for sink in ["fast", "slow"] {
        db.execute("SELECT spine.ensure_sink($1, 'test')", &[&sink])
            .await
            .unwrap();
    }
    db.batch_execute(
        "BEGIN; \
         SELECT spine.emit('test.ThingHappened', jsonb_build_object('i', i), 'old') FROM generate_series(1, 3) i; \
         COMMIT",
    )
    .await
    .unwrap();
    let (events_home, commits_home) = homes(&db, "old").await;
    assert!(events_home.starts_with("spine.events_p"), "{events_home}");
    assert_eq!(
        commits_home,
        events_home.replace("spine.events_p", "spine.event_commits_p"),
        "twins"
    );
    wait_past_range_of(&db, "old").await;
    db.execute("SELECT spine.emit('test.ThingHappened', '{}', 'new')", &[])
        .await
        .unwrap();
    let (newer_home, _) = homes(&db, "new").await;
    assert_ne!(newer_home, events_home);

    let purge = "SELECT spine.purge_events('0 seconds')";
    let exists = "SELECT to_regclass($1) IS NOT NULL";
    let purged: i64 = one(&db, purge, &[]).await;
    assert_eq!(purged, 0, "no sink has delivered anything");
    advance_to_head(&db, "fast").await;
    let purged: i64 = one(&db, purge, &[]).await;
    assert_eq!(purged, 0, "the slow sink has not");
    assert!(one::<bool>(&db, exists, &[&events_home]).await);

    // Every sink has it, but a reader holds the partition: retention waits for
    // the lock at most lock_wait, then leaves the partition for the next run.
    advance_to_head(&db, "slow").await;
    let reader = session(&url).await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM spine.events")
        .await
        .unwrap();
    let dropped: i64 = one(
        &db,
        "SELECT spine.drop_event_partitions('0 seconds', now(), '200 milliseconds')",
        &[],
    )
    .await;
    assert_eq!(dropped, 0, "locked by an open transaction");
    assert!(one::<bool>(&db, exists, &[&events_home]).await);
    reader.batch_execute("COMMIT").await.unwrap();

    // The partition of "new" is still running or its range just ended; only what
    // ended before now goes, and "new" is delivered too, so count what went.
    let before: i64 = one(&db, "SELECT count(*) FROM spine.events", &[]).await;
    let purged: i64 = one(&db, purge, &[]).await;
    let after: i64 = one(&db, "SELECT count(*) FROM spine.events", &[]).await;
    assert_eq!(purged, before - after, "returns what it dropped");
    assert!(purged >= 3, "the three old events went: {purged}");
    assert!(!one::<bool>(&db, exists, &[&events_home]).await);
    assert!(!one::<bool>(&db, exists, &[&commits_home]).await);
    let old: i64 = one(
        &db,
        "SELECT count(*) FROM spine.events_after(0, 0, 1000) WHERE subject = 'old'",
        &[],
    )
    .await;
    assert_eq!(old, 0);
    // Ranges ahead were made again: the last ends at least three ranges away.
    let ahead: f64 = one(
        &db,
        "SELECT extract(epoch FROM max(range_end) - now())::float8 FROM spine.event_partitions()",
        &[],
    )
    .await;
    assert!(ahead > 6.0, "partitions ahead: {ahead} s");
}

/// Events written before maintenance made their range sit in the default
/// partition; the range is then left to it (attaching would fail), the relay reads
/// default and partitions in one commit order, and retention deletes the
/// default's delivered rows.
#[tokio::test]
async fn the_default_partition_keeps_early_events_in_commit_order() {
    let (_url, mut db) = database().await;
    db.execute("SELECT spine.ensure_sink('relay', 'test')", &[])
        .await
        .unwrap();
    // One transaction: the event and the maintenance are in the same range.
    let tx = db.transaction().await.unwrap();
    tx.execute(
        "SELECT spine.emit('test.ThingHappened', '{}', 'early')",
        &[],
    )
    .await
    .unwrap();
    let made: i32 = one(&tx, "SELECT spine.create_event_partitions()", &[]).await;
    tx.commit().await.unwrap();
    assert_eq!(
        made, 4,
        "the range with a default row is left to the default"
    );
    let (early_home, _) = homes(&db, "early").await;
    assert_eq!(early_home, "spine.events_default");
    db.execute(
        "SELECT spine.emit('test.ThingHappened', '{}', 'later')",
        &[],
    )
    .await
    .unwrap();
    // 'later' starts in the range left to the default, or in the next one.
    let (later_home, _) = homes(&db, "later").await;
    wait_past_range_of(&db, "later").await;
    // Delivered: early and later. Not delivered: last, so it stays however long
    // this test takes.
    advance_to_head(&db, "relay").await;
    db.execute("SELECT spine.emit('test.ThingHappened', '{}', 'last')", &[])
        .await
        .unwrap();
    let (last_home, _) = homes(&db, "last").await;
    assert!(
        last_home.starts_with("spine.events_p"),
        "{last_home} ({later_home})"
    );

    let order: Vec<String> = db
        .query(
            "SELECT subject FROM spine.events_after(0, 0, 1000) ORDER BY commit_seq, seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(order, ["early", "later", "last"]);

    let purged: i64 = one(&db, "SELECT spine.purge_events('0 seconds')", &[]).await;
    assert_eq!(purged, 2, "early from the default, later from either");
    let left: Vec<String> = db
        .query("SELECT subject FROM spine.events ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["last"], "undelivered");
}

/// Partitions are reachable only through spine.events (grants and its policy):
/// RLS is on for each, no role but the owner reads one directly. A width that is
/// not an interval, has months or is under a second is refused with 22023.
#[tokio::test]
async fn partitions_are_private_and_the_width_is_checked() {
    let (_url, db) = database().await;
    db.query_one("SELECT spine.create_event_partitions()", &[])
        .await
        .unwrap();
    let open: i64 = one(
        &db,
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
          WHERE i.inhparent IN ('spine.events'::regclass, 'spine.event_commits'::regclass) \
            AND NOT c.relrowsecurity",
        &[],
    )
    .await;
    assert_eq!(open, 0, "every partition has RLS enabled");
    let name: String = one(
        &db,
        "SELECT name FROM spine.event_partitions() WHERE range_start IS NOT NULL LIMIT 1",
        &[],
    )
    .await;
    for role in ["anon", "authenticated", "service_role"] {
        for table in [
            name.as_str(),
            "spine.events_default",
            "spine.event_commits_default",
        ] {
            let err = db
                .batch_execute(&format!(
                    "BEGIN; SET LOCAL ROLE {role}; SELECT * FROM {table}"
                ))
                .await
                .unwrap_err();
            assert_eq!(sqlstate(&err), Some("42501"), "{role} read {table}");
            db.batch_execute("ROLLBACK").await.unwrap();
        }
    }
    for width in ["1 month", "nonsense", "100 milliseconds"] {
        db.execute(
            "SELECT set_config('spine.event_partition_interval', $1, false)",
            &[&width],
        )
        .await
        .unwrap();
        let err = db
            .query_one("SELECT spine.create_event_partitions()", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some("22023"), "{width}");
    }
}

/// The job archive by finished_at: a partition goes whole once its range ended
/// the longest queue retention ago; a queue with a shorter retention has its jobs
/// deleted at its own retention meanwhile; partitions are private like the
/// outbox's.
#[tokio::test]
async fn the_job_archive_drops_partitions_past_the_longest_retention() {
    let (_url, db) = database().await;
    db.batch_execute(
        "SET spine.job_archive_partition_interval = '2 seconds'; \
         SELECT spine.create_queue('short', retention => '0 seconds'); \
         SELECT spine.create_queue('long', retention => '1 hour')",
    )
    .await
    .unwrap();
    let made: i32 = one(&db, "SELECT spine.create_job_archive_partitions()", &[]).await;
    assert_eq!(made, 5);
    db.batch_execute(
        "SELECT spine.cancel_job(spine.enqueue(q, jsonb_build_object('i', i))) \
           FROM unnest(ARRAY['short', 'long']) q, generate_series(1, 2) i",
    )
    .await
    .unwrap();
    let home: String = one(
        &db,
        "SELECT DISTINCT tableoid::regclass::text FROM spine.jobs_archive",
        &[],
    )
    .await;
    assert!(home.starts_with("spine.jobs_archive_p"), "{home}");
    let secs: f64 = one(
        &db,
        "SELECT greatest(extract(epoch FROM upper(spine.partition_range($1::text::regclass)) - now()), 0)::float8",
        &[&home],
    )
    .await;
    tokio::time::sleep(Duration::from_secs_f64(secs + 0.1)).await;

    let maintain = "SELECT (spine.jobs_maintenance()->>'archive_purged')::bigint";
    let purged: i64 = one(&db, maintain, &[]).await;
    assert_eq!(purged, 2, "short's jobs, deleted at its own retention");
    let left: Vec<String> = db
        .query("SELECT queue FROM spine.jobs_archive", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["long", "long"]);
    let exists = "SELECT to_regclass($1) IS NOT NULL";
    assert!(one::<bool>(&db, exists, &[&home]).await, "long keeps it");

    db.execute(
        "SELECT spine.create_queue('long', retention => '0 seconds')",
        &[],
    )
    .await
    .unwrap();
    let purged: i64 = one(&db, maintain, &[]).await;
    assert_eq!(purged, 2, "the partition went with long's jobs");
    assert!(!one::<bool>(&db, exists, &[&home]).await);
    for role in ["anon", "authenticated", "service_role"] {
        let err = db
            .batch_execute(&format!(
                "BEGIN; SET LOCAL ROLE {role}; SELECT * FROM spine.jobs_archive_default"
            ))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some("42501"), "{role}");
        db.batch_execute("ROLLBACK").await.unwrap();
    }
}
