//! Upgrading a database made by the previous release keeps everything, and leaves
//! it exactly as a fresh install of this version.
//!
//! The previous release's extension is built from its recorded commit
//! (`extension/releases.toml`, by `cargo xtask test`: `SPINE_UPGRADE_FROM`). On an
//! installation and cluster of the test's own ([`spine_tests::cluster`]):
//!
//! 1. the previous release's files, its migrations, then data in every domain
//!    (`upgrade/fixture-<version>.sql`); this version's relay (spine-worker)
//!    delivers part of the outbox to NATS, is killed, and more events follow; a
//!    job is leased;
//! 2. this version's files replace the old ones (as a package upgrade does),
//!    `ALTER EXTENSION spine UPDATE` (then its script once more: scripts are
//!    idempotent), then this version's new migrations;
//! 3. every row of every table survived, the audit chain verifies, the vault
//!    decrypts, the leased job completes, the relay resumes from its cursor (each
//!    event in NATS once, in commit order);
//! 4. the upgraded catalog equals a fresh install's (`upgrade/catalog.sql`);
//!    and a process refuses a database newer than itself.

use spine_tests::cluster::{
    assert_outbox_delivered_once_in_order, contents, extension_files, migrate, new_database,
    pause_cron, psql, repo_root, sink_drained, system_extension_files, tables, Cluster,
    Installation,
};
use spine_tests::daemons::{Nats, Worker};
use spine_tests::proc::tempdir::TempDir;
use spine_tests::{column, connect_to, one, sink_status};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use tokio_postgres::Client;

const THIS_VERSION: &str = env!("CARGO_PKG_VERSION");
const SINK: &str = "upgrade_relay";

fn major(version: &str) -> u64 {
    version.split('.').next().unwrap().parse().unwrap()
}

fn minor(version: &str) -> u64 {
    version.split('.').nth(1).unwrap().parse().unwrap()
}

/// The application's own table with a webhook, made in both databases compared.
fn app() -> PathBuf {
    repo_root().join("tests/tests/upgrade/app.sql")
}

/// The previous release's build (`package/`, `migrations/`) and its version.
fn previous_release() -> (PathBuf, String) {
    let dir = std::env::var("SPINE_UPGRADE_FROM").expect(
        "SPINE_UPGRADE_FROM is not set: `cargo xtask test` builds the previous release \
         (or run `cargo xtask test` once, then `eval \"$(cargo xtask env)\"`)",
    );
    let version = std::env::var("SPINE_UPGRADE_FROM_VERSION").expect("SPINE_UPGRADE_FROM_VERSION");
    (dir.into(), version)
}

async fn connect(cluster: &Cluster) -> Client {
    connect_to(&cluster.url("spine"))
        .await
        .expect("connect to the test's cluster")
}

/// `upgrade/catalog.sql`'s lines for the database.
async fn catalog(db: &Client) -> Vec<String> {
    let sql = std::fs::read_to_string(repo_root().join("tests/tests/upgrade/catalog.sql")).unwrap();
    column(db, &sql, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_release_upgrades_in_place() {
    let (from, from_version) = previous_release();
    let fixture = repo_root().join(format!("tests/tests/upgrade/fixture-{from_version}.sql"));
    assert!(
        fixture.is_file(),
        "{} missing: each release the upgrade starts from needs its fixture",
        fixture.display()
    );
    let tmp = TempDir::new();
    let inst = Installation::new(tmp.path());

    // 1. The previous release, its migrations and data.
    inst.install_extension(&extension_files(&from.join("package")));
    let (old, old_migrations) = new_database(&inst, "upgraded", &from.join("migrations"), &[app()]);
    let url = old.url("spine");
    psql(&url, &["-f", fixture.to_str().unwrap()]);
    pause_cron(&url); // the fixture schedules a job
    let db = connect(&old).await;
    let version: String = one(&db, "SELECT spine.version()", &[]).await;
    assert_eq!(version, from_version);

    // This version's relay works on the previous release's database (the rolling
    // upgrade order: processes first), delivers part of the outbox, and dies.
    let nats = Nats::start();
    let mut relay = Worker::start(SINK, &nats.url(), &[("DATABASE_URL", &url)]);
    sink_drained(&url, SINK).await;
    relay.kill9();
    db.batch_execute(
        "SELECT spine.emit('upgrade.Pinged', jsonb_build_object('n', n)) FROM generate_series(100, 124) n",
    )
    .await
    .unwrap();
    let cursor = sink_status(&db, SINK).await;
    assert_eq!(cursor.backlog, 25, "the relay's cursor is mid-stream");
    let leased: i64 = one(
        &db,
        "SELECT id FROM spine.jobs WHERE payload->>'tag' = 'leased' AND state = 'running'",
        &[],
    )
    .await;
    let before_tables = tables(&db).await;
    let before = contents(&db, &before_tables).await;
    let audited: i64 = one(&db, "SELECT count(*) FROM spine.audit_log", &[]).await;
    assert!(audited > 0, "the fixture audited something");
    let broken: Option<i64> = one(&db, "SELECT spine.audit_verify()", &[]).await;
    assert_eq!(broken, None, "the audit chain verifies before the upgrade");
    drop(db);

    // 2. This version's files, then ALTER EXTENSION … UPDATE and new migrations.
    inst.install_extension(&system_extension_files());
    psql(&url, &["-c", "ALTER EXTENSION spine UPDATE"]);
    // Upgrade scripts are idempotent: the same script again changes nothing the
    // comparison with a fresh install below would see.
    let script = repo_root().join(format!(
        "extension/sql/spine--{from_version}--{THIS_VERSION}.sql"
    ));
    let again = std::fs::read_to_string(&script)
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()))
        .lines()
        .filter(|l| !l.starts_with("\\echo"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("'MODULE_PATHNAME'", "'$libdir/spine'");
    let again_file = tmp.path().join("upgrade-again.sql");
    std::fs::write(
        &again_file,
        format!("SET search_path = spine, public;\n{again}"),
    )
    .unwrap();
    psql(
        &url,
        &["--single-transaction", "-f", again_file.to_str().unwrap()],
    );
    migrate(&url, &repo_root().join("migrations"), &old_migrations);
    let db = connect(&old).await;
    let (version, library): (String, String) = {
        let r = db
            .query_one("SELECT spine.version(), spine.library_version()", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (version.as_str(), library.as_str()),
        (THIS_VERSION, THIS_VERSION)
    );

    // 3. Everything survived and works.
    let after = contents(&db, &before_tables).await;
    for (table, was) in &before {
        assert_eq!(&after[table], was, "{table}: rows changed by the upgrade");
    }
    let broken: Option<i64> = one(&db, "SELECT spine.audit_verify()", &[]).await;
    assert_eq!(
        broken, None,
        "the audit chain verifies after the upgrade (broken at seq)"
    );
    let secret: String = one(
        &db,
        "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = 'upgrade-secret'",
        &[],
    )
    .await;
    assert_eq!(secret, "upgrade-plaintext");
    let undecryptable: i64 = one(
        &db,
        "SELECT count(*) FROM vault.decrypted_secrets WHERE decrypted_secret IS NULL",
        &[],
    )
    .await;
    assert_eq!(undecryptable, 0, "every secret decrypts");
    let completed: i64 = one(
        &db,
        "SELECT spine.complete_jobs(ARRAY[$1::bigint], 'upgrade-worker')",
        &[&leased],
    )
    .await;
    assert_eq!(
        completed, 1,
        "the job leased before the upgrade completes after it"
    );

    let _relay = Worker::start(SINK, &nats.url(), &[("DATABASE_URL", &url)]);
    db.batch_execute("SELECT spine.emit('upgrade.Pinged', '{\"n\": 200}')")
        .await
        .unwrap();
    sink_drained(&url, SINK).await;
    assert_outbox_delivered_once_in_order(&db, &nats).await;
    let upgraded = catalog(&db).await;

    // A process refuses a database newer than itself, saying what to upgrade.
    let newer = format!("{}.{}.0", major(THIS_VERSION), minor(THIS_VERSION) + 1);
    db.execute(
        "UPDATE pg_extension SET extversion = $1 WHERE extname = 'spine'",
        &[&newer],
    )
    .await
    .unwrap();
    let out = Command::new(spine_tests::proc::cargo_bin("spine-worker"))
        .env("DATABASE_URL", &url)
        .env("NATS_URL", nats.url())
        .env("SPINE_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("upgrade spine-worker to {newer}")),
        "{stderr}"
    );
    drop(db);
    drop(old);

    // 4. The same objects as a fresh install of this version.
    let (fresh, _) = new_database(&inst, "fresh", &repo_root().join("migrations"), &[app()]);
    let fresh_catalog = catalog(&connect(&fresh).await).await;
    let (a, b): (BTreeSet<_>, BTreeSet<_>) =
        (fresh_catalog.iter().collect(), upgraded.iter().collect());
    let missing: Vec<_> = a.difference(&b).collect();
    let extra: Vec<_> = b.difference(&a).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the upgraded database differs from a fresh install of {THIS_VERSION}:\n\
         only in the fresh install:\n{missing:#?}\nonly in the upgraded database:\n{extra:#?}"
    );
    assert!(
        fresh_catalog.len() > 500,
        "{} catalog lines",
        fresh_catalog.len()
    );
}
