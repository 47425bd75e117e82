//! `/healthz` and `/metrics` over a deliberately small HTTP/1.1 server: two GET
//! routes do not justify a web framework in the worker's build.
//!
//! `/healthz` is 200 only when the relay reached Postgres recently and, if this
//! instance is the active relay, its lag is under the threshold: a stuck relay is
//! reported even though the process runs.

use crate::metrics::{JobMetrics, RelayMetrics};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct HttpState {
    pub relay: Arc<RelayMetrics>,
    pub jobs: Arc<JobMetrics>,
    pub sink: String,
    pub lag_threshold: Duration,
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = state.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, &state).await {
                            tracing::debug!(error = %e, "http connection failed");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "http accept failed"),
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn handle(mut stream: TcpStream, state: &HttpState) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read the request head (we ignore any body); give up on slow or huge requests.
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = stream.read(&mut buf[len..]).await?;
            len += n;
            if n == 0 || buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || len == buf.len() {
                return Ok::<_, std::io::Error>(());
            }
        }
    })
    .await;
    if read.is_err() {
        return Ok(());
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = route(method, path, state);
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn route(method: &str, path: &str, state: &HttpState) -> (&'static str, &'static str, String) {
    const JSON: &str = "application/json";
    if method != "GET" {
        return (
            "405 Method Not Allowed",
            JSON,
            r#"{"error":"only GET is supported"}"#.into(),
        );
    }
    match path {
        "/healthz" => {
            let threshold = state.lag_threshold.as_secs_f64();
            let lag = state.relay.lag_seconds();
            let since_ok = state.relay.seconds_since_ok();
            let active = state
                .relay
                .active
                .load(std::sync::atomic::Ordering::Relaxed);
            let status = if since_ok > threshold {
                "database unreachable"
            } else if active && lag > threshold {
                "lagging"
            } else {
                "ok"
            };
            let body = serde_json::json!({
                "status": status,
                "relay": { "sink": state.sink, "active": active, "lag_seconds": lag,
                           "seconds_since_database_ok": since_ok,
                           "lag_threshold_seconds": threshold },
            })
            .to_string();
            if status == "ok" {
                ("200 OK", JSON, body)
            } else {
                ("503 Service Unavailable", JSON, body)
            }
        }
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            state.relay.render(&state.sink) + &state.jobs.render(),
        ),
        _ => ("404 Not Found", JSON, r#"{"error":"not found"}"#.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(lag: f64, active: bool) -> HttpState {
        let relay = Arc::new(RelayMetrics::default());
        relay.set_oldest_pending(
            (lag > 0.0).then(|| {
                chrono::Utc::now() - chrono::Duration::milliseconds((lag * 1000.0) as i64)
            }),
        );
        relay
            .active
            .store(active, std::sync::atomic::Ordering::Relaxed);
        HttpState {
            relay,
            jobs: Arc::default(),
            sink: "nats".into(),
            lag_threshold: Duration::from_secs(30),
        }
    }

    #[test]
    fn healthz_fails_when_lag_exceeds_threshold() {
        assert_eq!(route("GET", "/healthz", &state(1.0, true)).0, "200 OK");
        let (status, _, body) = route("GET", "/healthz", &state(31.0, true));
        assert_eq!(status, "503 Service Unavailable");
        assert!(body.contains("\"lagging\""));
        // A standby does not relay, so its lag is not its health.
        assert_eq!(route("GET", "/healthz", &state(99.0, false)).0, "200 OK");
    }

    #[test]
    fn healthz_fails_when_the_database_is_out_of_reach() {
        let s = state(0.0, false);
        assert_eq!(route("GET", "/healthz", &s).0, "200 OK");
        let s = HttpState {
            lag_threshold: Duration::ZERO,
            ..s
        };
        std::thread::sleep(Duration::from_millis(5));
        let (status, _, body) = route("GET", "/healthz", &s);
        assert_eq!(status, "503 Service Unavailable");
        assert!(body.contains("database unreachable"), "{body}");
    }

    #[test]
    fn unknown_routes_and_methods_get_json_errors() {
        assert_eq!(route("GET", "/nope", &state(0.0, true)).0, "404 Not Found");
        assert_eq!(
            route("POST", "/healthz", &state(0.0, true)).0,
            "405 Method Not Allowed"
        );
    }
}
