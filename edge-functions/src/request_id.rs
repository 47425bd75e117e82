//! Every HTTP request gets an id, and what is logged while it is served carries
//! it: the `x-request-id` a client or proxy sent (when it is a plausible id), or
//! a new UUID. The id goes back in the response's `x-request-id`, to the
//! function (its request headers, and its `console.*` lines), and into the
//! `request` span that JSON logs put on each line (`SPINE_LOG_FORMAT=json`).
//! The function host's server and the gateway both serve through it.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

/// Longest id taken from a client; longer or odd ones are replaced.
const MAX_LEN: usize = 128;

/// Middleware (`axum::middleware::from_fn(request_id::middleware)`).
pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| plausible(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let value = HeaderValue::from_str(&id).expect("checked or generated: visible ASCII");
    request.headers_mut().insert(HEADER, value.clone());
    // The path only: a query may carry a token (Realtime's apikey).
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "served"
        )
    });
    response.headers_mut().insert(HEADER, value);
    response
}

/// An id worth keeping: short, and only characters ids are made of.
fn plausible(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::plausible;

    #[test]
    fn only_short_plain_ids_are_kept() {
        assert!(plausible("req-123"));
        assert!(plausible("0192f5a0-7b1c-7d2e-9f00-1234567890ab"));
        assert!(!plausible(""));
        assert!(!plausible(&"a".repeat(129)));
        assert!(!plausible("a b"));
        assert!(!plausible("id\"}\n{\"forged\":1"));
    }
}
