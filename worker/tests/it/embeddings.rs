//! Embeddings end to end: writes of an embedded kind queue `embed` jobs, the
//! worker gets vectors from the stack's `spine-embedder` (all-MiniLM-L6-v2, a
//! real model) through its OpenAI-compatible API, and `spine.similar` finds an
//! entity by meaning, under RLS. A later write is embedded again; a job whose
//! entity changed meanwhile does not overwrite the newer vector.

use serde_json::{json, Value};
use spine_tests::daemons::job_runner;
use spine_tests::proc::wait_until;
use spine_tests::{as_user, connect};
use std::time::Duration;
use uuid::Uuid;

fn embeddings_url() -> String {
    std::env::var("SPINE_EMBEDDINGS_URL").expect(
        "SPINE_EMBEDDINGS_URL: run via `cargo xtask test` (setup fetches the model, up starts spine-embedder)",
    )
}

/// The query's vector, from the same API the worker uses.
async fn embed(text: &str) -> Vec<f32> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let body = reqwest::Client::new()
        .post(format!("{}/embeddings", embeddings_url()))
        .header("content-type", "application/json")
        .body(json!({"input": text}).to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    serde_json::from_value(answer["data"][0]["embedding"].clone()).unwrap()
}

/// pgvector's `vector` literal of `v`.
fn literal(v: &[f32]) -> String {
    format!(
        "[{}]",
        v.iter().map(f32::to_string).collect::<Vec<_>>().join(",")
    )
}

async fn upsert(db: &mut tokio_postgres::Client, user: Uuid, kind: &str, text: &str) -> Uuid {
    let (kind, text) = (kind.to_string(), text.to_string());
    as_user(db, user, async move |tx| {
        tx.query_one(
            "SELECT spine.upsert_entity($1, jsonb_build_object('text', $2::text, 'n', 1))",
            &[&kind, &text],
        )
        .await
        .unwrap()
        .get::<_, Uuid>(0)
    })
    .await
}

/// The texts `user` finds nearest to `query` among their entities of `kind`.
async fn nearest(
    db: &mut tokio_postgres::Client,
    user: Uuid,
    kind: &str,
    query: &str,
) -> Vec<String> {
    let vector = literal(&embed(query).await);
    let kind = kind.to_string();
    as_user(db, user, async move |tx| {
        tx.query(
            "SELECT data->>'text' FROM spine.similar($1, $2::text::vector, 3)",
            &[&kind, &vector],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    })
    .await
}

async fn embedding_events(db: &tokio_postgres::Client, id: Uuid) -> Vec<Value> {
    db.query(
        "SELECT data FROM spine.events WHERE type = 'data.EmbeddingUpdated' \
          AND subject = 'entity/' || $1::uuid::text ORDER BY id",
        &[&id],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn entities_are_embedded_and_found_by_meaning() {
    let url = embeddings_url();
    let mut db = connect().await;
    db.batch_execute("SET search_path = public, extensions")
        .await
        .unwrap();
    let kind = format!("memory_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let coffee = "Loves a flat white from the corner café every morning";
    // Written before the kind is embedded: the backfill covers it.
    let coffee_id = upsert(&mut db, alice, &kind, coffee).await;
    let queued: i32 = db
        .query_one("SELECT spine.embed_kind($1, ARRAY['text'])", &[&kind])
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 1);
    let dentist = upsert(
        &mut db,
        alice,
        &kind,
        "Dentist appointment on Tuesday at nine",
    )
    .await;
    let marathon = upsert(
        &mut db,
        alice,
        &kind,
        "Training for a half marathon in the spring",
    )
    .await;
    let bobs = upsert(
        &mut db,
        bob,
        &kind,
        "Tax return due at the end of the month",
    )
    .await;
    let ids = [coffee_id, dentist, marathon, bobs];

    let _worker = job_runner("embed", &[("SPINE_EMBEDDINGS_URL", &url)]);
    wait_until("four embeddings", Duration::from_secs(60), || async {
        db.query_one(
            "SELECT count(*) FROM spine.entities WHERE id = ANY($1) AND embedding IS NOT NULL",
            &[&ids.to_vec()],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 4
    })
    .await;

    // "coffee" finds the coffee memory, though the words differ.
    let found = nearest(&mut db, alice, &kind, "coffee").await;
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0], coffee, "{found:?}");
    assert_eq!(
        nearest(&mut db, alice, &kind, "running a race").await[0],
        "Training for a half marathon in the spring"
    );
    // Bob finds only his own, whatever he asks.
    assert_eq!(
        nearest(&mut db, bob, &kind, "coffee").await,
        ["Tax return due at the end of the month"]
    );

    // Each embedding is announced, owned by the entity's owner.
    let events = embedding_events(&db, coffee_id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["model"], "sentence-transformers/all-MiniLM-L6-v2");
    assert_eq!(events[0]["dimensions"], 384);
    assert_eq!(events[0]["version"], 1);
    let owner: Uuid = db
        .query_one(
            "SELECT owner_id FROM spine.events WHERE type = 'data.EmbeddingUpdated' \
              AND subject = 'entity/' || $1::uuid::text",
            &[&coffee_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, alice);

    // A new text is embedded again: the dentist becomes an espresso tasting.
    upsert_text(
        &mut db,
        alice,
        dentist,
        &kind,
        "Espresso tasting at the roastery",
    )
    .await;
    wait_until("the new text embedded", Duration::from_secs(60), || async {
        embedding_events(&db, dentist).await.len() == 2
    })
    .await;
    assert_eq!(embedding_events(&db, dentist).await[1]["version"], 2);
    let found = nearest(&mut db, alice, &kind, "coffee").await;
    assert!(
        found[..2].contains(&"Espresso tasting at the roastery".to_string()),
        "{found:?}"
    );

    // A stale write is refused: version 1 of the dentist entity is gone.
    let stale: bool = db
        .query_one(
            "SELECT spine.record_embedding($1, 1, $2, 'm')",
            &[&dentist, &vec![0.5f32; 384]],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!stale);

    // Users cannot write embeddings for others, nor configure kinds.
    let err = as_user(&mut db, bob, async |tx| {
        tx.query_one("SELECT spine.embed_kind('anything')", &[])
            .await
            .unwrap_err()
    })
    .await;
    assert_eq!(spine_tests::sqlstate(&err), Some("42501"), "{err}");
    db.execute("SELECT spine.unembed_kind($1)", &[&kind])
        .await
        .unwrap();
}

async fn upsert_text(
    db: &mut tokio_postgres::Client,
    user: Uuid,
    id: Uuid,
    kind: &str,
    text: &str,
) {
    let (kind, text) = (kind.to_string(), text.to_string());
    as_user(db, user, async move |tx| {
        tx.execute(
            "SELECT spine.upsert_entity($1, jsonb_build_object('text', $2::text, 'n', 1), $3)",
            &[&kind, &text, &id],
        )
        .await
        .unwrap();
    })
    .await;
}
