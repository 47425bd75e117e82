//! The `webhook` handler: delivers the jobs of every `webhook.<name>` queue.
//!
//! Payload: `{"webhook": "name", "body": {type, table, schema, record,
//! old_record}}` (written by the webhook's trigger). The target and the signing
//! key are read from the database (`spine.webhook_target`, cached briefly) at
//! delivery time, so neither lives in the job. A URL target gets a POST signed
//! as [`super::signing`] says (Standard Webhooks' `webhook-id`,
//! `webhook-timestamp`, `webhook-signature`, and `X-Spine-Signature`), with
//! `Idempotency-Key: <job id>` (the same on every retry) and
//! `X-Spine-Webhook: <name>`; a function target runs in-process with the same
//! headers. Every attempt is recorded in `spine.webhook_deliveries`; a non-2xx
//! answer fails the job, which the queue retries with backoff into dead letter.

use super::handler::{Handler, HandlerFuture, Job, JobError};
use super::signing;
use serde_json::Value;
use spine_core::jobs::payloads::{self, WebhookJob, WebhookTarget};
use spine_db::Pool;
use spine_functions::host::Host;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a webhook's target and key are reused before they are read again
/// (each read decrypts the key, which the vault audits).
const TARGET_TTL: Duration = Duration::from_secs(60);
/// How much of an answer is recorded.
const RESPONSE_BYTES: usize = 2000;

pub struct WebhookHandler {
    db: Pool,
    http: reqwest::Client,
    functions: Arc<Host>,
    targets: Mutex<HashMap<String, (Instant, Arc<Target>)>>,
}

struct Target {
    target: WebhookTarget,
    key: String,
    /// The secret a rotation replaced, while it still signs.
    previous: Option<String>,
}

/// One attempt's outcome, as recorded.
struct Attempt {
    status: Option<i32>,
    response: Option<String>,
    error: Option<String>,
}

impl WebhookHandler {
    pub fn new(database: &spine_db::DbConfig, functions: Arc<Host>) -> Self {
        Self {
            db: super::handler::handler_pool(database),
            http: super::http::client(reqwest::redirect::Policy::none()),
            functions,
            targets: Mutex::new(HashMap::new()),
        }
    }

    async fn target(&self, name: &str) -> Result<Arc<Target>, String> {
        if let Some((at, t)) = self.targets.lock().expect("lock").get(name) {
            if at.elapsed() < TARGET_TTL {
                return Ok(t.clone());
            }
        }
        let db = self.db.get().await.map_err(|e| format!("database: {e}"))?;
        let row = db
            .query_one(
                "SELECT target, signing_key, previous_key FROM spine.webhook_target($1)",
                &[&name],
            )
            .await
            .map_err(|e| format!("webhook {name}: {}", spine_functions::sql::describe(e)))?;
        let t = Arc::new(Target {
            target: payloads::parse("webhook target", &row.get::<_, Value>(0))?,
            key: row.get(1),
            previous: row.get(2),
        });
        self.targets
            .lock()
            .expect("lock")
            .insert(name.to_string(), (Instant::now(), t.clone()));
        Ok(t)
    }

    async fn deliver(&self, spec: &WebhookJob, job: &Job) -> Attempt {
        let name = spec.webhook.as_str();
        let failed = |error: String| Attempt {
            status: None,
            response: None,
            error: Some(error),
        };
        let target = match self.target(name).await {
            Ok(t) => t,
            Err(e) => return failed(e),
        };
        let body = serde_json::to_vec(&spec.body).expect("JSON values serialize");
        let mut keys = vec![target.key.as_str()];
        keys.extend(target.previous.as_deref());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut signed = signing::standard_headers(&keys, &job.id.to_string(), now, &body).to_vec();
        signed.push((
            "x-spine-signature".to_string(),
            signing::spine_signature(&target.key, &body),
        ));
        signed.push(("x-spine-webhook".to_string(), name.to_string()));
        signed.push((
            "traceparent".to_string(),
            spine_core::trace::traceparent(spec.correlation_id, job.id),
        ));
        let (url, headers, timeout_ms) = match &target.target {
            WebhookTarget::Url {
                url,
                headers,
                timeout_ms,
            } => (url, headers, *timeout_ms),
            WebhookTarget::Function { function } => {
                return match super::function::call(
                    &self.functions,
                    function,
                    body,
                    job,
                    spine_functions::host::Lineage {
                        cause: spec.causation_id,
                        chain: spec.correlation_id,
                    },
                    spec.actor.as_ref(),
                    signed,
                )
                .await
                {
                    Ok(r) => Attempt {
                        status: Some(r.status as i32),
                        response: Some(cut(&r.body)),
                        error: None,
                    },
                    Err(e) => failed(e),
                };
            }
        };
        let timeout = Duration::from_millis(timeout_ms);
        let mut request = self
            .http
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("idempotency-key", job.id.to_string());
        for (k, v) in &signed {
            request = request.header(k, v);
        }
        for (k, v) in headers {
            if let Some(v) = v.as_str() {
                request = request.header(k, v);
            }
        }
        match request.body(body).send().await {
            Ok(response) => Attempt {
                status: Some(response.status().as_u16() as i32),
                response: Some(cut(&super::http::read_head(response, RESPONSE_BYTES).await)),
                error: None,
            },
            Err(e) if e.is_timeout() => failed(format!("timed out after {timeout:?}")),
            Err(e) => failed(format!("request failed: {e}")),
        }
    }

    async fn record(&self, name: &str, job: &Job, attempt: &Attempt, took: Duration) {
        let succeeded = attempt.status.is_some_and(|s| (200..300).contains(&s));
        let result = async {
            let db = self.db.get().await.map_err(|e| e.to_string())?;
            db.execute(
                "SELECT spine.record_webhook_delivery($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &name,
                    &job.id,
                    &job.attempts,
                    &attempt.status,
                    &succeeded,
                    &attempt.response,
                    &attempt.error,
                    &(took.as_millis().min(i32::MAX as u128) as i32),
                ],
            )
            .await
            .map_err(spine_functions::sql::describe)
        }
        .await;
        // The job's own outcome is what makes delivery durable; the record is history.
        if let Err(e) = result {
            tracing::warn!(webhook = name, job = job.id, error = %e, "could not record a delivery");
        }
    }
}

fn cut(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(RESPONSE_BYTES)]).into_owned()
}

impl Handler for Arc<WebhookHandler> {
    fn handle(&self, job: Job) -> HandlerFuture {
        let this = self.clone();
        // Not snoozed on 429/503: every attempt is a row of webhook_deliveries, and
        // the job retries with backoff like after any failure.
        Box::pin(async move {
            let delivered: Result<(), String> = async {
                let spec: WebhookJob = payloads::parse("webhook", &job.payload)?;
                let name = spec.webhook.clone();
                let started = Instant::now();
                let attempt = this.deliver(&spec, &job).await;
                this.record(&name, &job, &attempt, started.elapsed()).await;
                match (attempt.status, attempt.error) {
                    (Some(s), _) if (200..300).contains(&s) => Ok(()),
                    (Some(s), _) => Err(format!(
                        "webhook {name}: HTTP {s}: {}",
                        attempt
                            .response
                            .unwrap_or_default()
                            .chars()
                            .take(300)
                            .collect::<String>()
                    )),
                    (None, Some(e)) => Err(e),
                    (None, None) => Err(format!("webhook {name}: no answer")),
                }
            }
            .await;
            delivered.map_err(JobError::Failed)
        })
    }
}
