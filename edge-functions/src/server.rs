//! `POST /functions/v1/{name}` over HTTP/1.1 (hyper), Supabase-shaped: a bearer
//! JWT (HS256, the project's secret) says who calls; the function's Response is
//! passed back as is; every error of the host is JSON with a `code`.

use crate::engine::{InvokeError, Request};
use crate::host::{Caller, Host, HostError};
use crate::jwt;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Largest request body passed to a function.
pub const MAX_BODY: usize = 10 << 20;

/// Supabase's status for a function stopped by a resource limit.
const WORKER_LIMIT: u16 = 546;

pub struct ServerState {
    pub host: Arc<Host>,
    pub jwt_secret: Vec<u8>,
}

type HttpResponse = hyper::Response<Full<Bytes>>;

/// Serves until `shutdown` turns true; connections in progress finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(error = %e, "connection ended");
                    }
                });
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn handle(state: &ServerState, req: hyper::Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return json_response(StatusCode::OK, json!({"status": "ok"}));
    }
    let Some(name) = function_name(&path) else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no route: use /functions/v1/{name}",
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = match jwt::verify_header(auth, &state.jwt_secret, now) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &e.to_string()),
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                &format!("the request body is over {MAX_BODY} bytes or broke off"),
            )
        }
    };
    let request = Request {
        method: parts.method.to_string(),
        url: public_url(&parts.uri, parts.headers.get(hyper::header::HOST)),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body,
    };
    match state
        .host
        .invoke(name, request, Caller::from_jwt(claims), None)
        .await
    {
        Ok(response) => {
            let mut builder = hyper::Response::builder().status(response.status);
            for (k, v) in &response.headers {
                builder = builder.header(k, v);
            }
            builder
                .body(Full::new(Bytes::from(response.body)))
                .unwrap_or_else(|e| {
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "FUNCTION_ERROR",
                        &format!("the function's response is not valid HTTP: {e}"),
                    )
                })
        }
        Err(e) => host_error(name, e),
    }
}

/// `/functions/v1/{name}` and `/functions/v1/{name}/anything`.
fn function_name(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/functions/v1/")?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

fn public_url(uri: &Uri, host: Option<&hyper::header::HeaderValue>) -> String {
    let host = host.and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("http://{host}{path}")
}

fn host_error(name: &str, e: HostError) -> HttpResponse {
    match &e {
        HostError::NotFound(_) => error(StatusCode::NOT_FOUND, "NOT_FOUND", &e.to_string()),
        HostError::Disabled(_) => error(StatusCode::FORBIDDEN, "FUNCTION_DISABLED", &e.to_string()),
        HostError::Database(_) => {
            tracing::warn!(function = name, error = %e, "invocation failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                &e.to_string(),
            )
        }
        HostError::Invoke(invoke) => {
            tracing::info!(function = name, error = %invoke, "invocation failed");
            match invoke {
                InvokeError::LimitExceeded(limit) => json_response(
                    StatusCode::from_u16(WORKER_LIMIT).expect("valid status"),
                    json!({"code": "WORKER_LIMIT", "limit": limit, "message": invoke.to_string()}),
                ),
                InvokeError::BadModule(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "BOOT_ERROR",
                    &invoke.to_string(),
                ),
                InvokeError::Threw(_) | InvokeError::NeverSettled => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "FUNCTION_ERROR",
                    &invoke.to_string(),
                ),
            }
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    json_response(status, json!({"code": code, "message": message}))
}

fn json_response(status: StatusCode, body: serde_json::Value) -> HttpResponse {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid status and header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(function_name("/functions/v1/hello"), Some("hello"));
        assert_eq!(function_name("/functions/v1/hello/a/b"), Some("hello"));
        assert_eq!(function_name("/functions/v1/"), None);
        assert_eq!(function_name("/other"), None);
    }
}
