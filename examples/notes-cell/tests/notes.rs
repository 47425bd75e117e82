//! notes-cell end to end, against the dev stack's Postgres, a private
//! nats-server, Spine's worker and two `notes-cell` processes: the notes
//! service as a Rust cell (cbs.notes.*) and as an edge function behind Spine's
//! own services (svc.notebook.*).

use serde_json::{json, Value};
use spine_cell::{Cell, CellError, ErrorCode, Request};
use spine_tests::cluster::psql;
use spine_tests::daemons::{Nats, Worker};
use spine_tests::proc::ChildGuard;
use spine_tests::{connect, database_url};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

const SECRET: &str = "notes-cell-example-secret-with-32-chars-or-more";

fn here(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(file)
}

fn token(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(4_000_000_000u64);
    spine_core::auth::sign(&claims, SECRET.as_bytes())
}

fn user() -> (Uuid, String) {
    let id = Uuid::new_v4();
    (
        id,
        token(json!({"sub": id.to_string(), "role": "authenticated"})),
    )
}

/// The example's schema, as the walkthrough applies it; once per test binary
/// (its tests run in parallel, and DDL of one name is not).
fn apply_schema() {
    static APPLIED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut applied = APPLIED.lock().unwrap();
    if *applied {
        return;
    }
    *applied = true;
    psql(
        &database_url(),
        &["-f", here("schema.sql").to_str().unwrap()],
    );
}

/// A private NATS, Spine's worker serving `svc<tag>.{service}.{verb}`, and the
/// subject templates of this test.
struct Stack {
    nats: Nats,
    _worker: Worker,
    cell_subject: String,
    spine_subject: String,
}

fn stack() -> Stack {
    apply_schema();
    let tag = &Uuid::new_v4().simple().to_string()[..8];
    let nats = Nats::start();
    let spine_subject = format!("svc{tag}.{{service}}.{{verb}}");
    let worker = Worker::start(
        &format!("t_{}", Uuid::new_v4().simple()),
        &nats.url(),
        &[
            ("SPINE_SERVICES_SUBJECT", spine_subject.as_str()),
            ("SPINE_JWT_SECRET", SECRET),
        ],
    );
    Stack {
        nats,
        _worker: worker,
        cell_subject: format!("cbs{tag}.{{service}}.{{verb}}"),
        spine_subject,
    }
}

fn start_cell(s: &Stack, name: &str) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_notes-cell"))
            .env("NATS_URL", s.nats.url())
            .env("CELL_SUBJECT", &s.cell_subject)
            .env("SPINE_SERVICES_SUBJECT", &s.spine_subject)
            .env("SPINE_SERVICE_KEY", token(json!({"role": "service_role"})))
            .env("CELL_NAME", name)
            .stdout(Stdio::null())
            .spawn()
            .expect("start notes-cell"),
    )
}

/// Calls until something answers (the processes are starting).
async fn first_answer(cell: &Cell, verb: &str, data: Value) -> Value {
    first_answer_of(cell, "notes", verb, data).await
}

async fn first_answer_of(cell: &Cell, service: &str, verb: &str, data: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match cell.request::<_, Value>(service, verb, &data).await {
            Ok(v) => return v,
            Err(CellError::NoAnswer(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
}

async fn error_of(cell: &Cell, verb: &str, data: Value) -> (Option<ErrorCode>, Value) {
    error_of_service(cell, "notes", verb, data).await
}

async fn error_of_service(
    cell: &Cell,
    service: &str,
    verb: &str,
    data: Value,
) -> (Option<ErrorCode>, Value) {
    match cell.request::<_, Value>(service, verb, &data).await {
        Ok(v) => panic!("{verb} {data}: answered {v}"),
        Err(CellError::Service { code, details, .. }) => (Some(code), details),
        Err(e) => (e.code(), Value::Null),
    }
}

/// Two instances share the load, each request answered once; a bad request is
/// VALIDATION with its pointer; Bob cannot see Alice's note; the request's
/// correlation id reaches Spine's event; share links are signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_cells_answer_each_request_once_as_the_caller() {
    let s = stack();
    let _a = start_cell(&s, "cell-a");
    let _b = start_cell(&s, "cell-b");
    let (alice, alice_token) = user();
    let (_, bob_token) = user();
    let as_alice = Cell::connect(&s.nats.url(), &s.cell_subject)
        .await
        .unwrap()
        .with_token(&alice_token)
        .with_timeout(Duration::from_secs(10));
    first_answer(&as_alice, "list", json!({})).await;
    // Both instances subscribed before the load (the second may start later).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let tag = Uuid::new_v4().simple().to_string();
    let mut calls = Vec::new();
    for i in 0..100 {
        let cell = as_alice.clone();
        let title = format!("{tag}-{i}");
        calls.push(tokio::spawn(async move {
            cell.request::<_, Value>(
                "notes",
                "create",
                &json!({"title": title, "tags": ["load"]}),
            )
            .await
        }));
    }
    let mut served_by = std::collections::BTreeMap::<String, usize>::new();
    let mut ids = std::collections::BTreeSet::new();
    for c in calls {
        let note = c.await.unwrap().expect("every request answered");
        assert_eq!(note["owner_id"], json!(alice.to_string()));
        *served_by
            .entry(note["served_by"].as_str().unwrap().to_string())
            .or_default() += 1;
        ids.insert(note["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 100, "100 notes, each once");
    assert_eq!(served_by.len(), 2, "both instances served: {served_by:?}");
    let db = connect().await;
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM public.notes WHERE title LIKE $1 || '-%'",
            &[&tag],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 100, "stored once each");

    // The contract: the offending value's pointer, never its value.
    let (code, details) = error_of(
        &as_alice,
        "create",
        json!({"title": "", "tags": ["Bad Tag"]}),
    )
    .await;
    assert_eq!(code, Some(ErrorCode::Validation));
    let pointers: Vec<&str> = details["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/title") && pointers.contains(&"/tags/0"),
        "{details}"
    );
    assert!(
        !details.to_string().contains("Bad Tag"),
        "the value is not echoed: {details}"
    );
    let (code, _) = error_of(
        &as_alice,
        "create",
        json!({"title": "x", "owner_id": Uuid::new_v4()}),
    )
    .await;
    assert_eq!(
        code,
        Some(ErrorCode::Validation),
        "no field the schema does not name"
    );

    // As the caller: Bob gets NOT_FOUND for Alice's note, Alice gets it.
    let id = ids.iter().next().unwrap().clone();
    let as_bob = Cell::connect(&s.nats.url(), &s.cell_subject)
        .await
        .unwrap()
        .with_token(&bob_token);
    assert_eq!(
        error_of(&as_bob, "get", json!({"id": id})).await.0,
        Some(ErrorCode::NotFound)
    );
    let bobs: Value = as_bob.request("notes", "list", &json!({})).await.unwrap();
    assert_eq!(bobs["notes"], json!([]), "Bob lists nothing of Alice's");
    let note: Value = as_alice
        .request("notes", "get", &json!({"id": id}))
        .await
        .unwrap();
    assert!(note["share"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{id}.")));
    let anonymous = Cell::connect(&s.nats.url(), &s.cell_subject).await.unwrap();
    assert_eq!(
        error_of(&anonymous, "list", json!({})).await.0,
        Some(ErrorCode::Forbidden)
    );

    // The caller's chain reaches Spine's event.
    let chain = Uuid::new_v4();
    let mut req = Request::new(json!({"title": format!("{tag}-chained")}));
    req.correlation_id = Some(chain);
    let note: Value = as_alice.send("notes", "create", req).await.unwrap();
    let event_chain: Uuid = db
        .query_one(
            "SELECT correlation_id FROM spine.events WHERE type = 'notes.NoteCreated' AND subject = $1",
            &[&format!("note/{}", note["id"].as_str().unwrap())],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(event_chain, chain);
}

/// kill -9 of one instance under load: every request that was answered is
/// stored exactly once; the other instance answers the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_cell_loses_no_answered_request() {
    let s = stack();
    let mut a = start_cell(&s, "cell-a");
    let _b = start_cell(&s, "cell-b");
    let (_, alice_token) = user();
    let cell = Cell::connect(&s.nats.url(), &s.cell_subject)
        .await
        .unwrap()
        .with_token(&alice_token)
        .with_timeout(Duration::from_secs(3));
    first_answer(&cell, "list", json!({})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tag = Uuid::new_v4().simple().to_string();
    let mut answered = Vec::new();
    let mut failed = 0;
    for round in 0..20 {
        if round == 8 {
            let _ = a.0.kill(); // SIGKILL
            let _ = a.0.wait();
        }
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let cell = cell.clone();
                let title = format!("{tag}-{round}-{i}");
                tokio::spawn(async move {
                    (
                        title.clone(),
                        cell.request::<_, Value>("notes", "create", &json!({"title": title}))
                            .await,
                    )
                })
            })
            .collect();
        for c in calls {
            match c.await.unwrap() {
                (title, Ok(note)) => answered.push((title, note)),
                (_, Err(_)) => failed += 1,
            }
        }
    }
    let db = connect().await;
    for (title, note) in &answered {
        let rows: Vec<String> = db
            .query(
                "SELECT id::text FROM public.notes WHERE title = $1",
                &[title],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            rows,
            vec![note["id"].as_str().unwrap().to_string()],
            "{title}: stored once, as answered"
        );
    }
    let after_kill = answered.iter().filter(|(t, _)| {
        let round: usize = t.split('-').nth(1).unwrap().parse().unwrap();
        round >= 10
    });
    assert!(
        after_kill.clone().count() >= 90,
        "the survivor answers the rest ({failed} failed)"
    );
    assert!(after_kill
        .into_iter()
        .all(|(_, n)| n["served_by"] == "cell-b"));
    println!(
        "answered {}, failed {failed} (requests in flight at cell-a when it died)",
        answered.len()
    );
}

/// The same service as an edge function behind Spine's own services
/// (svc.notebook.*: a service is named like its function): the contract is bound to the verb in Spine, RLS decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_function_version_answers_the_same_way() {
    let s = stack();
    let db = connect().await;
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(here("schemas/note-create.json")).unwrap())
            .unwrap();
    db.execute("SELECT spine.define_schema('notes.create', $1)", &[&schema])
        .await
        .unwrap();
    db.execute(
        "SELECT spine.bind_schema('verb', 'notebook.create', 'notes.create')",
        &[],
    )
    .await
    .unwrap();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(here("functions/notebook/manifest.json")).unwrap(),
    )
    .unwrap();
    let source = std::fs::read_to_string(here("functions/notebook/index.js")).unwrap();
    db.execute(
        "SELECT spine.deploy_function($1, $2)",
        &[&manifest, &source],
    )
    .await
    .unwrap();

    let (alice, alice_token) = user();
    let (_, bob_token) = user();
    let as_alice = Cell::connect(&s.nats.url(), &s.spine_subject)
        .await
        .unwrap()
        .with_token(&alice_token);
    let note = first_answer_of(
        &as_alice,
        "notebook",
        "create",
        json!({"title": "from the function", "body": "b"}),
    )
    .await;
    assert_eq!(note["owner_id"], json!(alice.to_string()));
    let id = note["id"].as_str().unwrap();
    let got: Value = as_alice
        .request("notebook", "get", &json!({"id": id}))
        .await
        .unwrap();
    assert_eq!(got["title"], "from the function");
    let list: Value = as_alice
        .request("notebook", "list", &json!({}))
        .await
        .unwrap();
    assert!(list.as_array().unwrap().iter().any(|n| n["id"] == id));
    let (code, details) =
        error_of_service(&as_alice, "notebook", "create", json!({"title": 5})).await;
    assert_eq!(code, Some(ErrorCode::Validation));
    assert_eq!(details["pointer"], "/title", "{details}");
    let as_bob = Cell::connect(&s.nats.url(), &s.spine_subject)
        .await
        .unwrap()
        .with_token(&bob_token);
    assert_eq!(
        error_of_service(&as_bob, "notebook", "get", json!({"id": id}))
            .await
            .0,
        Some(ErrorCode::NotFound)
    );
}
