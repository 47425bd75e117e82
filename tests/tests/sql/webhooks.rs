//! Database webhooks and function deployment in SQL: what the trigger records for
//! each operation, whose job it is, what dropping removes, and each bad input's
//! SQLSTATE. (Delivery by the worker is tested in worker/tests/webhooks.rs.)

use serde_json::{json, Value};
use spine_tests::{act_as, as_user, column, connect, one, sqlstate};
use uuid::Uuid;

async fn table(db: &tokio_postgres::Client) -> String {
    let t = format!("public.wh_{}", &Uuid::new_v4().simple().to_string()[..10]);
    db.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, note text);
         GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO authenticated"
    ))
    .await
    .unwrap();
    t
}

fn hook_name() -> String {
    format!("h_{}", &Uuid::new_v4().simple().to_string()[..10])
}

/// INSERT and UPDATE are recorded with Supabase's payload (old_record on UPDATE);
/// DELETE, not subscribed, is not; the writer is recorded as the actor, and the
/// jobs have no owner (their rows may hold what the writer cannot read).
#[tokio::test]
async fn trigger_records_supabase_payloads() {
    let mut db = connect().await;
    let t = table(&db).await;
    let name = hook_name();
    db.execute(
        "SELECT spine.create_webhook($1, $2::text::regclass, ARRAY['insert', 'UPDATE'], '{\"url\": \"https://hooks.example/x\"}')",
        &[&name, &t],
    )
    .await
    .unwrap();
    let alice = Uuid::new_v4();
    as_user(&mut db, alice, async |tx| {
        tx.batch_execute(&format!(
            "INSERT INTO {t} VALUES (1, 'a'); UPDATE {t} SET note = 'b'; DELETE FROM {t}"
        ))
        .await
        .unwrap();
    })
    .await;
    let queue = format!("webhook.{name}");
    let rows = db
        .query(
            "SELECT payload, owner_id FROM spine.jobs WHERE queue = $1 ORDER BY id",
            &[&queue],
        )
        .await
        .unwrap();
    let jobs: Vec<(Value, Option<Uuid>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let short = t.trim_start_matches("public.");
    let actor = json!({"role": "authenticated", "sub": alice.to_string()});
    assert_eq!(
        jobs,
        vec![
            (
                json!({"webhook": name, "actor": actor, "body": {"type": "INSERT", "table": short,
                       "schema": "public", "record": {"id": 1, "note": "a"}, "old_record": null}}),
                None
            ),
            (
                json!({"webhook": name, "actor": actor, "body": {"type": "UPDATE", "table": short,
                       "schema": "public", "record": {"id": 1, "note": "b"},
                       "old_record": {"id": 1, "note": "a"}}}),
                None
            ),
        ]
    );
    let cap: Option<i32> = one(
        &db,
        "SELECT max_concurrency FROM spine.queues WHERE name = $1",
        &[&queue],
    )
    .await;
    assert_eq!(cap, Some(4), "the default per-webhook cap");
}

/// Dropping a webhook removes its trigger, row and signing secret; the audit log
/// has both the creation and the drop.
#[tokio::test]
async fn drop_removes_trigger_and_secret() {
    let db = connect().await;
    let t = table(&db).await;
    let name = hook_name();
    let secret: Uuid = one(
        &db,
        "SELECT spine.create_webhook($1, $2::text::regclass, ARRAY['INSERT'], '{\"url\": \"http://h.example\"}')",
        &[&name, &t],
    )
    .await;
    assert!(one::<bool>(&db, "SELECT spine.drop_webhook($1)", &[&name]).await);
    let triggers: Vec<String> = column(
        &db,
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1::text::regclass",
        &[&t],
    )
    .await;
    assert!(triggers.is_empty(), "{triggers:?}");
    let secrets: i64 = one(
        &db,
        "SELECT count(*) FROM vault.secrets WHERE id = $1",
        &[&secret],
    )
    .await;
    assert_eq!(secrets, 0);
    db.execute(&format!("INSERT INTO {t} VALUES (1, 'x')"), &[])
        .await
        .unwrap();
    spine_tests::seal_audit(&db).await;
    let actions: Vec<String> = column(
        &db,
        "SELECT action FROM spine.audit_log WHERE target = $1 ORDER BY action",
        &[&format!("webhook:{name}")],
    )
    .await;
    assert_eq!(actions, ["webhook.created", "webhook.dropped"]);
    let err = db
        .execute("SELECT spine.drop_webhook($1)", &[&name])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42704"));
}

/// Delivery history older than its webhook queue's retention goes (7 days for a
/// dropped webhook); recent history stays; pg_cron has the job.
#[tokio::test]
async fn delivery_history_is_pruned() {
    let db = connect().await;
    let t = table(&db).await;
    let live = hook_name();
    db.execute(
        "SELECT spine.create_webhook($1, $2::text::regclass, ARRAY['INSERT'], '{\"url\": \"http://h.example\"}')",
        &[&live, &t],
    )
    .await
    .unwrap();
    db.execute(
        "SELECT spine.create_queue($1, 4, '1 day')",
        &[&format!("webhook.{live}")],
    )
    .await
    .unwrap();
    let gone = hook_name();
    for (hook, age) in [
        (&live, "2 days"),
        (&live, "1 hour"),
        (&gone, "8 days"),
        (&gone, "6 days"),
    ] {
        db.execute(
            "SELECT spine.record_webhook_delivery($1, 1, 1, 200, true, 'ok', NULL, 5)",
            &[hook],
        )
        .await
        .unwrap();
        db.execute(
            &format!(
                "UPDATE spine.webhook_deliveries SET delivered_at = now() - interval '{age}' \
                      WHERE id = (SELECT max(id) FROM spine.webhook_deliveries)"
            ),
            &[],
        )
        .await
        .unwrap();
    }
    db.execute("SELECT spine.webhook_maintenance()", &[])
        .await
        .unwrap();
    let left: Vec<String> = column(
        &db,
        "SELECT webhook || ' ' || (now() - delivered_at > interval '1 day')::text \
           FROM spine.webhook_deliveries WHERE webhook IN ($1, $2) ORDER BY id",
        &[&live, &gone],
    )
    .await;
    assert_eq!(left, [format!("{live} false"), format!("{gone} true")]);
    let scheduled: i64 = one(
        &db,
        "SELECT count(*) FROM cron.job WHERE jobname = 'spine-webhook-maintenance'",
        &[],
    )
    .await;
    assert_eq!(scheduled, 1);
}

/// Each bad input of create_webhook and deploy_function is refused with its
/// SQLSTATE, and users may do neither.
#[tokio::test]
async fn bad_input_is_refused() {
    let mut db = connect().await;
    let t = table(&db).await;
    let taken = hook_name();
    db.execute(
        "SELECT spine.create_webhook($1, $2::text::regclass, ARRAY['INSERT'], '{\"url\": \"http://h.example\"}')",
        &[&taken, &t],
    )
    .await
    .unwrap();
    let url = json!({"url": "http://h.example"});
    for (name, table, events, target, state) in [
        (
            taken.clone(),
            t.clone(),
            vec!["INSERT"],
            url.clone(),
            "42710",
        ),
        (hook_name(), t.clone(), vec![], url.clone(), "22023"),
        (
            hook_name(),
            t.clone(),
            vec!["TRUNCATE"],
            url.clone(),
            "22023",
        ),
        (
            hook_name(),
            "spine.jobs".into(),
            vec!["INSERT"],
            url.clone(),
            "22023",
        ),
        (
            hook_name(),
            t.clone(),
            vec!["INSERT"],
            json!({"url": "ftp://h"}),
            "22023",
        ),
        (
            hook_name(),
            t.clone(),
            vec!["INSERT"],
            json!({"url": "http://h", "headers": {"Idempotency-Key": "x"}}),
            "22023",
        ),
        (
            hook_name(),
            t.clone(),
            vec!["INSERT"],
            json!({"function": "not-deployed"}),
            "42704",
        ),
        (
            "Bad Name".into(),
            t.clone(),
            vec!["INSERT"],
            url.clone(),
            "22023",
        ),
    ] {
        let err = db
            .execute(
                "SELECT spine.create_webhook($1, $2::text::regclass, $3, $4)",
                &[&name, &table, &events, &target],
            )
            .await
            .unwrap_err();
        assert_eq!(
            sqlstate(&err),
            Some(state),
            "{name} {table} {events:?} {target}: {err:?}"
        );
    }
    let err = db
        .execute(
            "SELECT spine.create_webhook(NULL, $1::text::regclass, ARRAY['INSERT'], '{}')",
            &[&t],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22004"));

    let manifest = json!({"name": "tiny", "version": "1.0.0"});
    for (manifest, source, state) in [
        (
            json!({"name": "tiny"}),
            "Deno.serve(() => new Response(''))".to_string(),
            "22023",
        ),
        (manifest.clone(), "   ".to_string(), "22023"),
        (manifest.clone(), "x".repeat((1 << 20) + 1), "54000"),
    ] {
        let err = db
            .execute(
                "SELECT spine.deploy_function($1, $2)",
                &[&manifest, &source],
            )
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some(state), "{manifest}: {err:?}");
    }

    let tx = db.transaction().await.unwrap();
    act_as(
        &tx,
        "authenticated",
        json!({"sub": Uuid::new_v4().to_string()}),
    )
    .await;
    for sql in [
        format!("SELECT spine.create_webhook('w', '{t}', ARRAY['INSERT'], '{{}}')"),
        "SELECT spine.deploy_function('{\"name\": \"x\", \"version\": \"1.0.0\"}', 'x')".into(),
        "SELECT * FROM spine.webhook_deliveries".into(),
        "SELECT * FROM spine.functions".into(),
    ] {
        let err = tx
            .batch_execute(&format!("SAVEPOINT s; {sql}"))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some("42501"), "{sql}: {err:?}");
        tx.batch_execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    }
}
