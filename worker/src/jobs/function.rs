//! The `function` handler: a job of the `function` queue (rules' `call_function`
//! actions, or anyone with service_role) runs an edge function in-process.
//!
//! Payload: [`FunctionJob`], `{"function": "name", "payload": {…}, "event_id": "…"}`. The function
//! gets a POST with the payload as JSON body, `Idempotency-Key: job-<id>` and a
//! W3C `traceparent` whose trace id is the event's correlation id; it
//! acts for the job's owner (RLS, consents), and what it emits is caused by
//! `event_id`, so the rules' loop guard follows the chain through it. A job without
//! owner acts for the `actor` it recorded (a webhook's writer), else service_role. A 2xx
//! answer completes the job; 429 or 503 with `Retry-After: <seconds>` snoozes it
//! (no attempt spent); anything else fails it (retried with backoff).

use super::handler::{Handler, HandlerFuture, Job, JobError};
use spine_core::jobs::payloads::{self, Actor, FunctionJob};
use spine_functions::engine::{Request, Response};
use spine_functions::host::{Caller, Host, Lineage};
use std::sync::Arc;

pub struct FunctionHandler {
    host: Arc<Host>,
}

impl FunctionHandler {
    pub fn new(host: Arc<Host>) -> Self {
        Self { host }
    }
}

/// Runs `name` with `body` for the job's owner, in the chain of events that
/// caused it (what it emits, and its log lines, carry it); Ok only for a 2xx answer.
pub async fn call(
    host: &Arc<Host>,
    name: &str,
    body: Vec<u8>,
    job: &Job,
    lineage: Lineage,
    actor: Option<&Actor>,
    extra_headers: Vec<(String, String)>,
) -> Result<Response, String> {
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("idempotency-key".to_string(), format!("job-{}", job.id)),
        ("x-spine-job".to_string(), job.id.to_string()),
    ];
    headers.extend(extra_headers);
    let request = Request {
        method: "POST".into(),
        url: format!("http://spine-worker/functions/v1/{name}"),
        headers,
        body,
    };
    let caller = Caller::for_job(job.owner_id, actor);
    host.invoke(name, request, caller, lineage)
        .await
        .map_err(|e| format!("function {name}: {e}"))
}

pub fn check_status(name: &str, response: &Response) -> Result<(), JobError> {
    if (200..300).contains(&response.status) {
        return Ok(());
    }
    let retry_after = response
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .map(|(_, v)| v.as_str());
    if let Some(wait) = super::handler::snooze_for(response.status, retry_after) {
        return Err(JobError::Snooze(wait));
    }
    let snippet: String = String::from_utf8_lossy(&response.body)
        .chars()
        .take(300)
        .collect();
    Err(JobError::Failed(format!(
        "function {name} answered {}: {snippet}",
        response.status
    )))
}

impl Handler for FunctionHandler {
    fn handle(&self, job: Job) -> HandlerFuture {
        let host = self.host.clone();
        Box::pin(async move {
            let spec: FunctionJob = payloads::parse("function", &job.payload)?;
            let body = serde_json::to_vec(&spec.payload).map_err(|e| e.to_string())?;
            // W3C Trace Context: the function (and whatever it passes the header
            // on to) joins the chain of the event that caused the call.
            let trace = vec![(
                "traceparent".to_string(),
                spine_core::trace::traceparent(spec.correlation_id, job.id),
            )];
            let response = call(
                &host,
                &spec.function,
                body,
                &job,
                Lineage {
                    cause: spec.event_id,
                    chain: spec.correlation_id,
                },
                spec.actor.as_ref(),
                trace,
            )
            .await?;
            check_status(&spec.function, &response)
        })
    }
}
