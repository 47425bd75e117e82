//! JSON Schema contracts against the real cluster: a bound event type's data
//! and a bound queue's payloads are checked on every path that writes them
//! (emit, enqueue with and without a key, enqueue_batch, enqueue_debounced),
//! refused with 22023 and the JSON Pointer of each offending value, and nothing
//! is written; a change of a schema reaches a session that cached the old one;
//! only service_role defines contracts; users may read them.

use serde_json::{json, Value};
use spine_tests::{act_as, connect, one, sqlstate};
use uuid::Uuid;

/// A schema and names of this test's own.
async fn setup(db: &tokio_postgres::Client) -> (String, String, String) {
    let tag = &Uuid::new_v4().simple().to_string()[..12];
    let (schema, domain, queue) = (
        format!("order-{tag}"),
        format!("shop{tag}"),
        format!("q-{tag}"),
    );
    db.execute(
        "SELECT spine.define_schema($1, $2)",
        &[
            &schema,
            &json!({"type": "object", "required": ["sku", "qty"],
                    "properties": {"sku": {"type": "string", "minLength": 1},
                                   "qty": {"type": "integer", "minimum": 1}}}),
        ],
    )
    .await
    .unwrap();
    db.execute("SELECT spine.create_queue($1)", &[&queue])
        .await
        .unwrap();
    (schema, domain, queue)
}

/// The DETAIL of a contract refusal, parsed.
fn detail(err: &tokio_postgres::Error) -> Value {
    let db = err.as_db_error().expect("a database error");
    serde_json::from_str(db.detail().expect("a DETAIL")).expect("DETAIL is JSON")
}

fn pointers(detail: &Value) -> Vec<String> {
    detail["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pointer"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn emit_refuses_data_that_breaks_its_types_contract() {
    let db = connect().await;
    let (schema, domain, _) = setup(&db).await;
    let placed = format!("{domain}.OrderPlaced");
    db.execute(
        "SELECT spine.bind_schema('event', $1, $2)",
        &[&placed, &schema],
    )
    .await
    .unwrap();
    let subject = format!("c-{}", Uuid::new_v4());
    db.execute(
        "SELECT spine.emit($1, $2, $3)",
        &[&placed, &json!({"sku": "a", "qty": 2}), &subject],
    )
    .await
    .unwrap();
    let err = db
        .execute(
            "SELECT spine.emit($1, $2, $3)",
            &[
                &placed,
                &json!({"sku": "", "qty": "two", "secret": "hunter2"}),
                &subject,
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22023"), "{err:?}");
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains(&format!("schema \"{schema}\"")),
        "{message}"
    );
    let d = detail(&err);
    assert_eq!(d["schema"], schema.as_str());
    let mut at = pointers(&d);
    at.sort();
    assert_eq!(at, ["/qty", "/sku"], "{d}");
    assert!(
        !d.to_string().contains("two"),
        "values are not repeated: {d}"
    );
    let written: i64 = one(
        &db,
        "SELECT count(*) FROM spine.events WHERE subject = $1",
        &[&subject],
    )
    .await;
    assert_eq!(written, 1, "only the conforming event is written");

    // A domain binding covers the domain's other types; the exact one still wins.
    db.execute(
        "SELECT spine.define_schema($1 || '-any', 'true')",
        &[&schema],
    )
    .await
    .unwrap();
    db.execute(
        "SELECT spine.bind_schema('event', $1 || '.*', $2 || '-any')",
        &[&domain, &schema],
    )
    .await
    .unwrap();
    db.execute(
        "SELECT spine.emit($1 || '.OrderShipped', '{\"anything\": 1}')",
        &[&domain],
    )
    .await
    .unwrap();
    assert!(db
        .execute("SELECT spine.emit($1, '{}')", &[&placed])
        .await
        .is_err());
    db.execute("SELECT spine.unbind_schema('event', $1)", &[&placed])
        .await
        .unwrap();
    db.execute("SELECT spine.emit($1, '{}')", &[&placed])
        .await
        .unwrap();
}

#[tokio::test]
async fn every_enqueue_path_checks_its_queues_contract() {
    let db = connect().await;
    let (schema, _, queue) = setup(&db).await;
    db.execute(
        "SELECT spine.bind_schema('queue', $1, $2)",
        &[&queue, &schema],
    )
    .await
    .unwrap();
    let good = json!({"sku": "a", "qty": 1});
    let bad = json!({"sku": "a", "qty": 0});
    let paths = [
        "SELECT spine.enqueue($1, $2)",
        "SELECT spine.enqueue($1, $2, idempotency_key => gen_random_uuid()::text)",
        "SELECT spine.enqueue_batch($1, ARRAY['{\"sku\":\"b\",\"qty\":3}'::jsonb, $2])",
        "SELECT spine.enqueue_debounced($1, $2, gen_random_uuid()::text, '1 second')",
    ];
    for sql in paths {
        let err = db.execute(sql, &[&queue, &bad]).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some("22023"), "{sql}: {err:?}");
        assert_eq!(pointers(&detail(&err)), ["/qty"], "{sql}");
        db.execute(sql, &[&queue, &good])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let queued: i64 = one(
        &db,
        "SELECT count(*) FROM spine.jobs WHERE queue = $1 AND payload->>'qty' = '0'",
        &[&queue],
    )
    .await;
    assert_eq!(
        queued, 0,
        "no refused payload was queued (a batch is all or nothing)"
    );
}

#[tokio::test]
async fn a_redefined_schema_reaches_sessions_that_cached_it() {
    let (a, b) = (connect().await, connect().await);
    let (schema, _, queue) = setup(&a).await;
    a.execute(
        "SELECT spine.bind_schema('queue', $1, $2)",
        &[&queue, &schema],
    )
    .await
    .unwrap();
    let payload = json!({"sku": "a", "qty": 1, "note": 7});
    // b compiles the schema now, and keeps it.
    b.execute("SELECT spine.enqueue($1, $2)", &[&queue, &payload])
        .await
        .unwrap();
    a.execute(
        "SELECT spine.define_schema($1, $2)",
        &[
            &schema,
            &json!({"type": "object", "additionalProperties": false,
                           "properties": {"sku": {}, "qty": {}}}),
        ],
    )
    .await
    .unwrap();
    let err = b
        .execute("SELECT spine.enqueue($1, $2)", &[&queue, &payload])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22023"), "{err:?}");
}

#[tokio::test]
async fn contracts_are_defined_by_service_role_and_read_by_users() {
    let mut db = connect().await;
    let (schema, _, _) = setup(&db).await;
    let user = json!({"sub": Uuid::new_v4().to_string(), "role": "authenticated"});
    for sql in [
        "SELECT spine.define_schema('mine', 'true')",
        "SELECT spine.bind_schema('queue', 'x', 'mine')",
        "SELECT spine.drop_schema('mine')",
    ] {
        let tx = db.transaction().await.unwrap();
        act_as(&tx, "authenticated", user.clone()).await;
        let err = tx.execute(sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some("42501"), "{sql}: {err:?}");
    }
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "authenticated", user.clone()).await;
    let seen: i64 = one(
        &tx,
        "SELECT count(*) FROM spine.schemas WHERE name = $1",
        &[&schema],
    )
    .await;
    assert_eq!(seen, 1);
    let v: Value = one(
        &tx,
        "SELECT spine.schema_violations($1, '{\"sku\": 1}')",
        &[&schema],
    )
    .await;
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let err = tx
        .execute("SELECT spine.validate($1, '{}')", &[&schema])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22023"));
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn bad_definitions_and_bindings_say_what_is_wrong() {
    let db = connect().await;
    let (schema, _, queue) = setup(&db).await;
    for (sql, state) in [
        // Not a schema, a broken one, a remote reference, a bad name.
        ("SELECT spine.define_schema('x-1', '[1]')", "22023"),
        (
            "SELECT spine.define_schema('x-1', '{\"type\": \"whole\"}')",
            "22023",
        ),
        (
            "SELECT spine.define_schema('x-1', '{\"$ref\": \"https://example.com/s.json\"}')",
            "22023",
        ),
        ("SELECT spine.define_schema('X 1', 'true')", "22023"),
        ("SELECT spine.define_schema(NULL, 'true')", "22004"),
        (
            "SELECT spine.bind_schema('queue', 'q', 'no-such-schema')",
            "42704",
        ),
        ("SELECT spine.bind_schema('table', 'q', $1)", "22023"),
        (
            "SELECT spine.bind_schema('event', 'shop.placeOrder', $1)",
            "22023",
        ),
        (
            "SELECT spine.bind_schema('queue', $2, $1, 'output')",
            "22023",
        ),
        ("SELECT spine.bind_schema('verb', 'notes', $1)", "22023"),
    ] {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            match (sql.contains("$1"), sql.contains("$2")) {
                (true, true) => vec![&schema, &queue],
                (true, false) => vec![&schema],
                _ => vec![],
            };
        let err = db.execute(sql, &params).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some(state), "{sql}: {err:?}");
    }
    db.execute(
        "SELECT spine.bind_schema('queue', $1, $2)",
        &[&queue, &schema],
    )
    .await
    .unwrap();
    let err = db
        .execute("SELECT spine.drop_schema($1)", &[&schema])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("2BP01"), "{err:?}");
    assert!(err.as_db_error().unwrap().message().contains(&queue));
    db.execute("SELECT spine.unbind_schema('queue', $1)", &[&queue])
        .await
        .unwrap();
    let dropped: bool = one(&db, "SELECT spine.drop_schema($1)", &[&schema]).await;
    assert!(dropped);
}
