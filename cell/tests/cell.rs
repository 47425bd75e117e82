//! spine-cell against a real nats-server and a real Spine worker: a typed call
//! of a SQL verb as a user, Spine's typed errors, and a cell serving verbs in a
//! queue group that another cell calls.

use serde::Deserialize;
use serde_json::json;
use spine_cell::{Cell, CellError, ErrorCode, Handlers, Reply};
use spine_tests::connect;
use spine_tests::daemons::{Nats, Worker};
use std::time::Duration;
use uuid::Uuid;

const SECRET: &str = "spine-cell-test-secret-with-at-least-32-chars";

#[derive(Debug, Deserialize)]
struct Note {
    id: Uuid,
    owner: Uuid,
    body: String,
}

#[tokio::test]
async fn a_cell_calls_spines_verbs_and_serves_its_own() {
    let db = connect().await;
    let tag = &Uuid::new_v4().simple().to_string()[..10];
    db.batch_execute(&format!(
        "CREATE TABLE public.cell_notes_{tag} (
             id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
             owner uuid NOT NULL DEFAULT auth.uid(),
             body text NOT NULL CHECK (length(body) > 0));
         ALTER TABLE public.cell_notes_{tag} ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own ON public.cell_notes_{tag} USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
         GRANT SELECT, INSERT ON public.cell_notes_{tag} TO authenticated;
         CREATE FUNCTION public.cell_create_{tag}(data jsonb) RETURNS jsonb LANGUAGE sql AS $$
             INSERT INTO public.cell_notes_{tag} (body) VALUES (data->>'body') RETURNING to_jsonb(cell_notes_{tag}) $$;
         GRANT EXECUTE ON FUNCTION public.cell_create_{tag}(jsonb) TO authenticated;
         SELECT spine.expose_service('notes', 'create{tag}', 'public.cell_create_{tag}(jsonb)');"
    ))
    .await
    .unwrap();
    let nats = Nats::start();
    let template = format!("c{tag}.{{service}}.{{verb}}");
    let _worker = Worker::start(
        &format!("t_{}", Uuid::new_v4().simple()),
        &nats.url(),
        &[
            ("SPINE_SERVICES_SUBJECT", template.as_str()),
            ("SPINE_JWT_SECRET", SECRET),
        ],
    );
    let alice = Uuid::new_v4();
    let token = spine_core::auth::sign(
        &json!({"sub": alice.to_string(), "role": "authenticated", "exp": 4_000_000_000u64}),
        SECRET.as_bytes(),
    );
    let cell = Cell::connect(&nats.url(), &template)
        .await
        .unwrap()
        .with_token(&token)
        .with_timeout(Duration::from_secs(5));
    let create = format!("create{tag}");

    // Until the worker's subscription is up, nobody answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let note: Note = loop {
        match cell
            .request("notes", &create, &json!({"body": "buy milk"}))
            .await
        {
            Ok(note) => break note,
            Err(CellError::NoAnswer(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!((note.owner, note.body.as_str()), (alice, "buy milk"));
    assert!(!note.id.is_nil());

    // Spine's errors, typed.
    let err = cell
        .request::<_, Note>("notes", &create, &json!({"body": ""}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Validation), "{err}");
    let anonymous = Cell::connect(&nats.url(), &template).await.unwrap();
    let err = anonymous
        .request::<_, Note>("notes", &create, &json!({"body": "x"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");

    // A cell of our own: calc.add, in a queue group, called by another cell.
    let serving = cell
        .serve(
            "calc",
            Handlers::new().verb("add", |req| async move {
                match (req.data["a"].as_i64(), req.data["b"].as_i64()) {
                    (Some(a), Some(b)) => Reply::data(json!(a + b)),
                    _ => Reply::invalid("a and b must be integers"),
                }
            }),
        )
        .await
        .unwrap();
    let caller = Cell::connect(&nats.url(), &template).await.unwrap();
    let sum: i64 = caller
        .request("calc", "add", &json!({"a": 2, "b": 40}))
        .await
        .unwrap();
    assert_eq!(sum, 42);
    let err = caller
        .request::<_, i64>("calc", "add", &json!({"a": "x"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Validation), "{err}");
    let err = caller
        .request::<_, i64>("calc", "divide", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    // Asking for the wrong type is a decode error, not a panic.
    let err = caller
        .request::<_, String>("calc", "add", &json!({"a": 1, "b": 1}))
        .await
        .unwrap_err();
    assert!(matches!(err, CellError::Decode(_)), "{err}");
    serving.stop();
    let err = caller
        .with_timeout(Duration::from_millis(500))
        .request::<_, i64>("calc", "add", &json!({"a": 1, "b": 1}))
        .await
        .unwrap_err();
    assert!(matches!(err, CellError::NoAnswer(_)), "{err}");
}

/// A verb with a contract refuses data that breaks it before the handler runs
/// (VALIDATION, each offending value's pointer); a handler sees its caller's
/// `Authorization` header in the envelope, to act as them towards Spine.
#[tokio::test]
async fn served_verbs_check_their_contract_and_see_the_caller() {
    let nats = Nats::start();
    let template = "k.{service}.{verb}";
    let cell = Cell::connect(&nats.url(), template).await.unwrap();
    let contract = spine_cell::NamedContract::compile(
        "calc.add",
        &json!({"type": "object", "required": ["a", "b"],
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}),
    )
    .unwrap();
    let _serving = cell
        .serve(
            "calc",
            Handlers::new()
                .contract("add", contract)
                .verb("add", |req| async move {
                    let (a, b) = (
                        req.data["a"].as_i64().unwrap(),
                        req.data["b"].as_i64().unwrap(),
                    );
                    Reply::data(json!({"sum": a + b, "caller": req.authorization}))
                }),
        )
        .await
        .unwrap();
    let caller = Cell::connect(&nats.url(), template)
        .await
        .unwrap()
        .with_token("the-callers-token");
    let answer: serde_json::Value = caller
        .request("calc", "add", &json!({"a": 2, "b": 40}))
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"sum": 42, "caller": "Bearer the-callers-token"})
    );
    match caller
        .request::<_, serde_json::Value>("calc", "add", &json!({"a": "two", "b": 1.5}))
        .await
        .unwrap_err()
    {
        CellError::Service { code, details, .. } => {
            assert_eq!(code, ErrorCode::Validation);
            assert_eq!(details["schema"], "calc.add");
            let pointers: Vec<&str> = details["violations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["pointer"].as_str().unwrap())
                .collect();
            assert_eq!(pointers, ["/a", "/b"], "{details}");
        }
        other => panic!("{other}"),
    }
}
