//! Verbs served by an edge function: the function named like the service gets a
//! POST of the request's data to `/functions/v1/{service}/{verb}`, as the caller
//! (a request without a token reaches public functions only, as over HTTP).

use super::Failure;
use serde_json::Value;
use spine_core::service::{code_for_status, ErrorCode, Request};
use spine_functions::engine::{InvokeError, Request as HttpRequest};
use spine_functions::host::{Caller, Host, HostError, Lineage};
use std::sync::Arc;

pub(super) async fn call(
    host: &Arc<Host>,
    service: &str,
    verb: &str,
    request: &Request,
    caller: Caller,
    has_token: bool,
) -> Result<Value, Failure> {
    let not_found = || Failure::new(ErrorCode::NotFound, format!("no verb {service}.{verb}"));
    let function = match host.load(service).await {
        Ok(f) => f,
        Err(HostError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(Failure::new(ErrorCode::Unavailable, e.to_string())),
    };
    if !has_token && !function.public {
        return Err(Failure::new(
            ErrorCode::Forbidden,
            format!("{service} needs a token (its manifest keeps verify_jwt)"),
        ));
    }
    let http = HttpRequest {
        method: "POST".into(),
        url: format!("http://spine-services/functions/v1/{service}/{verb}"),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-request-id".into(), request.id.to_string()),
            ("x-correlation-id".into(), request.chain().to_string()),
        ],
        body: serde_json::to_vec(&request.data).expect("JSON serializes"),
    };
    let response = host
        .invoke(
            service,
            http,
            caller,
            Lineage {
                cause: Some(request.id),
                chain: Some(request.chain()),
            },
        )
        .await
        .map_err(|e| match e {
            HostError::NotFound(_) => not_found(),
            HostError::Disabled(_) => Failure::new(ErrorCode::Unavailable, e.to_string()),
            HostError::Database(_) => Failure::new(ErrorCode::Unavailable, e.to_string()),
            HostError::Invoke(InvokeError::LimitExceeded("wall")) => {
                Failure::new(ErrorCode::Timeout, e.to_string())
            }
            HostError::Invoke(InvokeError::LimitExceeded(_)) => {
                Failure::new(ErrorCode::Limit, e.to_string())
            }
            HostError::Violates {
                output,
                ref schema,
                ref violations,
            } => Failure {
                code: if output {
                    ErrorCode::Internal
                } else {
                    ErrorCode::Validation
                },
                message: e.to_string(),
                details: spine_core::contract::details(schema, violations),
            },
            HostError::Invoke(_) => {
                tracing::warn!(service, verb, error = %e, "a function verb failed");
                Failure::new(ErrorCode::Internal, "internal error")
            }
        })?;
    let body: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&response.body).into_owned()));
    if (200..300).contains(&response.status) {
        return Ok(body);
    }
    let message = body
        .get("message")
        .or_else(|| body.get("error"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{service}.{verb} answered {}", response.status));
    Err(Failure {
        code: code_for_status(response.status),
        message,
        details: serde_json::json!({"status": response.status}),
    })
}
