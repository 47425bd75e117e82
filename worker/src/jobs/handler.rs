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

/// Why a job failed; recorded in its error history (never with secrets).
pub type JobError = String;

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
    /// in-process by an embedded function host) and `webhook` (database webhooks).
    /// The built-in handlers; `host` runs `function` jobs and function targets.
    pub fn builtin(database: &spine_db::DbConfig, host: Arc<spine_functions::host::Host>) -> Self {
        let mut r = Self::default();
        r.register("http", Arc::new(super::http::HttpHandler::new()));
        r.register("noop", Arc::new(Noop));
        r.register(
            "function",
            Arc::new(super::function::FunctionHandler::new(host.clone())),
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
