//! The foundation against the real stack: extension installed by the migrations,
//! Supabase compatibility, error SQLSTATEs.

use serde_json::json;
use spine_tests::{act_as, column, connect, one, sqlstate};

/// The migrations installed the extension at the version this workspace builds.
#[tokio::test]
async fn extension_reports_its_version() {
    let db = connect().await;
    let v: String = one(&db, "SELECT spine.version()", &[]).await;
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
}

/// auth.uid() returns the `sub` of the claims PostgREST sets for the request, as
/// the `authenticated` role, and auth.role()/auth.jwt() agree.
#[tokio::test]
async fn auth_uid_returns_sub_of_request_claims() {
    let mut db = connect().await;
    let tx = db.transaction().await.unwrap();
    let sub = uuid::Uuid::new_v4();
    act_as(
        &tx,
        "authenticated",
        json!({"sub": sub.to_string(), "role": "authenticated", "email": "a@example.com"}),
    )
    .await;
    let row = tx
        .query_one(
            "SELECT auth.uid(), auth.role(), auth.jwt() ->> 'email', current_user::text",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, uuid::Uuid>(0), sub);
    assert_eq!(row.get::<_, String>(1), "authenticated");
    assert_eq!(row.get::<_, String>(2), "a@example.com");
    assert_eq!(row.get::<_, String>(3), "authenticated");
    tx.rollback().await.unwrap();
}

/// Claims are transaction-local (set_config(..., true)): the next transaction on
/// the same pooled connection has no user.
#[tokio::test]
async fn claims_do_not_leak_across_transactions() {
    let mut db = connect().await;
    let tx = db.transaction().await.unwrap();
    act_as(
        &tx,
        "authenticated",
        json!({"sub": uuid::Uuid::new_v4().to_string()}),
    )
    .await;
    tx.commit().await.unwrap();
    let uid: Option<uuid::Uuid> = one(&db, "SELECT auth.uid()", &[]).await;
    assert_eq!(uid, None);
}

/// Migrations are recorded where the Supabase CLI records them, and the
/// extensions Spine builds on are installed in the same database.
#[tokio::test]
async fn migrations_and_dependencies_are_in_place() {
    let db = connect().await;
    let applied: i64 = one(&db, "SELECT count(*) FROM supabase_migrations.schema_migrations WHERE version = '20261125000000'", &[]).await;
    assert_eq!(applied, 1);
    let exts: String = one(
        &db,
        "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension \
             WHERE extname IN ('pg_cron', 'vector', 'spine')",
        &[],
    )
    .await;
    assert_eq!(exts, "pg_cron,spine,vector");
}

/// Bad settings are reported with SQLSTATE 22023 (invalid_parameter_value).
#[tokio::test]
async fn bad_setting_is_invalid_parameter_value() {
    let db = connect().await;
    db.batch_execute("SET spine.notify_channel = ''")
        .await
        .unwrap();
    let err = db
        .query_one("SELECT spine.settings()", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22023"), "{err:?}");
    let msg = err.as_db_error().unwrap().message().to_string();
    assert_eq!(
        msg,
        "invalid value for spine.notify_channel: must not be empty"
    );
}

/// Functions are private by default: anon may read the version but not settings.
#[tokio::test]
async fn anon_gets_only_what_is_granted() {
    let mut db = connect().await;
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "anon", json!({"role": "anon"})).await;
    tx.query_one("SELECT spine.version()", &[]).await.unwrap();
    let err = tx
        .query_one("SELECT spine.settings()", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"), "{err:?}");
}

/// Extension tables are registered for pg_dump: a logical backup keeps queued
/// jobs, undelivered events, sink cursors, the audit chain, plugins, consents,
/// secrets (encrypted) and the sequences' positions. Every table of the schemas is
/// checked, so a new one that is not registered fails here.
#[tokio::test]
async fn logical_backups_include_spine_data() {
    // Markers of running transactions: nothing to back up.
    const TRANSIENT: &[&str] = &["spine.audit_transactions"];
    let db = spine_tests::connect().await;
    let tables: Vec<String> = column(
        &db,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname IN ('spine', 'vault') AND c.relkind = 'r' ORDER BY 1",
        &[],
    )
    .await;
    assert!(tables.len() >= 14, "{tables:?}");
    let out = std::process::Command::new("pg_dump")
        .args(["--data-only"])
        .arg(spine_tests::database_url())
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    for table in tables.iter().filter(|t| !TRANSIENT.contains(&t.as_str())) {
        assert!(
            dump.contains(&format!("COPY {table} ")),
            "{table} missing from pg_dump"
        );
    }
    for seq in ["event_commit_seq", "events_seq_seq", "jobs_id_seq"] {
        assert!(
            dump.contains(&format!("setval('spine.{seq}'")),
            "spine.{seq} missing from pg_dump"
        );
    }
}
