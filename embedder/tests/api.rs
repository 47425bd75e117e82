//! `spine-embedder` as its clients meet it: the real all-MiniLM-L6-v2 weights
//! (fetched by `cargo xtask setup`) behind OpenAI's `/v1/embeddings`, with its
//! refusals as OpenAI words them.

use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `cargo xtask setup` puts the model (`xtask/src/embedder.rs`).
fn model_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    let dir = cache.join("spine/models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no model: run `cargo xtask setup`",
        dir.display()
    );
    dir
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_spine-embedder"))
        .arg("serve")
        .env("SPINE_EMBEDDER_MODEL_DIR", model_dir())
        .env("SPINE_EMBEDDER_ADDR", format!("127.0.0.1:{port}"))
        .env("SPINE_EMBEDDER_API_KEY", "k3y")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "spine-embedder did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn post(server: &Server, key: Option<&str>, body: Value) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/embeddings", server.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

fn vectors(answer: &Value) -> Vec<Vec<f32>> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn embeds_by_meaning_in_openais_shape() {
    let server = start();
    let texts = [
        "coffee",
        "I drink an espresso every morning",
        "my tax return is due next week",
    ];
    let (status, answer) = post(
        &server,
        Some("k3y"),
        json!({"model": "all-MiniLM-L6-v2", "input": texts}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    for path in ["/health", "/health/live", "/health/ready"] {
        let r = reqwest::get(format!("{}{path}", server.url)).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], "sentence-transformers/all-MiniLM-L6-v2");
    assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() >= 3);
    let v = vectors(&answer);
    assert_eq!(v.len(), 3);
    for (i, vector) in v.iter().enumerate() {
        assert_eq!(answer["data"][i]["index"], i);
        assert_eq!(vector.len(), 384);
        let norm = cosine(vector, vector).sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "not a unit vector: {norm}");
    }
    let (near, far) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    assert!(
        near > far + 0.2,
        "coffee~espresso {near} should beat coffee~tax {far}"
    );
    // Padding in a batch changes nothing: one text alone gives the same vector.
    let (_, alone) = post(&server, Some("k3y"), json!({"input": "coffee"})).await;
    let alone = &vectors(&alone)[0];
    assert!(cosine(alone, &v[0]) > 0.9999, "{}", cosine(alone, &v[0]));

    // Refusals, as OpenAI shapes them.
    for (key, body, status, kind) in [
        (None, json!({"input": "x"}), 401, "invalid_api_key"),
        (Some("wrong"), json!({"input": "x"}), 401, "invalid_api_key"),
        (
            Some("k3y"),
            json!({"input": "x", "model": "text-embedding-3-small"}),
            404,
            "model_not_found",
        ),
        (
            Some("k3y"),
            json!({"input": [1, 2]}),
            400,
            "invalid_request_error",
        ),
        (
            Some("k3y"),
            json!({"input": []}),
            400,
            "invalid_request_error",
        ),
        (
            Some("k3y"),
            json!({"text": "x"}),
            400,
            "invalid_request_error",
        ),
        (
            Some("k3y"),
            json!({"input": "x", "encoding_format": "base64"}),
            400,
            "invalid_request_error",
        ),
    ] {
        let (got, answer) = post(&server, key, body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["type"], kind, "{body}: {answer}");
    }
}
