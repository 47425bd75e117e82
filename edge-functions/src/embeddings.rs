//! The embeddings API Spine's processes call: OpenAI's `POST {url}/embeddings`
//! (the stack's `spine-embedder`, Ollama, a cloud API). The worker's `embed`
//! jobs turn entities into vectors with it, and functions turn queries into
//! vectors with it (`Supabase.ai.Session`), so both use one configuration —
//! the same flags and variables in every process — and one model: a query
//! embedded by another model than the entities finds nothing meaningful.

use clap::Args;
use serde::Deserialize;
use std::time::Duration;

/// `SPINE_EMBEDDINGS_*`, flattened into each process's command line.
#[derive(Debug, Clone, Args)]
pub struct EmbeddingsArgs {
    /// An OpenAI-compatible embeddings API (its base URL, e.g.
    /// `http://127.0.0.1:54397/v1`: requests go to `…/embeddings`); unset or
    /// empty: the worker's `embed` jobs wait (snoozed) and functions' embeddings
    /// fail, until it is set.
    #[arg(long, env = "SPINE_EMBEDDINGS_URL", value_name = "URL")]
    pub embeddings_url: Option<String>,

    /// The model asked of the embeddings API.
    #[arg(
        long,
        env = "SPINE_EMBEDDINGS_MODEL",
        default_value = "sentence-transformers/all-MiniLM-L6-v2",
        value_name = "NAME"
    )]
    pub embeddings_model: String,

    /// Sent as `Authorization: Bearer <key>` to the embeddings API (a cloud API's key).
    #[arg(
        long,
        env = "SPINE_EMBEDDINGS_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub embeddings_api_key: Option<String>,
}

impl EmbeddingsArgs {
    /// The configured API; None when no URL is set.
    pub fn api(&self) -> Option<EmbeddingsApi> {
        self.embeddings_url
            .clone()
            .filter(|u| !u.is_empty())
            .map(|url| EmbeddingsApi {
                url: url.trim_end_matches('/').to_string(),
                model: self.embeddings_model.clone(),
                api_key: self.embeddings_api_key.clone().filter(|k| !k.is_empty()),
            })
    }
}

/// One embeddings API; `Debug` shows no key.
#[derive(Clone)]
pub struct EmbeddingsApi {
    /// Base URL; requests go to `{url}/embeddings`.
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
}

impl std::fmt::Debug for EmbeddingsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingsApi")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Why a request gave no vectors.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embeddings API {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// A non-2xx answer: its status, `Retry-After` and the start of its body.
    #[error("embeddings API {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
    #[error("embeddings API {url}: {reason}")]
    Malformed { url: String, reason: String },
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

impl EmbeddingsApi {
    /// Whether `name` (as a function writes it in `Supabase.ai.Session(name)`)
    /// is this API's model: its full name, or the part after the last `/`
    /// (`all-MiniLM-L6-v2` for `sentence-transformers/all-MiniLM-L6-v2`).
    pub fn is_model(&self, name: &str) -> bool {
        name == self.model || self.model.rsplit('/').next() == Some(name)
    }

    /// One vector per input, in the inputs' order.
    pub async fn embed(
        &self,
        http: &reqwest::Client,
        inputs: &[String],
        timeout: Duration,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let url = &self.url;
        let mut request = http
            .post(format!("{url}/embeddings"))
            .timeout(timeout)
            .header("content-type", "application/json")
            .body(serde_json::json!({"model": self.model, "input": inputs}).to_string());
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let unreachable = |e: reqwest::Error| EmbedError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response.text().await.unwrap_or_default();
            return Err(EmbedError::Status {
                url: url.clone(),
                status,
                retry_after,
                body: body.chars().take(300).collect(),
            });
        }
        let body = response.bytes().await.map_err(unreachable)?;
        let malformed = |reason: String| EmbedError::Malformed {
            url: url.clone(),
            reason,
        };
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| malformed(format!("not an embeddings answer: {e}")))?;
        order(answer.data, inputs.len()).map_err(malformed)
    }
}

/// The answer's vectors in input order (OpenAI's items carry an `index`; an
/// answer without indexes is taken in order), one non-empty vector per input.
fn order(items: Vec<Item>, inputs: usize) -> Result<Vec<Vec<f32>>, String> {
    if items.len() != inputs {
        return Err(format!("{} vectors for {inputs} inputs", items.len()));
    }
    let mut out = vec![Vec::new(); inputs];
    for (position, item) in items.into_iter().enumerate() {
        let at = item.index.unwrap_or(position);
        match out.get_mut(at) {
            Some(slot) if slot.is_empty() && !item.embedding.is_empty() => *slot = item.embedding,
            _ => return Err(format!("a bad or repeated vector at index {at}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(index: Option<usize>, v: f32) -> Item {
        Item {
            index,
            embedding: vec![v],
        }
    }

    #[test]
    fn vectors_follow_their_index() {
        let got = order(vec![item(Some(1), 1.0), item(Some(0), 0.0)], 2).unwrap();
        assert_eq!(got, vec![vec![0.0], vec![1.0]]);
        let got = order(vec![item(None, 0.0), item(None, 1.0)], 2).unwrap();
        assert_eq!(got, vec![vec![0.0], vec![1.0]]);
    }

    #[test]
    fn a_short_repeated_or_empty_answer_is_refused() {
        assert!(order(vec![item(Some(0), 0.0)], 2).is_err());
        assert!(order(vec![item(Some(0), 0.0), item(Some(0), 1.0)], 2).is_err());
        assert!(order(vec![item(Some(5), 0.0)], 1).is_err());
        let empty = Item {
            index: None,
            embedding: Vec::new(),
        };
        assert!(order(vec![empty], 1).is_err());
    }

    #[test]
    fn a_model_is_named_in_full_or_by_its_last_part() {
        let api = EmbeddingsApi {
            url: "http://x/v1".into(),
            model: "sentence-transformers/all-MiniLM-L6-v2".into(),
            api_key: None,
        };
        assert!(api.is_model("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(api.is_model("all-MiniLM-L6-v2"));
        assert!(!api.is_model("gte-small"));
        assert!(!api.is_model(""));
    }
}
