//! `/health/live`, `/health/ready` (also at `/healthz`) and `/metrics` (axum).
//!
//! Live: the process serves HTTP. Ready is 200 only when the relay reached
//! Postgres recently and, if this instance is the active relay, its lag is under
//! the threshold (NATS out of reach shows as that lag): a stuck relay is reported
//! even though the process runs. `/metrics` is the registry of
//! [`crate::metrics`], with each queue's figures read from the database per scrape.

use crate::metrics::{Metrics, QueueStat};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long a scrape waits for `spine.queue_stats()` before serving without it.
const QUEUE_STATS_TIMEOUT: Duration = Duration::from_secs(5);

pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub sink: String,
    pub lag_threshold: Duration,
    /// Where queue figures come from; None leaves them out.
    pub db: Option<spine_db::Pool>,
    /// The in-process function host, whose pool figures are copied per scrape.
    pub functions: Option<Arc<spine_functions::host::Host>>,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route(
            "/health/live",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/health/ready", get(healthz))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(
                    json!({"error": "not found: use /health/live, /health/ready or /metrics"}),
                ),
            )
        })
        .with_state(state)
}

/// Serves until `shutdown` completes, then finishes the requests in progress.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(state): State<Arc<HttpState>>) -> Response {
    let (status, body) = health(&state);
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

fn health(state: &HttpState) -> (&'static str, serde_json::Value) {
    let relay = &state.metrics.relay;
    let threshold = state.lag_threshold.as_secs_f64();
    let lag = relay.lag_seconds();
    let since_ok = relay.seconds_since_ok();
    let active = relay.is_active();
    let status = if since_ok > threshold {
        "database unreachable"
    } else if active && lag > threshold {
        "lagging"
    } else {
        "ok"
    };
    let body = json!({
        "status": status,
        "relay": { "sink": state.sink, "active": active, "lag_seconds": lag,
                   "seconds_since_database_ok": since_ok,
                   "lag_threshold_seconds": threshold },
    });
    (status, body)
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    if let Some(db) = &state.db {
        let stats = tokio::time::timeout(QUEUE_STATS_TIMEOUT, queue_stats(db)).await;
        match stats {
            Ok(Ok(stats)) => state.metrics.queues.set(Some(&stats)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "queue figures left out of /metrics");
                state.metrics.queues.set(None);
            }
            Err(_) => state.metrics.queues.set(None),
        }
    }
    if let Some(host) = &state.functions {
        host.refresh_metrics();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn queue_stats(db: &spine_db::Pool) -> anyhow::Result<Vec<QueueStat>> {
    let session = db.get().await?;
    let rows = session
        .query(
            "SELECT queue, priority::text, queued, running, retrying, dead, oldest_queued_seconds \
               FROM spine.queue_stats()",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| QueueStat {
            queue: r.get(0),
            priority: r.get(1),
            queued: r.get(2),
            running: r.get(3),
            retrying: r.get(4),
            dead: r.get(5),
            oldest_queued_seconds: r.get(6),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(lag: f64, active: bool) -> HttpState {
        let metrics = Arc::new(Metrics::new("nats", None));
        metrics.relay.set_oldest_pending(
            (lag > 0.0).then(|| {
                chrono::Utc::now() - chrono::Duration::milliseconds((lag * 1000.0) as i64)
            }),
        );
        metrics.relay.set_active(active);
        HttpState {
            metrics,
            sink: "nats".into(),
            lag_threshold: Duration::from_secs(30),
            db: None,
            functions: None,
        }
    }

    #[test]
    fn healthz_fails_when_lag_exceeds_threshold() {
        assert_eq!(health(&state(1.0, true)).0, "ok");
        assert_eq!(health(&state(31.0, true)).0, "lagging");
        // A standby does not relay, so its lag is not its health.
        assert_eq!(health(&state(99.0, false)).0, "ok");
    }

    #[test]
    fn healthz_fails_when_the_database_is_out_of_reach() {
        let s = state(0.0, false);
        assert_eq!(health(&s).0, "ok");
        let s = HttpState {
            lag_threshold: Duration::ZERO,
            ..s
        };
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(health(&s).0, "database unreachable");
    }
}
