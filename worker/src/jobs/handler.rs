//! A job as the runner sees it, and the registry that maps queues to handlers.
//! Other parts of Spine add handlers (edge functions, search reindex) by
//! registering them under a name.

use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub queue: String,
    pub payload: Value,
    pub attempts: i32,
    pub max_attempts: i32,
    /// The user the job acts for (NULL: enqueued by service_role or Spine itself).
    pub owner_id: Option<uuid::Uuid>,
}

impl Job {
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            queue: row.try_get("queue")?,
            payload: row.try_get("payload")?,
            attempts: row.try_get("attempts")?,
            max_attempts: row.try_get("max_attempts")?,
            owner_id: row.try_get("owner_id")?,
        })
    }
}

/// Why a job did not complete.
#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    /// It failed: recorded in its error history (never with secrets), retried
    /// with backoff until its attempts run out.
    Failed(String),
    /// Not now (the other side said when: 429/503 with Retry-After): back to the
    /// queue for this long, its attempt given back, no error recorded.
    Snooze(std::time::Duration),
}

impl From<String> for JobError {
    fn from(error: String) -> Self {
        JobError::Failed(error)
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Failed(e) => f.write_str(e),
            JobError::Snooze(d) => write!(f, "snoozed for {d:?}"),
        }
    }
}

/// The longest snooze a Retry-After may ask for.
pub const MAX_SNOOZE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A snooze when an answer says "come back later": 429 or 503 with
/// `Retry-After: <seconds>` (at least 1 s, at most [`MAX_SNOOZE`]). A date form or
/// any other answer is not a snooze.
pub fn snooze_for(status: u16, retry_after: Option<&str>) -> Option<std::time::Duration> {
    if status != 429 && status != 503 {
        return None;
    }
    let seconds: u64 = retry_after?.trim().parse().ok()?;
    Some(std::time::Duration::from_secs(seconds.max(1)).min(MAX_SNOOZE))
}

/// The small pool a handler that writes to the database keeps (`webhook`,
/// `net`): one session per job at a time is plenty beside the runner's own.
pub fn handler_pool(database: &spine_db::DbConfig) -> spine_db::Pool {
    spine_db::Pool::new(
        database,
        spine_db::PoolOptions {
            max_size: 4,
            ..spine_db::PoolOptions::default()
        },
    )
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;

/// Runs one job. Implementations must be idempotent per job id: a job can run
/// again after a crash (at-least-once), and the id is its idempotency key.
pub trait Handler: Send + Sync {
    fn handle(&self, job: Job) -> HandlerFuture;
}

/// Handlers by name; queues are bound to handler names in the configuration.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// The built-in handlers: `http`, `noop`, `function` (edge functions, run
    /// in-process by an embedded function host, which also runs function
    /// targets), `embed` (entities' embeddings), `net` (pg_net's requests) and
    /// `webhook` (database webhooks).
    pub fn builtin(
        database: &spine_db::DbConfig,
        host: Arc<spine_functions::host::Host>,
        embeddings: Option<crate::config::EmbeddingsConfig>,
    ) -> Self {
        let mut r = Self::default();
        r.register("http", Arc::new(super::http::HttpHandler::new()));
        r.register("noop", Arc::new(Noop));
        r.register(
            "function",
            Arc::new(super::function::FunctionHandler::new(host.clone())),
        );
        r.register(
            "embed",
            Arc::new(Arc::new(super::embed::EmbedHandler::new(
                database, embeddings,
            ))),
        );
        r.register(
            "net",
            Arc::new(Arc::new(super::net::NetHandler::new(database))),
        );
        r.register(
            "webhook",
            Arc::new(Arc::new(super::webhook::WebhookHandler::new(
                database, host,
            ))),
        );
        r
    }

    pub fn register(&mut self, name: &str, handler: Arc<dyn Handler>) {
        self.handlers.insert(name.to_string(), handler);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(name).cloned()
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// Succeeds at once: for benchmarks and for queues whose jobs are only records.
struct Noop;

impl Handler for Noop {
    fn handle(&self, _job: Job) -> HandlerFuture {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_a_come_back_later_answer_snoozes() {
        assert_eq!(snooze_for(429, Some("30")), Some(Duration::from_secs(30)));
        assert_eq!(snooze_for(503, Some(" 0 ")), Some(Duration::from_secs(1)));
        assert_eq!(snooze_for(429, Some("999999")), Some(MAX_SNOOZE));
        assert_eq!(snooze_for(429, None), None);
        assert_eq!(snooze_for(429, Some("Wed, 21 Oct 2026 07:28:00 GMT")), None);
        assert_eq!(snooze_for(500, Some("30")), None);
    }
}
