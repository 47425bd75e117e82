//! The `net` handler: one request of pg_net's API (`net.http_get`, `http_post`,
//! `http_delete`, see `extension/sql/net.sql`), its outcome written to
//! `net._http_response` after every attempt (the latest one stays).
//!
//! Unlike pg_net, a failure is not the end: a 5xx answer, a timeout or a refused
//! connection fails the job, which is retried with backoff and dead-lettered when
//! its attempts run out; 429/503 with `Retry-After` snoozes it. Any other answer
//! (2xx, 3xx, 4xx) is the response, as pg_net records it, and completes the job.

use super::handler::{snooze_for, Handler, HandlerFuture, Job, JobError};
use spine_core::jobs::payloads::{self, NetJob};
use spine_db::Pool;
use std::sync::Arc;
use std::time::Duration;

/// Most of a response body kept in `net._http_response.content`.
const MAX_CONTENT_BYTES: usize = 10 << 20;

pub struct NetHandler {
    db: Pool,
    http: reqwest::Client,
}

/// What one attempt produced, as `net._http_response` holds it.
#[derive(Debug, Default)]
struct Outcome {
    status: Option<i32>,
    content_type: Option<String>,
    headers: Option<serde_json::Value>,
    content: Option<String>,
    timed_out: bool,
    error: Option<String>,
    retry_after: Option<String>,
}

impl NetHandler {
    pub fn new(database: &spine_db::DbConfig) -> Self {
        Self {
            db: super::handler::handler_pool(database),
            // pg_net follows no redirects either: the 3xx is the response.
            http: super::http::client(reqwest::redirect::Policy::none()),
        }
    }

    async fn attempt(&self, spec: &NetJob) -> Outcome {
        let failed = |error: String| Outcome {
            error: Some(error),
            ..Outcome::default()
        };
        let mut url = match reqwest::Url::parse(&spec.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            Ok(u) => return failed(format!("scheme {} is not http(s)", u.scheme())),
            Err(e) => return failed(format!("bad url: {e}")),
        };
        if !spec.params.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &spec.params {
                match v {
                    serde_json::Value::String(s) => pairs.append_pair(k, s),
                    other => pairs.append_pair(k, &other.to_string()),
                };
            }
        }
        let method = match reqwest::Method::from_bytes(spec.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return failed(format!("bad method {}", spec.method)),
        };
        let timeout = Duration::from_millis(spec.timeout_ms.max(1));
        let mut request = self.http.request(method, url).timeout(timeout);
        for (k, v) in &spec.headers {
            if let Some(v) = v.as_str() {
                request = request.header(k.as_str(), v);
            }
        }
        if let Some(body) = &spec.body {
            request = request.body(body.clone());
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Outcome {
                    timed_out: true,
                    error: Some(format!("Timeout of {} ms reached", spec.timeout_ms)),
                    ..Outcome::default()
                }
            }
            Err(e) => return failed(format!("request failed: {e}")),
        };
        let mut headers = serde_json::Map::new();
        for (k, v) in response.headers() {
            if let Ok(v) = v.to_str() {
                headers.insert(k.to_string(), serde_json::Value::String(v.to_string()));
            }
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.as_str()).map(String::from);
        let (content_type, retry_after) = (header("content-type"), header("retry-after"));
        let status = response.status().as_u16() as i32;
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_CONTENT_BYTES => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => {
                    return Outcome {
                        status: Some(status),
                        error: Some(format!("the response is over {MAX_CONTENT_BYTES} bytes")),
                        ..Outcome::default()
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        status: Some(status),
                        timed_out: e.is_timeout(),
                        error: Some(format!("reading the response: {e}")),
                        ..Outcome::default()
                    }
                }
            }
        }
        Outcome {
            status: Some(status),
            content_type,
            headers: Some(serde_json::Value::Object(headers)),
            content: Some(String::from_utf8_lossy(&body).into_owned()),
            timed_out: false,
            error: None,
            retry_after,
        }
    }

    async fn record(&self, job: &Job, o: &Outcome) -> Result<(), String> {
        let db = self.db.get().await.map_err(|e| e.to_string())?;
        db.execute(
            "SELECT spine.net_record_response($1, $2, $3, $4, $5, $6, $7)",
            &[
                &job.id,
                &o.status,
                &o.content_type,
                &o.headers,
                &o.content,
                &o.timed_out,
                &o.error,
            ],
        )
        .await
        .map_err(spine_functions::sql::describe)?;
        Ok(())
    }
}

/// The URL without its query, for error messages (a query may carry a key).
fn shown(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

impl Handler for Arc<NetHandler> {
    fn handle(&self, job: Job) -> HandlerFuture {
        let this = self.clone();
        Box::pin(async move {
            let spec: NetJob = payloads::parse("net", &job.payload)?;
            let outcome = this.attempt(&spec).await;
            // The response is what a reader of net._http_response waits for: a
            // failure to record it fails the job, which then runs again.
            this.record(&job, &outcome).await?;
            match (outcome.status, &outcome.error) {
                (Some(s), None) if s < 500 && s != 429 => Ok(()),
                (Some(s), _) => Err(match snooze_for(s as u16, outcome.retry_after.as_deref()) {
                    Some(wait) => JobError::Snooze(wait),
                    None => JobError::Failed(format!(
                        "{} {}: HTTP {s}{}",
                        spec.method,
                        shown(&spec.url),
                        outcome
                            .error
                            .as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    )),
                }),
                (None, error) => Err(JobError::Failed(format!(
                    "{} {}: {}",
                    spec.method,
                    shown(&spec.url),
                    error.as_deref().unwrap_or("no answer")
                ))),
            }
        })
    }
}
