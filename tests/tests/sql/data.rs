//! Entities and ETL against the real cluster, as users call them: mapping
//! validation, idempotent re-ingest, identity merge across sources, per-record
//! rejection and reprocessing, entity events, similarity search under RLS.

use serde_json::{json, Value};
use spine_tests::{act_as, as_user, column, connect, one, sqlstate};
use tokio_postgres::Transaction;
use uuid::Uuid;

fn crm_mapping() -> Value {
    json!({
        "kind": "person",
        "fields": {
            "name": {"path": "full_name", "normalize": ["trim"], "required": true},
            "email": {"path": "email", "normalize": ["email"]},
            "phone": {"path": "phone", "normalize": [{"phone": {"region": "DE"}}]}
        },
        "identity": ["email", "phone"]
    })
}

/// Saves `mapping` as the source `crm`.
async fn save_crm(tx: &Transaction<'_>, mapping: &Value) {
    tx.execute("SELECT spine.save_source('crm', $1)", &[mapping])
        .await
        .unwrap();
}

async fn ingest(tx: &Transaction<'_>, source: &str, records: Value) -> Value {
    one(tx, "SELECT spine.ingest($1, $2)", &[&source, &records]).await
}

/// Mappings are validated when saved.
#[tokio::test]
async fn bad_mappings_are_refused() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    for (mapping, text) in [
        (json!({"fields": {"a": {"path": "a"}}}), "kind is required"),
        (
            json!({"kind": "person", "fields": {"a": {"path": "x", "normalize": ["shout"]}}}),
            "unknown normalizer",
        ),
        (
            json!({"kind": "person", "fields": {"a": {"path": "x..y"}}}),
            "dotted names",
        ),
        (
            json!({"kind": "person", "fields": {"a": {"path": "x"}}, "identity": ["b"]}),
            "not a field",
        ),
        (
            json!({"kind": "person", "fields": {"p": {"path": "x", "normalize": [{"phone": {"region": "ZZ"}}]}}}),
            "region",
        ),
    ] {
        let tx = db.transaction().await.unwrap();
        act_as(&tx, "authenticated", json!({"sub": alice.to_string()})).await;
        let err = tx
            .execute("SELECT spine.save_source('crm', $1)", &[&mapping])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some("22023"), "{mapping}: {err:?}");
        assert!(
            err.as_db_error().unwrap().message().contains(text),
            "{err:?}"
        );
        tx.rollback().await.unwrap();
    }
}

/// Re-ingesting identical records changes nothing and emits nothing; a changed
/// record updates its entity and says which fields changed.
#[tokio::test]
async fn reingest_is_idempotent_and_changes_are_events() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let records = json!([
        {"id": "c1", "full_name": " Ada Lovelace ", "email": "ADA@example.com"},
        {"id": "c2", "full_name": "Charles Babbage", "email": "cb@example.com"}
    ]);
    let first = as_user(&mut db, alice, async |tx| {
        save_crm(tx, &crm_mapping()).await;
        ingest(tx, "crm", records.clone()).await
    })
    .await;
    assert_eq!(
        first,
        json!({"received": 2, "created": 2, "updated": 0, "unchanged": 0, "rejected": 0, "errors": [], "conflicts": []})
    );
    let events_before: i64 = one(
        &db,
        "SELECT count(*) FROM spine.events WHERE owner_id = $1 AND type LIKE 'data.%'",
        &[&alice],
    )
    .await;
    let again = as_user(&mut db, alice, async |tx| {
        ingest(tx, "crm", records.clone()).await
    })
    .await;
    assert_eq!(again["unchanged"], json!(2));
    assert_eq!(
        (again["created"].clone(), again["updated"].clone()),
        (json!(0), json!(0))
    );
    let events_after: i64 = one(
        &db,
        "SELECT count(*) FROM spine.events WHERE owner_id = $1 AND type LIKE 'data.%'",
        &[&alice],
    )
    .await;
    assert_eq!(
        events_after, events_before,
        "re-ingest emitted entity events"
    );

    let changed = as_user(&mut db, alice, async |tx| {
        ingest(
            tx,
            "crm",
            json!([{"id": "c1", "full_name": "Ada King", "email": "ada@example.com"}]),
        )
        .await
    })
    .await;
    assert_eq!(changed["updated"], json!(1));
    let update: Value = one(
        &db,
        "SELECT data FROM spine.events WHERE owner_id = $1 AND type = 'data.EntityUpdated' ORDER BY seq DESC LIMIT 1",
        &[&alice],
    )
    .await;
    assert_eq!(
        update["changed"],
        json!({"name": {"from": "Ada Lovelace", "to": "Ada King"}})
    );
    assert_eq!(update["kind"], json!("person"));
    let (name, version): (Value, i64) = {
        let r = db
            .query_one(
                "SELECT data->'name', version FROM spine.entities e JOIN spine.entity_keys k ON k.entity_id = e.id \
                 WHERE k.owner_id = $1 AND k.key_type = 'email' AND k.key_value = 'ada@example.com'",
                &[&alice],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((name, version), (json!("Ada King"), 2));
}

/// A new version of a record (same external id) updates the entity its earlier
/// versions built: also when it has no identity key, when its keys change, and
/// when two versions arrive in one batch.
#[tokio::test]
async fn new_versions_of_a_record_update_its_entity() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let counts = |v: &Value| (v["created"].clone(), v["updated"].clone());
    let (first, second, third) = as_user(&mut db, alice, async |tx| {
        save_crm(tx, &crm_mapping()).await;
        let first = ingest(
            tx,
            "crm",
            json!([
                {"id": "z9", "full_name": "Zed"},
                {"id": "c1", "full_name": "Ada", "email": "ada@old.example"}
            ]),
        )
        .await;
        let second = ingest(
            tx,
            "crm",
            json!([
                {"id": "z9", "full_name": "Zed Z."},
                {"id": "c1", "full_name": "Ada", "email": "ada@new.example"}
            ]),
        )
        .await;
        let third = ingest(
            tx,
            "crm",
            json!([
                {"id": "n1", "full_name": "Nia"},
                {"id": "n1", "full_name": "Nia N."}
            ]),
        )
        .await;
        (first, second, third)
    })
    .await;
    assert_eq!(counts(&first), (json!(2), json!(0)), "{first}");
    assert_eq!(counts(&second), (json!(0), json!(2)), "{second}");
    assert_eq!(counts(&third), (json!(1), json!(1)), "{third}");
    let names: Vec<String> = column(
        &db,
        "SELECT data->>'name' FROM spine.entities WHERE owner_id = $1 AND kind = 'person' ORDER BY 1",
        &[&alice],
    )
    .await;
    assert_eq!(names, ["Ada", "Nia N.", "Zed Z."]);
    // Ada's entity carries her new email and keeps the old key.
    let ada: Vec<String> = column(
        &db,
        "SELECT k.key_value FROM spine.entity_keys k JOIN spine.entities e ON e.id = k.entity_id \
          WHERE k.owner_id = $1 AND e.data->>'name' = 'Ada' ORDER BY 1",
        &[&alice],
    )
    .await;
    assert_eq!(ada, ["ada@new.example", "ada@old.example"]);
    let email: String = one(
        &db,
        "SELECT data->>'email' FROM spine.entities WHERE owner_id = $1 AND data->>'name' = 'Ada'",
        &[&alice],
    )
    .await;
    assert_eq!(email, "ada@new.example");

    // Changed and changed back within one batch: no update, no event.
    let updates =
        "SELECT count(*) FROM spine.events WHERE owner_id = $1 AND type = 'data.EntityUpdated'";
    let before: i64 = one(&db, updates, &[&alice]).await;
    as_user(&mut db, alice, async |tx| {
        ingest(
            tx,
            "crm",
            json!([
                {"id": "z9", "full_name": "Zed Y."},
                {"id": "z9", "full_name": "Zed Z.", "unmapped": 1}
            ]),
        )
        .await
    })
    .await;
    let after: i64 = one(&db, updates, &[&alice]).await;
    assert_eq!(after, before, "a net no-op emitted EntityUpdated");
    let version: i64 = one(
        &db,
        "SELECT version FROM spine.entities WHERE owner_id = $1 AND data->>'name' = 'Zed Z.'",
        &[&alice],
    )
    .await;
    assert_eq!(version, 2, "one real update so far");
}

/// A record whose identity keys name two different entities goes to the first
/// key's, and the result reports the key that stayed with the other.
#[tokio::test]
async fn keys_naming_two_entities_are_reported() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let (first, both) = as_user(&mut db, alice, async |tx| {
        save_crm(tx, &crm_mapping()).await;
        let first = ingest(
            tx,
            "crm",
            json!([
                {"id": "e", "full_name": "By Email", "email": "sam@example.com"},
                {"id": "p", "full_name": "By Phone", "phone": "030 1234567"}
            ]),
        )
        .await;
        let both = ingest(
            tx,
            "crm",
            json!([{"id": "b", "full_name": "Sam", "email": "sam@example.com", "phone": "030 1234567"}]),
        )
        .await;
        (first, both)
    })
    .await;
    assert_eq!(first["conflicts"], json!([]));
    assert_eq!(both["updated"], json!(1), "{both}");
    let entity_of = |key: &'static str| {
        let db = &db;
        async move {
            one::<Uuid>(
                db,
                "SELECT entity_id FROM spine.entity_keys WHERE owner_id = $1 AND key_value = $2",
                &[&alice, &key],
            )
            .await
            .to_string()
        }
    };
    let (by_email, by_phone) = (
        entity_of("sam@example.com").await,
        entity_of("+49301234567").await,
    );
    assert_eq!(
        both["conflicts"],
        json!([{"external_id": "b", "entity": by_email,
                "key": {"type": "phone", "value": "+49301234567"}, "belongs_to": by_phone}])
    );
}

/// A record too large for its entity, or with an external id too long to index,
/// is rejected alone (kept with its error), and a blank optional value is no value:
/// none of them stops the batch.
#[tokio::test]
async fn an_oversized_record_is_rejected_alone() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let out = as_user(&mut db, alice, async |tx| {
        save_crm(tx, &crm_mapping()).await;
        ingest(
            tx,
            "crm",
            json!([
                {"id": "big", "full_name": "x".repeat(300 * 1024)},
                {"id": "ok", "full_name": "Ada", "email": "", "phone": "  "},
                // Longer than the landing zone's index holds: landed without it.
                {"id": "y".repeat(3000), "full_name": "Long Id"}
            ]),
        )
        .await
    })
    .await;
    assert_eq!(
        (out["created"].clone(), out["rejected"].clone()),
        (json!(1), json!(2)),
        "{}",
        out["errors"]
    );
    assert_eq!(out["errors"][1]["external_id"], Value::Null);
    assert_eq!(out["errors"][0]["external_id"], json!("big"));
    let reason = out["errors"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("too large"), "{reason}");
    let status: String = one(
        &db,
        "SELECT status FROM spine.raw_records WHERE owner_id = $1 AND external_id = 'big'",
        &[&alice],
    )
    .await;
    assert_eq!(status, "rejected");
    let ada: Value = one(
        &db,
        "SELECT data FROM spine.entities WHERE owner_id = $1 AND kind = 'person'",
        &[&alice],
    )
    .await;
    assert_eq!(ada, json!({"name": "Ada"}));
}

/// Two sources describing the same person — one by email, one by phone and email —
/// end up as one entity with an edge to each source.
#[tokio::test]
async fn identity_merges_across_sources() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let phonebook = json!({
        "kind": "person",
        "external_id": "contact_id",
        "fields": {
            "email": {"path": "mail", "normalize": ["email"]},
            "phone": {"path": "number", "normalize": [{"phone": {"region": "DE"}}]},
            "nickname": {"path": "nick", "normalize": ["trim"]}
        },
        "identity": ["phone", "email"]
    });
    let (a, b) = as_user(&mut db, alice, async |tx| {
        save_crm(tx, &crm_mapping()).await;
        tx.execute("SELECT spine.save_source('phonebook', $1)", &[&phonebook]).await.unwrap();
        let a = ingest(tx, "crm", json!([{"id": 1, "full_name": "Ada", "email": "ada@example.com"}])).await;
        let b = ingest(tx, "phonebook", json!([{"contact_id": 77, "mail": "Ada@Example.com ", "number": "030 1234567", "nick": "A"}])).await;
        (a, b)
    })
    .await;
    assert_eq!(a["created"], json!(1));
    assert_eq!(b["updated"], json!(1), "{b}");
    let people: Vec<Value> = column(
        &db,
        "SELECT data FROM spine.entities WHERE owner_id = $1 AND kind = 'person'",
        &[&alice],
    )
    .await;
    assert_eq!(
        people,
        [
            json!({"name": "Ada", "email": "ada@example.com", "phone": "+49301234567", "nickname": "A"})
        ]
    );
    let sources: Vec<String> = column(
        &db,
        "SELECT s.data->>'name' FROM spine.edges e JOIN spine.entities s ON s.id = e.to_id \
             WHERE e.owner_id = $1 AND e.rel = 'described_by' ORDER BY 1",
        &[&alice],
    )
    .await;
    assert_eq!(sources, ["crm", "phonebook"]);
    let keys: i64 = one(
        &db,
        "SELECT count(*) FROM spine.entity_keys WHERE owner_id = $1",
        &[&alice],
    )
    .await;
    assert_eq!(keys, 2, "email and phone");
}

/// A bad record is rejected with its external id and reason, the rest of the batch
/// goes through, and the record waits in raw_records until a fixed mapping
/// reprocesses it.
#[tokio::test]
async fn bad_records_are_rejected_kept_and_reprocessed() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let out = as_user(&mut db, alice, async |tx| {
        save_crm(tx, &crm_mapping()).await;
        ingest(
            tx,
            "crm",
            json!([
                {"id": "ok", "full_name": "Ada", "email": "ada@example.com"},
                {"id": "bad-mail", "full_name": "Bob", "email": "bob(at)example"},
                {"id": "no-name", "email": "x@example.com"},
                {"full_name": "No Id"},
                {"id": "bad-phone", "full_name": "Eve", "phone": "+49 30 CALL-ME"}
            ]),
        )
        .await
    })
    .await;
    assert_eq!(
        (
            out["received"].clone(),
            out["created"].clone(),
            out["rejected"].clone()
        ),
        (json!(5), json!(1), json!(4))
    );
    let errors: Vec<(Value, String)> = out["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["external_id"].clone(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(errors[0].0, json!("bad-mail"));
    assert!(errors[0].1.contains("field \"email\""), "{errors:?}");
    assert!(errors[1].1.contains("\"name\" is required"), "{errors:?}");
    assert_eq!(errors[2].0, Value::Null);
    assert!(errors[3].1.contains("field \"phone\""), "{errors:?}");
    let kept: i64 = one(
        &db,
        "SELECT count(*) FROM spine.raw_records WHERE owner_id = $1 AND status = 'rejected' AND error IS NOT NULL",
        &[&alice],
    )
    .await;
    assert_eq!(kept, 4);

    // A looser mapping: email and phone no longer validated, name optional.
    let loose = json!({"kind": "person", "fields": {
        "name": {"path": "full_name"}, "email": {"path": "email", "normalize": ["trim"]},
        "phone": {"path": "phone"}}});
    let again = as_user(&mut db, alice, async |tx| {
        save_crm(tx, &loose).await;
        one::<Value>(tx, "SELECT spine.reprocess('crm')", &[]).await
    })
    .await;
    assert_eq!(
        (
            again["received"].clone(),
            again["created"].clone(),
            again["rejected"].clone()
        ),
        (json!(4), json!(3), json!(1))
    );
    assert_eq!(
        again["errors"][0]["reason"],
        json!("the record has no external id (mapping external_id), or one over 1 KiB")
    );
    // Reprocessing what is still rejected changes nothing and announces nothing.
    let received =
        "SELECT count(*) FROM spine.events WHERE owner_id = $1 AND type = 'connector.DataReceived'";
    let before: i64 = one(&db, received, &[&alice]).await;
    let still = as_user(&mut db, alice, async |tx| {
        one::<Value>(tx, "SELECT spine.reprocess('crm')", &[]).await
    })
    .await;
    assert_eq!(still["rejected"], json!(1));
    let after: i64 = one(&db, received, &[&alice]).await;
    assert_eq!(after, before);
}

/// Entity writes by users emit events; another user's entities are invisible and
/// cannot be changed; similarity search sees only the caller's entities.
#[tokio::test]
async fn entities_are_private_and_similarity_respects_rls() {
    let mut db = connect().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let kind = format!("doc_{}", Uuid::new_v4().simple());
    let mine = as_user(&mut db, alice, async |tx| {
        let a: Uuid = one(
            tx,
            "SELECT spine.upsert_entity($1, '{\"title\": \"near\"}')",
            &[&kind],
        )
        .await;
        let b: Uuid = one(
            tx,
            "SELECT spine.upsert_entity($1, '{\"title\": \"far\"}')",
            &[&kind],
        )
        .await;
        tx.execute("SELECT spine.set_embedding($1, '[1, 0, 0]')", &[&a])
            .await
            .unwrap();
        tx.execute("SELECT spine.set_embedding($1, '[0, 1, 0]')", &[&b])
            .await
            .unwrap();
        (a, b)
    })
    .await;
    let theirs = as_user(&mut db, bob, async |tx| {
        let c: Uuid = one(
            tx,
            "SELECT spine.upsert_entity($1, '{\"title\": \"bob exact\"}')",
            &[&kind],
        )
        .await;
        tx.execute("SELECT spine.set_embedding($1, '[1, 0, 0]')", &[&c])
            .await
            .unwrap();
        c
    })
    .await;
    let found = as_user(&mut db, alice, async |tx| {
        tx.query(
            "SELECT id, data->>'title' FROM spine.similar($1, '[0.9, 0.1, 0]', 5)",
            &[&kind],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, Uuid>(0), r.get::<_, String>(1)))
        .collect::<Vec<_>>()
    })
    .await;
    assert_eq!(
        found,
        [(mine.0, "near".to_string()), (mine.1, "far".to_string())]
    );
    // Metadata filters: a data predicate, and any kind (NULL).
    let filtered = as_user(&mut db, alice, async |tx| {
        let far: Vec<Uuid> = column(
            tx,
            "SELECT id FROM spine.similar($1, '[0.9, 0.1, 0]', 5, filter => '{\"title\": \"far\"}')",
            &[&kind],
        )
        .await;
        let any_kind: Vec<Uuid> = column(
            tx,
            "SELECT id FROM spine.similar(NULL, '[0.9, 0.1, 0]', 5) WHERE kind = $1",
            &[&kind],
        )
        .await;
        (far, any_kind)
    })
    .await;
    assert_eq!(filtered, (vec![mine.1], vec![mine.0, mine.1]));
    // service_role (BYPASSRLS) acting for Alice gets Alice's neighbours only.
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "service_role", json!({"role": "service_role"})).await;
    let for_alice: Vec<Uuid> = column(
        &tx,
        "SELECT id FROM spine.similar($1, '[1, 0, 0]', 5, owner => $2)",
        &[&kind, &alice],
    )
    .await;
    assert_eq!(for_alice, [mine.0, mine.1]);
    tx.rollback().await.unwrap();

    let tx = db.transaction().await.unwrap();
    act_as(&tx, "authenticated", json!({"sub": alice.to_string()})).await;
    let visible: i64 = one(
        &tx,
        "SELECT count(*) FROM spine.entities WHERE id = $1",
        &[&theirs],
    )
    .await;
    assert_eq!(visible, 0);
    let err = tx
        .execute(
            "SELECT spine.upsert_entity($1, '{}', $2)",
            &[&kind, &theirs],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42704"));
    tx.rollback().await.unwrap();
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "authenticated", json!({"sub": alice.to_string()})).await;
    let deleted: bool = one(&tx, "SELECT spine.delete_entity($1)", &[&theirs]).await;
    assert!(!deleted);
    let moved: bool = one(
        &tx,
        "SELECT spine.set_embedding($1, '[0, 0, 1]')",
        &[&theirs],
    )
    .await;
    assert!(!moved);
    tx.commit().await.unwrap();

    let types: Vec<String> = column(&db, "SELECT type FROM spine.events WHERE owner_id = $1 AND subject = 'entity/' || $2 ORDER BY seq", &[&alice, &mine.0.to_string()]).await;
    assert_eq!(types, ["data.EntityCreated"]);
    let deleted = as_user(&mut db, alice, async |tx| {
        one::<bool>(tx, "SELECT spine.delete_entity($1)", &[&mine.1]).await
    })
    .await;
    assert!(deleted);
    let gone: i64 = one(
        &db,
        "SELECT count(*) FROM spine.events WHERE type = 'data.EntityDeleted' AND subject = 'entity/' || $1",
        &[&mine.1.to_string()],
    )
    .await;
    assert_eq!(gone, 1);
}

/// Rules see the subject entity of entity events: a rule on data.EntityUpdated
/// reads `entity.data` (the entity as it is now) and acts on it.
#[tokio::test]
async fn rules_see_the_subject_entity() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let state = as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.save_rule('gold', 'data.EntityUpdated', \
               '{\"and\": [{\"==\": [{\"var\": \"entity.kind\"}, \"customer\"]}, \
                           {\"==\": [{\"var\": \"entity.data.tier\"}, \"gold\"]}]}', \
               '[{\"set_state\": {\"key\": \"gold_customer\", \"value\": \"{{entity.data.name}}\"}}]')",
            &[],
        )
        .await
        .unwrap();
        let id: Uuid = one(tx, "SELECT spine.upsert_entity('customer', '{\"name\": \"Ada\", \"tier\": \"silver\"}')", &[]).await;
        tx.execute("SELECT spine.upsert_entity('customer', '{\"name\": \"Ada\", \"tier\": \"silver\", \"note\": 1}', $1)", &[&id])
            .await
            .unwrap();
        let before: Option<Value> = one(tx, "SELECT spine.get_state('gold_customer')", &[]).await;
        tx.execute("SELECT spine.upsert_entity('customer', '{\"name\": \"Ada\", \"tier\": \"gold\"}', $1)", &[&id])
            .await
            .unwrap();
        let after: Option<Value> = one(tx, "SELECT spine.get_state('gold_customer')", &[]).await;
        (before, after)
    })
    .await;
    assert_eq!(state, (None, Some(json!("Ada"))));
}

/// Two records of one batch naming the same person (by phone) become one entity,
/// as if they had come one after the other; the rest of the batch is unaffected.
#[tokio::test]
async fn one_batch_merges_its_own_duplicates() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let out = as_user(&mut db, alice, async |tx| {
        save_crm(tx, &crm_mapping()).await;
        ingest(
            tx,
            "crm",
            json!([
                {"id": "a1", "full_name": "Ada", "phone": "030 1234567"},
                {"id": "b1", "full_name": "Bob", "email": "bob@example.com"},
                {"id": "a2", "full_name": "Ada L.", "phone": "+49 30 1234567", "email": "ada@example.com"},
                {"id": "a1", "full_name": "Ada", "phone": "030 1234567"}
            ]),
        )
        .await
    })
    .await;
    assert_eq!(
        out,
        json!({"received": 4, "created": 2, "updated": 1, "unchanged": 1, "rejected": 0, "errors": [], "conflicts": []})
    );
    let people: Vec<Value> = column(&db, "SELECT data FROM spine.entities WHERE owner_id = $1 AND kind = 'person' ORDER BY data->>'name'", &[&alice]).await;
    assert_eq!(
        people,
        [
            json!({"name": "Ada L.", "phone": "+49301234567", "email": "ada@example.com"}),
            json!({"name": "Bob", "email": "bob@example.com"})
        ]
    );
    // One created event per entity, carrying the merged fields.
    let created: i64 = one(
        &db,
        "SELECT count(*) FROM spine.events WHERE owner_id = $1 AND type = 'data.EntityCreated' \
            AND data->>'kind' = 'person'",
        &[&alice],
    )
    .await;
    assert_eq!(created, 2);
    let keys: i64 = one(
        &db,
        "SELECT count(*) FROM spine.entity_keys WHERE owner_id = $1",
        &[&alice],
    )
    .await;
    assert_eq!(keys, 3, "phone, Bob's email, Ada's email");
}

/// Reprocessing reads the external id with the current mapping, and never applies
/// a rejected version over a later processed one of the same record.
#[tokio::test]
async fn reprocess_uses_the_current_mapping_and_skips_superseded() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let (first, second) = as_user(&mut db, alice, async |tx| {
        save_crm(tx, &crm_mapping()).await;
        let first = ingest(
            tx,
            "crm",
            json!([
                {"id": "5", "full_name": "Old Name", "phone": "not a phone"},
                {"ref": "9", "full_name": "Ref Only"}
            ]),
        )
        .await;
        let second = ingest(tx, "crm", json!([{"id": "5", "full_name": "New Name"}])).await;
        (first, second)
    })
    .await;
    assert_eq!(
        (first["rejected"].clone(), second["created"].clone()),
        (json!(2), json!(1))
    );
    let mut relaxed = crm_mapping();
    relaxed["external_id"] = json!("ref");
    relaxed["fields"]["phone"] = json!({"path": "phone"});
    let again = as_user(&mut db, alice, async |tx| {
        save_crm(tx, &relaxed).await;
        one::<Value>(tx, "SELECT spine.reprocess('crm')", &[]).await
    })
    .await;
    assert_eq!(
        (again["received"].clone(), again["created"].clone()),
        (json!(1), json!(1)),
        "only the ref-only record: {again}"
    );
    let names: Vec<String> = column(&db, "SELECT data->>'name' FROM spine.entities WHERE owner_id = $1 AND kind = 'person' ORDER BY 1", &[&alice]).await;
    assert_eq!(names, ["New Name", "Ref Only"]);
    let superseded: i64 = one(
        &db,
        "SELECT count(*) FROM spine.raw_records WHERE owner_id = $1 AND status = 'superseded'",
        &[&alice],
    )
    .await;
    assert_eq!(superseded, 1);
    // The reprocessed record now carries the external id the mapping reads, so
    // sending it again is recognised: nothing changes, no second entity.
    let ext: Option<String> = one(
        &db,
        "SELECT external_id FROM spine.raw_records WHERE owner_id = $1 AND payload->>'full_name' = 'Ref Only'",
        &[&alice],
    )
    .await;
    assert_eq!(ext.as_deref(), Some("9"));
    let replay = as_user(&mut db, alice, async |tx| {
        ingest(tx, "crm", json!([{"ref": "9", "full_name": "Ref Only"}])).await
    })
    .await;
    assert_eq!(replay["unchanged"], json!(1), "{replay}");
    let people: i64 = one(
        &db,
        "SELECT count(*) FROM spine.entities WHERE owner_id = $1 AND kind = 'person'",
        &[&alice],
    )
    .await;
    assert_eq!(people, 2);
}

/// One record landed twice under different external ids (the mapping's
/// external_id changed between two ingests): reprocess with a third mapping brings
/// both copies under one id — the newer is processed, the older superseded.
#[tokio::test]
async fn reprocess_folds_copies_landed_under_different_ids() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let record = json!([{"id": "a", "code": "b", "uid": "u", "full_name": "X", "phone": "bad"}]);
    let with_id = |path: &str, strict: bool| {
        let mut m = crm_mapping();
        m["external_id"] = json!(path);
        if !strict {
            m["fields"]["phone"] = json!({"path": "phone"});
        }
        m
    };
    let out = as_user(&mut db, alice, async |tx| {
        for path in ["id", "code"] {
            save_crm(tx, &with_id(path, true)).await;
            let landed = ingest(tx, "crm", record.clone()).await;
            assert_eq!(landed["rejected"], json!(1), "{landed}");
        }
        save_crm(tx, &with_id("uid", false)).await;
        one::<Value>(tx, "SELECT spine.reprocess('crm')", &[]).await
    })
    .await;
    assert_eq!(
        (out["received"].clone(), out["created"].clone()),
        (json!(1), json!(1)),
        "{out}"
    );
    let statuses: Vec<String> = column(
        &db,
        "SELECT status || ' ' || external_id FROM spine.raw_records WHERE owner_id = $1 ORDER BY id",
        &[&alice],
    )
    .await;
    assert_eq!(statuses, ["superseded a", "processed u"]);
}

/// Two sessions ingest the same new batch at once (READ COMMITTED, as PostgREST
/// runs): the owner lock serialises them, so the second sees the first's records
/// and keys — one entity per person, each record landed once, and the second call
/// reports everything unchanged.
#[tokio::test]
async fn concurrent_identical_batches_create_each_person_once() {
    let owner = Uuid::new_v4();
    let source = "crm";
    let setup = connect().await;
    setup
        .execute(
            "SELECT spine.save_source($1, $2, owner => $3)",
            &[&source, &crm_mapping(), &owner],
        )
        .await
        .unwrap();
    let records = Value::Array(
        (0..200)
            .map(|i| {
                json!({"id": format!("c{i}"), "full_name": format!("Person {i}"),
                       "email": format!("p{i}@example.com"), "phone": format!("030 {:07}", i)})
            })
            .collect(),
    );
    let mut calls = Vec::new();
    for _ in 0..2 {
        let records = records.clone();
        calls.push(tokio::spawn(async move {
            let mut db = connect().await;
            let tx = db.transaction().await.unwrap();
            act_as(&tx, "authenticated", json!({"sub": owner.to_string()})).await;
            let counts = ingest(&tx, source, records).await;
            tx.commit().await.unwrap();
            counts
        }));
    }
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    let created: i64 = results.iter().map(|c| c["created"].as_i64().unwrap()).sum();
    let unchanged: i64 = results
        .iter()
        .map(|c| c["unchanged"].as_i64().unwrap())
        .sum();
    assert_eq!((created, unchanged), (200, 200), "{results:?}");
    let entities: i64 = one(
        &setup,
        "SELECT count(*) FROM spine.entities WHERE owner_id = $1 AND kind = 'person'",
        &[&owner],
    )
    .await;
    let raw: i64 = one(
        &setup,
        "SELECT count(*) FROM spine.raw_records WHERE owner_id = $1 AND status = 'processed'",
        &[&owner],
    )
    .await;
    let keys: i64 = one(
        &setup,
        "SELECT count(*) FROM spine.entity_keys WHERE owner_id = $1",
        &[&owner],
    )
    .await;
    assert_eq!((entities, raw, keys), (200, 200, 400));
}

/// Identity keys stored by the old 25-region phone normalizer: Brazil's carrier
/// code `21` stayed in the number. After `spine.rekey` the entity also holds the
/// key today's normalizer makes, so a record written the way the number is written
/// now finds it instead of creating a second person; the old key stays.
#[tokio::test]
async fn rekey_lets_new_records_find_entities_keyed_by_old_rules() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let mapping = json!({
        "kind": "person",
        "external_id": "id",
        "fields": {
            "name": {"path": "name"},
            "phone": {"path": "tel", "normalize": [{"phone": {"region": "BR"}}]}
        },
        "identity": ["phone"]
    });
    let first = as_user(&mut db, alice, async |tx| {
        tx.execute("SELECT spine.save_source('br', $1)", &[&mapping])
            .await
            .unwrap();
        ingest(
            tx,
            "br",
            json!([{"id": "a", "name": "Ana", "tel": "0 21 11 2345 6789"}]),
        )
        .await
    })
    .await;
    assert_eq!(first["created"], json!(1), "{first}");
    // What the old normalizer stored for that record.
    db.execute(
        "UPDATE spine.entity_keys SET key_value = '+552111123456789' \
          WHERE owner_id = $1 AND key_type = 'phone'",
        &[&alice],
    )
    .await
    .unwrap();

    let (rekeyed, again) = as_user(&mut db, alice, async |tx| {
        let rekeyed: Value = one(tx, "SELECT spine.rekey('br')", &[]).await;
        let again: Value = one(tx, "SELECT spine.rekey('br')", &[]).await;
        (rekeyed, again)
    })
    .await;
    assert_eq!(
        rekeyed,
        json!({"records": 1, "keys_added": 1, "conflicts": 0, "unmappable": 0})
    );
    assert_eq!(again["keys_added"], json!(0), "{again}");

    let second = as_user(&mut db, alice, async |tx| {
        ingest(
            tx,
            "br",
            json!([{"id": "b", "name": "Ana S.", "tel": "(11) 2345-6789"}]),
        )
        .await
    })
    .await;
    assert_eq!(
        (&second["created"], &second["updated"]),
        (&json!(0), &json!(1)),
        "{second}"
    );
    let people: i64 = one(
        &db,
        "SELECT count(*) FROM spine.entities WHERE owner_id = $1 AND kind = 'person'",
        &[&alice],
    )
    .await;
    assert_eq!(people, 1);
    let keys: Vec<String> = column(
        &db,
        "SELECT key_value FROM spine.entity_keys WHERE owner_id = $1 ORDER BY 1",
        &[&alice],
    )
    .await;
    assert_eq!(keys, ["+551123456789", "+552111123456789"]);

    let missing = as_user(&mut db, alice, async |tx| {
        tx.execute("SELECT spine.rekey('no_such_source')", &[])
            .await
            .unwrap_err()
    })
    .await;
    assert_eq!(sqlstate(&missing), Some("42704"));
}

/// A field added to a mapping reaches the entities built before it: backfill
/// maps the latest processed version of each record again, a page at a time;
/// a second pass changes nothing and announces nothing. A record the new mapping
/// refuses keeps its entity and is reported.
#[tokio::test]
async fn backfill_maps_every_record_again_in_pages() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    as_user(&mut db, alice, async |tx| {
        save_crm(tx, &crm_mapping()).await;
        ingest(
            tx,
            "crm",
            json!([
                {"id": "a", "full_name": "Ann", "email": "ann@example.com", "city": "Oslo"},
                {"id": "b", "full_name": "Bob", "email": "bob@example.com", "city": "Rome"},
                {"id": "c", "full_name": "Cy", "email": "cy@example.com"}
            ]),
        )
        .await;
        // A new version of a: the old one is history, not backfilled over it.
        ingest(
            tx,
            "crm",
            json!([{"id": "a", "full_name": "Ann B.", "email": "ann@example.com", "city": "Bergen"}]),
        )
        .await;
    })
    .await;
    let mut with_city = crm_mapping();
    with_city["fields"]["city"] = json!({"path": "city", "required": true});
    let (pages, again) = as_user(&mut db, alice, async |tx| {
        save_crm(tx, &with_city).await;
        let mut pages: Vec<Value> = Vec::new();
        let mut after = 0i64;
        loop {
            let page: Value = one(tx, "SELECT spine.backfill('crm', $1, 2)", &[&after]).await;
            pages.push(page.clone());
            if page["done"] == json!(true) {
                break;
            }
            after = page["last"]
                .as_i64()
                .expect("a page that is not done has a last id");
        }
        let again: Value = one(tx, "SELECT spine.backfill('crm', 0, 10)", &[]).await;
        (pages, again)
    })
    .await;
    let sum = |field: &str| -> i64 { pages.iter().map(|p| p[field].as_i64().unwrap()).sum() };
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!(
        (sum("received"), sum("updated"), sum("rejected")),
        (3, 2, 1),
        "{pages:?}"
    );
    let refused = &pages
        .iter()
        .flat_map(|p| p["errors"].as_array().unwrap().clone())
        .collect::<Vec<_>>();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["external_id"], json!("c"));
    let cities: Vec<(String, Option<String>)> = column::<Value>(
        &db,
        "SELECT jsonb_build_array(data->>'name', data->>'city') FROM spine.entities \
          WHERE owner_id = $1 AND kind = 'person' ORDER BY data->>'name'",
        &[&alice],
    )
    .await
    .into_iter()
    .map(|v| {
        (
            v[0].as_str().unwrap().to_string(),
            v[1].as_str().map(str::to_string),
        )
    })
    .collect();
    assert_eq!(
        cities,
        [
            ("Ann B.".to_string(), Some("Bergen".to_string())),
            ("Bob".to_string(), Some("Rome".to_string())),
            ("Cy".to_string(), None),
        ]
    );
    // Refused by today's mapping, c keeps its status and entity.
    let statuses: Vec<String> = column(
        &db,
        "SELECT status || coalesce(':' || (entity_id IS NOT NULL)::text, '') FROM spine.raw_records \
          WHERE owner_id = $1 ORDER BY id",
        &[&alice],
    )
    .await;
    assert_eq!(statuses, ["processed:true"; 4]);
    assert_eq!(
        (
            &again["received"],
            &again["unchanged"],
            &again["rejected"],
            &again["done"]
        ),
        (&json!(3), &json!(2), &json!(1), &json!(true)),
        "{again}"
    );
    let announced: Vec<Value> = column(
        &db,
        "SELECT data FROM spine.events WHERE owner_id = $1 AND type = 'connector.DataReceived' \
            AND data->>'operation' = 'backfill' ORDER BY id",
        &[&alice],
    )
    .await;
    // One per page of the first pass, none for the pass that changed nothing.
    assert_eq!(announced.len(), 2, "{announced:?}");
    assert!(
        announced.iter().all(|a| a["updated"] == json!(1)),
        "{announced:?}"
    );

    let bob = Uuid::new_v4();
    let refusals = as_user(&mut db, bob, async |tx| {
        let mut codes = Vec::new();
        for (sql, owner) in [
            ("SELECT spine.backfill('crm', 0, 100, $1)", Some(alice)),
            ("SELECT spine.backfill('crm', 0, 100, $1)", None),
            ("SELECT spine.backfill('crm', 0, 0, $1)", None),
            ("SELECT spine.backfill('crm', 0, 10001, $1)", None),
            ("SELECT spine.backfill('crm', NULL, 10, $1)", None),
        ] {
            tx.batch_execute("SAVEPOINT refused").await.unwrap();
            let err = tx.execute(sql, &[&owner]).await.unwrap_err();
            codes.push(sqlstate(&err).map(str::to_string));
            tx.batch_execute("ROLLBACK TO SAVEPOINT refused")
                .await
                .unwrap();
        }
        codes
    })
    .await;
    assert_eq!(
        refusals,
        [
            Some("42501"),
            Some("42704"),
            Some("22023"),
            Some("22023"),
            Some("22004")
        ]
        .map(|c| c.map(str::to_string))
    );
}
