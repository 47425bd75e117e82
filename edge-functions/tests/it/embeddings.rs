//! `Supabase.ai.Session` in functions: the host's embeddings API (the stack's
//! `spine-embedder`, a real model) with its model only, for manifests that
//! declare `"ai": {"embeddings": true}`; the vector equals the one the API
//! gives directly, so a function's query and the worker's entity vectors match.

use crate::host::{deploy, token_for, Server};
use serde_json::{json, Value};
use spine_tests::connect;
use uuid::Uuid;

const PROBE: &str = r#"
const attempt = async (f) => { try { return { ok: await f() }; } catch (e) { return { err: e.name, message: e.message }; } };
Deno.serve(async () => Response.json({
  one: await attempt(() => new Supabase.ai.Session("all-MiniLM-L6-v2").run("a flat white at the corner café")),
  many: await attempt(async () => (await new Supabase.ai.Session("sentence-transformers/all-MiniLM-L6-v2").run(["tea", "coffee"])).length),
  other_model: await attempt(() => new Supabase.ai.Session("gte-small").run("x")),
  not_text: await attempt(() => new Supabase.ai.Session("all-MiniLM-L6-v2").run(42)),
}));"#;

async fn direct(text: &str) -> Vec<f64> {
    let url = std::env::var("SPINE_EMBEDDINGS_URL")
        .expect("SPINE_EMBEDDINGS_URL: run via `cargo xtask test`");
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/embeddings"))
        .header("content-type", "application/json")
        .body(json!({"input": [text]}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    serde_json::from_value(answer["data"][0]["embedding"].clone()).unwrap()
}

#[tokio::test]
async fn functions_embed_with_the_hosts_model_when_declared() {
    let db = connect().await;
    let declared = deploy(
        &db,
        json!({"ai": {"embeddings": true}}),
        json!({"wall_ms": 20000}),
        PROBE,
    )
    .await;
    let undeclared = deploy(&db, json!({}), json!({"wall_ms": 20000}), PROBE).await;
    let server = Server::start().await;
    let token = token_for(Uuid::new_v4());

    let (status, got) = server.call(&declared, Some(&token), json!({})).await;
    assert_eq!(status, 200, "{got}");
    let vector: Vec<f64> = serde_json::from_value(got["one"]["ok"].clone()).expect("a vector");
    assert_eq!(vector.len(), 384, "all-MiniLM-L6-v2 has 384 dimensions");
    let expected = direct("a flat white at the corner café").await;
    let furthest = vector
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        furthest < 1e-6,
        "the function's vector is the API's: off by {furthest}"
    );
    assert_eq!(got["many"]["ok"], 2, "{got}");
    assert_eq!(got["other_model"]["err"], "TypeError", "{got}");
    let message = got["other_model"]["message"].as_str().unwrap();
    assert!(
        message.contains("all-MiniLM-L6-v2"),
        "names the host's model: {message}"
    );
    assert_eq!(got["not_text"]["err"], "TypeError", "{got}");

    let (status, got) = server.call(&undeclared, Some(&token), json!({})).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["one"]["err"], "PermissionDenied", "{got}");
    assert!(
        got["one"]["message"].as_str().unwrap().contains("\"ai\""),
        "{got}"
    );

    // A host without an embeddings API says so instead of answering nothing.
    let bare = Server::start_with(&[("SPINE_EMBEDDINGS_URL", "")]).await;
    let (_, got) = bare.call(&declared, Some(&token), json!({})).await;
    assert_eq!(got["one"]["err"], "Error", "{got}");
    assert!(
        got["one"]["message"]
            .as_str()
            .unwrap()
            .contains("SPINE_EMBEDDINGS_URL"),
        "{got}"
    );
}
