//! Database webhooks and edge functions run by the worker, as real processes
//! against the real cluster: retries until success with a verifiable signature,
//! a worker killed mid-delivery, a function target, and a channel plugin invoked
//! by a rule's call_function action.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use spine_tests::connect as db;
use spine_tests::daemons::{job_completed as completed, job_runner, Hook, Worker};
use spine_tests::proc::wait_until;
use std::time::Duration;
use uuid::Uuid;

/// A table of its own with a webhook on INSERT and UPDATE; (table, webhook).
async fn table_with_webhook(db: &tokio_postgres::Client, target: Value) -> (String, String) {
    let suffix = &Uuid::new_v4().simple().to_string()[..10];
    let (table, hook) = (
        format!("public.orders_{suffix}"),
        format!("orders_{suffix}"),
    );
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id serial PRIMARY KEY, item text NOT NULL, qty int NOT NULL)"
    ))
    .await
    .unwrap();
    db.execute(
        "SELECT spine.create_webhook($1, $2::text::regclass, ARRAY['INSERT', 'UPDATE'], $3, 2, 5)",
        &[&hook, &table, &target],
    )
    .await
    .unwrap();
    (table, hook)
}

async fn webhook_job(db: &tokio_postgres::Client, hook: &str) -> i64 {
    let queue = format!("webhook.{hook}");
    spine_tests::one(
        db,
        "SELECT id FROM (SELECT id, queue FROM spine.jobs UNION ALL SELECT id, queue FROM spine.jobs_archive) j WHERE queue = $1",
        &[&queue],
    )
    .await
}

/// Inserts a row into `table`; the id of the job its webhook queued.
async fn fire(db: &tokio_postgres::Client, table: &str, hook: &str, item: &str, qty: i32) -> i64 {
    db.execute(
        &format!("INSERT INTO {table} (item, qty) VALUES ($1, $2)"),
        &[&item, &qty],
    )
    .await
    .unwrap();
    webhook_job(db, hook).await
}

/// Starts a worker for `hook`'s queue and waits until job `id` completed. Each
/// test's workers serve only its own webhook: a worker stopped at the end of one
/// test must not hold a lease on another test's job.
async fn deliver(db: &tokio_postgres::Client, hook: &str, id: i64) -> Worker {
    let worker = job_runner(&format!("webhook.{hook}=webhook"), &[]);
    wait_until("delivered", Duration::from_secs(30), || async {
        completed(db, id).await
    })
    .await;
    worker
}

/// The receiver fails twice, then answers 200: the webhook is delivered three
/// times with the same Idempotency-Key and Supabase's payload, each signed so the
/// receiver can verify it with the webhook's secret; the three attempts are in
/// spine.webhook_deliveries, the last one a success.
#[tokio::test]
async fn webhook_is_retried_signed_and_recorded() {
    let db = db().await;
    let receiver = Hook::start(|n| (if n < 2 { 503 } else { 200 }, Duration::ZERO)).await;
    let (table, hook) = table_with_webhook(
        &db,
        json!({"url": receiver.url, "headers": {"X-Tenant": "acme"}}),
    )
    .await;
    let id = fire(&db, &table, &hook, "pen", 2).await;
    let _worker = deliver(&db, &hook, id).await;

    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 3, "two failures, one success");
    assert!(received.iter().all(|(key, _)| key == &id.to_string()));
    let body: Value = serde_json::from_str(&received[2].1).unwrap();
    let short = table.trim_start_matches("public.");
    assert_eq!(
        body,
        json!({"type": "INSERT", "table": short, "schema": "public",
               "record": {"id": 1, "item": "pen", "qty": 2}, "old_record": null})
    );
    // Verify as a receiver would: HMAC-SHA256 of the raw body with the secret.
    let key: String = spine_tests::one(
        &db,
        "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = $1",
        &[&format!("spine.webhook.{hook}")],
    )
    .await;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(received[2].1.as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        receiver.header(2, "x-spine-signature"),
        Some(format!("sha256={expected}"))
    );
    assert_eq!(receiver.header(2, "x-tenant").as_deref(), Some("acme"));
    assert_eq!(receiver.header(2, "x-spine-webhook"), Some(hook.clone()));
    // A write outside any chain: a trace of the job's own, the same on each retry.
    for n in 0..3 {
        assert_eq!(
            receiver.header(n, "traceparent"),
            Some(format!("00-7370696e656a6f62{id:016x}-{id:016x}-01"))
        );
    }

    let rows = db
        .query(
            "SELECT attempt, status, succeeded FROM spine.webhook_deliveries WHERE job_id = $1 ORDER BY id",
            &[&id],
        )
        .await
        .unwrap();
    let attempts: Vec<(i32, Option<i32>, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (1, Some(503), false),
            (2, Some(503), false),
            (3, Some(200), true)
        ]
    );
}

/// A write caused by an event (`spine.causation_id` set, as the function host
/// does for a job's function) is delivered with that event's chain as the trace
/// id of its W3C `traceparent`, so the receiver's traces join Spine's chain.
#[tokio::test]
async fn webhook_carries_the_writes_chain_as_traceparent() {
    let mut db = db().await;
    let receiver = Hook::start(|_| (200, Duration::ZERO)).await;
    let (table, hook) = table_with_webhook(&db, json!({"url": receiver.url})).await;
    let cause: Uuid = spine_tests::one(&db, "SELECT spine.emit('probe.Started', '{}')", &[]).await;
    let tx = db.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('spine.causation_id', $1, true)",
        &[&cause.to_string()],
    )
    .await
    .unwrap();
    tx.execute(
        &format!("INSERT INTO {table} (item, qty) VALUES ('pen', 1)"),
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let id = webhook_job(&db, &hook).await;
    let _worker = deliver(&db, &hook, id).await;
    assert_eq!(
        receiver.header(0, "traceparent"),
        Some(format!("00-{}-{id:016x}-01", cause.simple()))
    );
}

/// kill -9 of the worker while a delivery hangs: the lease passes, a second worker
/// delivers again with the same Idempotency-Key, and the job completes once.
#[tokio::test]
async fn webhook_delivery_survives_worker_kill_9() {
    let db = db().await;
    let receiver = Hook::start(|n| {
        let delay = if n == 0 { 30 } else { 0 };
        (200, Duration::from_secs(delay))
    })
    .await;
    let (table, hook) = table_with_webhook(&db, json!({"url": receiver.url})).await;
    let id = fire(&db, &table, &hook, "ink", 1).await;
    let mut first = job_runner(
        &format!("webhook.{hook}=webhook"),
        &[("SPINE_JOB_LEASE_SECS", "1")],
    );
    wait_until(
        "first delivery under way",
        Duration::from_secs(20),
        || async { receiver.count() >= 1 },
    )
    .await;
    first.kill9();
    let _second = job_runner(
        &format!("webhook.{hook}=webhook"),
        &[("SPINE_JOB_LEASE_SECS", "1")],
    );
    wait_until(
        "delivered by the second worker",
        Duration::from_secs(30),
        || async { completed(&db, id).await },
    )
    .await;
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|(key, _)| key == &id.to_string()));
    let completions: i64 = spine_tests::one(
        &db,
        "SELECT count(*) FROM spine.jobs_archive WHERE id = $1",
        &[&id],
    )
    .await;
    assert_eq!(completions, 1);
}

/// The per-webhook cap: with max_concurrency 1 and a slow receiver, deliveries of
/// one webhook go one at a time although the worker could run 16 jobs at once.
#[tokio::test]
async fn webhook_concurrency_cap_holds() {
    let db = db().await;
    let receiver = Hook::start(|_| (200, Duration::from_millis(300))).await;
    let (table, hook) = table_with_webhook(&db, json!({"url": receiver.url})).await;
    db.execute(
        "SELECT spine.create_queue($1, 1, '7 days')",
        &[&format!("webhook.{hook}")],
    )
    .await
    .unwrap();
    for i in 0..4 {
        db.execute(
            &format!("INSERT INTO {table} (item, qty) VALUES ('mug', $1)"),
            &[&i],
        )
        .await
        .unwrap();
    }
    let queue = format!("webhook.{hook}");
    let _worker = job_runner(
        &format!("webhook.{hook}=webhook"),
        &[("SPINE_JOB_CONCURRENCY", "16")],
    );
    let mut most = 0i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while receiver.count() < 4 || most == 0 {
        let running: i64 = spine_tests::one(
            &db,
            "SELECT count(*) FROM spine.jobs WHERE queue = $1 AND state = 'running'",
            &[&queue],
        )
        .await;
        most = most.max(running);
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most, 1, "one delivery in flight at a time");
    assert_eq!(receiver.count(), 4);
}

/// Deploys a function of `edge-functions/functions` through spine.deploy_function.
async fn deploy_example(db: &tokio_postgres::Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../edge-functions/functions")
        .join(name);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let source = std::fs::read_to_string(dir.join("index.js")).unwrap();
    db.execute(
        "SELECT spine.deploy_function($1, $2)",
        &[&manifest, &source],
    )
    .await
    .unwrap();
}

/// A webhook whose target is an edge function: the row change runs `hello`, and
/// the delivery records the function's answer.
#[tokio::test]
async fn webhook_to_a_function() {
    let db = db().await;
    deploy_example(&db, "hello").await;
    let (table, hook) = table_with_webhook(&db, json!({"function": "hello"})).await;
    let id = fire(&db, &table, &hook, "cup", 4).await;
    let _worker = deliver(&db, &hook, id).await;
    let (status, response): (Option<i32>, Option<String>) = {
        let row = db
            .query_one(
                "SELECT status, response FROM spine.webhook_deliveries WHERE job_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(status, Some(200));
    assert!(
        response.unwrap_or_default().contains("Hello from Spine"),
        "the function's answer is recorded"
    );
}

/// The channel example end to end: alice's rule on shop.OrderPlaced calls
/// sms-sender; the worker runs it for alice, with her vault token, against the
/// gateway her consent allows, and the MessageSent event it emits is caused by
/// the order event.
#[tokio::test]
async fn rule_calls_a_channel_plugin() {
    let mut db = db().await;
    deploy_example(&db, "sms-sender").await;
    let gateway = Hook::start(|_| (200, Duration::ZERO)).await;
    let alice = Uuid::new_v4();
    db.execute(
        "SELECT vault.create_secret('tok-alice', $1)",
        &[&format!("{alice}/SMS_API_TOKEN")],
    )
    .await
    .unwrap();
    let order_event: Uuid = spine_tests::as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.grant_consent('sms-sender', ARRAY['secrets.read:SMS_API_TOKEN', 'network.fetch:127.0.0.1', 'events.emit:communication.MessageSent'])",
            &[],
        )
        .await
        .unwrap();
        let actions = json!([{"call_function": {"name": "sms-sender", "payload": {
            "to": "{{event.data.phone}}", "text": "Order {{event.data.order}} confirmed",
            "gateway": gateway.url}}}]);
        tx.execute(
            "SELECT spine.save_rule('confirm', 'shop.OrderPlaced', '{\"==\": [1, 1]}', $1)",
            &[&actions],
        )
        .await
        .unwrap();
        spine_tests::one(
            tx,
            "SELECT spine.emit('shop.OrderPlaced', '{\"phone\": \"+4930123\", \"order\": \"A-7\"}')",
            &[],
        )
        .await
    })
    .await;
    let _worker = job_runner("function", &[]);
    wait_until(
        "the gateway got the text",
        Duration::from_secs(30),
        || async { gateway.count() >= 1 },
    )
    .await;
    let (_, body) = gateway.received.lock().unwrap()[0].clone();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"to": "+4930123", "text": "Order A-7 confirmed"})
    );
    assert_eq!(
        gateway.header(0, "authorization").as_deref(),
        Some("Bearer tok-alice")
    );
    wait_until("MessageSent emitted", Duration::from_secs(10), || async {
        db.query_opt(
            "SELECT 1 FROM spine.events WHERE type = 'communication.MessageSent' AND owner_id = $1 AND causation_id = $2",
            &[&alice, &order_event],
        )
        .await
        .unwrap()
        .is_some()
    })
    .await;
}

/// Verifies the n-th delivery as a receiver using a Standard Webhooks library
/// would, with `secret`.
fn standard_verify(receiver: &Hook, n: usize, secret: &str) -> Result<(), String> {
    let mut headers = reqwest::header::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let value = receiver.header(n, name).ok_or(format!("no {name}"))?;
        headers.insert(name, value.parse().unwrap());
    }
    let body = receiver.received.lock().unwrap()[n].1.clone();
    standardwebhooks::Webhook::new(secret)
        .map_err(|e| e.to_string())?
        .verify(body.as_bytes(), &headers)
        .map_err(|e| e.to_string())
}

async fn secret(db: &tokio_postgres::Client, name: &str) -> String {
    spine_tests::one(
        db,
        "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = $1",
        &[&name],
    )
    .await
}

/// Deliveries carry Standard Webhooks headers that the standardwebhooks crate
/// verifies with the webhook's secret. After spine.rotate_webhook_secret both
/// secrets verify until the overlap ends (two `v1,` signatures), then only the
/// new one; a tampered body never does; the secret replaced two rotations ago
/// is gone from the vault.
#[tokio::test]
async fn standard_webhooks_signatures_survive_a_secret_rotation() {
    let db = db().await;
    let receiver = Hook::start(|_| (200, Duration::ZERO)).await;
    let (table, hook) = table_with_webhook(&db, json!({"url": receiver.url})).await;
    let name = format!("spine.webhook.{hook}");
    let first = secret(&db, &name).await;
    assert!(first.starts_with("whsec_"), "{first}");

    let id = fire(&db, &table, &hook, "pen", 1).await;
    drop(deliver(&db, &hook, id).await);
    assert_eq!(standard_verify(&receiver, 0, &first), Ok(()));
    assert_eq!(receiver.header(0, "webhook-id"), Some(id.to_string()));
    assert!(standard_verify(&receiver, 0, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_err());
    receiver.received.lock().unwrap()[0].1.push(' ');
    assert!(
        standard_verify(&receiver, 0, &first).is_err(),
        "a tampered body verified"
    );

    // Rotation with an hour of overlap: both secrets verify the next delivery.
    db.execute("SELECT spine.rotate_webhook_secret($1, '1 hour')", &[&hook])
        .await
        .unwrap();
    let second = secret(&db, &name).await;
    assert_ne!(first, second);
    db.execute(&format!("UPDATE {table} SET qty = 2"), &[])
        .await
        .unwrap();
    let worker = job_runner(&format!("webhook.{hook}=webhook"), &[]);
    wait_until("second delivery", Duration::from_secs(30), || async {
        receiver.count() >= 2
    })
    .await;
    drop(worker);
    let signatures = receiver.header(1, "webhook-signature").unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert_eq!(standard_verify(&receiver, 1, &second), Ok(()));
    assert_eq!(standard_verify(&receiver, 1, &first), Ok(()));

    // Rotation with no overlap: only the newest secret signs.
    db.execute("SELECT spine.rotate_webhook_secret($1, '0 s')", &[&hook])
        .await
        .unwrap();
    let third = secret(&db, &name).await;
    db.execute(&format!("UPDATE {table} SET qty = 3"), &[])
        .await
        .unwrap();
    let worker = job_runner(&format!("webhook.{hook}=webhook"), &[]);
    wait_until("third delivery", Duration::from_secs(30), || async {
        receiver.count() >= 3
    })
    .await;
    drop(worker);
    assert_eq!(standard_verify(&receiver, 2, &third), Ok(()));
    assert!(standard_verify(&receiver, 2, &second).is_err());
    let kept: i64 = spine_tests::one(
        &db,
        "SELECT count(*) FROM vault.secrets WHERE name LIKE $1",
        &[&format!("{name}%")],
    )
    .await;
    assert_eq!(kept, 2, "the current secret and the one it replaced");

    let refused = db
        .execute("SELECT spine.rotate_webhook_secret($1, '-1 s')", &[&hook])
        .await
        .unwrap_err();
    assert_eq!(refused.code().unwrap().code(), "22023");
    let missing = db
        .execute("SELECT spine.rotate_webhook_secret('no_such_hook')", &[])
        .await
        .unwrap_err();
    assert_eq!(missing.code().unwrap().code(), "42704");
}
