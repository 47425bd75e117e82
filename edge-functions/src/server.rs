//! `/functions/v1/{name}` over HTTP (axum), Supabase-shaped: a bearer JWT says who
//! calls; the function's Response is passed back as is (a `ReadableStream` body
//! chunk by chunk, as it is produced); every error of the host is JSON with a
//! `code`. Browsers can call it: CORS preflights are answered here,
//! before authentication, as Supabase's gateway does, and every response carries
//! the CORS headers. A stop signal drains: new connections are refused and calls
//! in progress finish.

use crate::engine::{InvokeError, Request};
use crate::host::{Answer, Caller, Host, HostError};
use crate::jwt::Keys;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Largest request body passed to a function.
pub const MAX_BODY: usize = 10 << 20;

/// How long a request body may stall between chunks before the call is refused.
pub const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Supabase's status for a function stopped by a resource limit.
const WORKER_LIMIT: u16 = 546;

pub struct ServerState {
    pub host: Arc<Host>,
    pub keys: Arc<Keys>,
    /// What `/metrics` serves: at least the host's metrics.
    pub metrics: prometheus_client::registry::Registry,
}

impl ServerState {
    /// The host's metrics in a registry of their own.
    pub fn new(host: Arc<Host>, keys: Arc<Keys>) -> Self {
        let mut metrics = prometheus_client::registry::Registry::with_prefix("spine");
        host.metrics.register(&mut metrics);
        ServerState {
            host,
            keys,
            metrics,
        }
    }
}

/// Which origins may call from a browser: `*` (the default, as Supabase's
/// functions answer) or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

impl CorsOrigins {
    /// `*` or a comma-separated list of origins (`https://app.example.com`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim() == "*" {
            return Ok(CorsOrigins::Any);
        }
        let list: Vec<String> = text
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        for origin in &list {
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && HeaderValue::from_str(origin).is_ok();
            if !ok {
                return Err(format!(
                    "{origin:?} is not an origin like https://host[:port]"
                ));
            }
        }
        if list.is_empty() {
            return Err("name at least one origin, or *".into());
        }
        Ok(CorsOrigins::List(list))
    }

    pub fn layer(&self) -> CorsLayer {
        let origins = match self {
            CorsOrigins::Any => AllowOrigin::any(),
            CorsOrigins::List(list) => AllowOrigin::list(
                list.iter()
                    .map(|o| HeaderValue::from_str(o).expect("checked in parse")),
            ),
        };
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            // supabase-js sends authorization, apikey, content-type, x-client-info
            // and x-region; a function may read others. Tokens travel in a header,
            // never in cookies, so mirroring what the browser asks for is safe.
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(ExposeHeaders::any())
            .max_age(Duration::from_secs(86_400))
    }
}

/// `/functions/v1/{name}[/…]` alone: what the gateway embeds (it adds the
/// state and the body timeout, [`BODY_STALL_TIMEOUT`]).
pub fn function_routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/functions/v1/{name}", any(invoke))
        .route("/functions/v1/{name}/{*rest}", any(invoke_nested))
}

/// The process serves HTTP.
async fn live() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}))
}

/// The database answers: calls can read their functions and act.
async fn ready(State(state): State<Arc<ServerState>>) -> Response {
    match state.host.ping().await {
        Ok(()) => json_response(StatusCode::OK, json!({"status": "ok"})),
        Err(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "reason": reason}),
        ),
    }
}

/// The routes and layers, for [`serve`] and for tests that drive it in process.
pub fn router(state: Arc<ServerState>, cors: &CorsOrigins) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/healthz", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(function_routes())
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no route: use /functions/v1/{name}",
            )
        })
        .with_state(state)
        .layer(RequestBodyTimeoutLayer::new(BODY_STALL_TIMEOUT))
        .layer(axum::middleware::from_fn(crate::request_id::middleware))
        .layer(cors.layer())
}

/// Serves until `shutdown` completes, then stops accepting and lets the calls in
/// progress finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    cors: &CorsOrigins,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state, cors))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Prometheus (OpenMetrics text): invocations, their times, the database pool.
async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    state.host.refresh_metrics();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &state.metrics)
        .expect("writing to a String cannot fail");
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn invoke_nested(
    state: State<Arc<ServerState>>,
    Path((name, _rest)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    invoke(state, Path(name), request).await
}

async fn invoke(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let auth = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = match state.keys.verify_header(auth).await {
        Ok(claims) => Caller::from_jwt(claims),
        // A public function (verify_jwt: false; Twilio, Stripe and MS Graph send
        // no token) runs for anon; the token, if any, is not ours to judge.
        Err(e) => match state.host.load(&name).await {
            Ok(f) if f.public => Caller::anon(),
            _ => return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &e.to_string()),
        },
    };
    let body = match read_body(body).await {
        Ok(bytes) => bytes.to_vec(),
        Err(response) => return response,
    };
    let request = Request {
        method: parts.method.to_string(),
        url: public_url(&parts.uri, &parts.headers),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body,
    };
    let answer = match state.host.invoke_streaming(&name, request, caller).await {
        Ok(answer) => answer,
        Err(e) => return host_error(&name, e),
    };
    let (status, headers, body) = match answer {
        Answer::Whole(r) => (r.status, r.headers, Body::from(r.body)),
        // Chunks go out as the function produces them (chunked transfer); a
        // failure after the head cuts the body off rather than ending it cleanly.
        Answer::Streamed(head) => (
            head.status,
            head.headers,
            Body::from_stream(head.body.into_stream()),
        ),
    };
    let mut builder = Response::builder().status(status);
    for (k, v) in &headers {
        builder = builder.header(k, v);
    }
    builder.body(body).unwrap_or_else(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "FUNCTION_ERROR",
            &format!("the function's response is not valid HTTP: {e}"),
        )
    })
}

/// The whole body, or the error response for one that is too large or stalled.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<tower_http::timeout::TimeoutError>()
            || inner
                .source()
                .is_some_and(|s| s.is::<tower_http::timeout::TimeoutError>())
        {
            error(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                &format!(
                    "the request body stalled for over {} s",
                    BODY_STALL_TIMEOUT.as_secs()
                ),
            )
        } else {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                &format!("the request body is over {MAX_BODY} bytes or broke off"),
            )
        }
    })
}

fn public_url(uri: &Uri, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    // Behind a TLS-terminating proxy the caller used https, and a webhook signs
    // the URL it called (Twilio): the proxy's X-Forwarded-Proto says which.
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{scheme}://{host}{path}")
}

fn host_error(name: &str, e: HostError) -> Response {
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
        HostError::Violates {
            output: false,
            schema,
            violations,
        } => json_response(
            StatusCode::BAD_REQUEST,
            json!({"code": "VALIDATION", "message": e.to_string(),
                   "details": spine_core::contract::details(schema, violations)}),
        ),
        HostError::Violates {
            output: true,
            schema,
            violations,
        } => {
            tracing::error!(function = name, error = %e, "a response breaks its output schema");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"code": "INVALID_RESPONSE", "message": e.to_string(),
                       "details": spine_core::contract::details(schema, violations)}),
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

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"code": code, "message": message}))
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Resolves on Ctrl-C or SIGTERM (what `kill` and process supervisors send):
/// the stop signal of every Spine process (worker, function host, gateway).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_parse() {
        assert_eq!(CorsOrigins::parse("*"), Ok(CorsOrigins::Any));
        assert_eq!(
            CorsOrigins::parse("https://a.example, http://localhost:3000/"),
            Ok(CorsOrigins::List(vec![
                "https://a.example".into(),
                "http://localhost:3000".into()
            ]))
        );
        assert!(CorsOrigins::parse("a.example").is_err());
        assert!(CorsOrigins::parse(" , ").is_err());
    }
}
