//! The `http` handler: POST (or another method) the job's payload to a URL.
//!
//! Payload: `{"url": "https://…", "method": "POST", "headers": {…}, "body": …,
//! "timeout_ms": 10000}`. Without `body` the whole payload is sent. The job id is
//! sent as `Idempotency-Key`, so a receiver can drop a redelivery. A 2xx answer
//! completes the job; 429 or 503 with `Retry-After: <seconds>` snoozes it until
//! then without spending an attempt; anything else fails it (retried with
//! backoff).

use super::handler::{snooze_for, Handler, HandlerFuture, Job, JobError};
use spine_core::jobs::payloads::{self, HttpJob};
use std::time::Duration;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of an error response is kept for the job's error history.
const ERROR_BODY_BYTES: usize = 1024;

pub struct HttpHandler {
    client: reqwest::Client,
}

/// The HTTP client of the worker's handlers (`http`, `webhook`, `net`): the
/// worker's user agent, rustls on ring, and the redirects the handler allows.
pub fn client(redirects: reqwest::redirect::Policy) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("spine-worker/", env!("CARGO_PKG_VERSION")))
        .redirect(redirects)
        .build()
        .expect("a client with these settings always builds")
}

impl HttpHandler {
    pub fn new() -> Self {
        Self {
            client: client(reqwest::redirect::Policy::limited(3)),
        }
    }
}

impl Default for HttpHandler {
    fn default() -> Self {
        Self::new()
    }
}

/// What the payload asks for, checked before anything is sent.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub url: String,
    pub method: reqwest::Method,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
    /// The chain of events the request belongs to (its `traceparent`'s trace id).
    pub correlation_id: Option<uuid::Uuid>,
}

/// Reads the payload as an [`HttpJob`] (one definition with the rules that write
/// it) and checks it.
pub fn parse(payload: &serde_json::Value) -> Result<Request, String> {
    let job: HttpJob = payloads::parse("http", payload)?;
    let parsed = reqwest::Url::parse(&job.url).map_err(|e| format!("bad url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "url scheme {} is not http or https",
            parsed.scheme()
        ));
    }
    let method = job.method.as_deref().unwrap_or("POST").to_ascii_uppercase();
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("bad method {method}"))?;
    let mut headers = Vec::new();
    for (k, v) in &job.headers {
        let v = v.as_str().ok_or(format!("header {k} is not a string"))?;
        headers.push((k.clone(), v.to_string()));
    }
    let body = match &job.body {
        Some(serde_json::Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
        None => payload.to_string().into_bytes(),
    };
    let timeout = job
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(MAX_TIMEOUT);
    Ok(Request {
        url: job.url,
        method,
        headers,
        body,
        timeout,
        correlation_id: job.correlation_id,
    })
}

impl Handler for HttpHandler {
    fn handle(&self, job: Job) -> HandlerFuture {
        let client = self.client.clone();
        Box::pin(async move {
            let req = parse(&job.payload)?;
            let mut builder = client
                .request(req.method, &req.url)
                .timeout(req.timeout)
                .header("Idempotency-Key", format!("job-{}", job.id))
                .header("Content-Type", "application/json");
            for (k, v) in &req.headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            // The payload's own traceparent (a caller's trace) wins.
            if !req
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
            {
                builder = builder.header(
                    "traceparent",
                    spine_core::trace::traceparent(req.correlation_id, job.id),
                );
            }
            let response = builder.body(req.body).send().await.map_err(|e| {
                if e.is_timeout() {
                    format!("timed out after {:?}", req.timeout)
                } else {
                    format!("request failed: {e}")
                }
            })?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok());
            if let Some(wait) = snooze_for(status.as_u16(), retry_after) {
                return Err(JobError::Snooze(wait));
            }
            let head = read_head(response, ERROR_BODY_BYTES).await;
            let snippet: String = String::from_utf8_lossy(&head).chars().take(300).collect();
            Err(JobError::Failed(format!("HTTP {status}: {snippet}")))
        })
    }
}

/// The first `limit` bytes of a response's body (fewer if it ends or breaks off):
/// a hostile endpoint could send gigabytes, and only the start is ever kept.
pub async fn read_head(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut head = Vec::new();
    while head.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            _ => break,
        }
    }
    head.truncate(limit);
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_full_request() {
        let r = parse(&json!({"url": "https://example.org/hook", "method": "put",
            "headers": {"X-A": "1"}, "body": {"k": 2}, "timeout_ms": 500}))
        .unwrap();
        assert_eq!(r.method, reqwest::Method::PUT);
        assert_eq!(r.headers, vec![("X-A".into(), "1".into())]);
        assert_eq!(r.body, br#"{"k":2}"#.to_vec());
        assert_eq!(r.timeout, Duration::from_millis(500));
    }

    #[test]
    fn whole_payload_is_the_body_by_default() {
        let p = json!({"url": "http://h/x", "n": 1});
        assert_eq!(parse(&p).unwrap().body, p.to_string().into_bytes());
    }

    #[test]
    fn rejects_what_it_cannot_send() {
        assert!(parse(&json!({})).unwrap_err().contains("url"));
        assert!(parse(&json!({"url": "ftp://h/x"}))
            .unwrap_err()
            .contains("scheme"));
        assert!(parse(&json!({"url": "not a url"}))
            .unwrap_err()
            .contains("bad url"));
        assert!(parse(&json!({"url": "http://h", "headers": {"a": 1}})).is_err());
        assert_eq!(
            parse(&json!({"url": "http://h", "timeout_ms": 10_000_000}))
                .unwrap()
                .timeout,
            MAX_TIMEOUT
        );
    }
}
