//! Search sync against the real cluster: with Meilisearch down (always runs), and
//! with a real Meilisearch of the test's own (runs when a `meilisearch` binary is
//! available, else prints a SKIP line): create/update/delete, tenant-token
//! isolation, kill -9 of Meilisearch and of the worker, reindex and check-index.

use serde_json::{json, Value};
use spine_tests::as_user;
use spine_tests::connect as db;
use spine_tests::daemons::{Meili, Worker};
use spine_tests::proc::{free_port, wait_until};
use std::process::Command;
use std::time::Duration;
use uuid::Uuid;

/// The worker's own Meilisearch client, for a test's server.
fn client(meili: &Meili) -> spine_worker::search::meili::Meili {
    spine_worker::search::meili::Meili::new(&meili.url(), Some(&meili.key))
}

/// A search sink of the test's own, starting at the current end of the outbox.
async fn new_sink(db: &tokio_postgres::Client) -> String {
    let sink = format!("search_{}", &Uuid::new_v4().simple().to_string()[..12]);
    db.execute(
        "SELECT spine.ensure_sink($1, 'meilisearch', false)",
        &[&sink],
    )
    .await
    .unwrap();
    sink
}

fn worker(meili_url: &str, key: &str, sink: &str) -> Worker {
    Worker::start(
        &format!("t_{}", Uuid::new_v4().simple()),
        "nats://127.0.0.1:1",
        &[
            ("MEILI_URL", meili_url),
            ("MEILI_MASTER_KEY", key),
            ("SPINE_SEARCH_SINK", sink),
            ("SPINE_SEARCH_POLL_MS", "100"),
            ("SPINE_JOB_QUEUES", ""),
        ],
    )
}

async fn sink_row(db: &tokio_postgres::Client, sink: &str) -> (i64, i64, Option<String>) {
    let r = db
        .query_one(
            "SELECT delivered, backlog, last_error FROM spine.sink_status WHERE name = $1",
            &[&sink],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

async fn create(db: &mut tokio_postgres::Client, user: Uuid, kind: &str, data: Value) -> Uuid {
    as_user(db, user, async |tx| {
        spine_tests::one(tx, "SELECT spine.upsert_entity($1, $2)", &[&kind, &data]).await
    })
    .await
}

/// Meilisearch unreachable: the sink records the error, keeps the events as
/// backlog and delivers nothing (no Meilisearch needed for this one).
#[tokio::test]
async fn sink_keeps_a_backlog_while_meilisearch_is_down() {
    let mut db = db().await;
    let sink = new_sink(&db).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let _worker = worker(&dead, "k", &sink);
    let kind = format!("note_{}", &Uuid::new_v4().simple().to_string()[..8]);
    create(&mut db, Uuid::new_v4(), &kind, json!({"t": "x"})).await;
    wait_until(
        "the sink's error recorded",
        Duration::from_secs(20),
        || async { sink_row(&db, &sink).await.2.is_some() },
    )
    .await;
    let (delivered, backlog, error) = sink_row(&db, &sink).await;
    assert_eq!(delivered, 0);
    assert!(backlog >= 1, "the event waits: {backlog}");
    assert!(
        error.unwrap().contains("meilisearch"),
        "the error names Meilisearch"
    );
}

/// Waits until index `index` holds exactly `ids` (as strings).
async fn wait_for_ids(meili: &Meili, index: &str, mut ids: Vec<String>) {
    ids.sort();
    let client = client(meili);
    let what = format!("{index} to hold {} documents", ids.len());
    wait_until(&what, Duration::from_secs(60), || {
        let (client, ids) = (client.clone(), ids.clone());
        async move {
            let mut got = client.ids(index).await.unwrap_or_default();
            got.sort();
            got == ids
        }
    })
    .await;
}

/// Everything that needs a real Meilisearch, in one test because the search
/// configuration (URL and key for tenant tokens) is one per database.
#[tokio::test]
async fn search_sync_against_meilisearch() {
    let Some(mut meili) = Meili::start("search_sync_against_meilisearch") else {
        return;
    };
    let mut db = db().await;
    let sink = new_sink(&db).await;
    let mut w = worker(&meili.url(), &meili.key, &sink);
    let kind = format!("note_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let index = format!("spine_{kind}");
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());

    // Create, update, delete.
    let a = create(
        &mut db,
        alice,
        &kind,
        json!({"title": "alice's plan", "n": 1}),
    )
    .await;
    let b = create(&mut db, bob, &kind, json!({"title": "bob's plan"})).await;
    wait_for_ids(&meili, &index, vec![a.to_string(), b.to_string()]).await;
    as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.upsert_entity($1, $2, $3)",
            &[&kind, &json!({"title": "alice's revised plan", "n": 2}), &a],
        )
        .await
        .unwrap();
    })
    .await;
    as_user(&mut db, bob, async |tx| {
        tx.execute("SELECT spine.delete_entity($1)", &[&b])
            .await
            .unwrap();
    })
    .await;
    wait_for_ids(&meili, &index, vec![a.to_string()]).await;
    let client = client(&meili);
    wait_until("the update searchable", Duration::from_secs(30), || async {
        let (_, hits) = client
            .search_as(&meili.key, &index, &json!({"q": "revised"}))
            .await
            .unwrap();
        hits["hits"].as_array().is_some_and(|h| h.len() == 1)
    })
    .await;

    // Tenant tokens: each user sees only their own documents, whatever they ask.
    let b2 = create(&mut db, bob, &kind, json!({"title": "bob's second plan"})).await;
    wait_for_ids(&meili, &index, vec![a.to_string(), b2.to_string()]).await;
    for (user, own) in [(alice, a), (bob, b2)] {
        let grant: Value = as_user(&mut db, user, async |tx| {
            spine_tests::one(tx, "SELECT spine.search_key()", &[]).await
        })
        .await;
        assert_eq!(grant["url"], meili.url());
        let token = grant["token"].as_str().unwrap();
        for body in [
            json!({"q": "plan"}),
            json!({"q": "", "filter": format!("owner_id = '{alice}' OR owner_id = '{bob}'")}),
        ] {
            let (status, answer) = client.search_as(token, &index, &body).await.unwrap();
            assert_eq!(status, 200, "{answer}");
            let ids: Vec<&str> = answer["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, vec![own.to_string()], "{user} with {body}");
        }
        // The token only searches: writing with it is refused.
        let as_token = spine_worker::search::meili::Meili::new(&meili.url(), Some(token));
        assert!(as_token
            .put_documents(
                &index,
                &[json!({"id": "forged", "owner_id": user.to_string()})]
            )
            .await
            .is_err());
    }

    // kill -9 of Meilisearch while entities keep coming, then of the worker: after
    // restarts everything is in the index, once.
    let mut ids = vec![a.to_string(), b2.to_string()];
    for i in 0..20 {
        ids.push(
            create(&mut db, alice, &kind, json!({"i": i}))
                .await
                .to_string(),
        );
    }
    meili.kill9();
    for i in 20..40 {
        ids.push(
            create(&mut db, alice, &kind, json!({"i": i}))
                .await
                .to_string(),
        );
    }
    wait_until("the outage recorded", Duration::from_secs(20), || async {
        sink_row(&db, &sink).await.2.is_some()
    })
    .await;
    w.kill9();
    meili.restart();
    let _w2 = worker(&meili.url(), &meili.key, &sink);
    wait_for_ids(&meili, &index, ids.clone()).await;
    wait_until("the backlog drained", Duration::from_secs(30), || async {
        sink_row(&db, &sink).await.1 == 0
    })
    .await;

    // check-index finds drift, reindex repairs it.
    let bin = env!("CARGO_BIN_EXE_spine-worker");
    let cli_for = |cmd: &str, kind: &str| {
        Command::new(bin)
            .args([cmd, kind])
            .env("DATABASE_URL", spine_tests::database_url())
            .env("MEILI_URL", meili.url())
            .env("MEILI_MASTER_KEY", &meili.key)
            .env("SPINE_SEARCH_SINK", &sink)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let cli = |cmd: &str| cli_for(cmd, &kind);
    assert!(cli("check-index").status.success());
    let drift = client.delete_documents(&index, &ids[..5]).await.unwrap();
    client.wait(&[drift]).await.unwrap();
    let out = cli("check-index");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("missing 5"),
        "{out:?}"
    );
    let out = cli("reindex");
    assert!(out.status.success(), "{out:?}");
    assert!(cli("check-index").status.success());
    wait_for_ids(&meili, &index, ids).await;

    // A document Meilisearch refuses does not stop the sink. Three entities with
    // 22,000 distinct fields each, committed together (one round), push their
    // index past Meilisearch's 65,535 fields: the batch fails as a whole, is
    // written again one by one, the two that fit are indexed, the third is
    // recorded as refused, and what comes after flows as before.
    let heavy = format!("wide_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let wide = |tag: char| {
        let fields: serde_json::Map<String, Value> = (0..22_000u32)
            .map(|i| (format!("{tag}{i:x}"), json!(1)))
            .collect();
        Value::Object(fields)
    };
    let wide_ids: Vec<Uuid> = as_user(&mut db, alice, async |tx| {
        let mut out = Vec::new();
        for tag in ['p', 'q', 'r'] {
            out.push(
                spine_tests::one(
                    tx,
                    "SELECT spine.upsert_entity($1, $2)",
                    &[&heavy, &wide(tag)],
                )
                .await,
            );
        }
        out
    })
    .await;
    let after = create(&mut db, bob, &kind, json!({"title": "after the wide ones"})).await;
    let heavy_index = format!("spine_{heavy}");
    wait_until("the refusal recorded", Duration::from_secs(90), || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM spine.search_rejections WHERE sink = $1 AND kind = $2",
                &[&sink, &heavy],
            )
            .await
            .unwrap()
            .get(0);
        n == 1
    })
    .await;
    let refusal = db
        .query_one(
            "SELECT entity_id, error FROM spine.search_rejections WHERE sink = $1 AND kind = $2",
            &[&sink, &heavy],
        )
        .await
        .unwrap();
    let (refused, error): (Uuid, String) = (refusal.get(0), refusal.get(1));
    assert!(wide_ids.contains(&refused));
    assert!(error.contains("max_fields_limit_exceeded"), "{error}");
    let mut indexed: Vec<String> = wide_ids
        .iter()
        .filter(|id| **id != refused)
        .map(Uuid::to_string)
        .collect();
    indexed.sort();
    wait_for_ids(&meili, &heavy_index, indexed.clone()).await;
    wait_until(
        "the backlog drained again",
        Duration::from_secs(60),
        || async { sink_row(&db, &sink).await.1 == 0 },
    )
    .await;

    let found = client.ids(&index).await.unwrap();
    assert!(found.contains(&after.to_string()), "later writes go on");

    // check-index counts the refused document as missing and says why; reindex
    // rebuilds around it instead of stopping.
    let heavy_cli = |cmd: &str| cli_for(cmd, &heavy);
    let out = heavy_cli("check-index");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text.contains("missing 1") && text.contains("refused by Meilisearch: 1"),
        "{text}"
    );
    let out = heavy_cli("reindex");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 refused by Meilisearch"),
        "{out:?}"
    );
    wait_for_ids(&meili, &heavy_index, indexed.clone()).await;

    // A refused entity that becomes acceptable is indexed and its refusal forgotten.
    as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.upsert_entity($1, $2, $3)",
            &[&heavy, &json!({"p0": 1}), &refused],
        )
        .await
        .unwrap();
    })
    .await;
    wait_until("the refusal forgotten", Duration::from_secs(60), || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM spine.search_rejections WHERE sink = $1",
                &[&sink],
            )
            .await
            .unwrap()
            .get(0);
        n == 0
    })
    .await;
    let mut all: Vec<String> = wide_ids.iter().map(Uuid::to_string).collect();
    all.sort();
    wait_for_ids(&meili, &heavy_index, all).await;
}

/// An index left without its settings (a worker stopped between creating it and
/// setting it up) gets them when the sink next writes to it: without `owner_id`
/// filterable, tenant tokens could not search it.
#[tokio::test]
async fn an_index_without_its_settings_is_repaired() {
    let Some(meili) = Meili::start("an_index_without_its_settings_is_repaired") else {
        return;
    };
    // First: it installs the TLS provider reqwest needs.
    let client = client(&meili);
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", meili.key);
    let uid = format!("spine_bare_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let created = http
        .post(format!("{}/indexes", meili.url()))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body(json!({"uid": uid, "primaryKey": "id"}).to_string())
        .send()
        .await
        .unwrap();
    let task: Value = serde_json::from_slice(&created.bytes().await.unwrap()).unwrap();
    client
        .wait(&[task["taskUid"].as_u64().expect("a task uid")])
        .await
        .unwrap();
    // An operator made `title` filterable: that stays.
    let patched = http
        .patch(format!("{}/indexes/{uid}/settings", meili.url()))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body(json!({"filterableAttributes": ["title"]}).to_string())
        .send()
        .await
        .unwrap();
    let task: Value = serde_json::from_slice(&patched.bytes().await.unwrap()).unwrap();
    client
        .wait(&[task["taskUid"].as_u64().expect("a task uid")])
        .await
        .unwrap();
    client.ensure_index(&uid).await.unwrap();
    let settings = http
        .get(format!(
            "{}/indexes/{uid}/settings/filterable-attributes",
            meili.url()
        ))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    let mut filterable: Vec<String> =
        serde_json::from_slice(&settings.bytes().await.unwrap()).unwrap();
    filterable.sort();
    assert_eq!(filterable, ["kind", "owner_id", "title"]);
}
