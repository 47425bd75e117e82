//! A logical backup restores into a working Spine database, on a cluster of its
//! own ([`spine_tests::cluster`]): `pg_dump -Fc` of a database with data in every
//! domain, `pg_restore` into a new cluster that has the same vault root key file
//! (the key is never in the dump), then:
//!
//! - every row of every table is back, the outbox's time partitions too;
//! - the vault decrypts and the audit chain verifies;
//! - new events, jobs and audit rows follow the old ones (sequences restored);
//! - the relay resumes from the cursor the dump holds. The dump was taken while
//!   10 events were undelivered; the original delivered them afterwards, so the
//!   restored relay sends them again, and JetStream drops them by `Nats-Msg-Id`
//!   (within the stream's duplicate window): the stream holds each event once.

use spine_tests::cluster::{
    assert_stream_holds, contents, delivered_by, new_database, psql, repo_root, sink_drained,
    system_extension_files, tables, Cluster, Installation,
};
use spine_tests::daemons::{Nats, Worker};
use spine_tests::proc::tempdir::TempDir;
use spine_tests::{column, connect_to, one, sink_status};
use std::path::Path;
use std::process::Command;

const SINK: &str = "backup_relay";

fn pg_tool(name: &str) -> Command {
    let bindir = std::env::var("SPINE_PG_BINDIR").expect("SPINE_PG_BINDIR");
    Command::new(Path::new(&bindir).join(name))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a Postgres tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const DATA: &str = "
SELECT vault.create_secret('backup-plaintext', 'backup-secret');
SELECT spine.create_queue('backup');
SELECT spine.enqueue('backup', jsonb_build_object('n', n)) FROM generate_series(1, 5) n;
SELECT spine.audit('backup.tested', 'fixture', '{}');
SELECT spine.audit_seal();
SELECT spine.upsert_entity('device', '{\"name\": \"phone\"}', NULL, 'a1a1a1a1-0000-4000-8000-000000000001');
INSERT INTO public.orders VALUES (1, 'first');
SELECT spine.emit('backup.Noted', jsonb_build_object('i', i)) FROM generate_series(1, 10) i;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_restores_into_a_working_database() {
    let tmp = TempDir::new();
    let inst = Installation::new(tmp.path());
    inst.install_extension(&system_extension_files());
    let app = repo_root().join("tests/tests/upgrade/app.sql");
    let migrations = repo_root().join("migrations");
    let (original, _) = new_database(&inst, "original", &migrations, &[app]);
    let url = original.url("spine");
    psql(&url, &["-c", DATA]);

    // The relay delivers what there is, dies; 10 more events wait.
    let nats = Nats::start();
    let mut relay = Worker::start(SINK, &nats.url(), &[("DATABASE_URL", &url)]);
    sink_drained(&url, SINK).await;
    relay.kill9();
    // Those 10 go to a time partition (the first ones are in the default one):
    // partitions made after CREATE EXTENSION are not its members, and the dump
    // must hold them like any table. The sleep puts the new 1-second range after
    // every event so far; one transaction makes the range and writes into it (an
    // event's partition is its transaction's start), however slow the machine.
    psql(&url, &["-c", "SELECT pg_sleep(1.1)"]);
    psql(
        &url,
        &[
            "--single-transaction",
            "-c", "SET LOCAL spine.event_partition_interval = '1 second'",
            "-c", "SELECT spine.create_event_partitions()",
            "-c", "SELECT spine.emit('backup.Noted', jsonb_build_object('i', i)) FROM generate_series(11, 20) i",
        ],
    );
    let db = connect_to(&url).await.unwrap();
    assert_eq!(sink_status(&db, SINK).await.backlog, 10);
    let partitioned: i64 = one(
        &db,
        "SELECT count(*) FROM spine.events \
          WHERE type = 'backup.Noted' AND tableoid <> 'spine.events_default'::regclass",
        &[],
    )
    .await;
    assert_eq!(partitioned, 10, "in a time partition");
    let dump = tmp.path().join("spine.dump");
    run(pg_tool("pg_dump").args(["-Fc", "-f"]).arg(&dump).arg(&url));
    let before_tables = tables(&db).await;
    let before = contents(&db, &before_tables).await;
    // After the dump, the original delivers the 10.
    let mut relay = Worker::start(SINK, &nats.url(), &[("DATABASE_URL", &url)]);
    sink_drained(&url, SINK).await;
    relay.kill9();
    // What the original delivered: the 10, and anything it wrote after the dump
    // (none here: pg_cron's schedules are paused), which the restored one lacks.
    let original_delivered = delivered_by(&db, SINK).await;
    drop(db);
    drop(original);

    // A new cluster (same vault key file, as an operator restores it), restored.
    let restored = Cluster::init(&inst, "restored");
    psql(&restored.url("postgres"), &["-c", "CREATE DATABASE spine"]);
    let url = restored.url("spine");
    run(pg_tool("pg_restore")
        .args(["--exit-on-error", "--no-owner", "-d", &url])
        .arg(&dump));
    let db = connect_to(&url).await.unwrap();
    let restored_outbox: Vec<uuid::Uuid> =
        column(&db, "SELECT id FROM spine.events_after(0, 0, 1000000)", &[]).await;
    assert!(
        restored_outbox
            .iter()
            .all(|e| original_delivered.contains(e)),
        "the dump holds only events the original delivered"
    );

    let after = contents(&db, &before_tables).await;
    for (table, was) in &before {
        assert_eq!(&after[table], was, "{table}: not as dumped");
    }
    let secret: String = one(
        &db,
        "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = 'backup-secret'",
        &[],
    )
    .await;
    assert_eq!(secret, "backup-plaintext");
    let broken: Option<i64> = one(&db, "SELECT spine.audit_verify()", &[]).await;
    assert_eq!(broken, None, "the audit chain verifies after the restore");

    // New work continues after the old: ids, sequences and the chain move on.
    let max_job: i64 = one(&db, "SELECT max(id) FROM spine.jobs", &[]).await;
    let job: i64 = one(&db, "SELECT spine.enqueue('backup', '{\"n\": 6}')", &[]).await;
    assert!(job > max_job, "job ids continue: {job} after {max_job}");
    db.batch_execute(
        "SELECT spine.audit('backup.restored', 'test', '{}'); SELECT spine.audit_seal();",
    )
    .await
    .unwrap();
    let broken: Option<i64> = one(&db, "SELECT spine.audit_verify()", &[]).await;
    assert_eq!(broken, None, "the chain continues from the restored head");

    // The relay resumes from the dumped cursor; JetStream drops the 10 it sees again.
    let _relay = Worker::start(SINK, &nats.url(), &[("DATABASE_URL", &url)]);
    db.batch_execute("SELECT spine.emit('backup.Noted', '{\"i\": 21}')")
        .await
        .unwrap();
    sink_drained(&url, SINK).await;
    let outbox: Vec<uuid::Uuid> =
        column(&db, "SELECT id FROM spine.events_after(0, 0, 1000000)", &[]).await;
    let expected: Vec<uuid::Uuid> = original_delivered
        .iter()
        .chain(outbox.iter().filter(|e| !original_delivered.contains(e)))
        .copied()
        .collect();
    assert_stream_holds(&nats, &expected).await;
}
