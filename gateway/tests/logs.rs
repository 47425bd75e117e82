//! What the gateway logs while it serves a request carries the request's id
//! (`x-request-id`: the client's when it is a plausible id, else a new one),
//! and the response returns it: with `SPINE_LOG_FORMAT=json`, a function's
//! `console.log` line served through `/functions/v1` has it.

use serde_json::json;
use spine_tests::proc::tempdir::TempDir;
use spine_tests::proc::{free_port, wait_until, ChildGuard};
use std::time::Duration;

const SECRET: &str = "logs-test-secret-logs-test-secret-logs-test";

fn service_key() -> String {
    spine_core::auth::sign(
        &json!({"role": "service_role", "exp": 4_000_000_000u64}),
        SECRET.as_bytes(),
    )
}

#[tokio::test]
async fn a_requests_log_lines_and_response_carry_its_id() {
    let db = spine_tests::connect().await;
    let name = format!("f{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    db.execute(
        "SELECT spine.deploy_function($1, $2)",
        &[
            &json!({"name": name, "version": "1.0.0"}),
            &"Deno.serve(() => { console.log('hello from a request'); return new Response('ok'); })",
        ],
    )
    .await
    .unwrap();
    let dir = TempDir::new();
    let log = dir.path().join("gateway.log");
    let port = free_port();
    let _gateway = ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_spine-gateway"))
            .env("DATABASE_URL", spine_tests::database_url())
            .env("SPINE_JWT_SECRET", SECRET)
            .env("SPINE_GATEWAY_ADDR", format!("127.0.0.1:{port}"))
            .env("SPINE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("NATS_URL")
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    wait_until("the gateway is up", Duration::from_secs(30), || async {
        http.get(format!("{base}/health/live")).send().await.is_ok()
    })
    .await;
    let call = |id: Option<&str>| {
        let mut req = http
            .post(format!("{base}/functions/v1/{name}"))
            .bearer_auth(service_key());
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        async move {
            let response = req.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    let mine = format!("req-{}", uuid::Uuid::new_v4().simple());
    assert_eq!(call(Some(&mine)).await, mine, "the client's id comes back");
    // No id, or one that is not an id: a new one.
    for sent in [None, Some("{\"forged\": true}")] {
        let given = call(sent).await;
        assert!(uuid::Uuid::parse_str(&given).is_ok(), "{sent:?} → {given}");
    }

    wait_until(
        "the console line is logged",
        Duration::from_secs(10),
        || async { std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&mine)) },
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = spine_tests::json_log_lines(&text);
    let line = lines
        .iter()
        .find(|l| l["message"] == "hello from a request" && l["request_id"] == mine.as_str())
        .unwrap_or_else(|| panic!("no console line with the request's id: {text}"));
    assert_eq!(line["function"], name.as_str(), "{line}");
    assert!(
        !text.contains("forged"),
        "a refused id is not logged: {text}"
    );
}
