//! The part of Meilisearch's HTTP API the search sink uses: indexes, documents,
//! tasks, index swaps and API keys. (Plain requests on the worker's own HTTP
//! client: the official SDK would bring a second HTTP/TLS stack, and with its
//! default features a C-built crypto library, for these few JSON calls.)

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Description of the search-only API key the sink keeps for tenant tokens.
pub const SEARCH_KEY_DESCRIPTION: &str = "spine: tenant tokens (search on spine_*)";
/// Largest document payload per request.
pub const MAX_REQUEST_BYTES: usize = 20 << 20;

/// Consecutive runs of `docs` whose JSON is at most `limit` bytes each (a single
/// larger document goes alone).
pub fn chunks_by_size(docs: &[Value], limit: usize) -> Vec<&[Value]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, d) in docs.iter().enumerate() {
        let n = d.to_string().len() + 1;
        if i > start && size + n > limit {
            out.push(&docs[start..i]);
            (start, size) = (i, 0);
        }
        size += n;
    }
    if start < docs.len() {
        out.push(&docs[start..]);
    }
    out
}

/// A Meilisearch task that failed, with Meilisearch's error.
#[derive(Debug, Clone)]
pub struct TaskFailed {
    pub task: u64,
    /// Meilisearch's error code, e.g. `max_fields_limit_exceeded`.
    pub code: String,
    /// Meilisearch's error type: `invalid_request` is the request's (here: a
    /// document's) fault and fails again when sent again; `internal` and `system`
    /// may pass on a retry.
    pub kind: String,
    pub message: String,
}

impl std::fmt::Display for TaskFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "meilisearch task {} failed: {} ({}, {})",
            self.task, self.message, self.code, self.kind
        )
    }
}

impl std::error::Error for TaskFailed {}

impl TaskFailed {
    fn from_task(task: u64, t: &Value) -> Self {
        let e = &t["error"];
        let text = |v: &Value, fallback: &str| v.as_str().unwrap_or(fallback).to_string();
        Self {
            task,
            code: text(&e["code"], "unknown"),
            kind: text(&e["type"], "unknown"),
            message: text(&e["message"], t["status"].as_str().unwrap_or("failed")),
        }
    }

    /// The failure of a document Meilisearch will not take as it is, if `error`
    /// is one: sending it again would fail again.
    pub fn rejection(error: &anyhow::Error) -> Option<&TaskFailed> {
        error
            .downcast_ref::<TaskFailed>()
            .filter(|t| t.kind == "invalid_request")
    }
}

/// How long the sink waits for Meilisearch to process one batch's tasks.
const TASK_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Meili {
    url: String,
    key: Option<String>,
    http: reqwest::Client,
    /// Indexes whose settings this process has seen in place (shared by clones).
    configured: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Meili {
    pub fn new(url: &str, key: Option<&str>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            url: url.trim_end_matches('/').to_string(),
            key: key.map(str::to_string),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a client with these settings always builds"),
            configured: Default::default(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("meilisearch {method} {path}"))?;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// A request that must succeed (2xx); its JSON answer.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.send(method.clone(), path, body).await?;
        if !(200..300).contains(&status) {
            bail!("meilisearch {method} {path}: HTTP {status}: {value}");
        }
        Ok(value)
    }

    /// Enqueues work and returns its task uid.
    async fn task(&self, method: reqwest::Method, path: &str, body: &Value) -> anyhow::Result<u64> {
        let answer = self.call(method, path, Some(body)).await?;
        answer["taskUid"]
            .as_u64()
            .with_context(|| format!("meilisearch {path}: no taskUid in {answer}"))
    }

    /// Waits until every task in `tasks` succeeded; a failed one is an error.
    pub async fn wait(&self, tasks: &[u64]) -> anyhow::Result<()> {
        let deadline = Instant::now() + TASK_TIMEOUT;
        for task in tasks {
            loop {
                let t = self
                    .call(reqwest::Method::GET, &format!("/tasks/{task}"), None)
                    .await?;
                match t["status"].as_str() {
                    Some("succeeded") => break,
                    Some("failed") | Some("canceled") => {
                        return Err(TaskFailed::from_task(*task, &t).into())
                    }
                    _ if Instant::now() > deadline => {
                        bail!("meilisearch task {task} not done after {TASK_TIMEOUT:?}")
                    }
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
        Ok(())
    }

    /// Whether every task in `tasks` succeeded (false while any is still queued
    /// or processing); a failed one is an error.
    pub async fn done(&self, tasks: &[u64]) -> anyhow::Result<bool> {
        for task in tasks {
            let t = self
                .call(reqwest::Method::GET, &format!("/tasks/{task}"), None)
                .await?;
            match t["status"].as_str() {
                Some("succeeded") => {}
                Some("failed") | Some("canceled") => {
                    return Err(TaskFailed::from_task(*task, &t).into())
                }
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    pub async fn health(&self) -> anyhow::Result<()> {
        self.call(reqwest::Method::GET, "/health", None)
            .await
            .map(|_| ())
    }

    pub async fn index_exists(&self, uid: &str) -> anyhow::Result<bool> {
        let (status, value) = self
            .send(reqwest::Method::GET, &format!("/indexes/{uid}"), None)
            .await?;
        match status {
            200 => Ok(true),
            404 => Ok(false),
            _ => bail!("meilisearch GET /indexes/{uid}: HTTP {status}: {value}"),
        }
    }

    /// Creates index `uid` (primary key `id`, `owner_id` and `kind` filterable)
    /// unless it exists; waits for it. An existing index's settings are checked
    /// once per process: a worker that stopped between creating an index and
    /// setting it up left it without `owner_id` filterable, where tenant tokens
    /// cannot search.
    pub async fn ensure_index(&self, uid: &str) -> anyhow::Result<()> {
        let mut tasks = Vec::new();
        let mut filterable = vec![json!("owner_id"), json!("kind")];
        if !self.index_exists(uid).await? {
            tasks.push(
                self.task(
                    reqwest::Method::POST,
                    "/indexes",
                    &json!({"uid": uid, "primaryKey": "id"}),
                )
                .await?,
            );
        } else if self.is_configured(uid) {
            return Ok(());
        } else {
            let (status, present) = self
                .send(
                    reqwest::Method::GET,
                    &format!("/indexes/{uid}/settings/filterable-attributes"),
                    None,
                )
                .await?;
            if status != 200 {
                bail!("meilisearch GET /indexes/{uid}/settings/filterable-attributes: HTTP {status}: {present}");
            }
            let present: Vec<Value> = present.as_array().cloned().unwrap_or_default();
            let missing: Vec<Value> = filterable
                .into_iter()
                .filter(|a| !present.iter().any(|p| names_attribute(p, a)))
                .collect();
            if missing.is_empty() {
                self.mark_configured(uid);
                return Ok(());
            }
            tracing::warn!(
                index = uid,
                ?missing,
                "index without its filterable attributes: adding them"
            );
            // Added to what is there: attributes an operator made filterable stay.
            filterable = present.into_iter().chain(missing).collect();
        }
        tasks.push(
            self.task(
                reqwest::Method::PATCH,
                &format!("/indexes/{uid}/settings"),
                &json!({ "filterableAttributes": filterable }),
            )
            .await?,
        );
        self.wait(&tasks).await?;
        self.mark_configured(uid);
        Ok(())
    }

    fn is_configured(&self, uid: &str) -> bool {
        self.configured.lock().is_ok_and(|c| c.contains(uid))
    }

    fn mark_configured(&self, uid: &str) {
        if let Ok(mut c) = self.configured.lock() {
            c.insert(uid.to_string());
        }
    }

    /// Adds or replaces documents (by `id`), in requests of at most
    /// [`MAX_REQUEST_BYTES`] (Meilisearch refuses payloads over 100 MB by default);
    /// returns the tasks, in order.
    pub async fn put_documents(&self, uid: &str, docs: &[Value]) -> anyhow::Result<Vec<u64>> {
        let mut tasks = Vec::new();
        for chunk in chunks_by_size(docs, MAX_REQUEST_BYTES) {
            tasks.push(
                self.task(
                    reqwest::Method::POST,
                    &format!("/indexes/{uid}/documents?primaryKey=id"),
                    &Value::Array(chunk.to_vec()),
                )
                .await?,
            );
        }
        Ok(tasks)
    }

    /// Deletes documents by id (absent ones are no error); returns the task.
    pub async fn delete_documents(&self, uid: &str, ids: &[String]) -> anyhow::Result<u64> {
        self.task(
            reqwest::Method::POST,
            &format!("/indexes/{uid}/documents/delete-batch"),
            &json!(ids),
        )
        .await
    }

    /// Swaps the contents of two indexes atomically; returns the task.
    pub async fn swap(&self, a: &str, b: &str) -> anyhow::Result<u64> {
        self.task(
            reqwest::Method::POST,
            "/swap-indexes",
            &json!([{"indexes": [a, b]}]),
        )
        .await
    }

    pub async fn delete_index(&self, uid: &str) -> anyhow::Result<u64> {
        let answer = self
            .call(reqwest::Method::DELETE, &format!("/indexes/{uid}"), None)
            .await?;
        answer["taskUid"].as_u64().context("no taskUid")
    }

    /// Every document id in index `uid`.
    pub async fn ids(&self, uid: &str) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        let limit = 1000;
        loop {
            let page = self
                .call(
                    reqwest::Method::GET,
                    &format!(
                        "/indexes/{uid}/documents?fields=id&limit={limit}&offset={}",
                        ids.len()
                    ),
                    None,
                )
                .await?;
            let results = page["results"].as_array().cloned().unwrap_or_default();
            let n = results.len();
            ids.extend(
                results
                    .iter()
                    .filter_map(|d| d["id"].as_str().map(String::from)),
            );
            if n < limit {
                return Ok(ids);
            }
        }
    }

    /// Searches index `uid` with `key` (an API key or a tenant token).
    pub async fn search_as(
        &self,
        key: &str,
        uid: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let as_user = Meili::new(&self.url, Some(key));
        as_user
            .send(
                reqwest::Method::POST,
                &format!("/indexes/{uid}/search"),
                Some(body),
            )
            .await
    }

    /// The search-only key for tenant tokens: found by its description, or created.
    /// Returns (uid, key).
    pub async fn ensure_search_key(&self) -> anyhow::Result<(String, String)> {
        let keys = self
            .call(reqwest::Method::GET, "/keys?limit=1000", None)
            .await?;
        let found = keys["results"].as_array().and_then(|all| {
            all.iter().find(|k| {
                k["description"] == SEARCH_KEY_DESCRIPTION
                    && k["actions"] == json!(["search"])
                    && k["indexes"] == json!([crate::search::INDEX_PATTERN])
                    && k["expiresAt"].is_null()
            })
        });
        let key = match found {
            Some(k) => k.clone(),
            None => {
                self.call(
                    reqwest::Method::POST,
                    "/keys",
                    Some(&json!({
                        "description": SEARCH_KEY_DESCRIPTION,
                        "actions": ["search"],
                        "indexes": [crate::search::INDEX_PATTERN],
                        "expiresAt": null,
                    })),
                )
                .await?
            }
        };
        match (key["uid"].as_str(), key["key"].as_str()) {
            (Some(uid), Some(k)) => Ok((uid.to_string(), k.to_string())),
            _ => bail!("meilisearch returned a key without uid or key: {key}"),
        }
    }
}

/// Whether an entry of an index's filterable attributes covers `name`: a plain
/// name, or (newer Meilisearch) an object whose `attributePatterns` lists it.
fn names_attribute(entry: &Value, name: &Value) -> bool {
    entry == name
        || entry["attributePatterns"]
            .as_array()
            .is_some_and(|p| p.contains(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filterable_entries_in_both_forms() {
        let owner = json!("owner_id");
        assert!(names_attribute(&json!("owner_id"), &owner));
        assert!(names_attribute(
            &json!({"attributePatterns": ["kind", "owner_id"], "features": {}}),
            &owner
        ));
        assert!(!names_attribute(&json!("kind"), &owner));
        assert!(!names_attribute(
            &json!({"attributePatterns": ["kind"]}),
            &owner
        ));
    }

    /// Requests stay under the byte limit; order is kept; an oversized document
    /// travels alone rather than being dropped.
    #[test]
    fn chunks_respect_the_byte_limit() {
        let docs: Vec<Value> = (0..10)
            .map(|i| json!({"id": i, "t": "x".repeat(90)}))
            .collect();
        let size = docs[0].to_string().len() + 1;
        let chunks = chunks_by_size(&docs, size * 3);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![3, 3, 3, 1]
        );
        assert_eq!(chunks.concat(), docs);
        let big = vec![json!({"id": 1, "t": "y".repeat(1000)}), json!({"id": 2})];
        assert_eq!(chunks_by_size(&big, 100).len(), 2);
        assert!(chunks_by_size(&[], 100).is_empty());
    }
}
