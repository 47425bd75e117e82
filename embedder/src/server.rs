//! `POST /v1/embeddings` as OpenAI defines it (what Ollama, vLLM and the cloud
//! APIs also answer), so Spine's `embed` jobs talk to this process or to any of
//! those through one client. `GET /health` says which model is loaded.

use crate::model::Embedder;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Most texts in one request, and characters in one text: bounds the work a
/// request can ask for (the model reads at most 256 tokens of each anyway).
pub const MAX_INPUTS: usize = 256;
pub const MAX_CHARS: usize = 100_000;

pub struct AppState {
    pub embedder: Embedder,
    /// A bearer key callers must send (`SPINE_EMBEDDER_API_KEY`), if set.
    pub api_key: Option<String>,
    /// One batch at a time: the matrix kernels use every core already.
    pub running: Semaphore,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/embeddings", post(embeddings))
        .route("/health", get(health))
        // The model is loaded before the server listens: live is ready.
        .route("/health/live", get(health))
        .route("/health/ready", get(health))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({
        "status": "ok",
        "model": state.embedder.name,
        "dimensions": state.embedder.dimensions,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsRequest {
    input: Value,
    model: Option<String>,
    encoding_format: Option<String>,
    /// Accepted for OpenAI clients; only the model's own size is served.
    dimensions: Option<usize>,
    user: Option<String>,
}

async fn embeddings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(key) = &state.api_key {
        let sent = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if sent != Some(key.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "send the key as Authorization: Bearer <key>",
            );
        }
    }
    let request: EmbeddingsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("the body is not an embeddings request: {e}"),
            )
        }
    };
    let _ = &request.user;
    if let Some(model) = &request.model {
        if !serves(&state.embedder.name, model) {
            return error(
                StatusCode::NOT_FOUND,
                "model_not_found",
                &format!(
                    "this server has only {} (asked for {model})",
                    state.embedder.name
                ),
            );
        }
    }
    if request
        .encoding_format
        .as_deref()
        .is_some_and(|f| f != "float")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "encoding_format: only \"float\" is served",
        );
    }
    if request
        .dimensions
        .is_some_and(|d| d != state.embedder.dimensions)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!(
                "dimensions: the model has {} only",
                state.embedder.dimensions
            ),
        );
    }
    let texts = match inputs(request.input) {
        Ok(t) => t,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", &message),
    };
    let _running = state.running.acquire().await.expect("never closed");
    let worker = state.clone();
    let result = tokio::task::spawn_blocking(move || worker.embedder.embed(&texts)).await;
    match result {
        Ok(Ok((vectors, tokens))) => Json(json!({
            "object": "list",
            "data": vectors.into_iter().enumerate().map(|(index, embedding)| json!({
                "object": "embedding", "index": index, "embedding": embedding,
            })).collect::<Vec<_>>(),
            "model": state.embedder.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }))
        .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "embedding failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "embedding failed",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "embedding task failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "embedding failed",
            )
        }
    }
}

/// Is `asked` a name of the model served as `name` (any case, with or without
/// the `sentence-transformers/` organisation)?
fn serves(name: &str, asked: &str) -> bool {
    let bare = |s: &str| {
        s.rsplit('/')
            .next()
            .unwrap_or(s)
            .to_ascii_lowercase()
            .replace('_', "-")
    };
    bare(name) == bare(asked)
}

/// `input` as OpenAI takes it: one string or a list of strings (token arrays
/// are not accepted: they are another model's tokens).
fn inputs(input: Value) -> Result<Vec<String>, String> {
    let texts = match input {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err("input: a string or a list of strings".to_string()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("input: a string or a list of strings".into()),
    };
    if texts.is_empty() {
        return Err("input: at least one text".into());
    }
    if texts.len() > MAX_INPUTS {
        return Err(format!("input: at most {MAX_INPUTS} texts per request"));
    }
    if let Some(i) = texts.iter().position(|t| t.chars().count() > MAX_CHARS) {
        return Err(format!("input[{i}]: more than {MAX_CHARS} characters"));
    }
    Ok(texts)
}

/// OpenAI's error shape: `{"error": {"message", "type", "code"}}`.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "code": kind}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_and_inputs() {
        let name = "sentence-transformers/all-MiniLM-L6-v2";
        assert!(serves(name, "all-minilm-l6-v2"));
        assert!(serves(name, "sentence-transformers/all-MiniLM-L6-v2"));
        assert!(!serves(name, "text-embedding-3-small"));
        assert_eq!(inputs(json!("a")).unwrap(), ["a"]);
        assert_eq!(inputs(json!(["a", "b"])).unwrap(), ["a", "b"]);
        assert!(inputs(json!([1, 2])).is_err());
        assert!(inputs(json!([])).is_err());
        assert!(inputs(json!(vec!["x"; MAX_INPUTS + 1])).is_err());
        assert!(inputs(json!("y".repeat(MAX_CHARS + 1))).is_err());
    }
}
