//! The host: loads deployed functions from the database and runs invocations on
//! the engine, with capabilities that act as the caller (see [`crate::capabilities`]).
//! The HTTP server and the worker's `function` queue handler both call
//! [`Host::invoke`].

use crate::capabilities::HostCapabilities;
use crate::engine::{Engine, InvokeError, Limits, QuickJs, Request, Response};
use crate::invokers::Invokers;
use crate::stream::{ChannelSink, Head};
use serde_json::{json, Value};
use spine_core::contract::{summary, NamedContract, Violation};
use spine_core::jobs::payloads::Actor;
use spine_core::manifest::{self, Manifest};
use spine_db::{DbConfig, Pool, PoolOptions, PoolStatus};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What an HTTP caller gets back: the whole response, or a streamed body's
/// head with the chunks to follow.
pub enum Answer {
    Whole(Response),
    Streamed(Head),
}

/// A name's lookup: when, and the function (None: not deployed).
type Cached = (Instant, Option<Arc<Deployed>>);

/// Most names (deployed or not) remembered between database lookups.
const MAX_CACHED: usize = 1024;

/// Settings of a host (the binary reads them from the environment).
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The database (`DATABASE_URL`, parsed once by spine-db).
    pub database: DbConfig,
    /// Limits for functions whose manifest sets none, and the most a manifest may ask.
    pub default_limits: Limits,
    pub max_limits: Limits,
    /// Invocations running at once (each holds a thread while it runs).
    pub concurrency: usize,
    /// How long a loaded module is reused before the database is asked again.
    pub cache_ttl: Duration,
    /// Schemas `ctx.db` reaches (the first is the default): PostgREST's exposed
    /// schemas.
    pub db_schemas: Vec<String>,
    /// Failures in a row that disable a plugin (0: never); see [`crate::health`].
    pub disable_after: u32,
    /// The embeddings API of `Supabase.ai.Session` (`SPINE_EMBEDDINGS_*`); None:
    /// functions' embeddings fail with `NotConfigured`.
    pub embeddings: Option<crate::embeddings::EmbeddingsApi>,
}

impl HostConfig {
    pub fn new(database: DbConfig) -> Self {
        Self {
            database,
            default_limits: Limits {
                memory_bytes: 64 << 20,
                cpu_ms: 2_000,
                wall_ms: 60_000,
            },
            max_limits: Limits {
                memory_bytes: 256 << 20,
                cpu_ms: 10_000,
                wall_ms: 150_000,
            },
            concurrency: 16,
            cache_ttl: Duration::from_secs(2),
            db_schemas: vec!["public".into(), "spine".into()],
            disable_after: crate::health::disable_after_from_env(),
            embeddings: None,
        }
    }
}

/// What an invocation's writes descend from: the event (or NATS request) that
/// caused it, and the chain (correlation id) they join. A job passes its event
/// (the chain follows from it); a service verb passes its request and chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lineage {
    pub cause: Option<uuid::Uuid>,
    pub chain: Option<uuid::Uuid>,
}

impl From<Option<uuid::Uuid>> for Lineage {
    fn from(cause: Option<uuid::Uuid>) -> Self {
        Lineage { cause, chain: None }
    }
}

/// Who an invocation acts for: the role and JWT claims its database calls run with.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub role: String,
    pub claims: Value,
}

impl Caller {
    /// Who calls a public function without a (valid) token.
    pub fn anon() -> Self {
        Self {
            role: "anon".into(),
            claims: json!({"role": "anon"}),
        }
    }

    pub fn from_jwt(claims: crate::jwt::Claims) -> Self {
        Self {
            role: claims.role,
            claims: claims.all,
        }
    }

    /// Who a job acts for: its owner (rules' jobs), else the `{role, sub}` the job
    /// recorded of whoever caused it (a webhook's writer), else service_role (jobs
    /// enqueued by service_role itself).
    pub fn for_job(owner: Option<uuid::Uuid>, actor: Option<&Actor>) -> Self {
        let sub = owner
            .map(|o| o.to_string())
            .or_else(|| actor.and_then(|a| a.sub.clone()));
        let role = actor
            .and_then(|a| a.role.as_deref())
            .filter(|r| crate::jwt::ROLES.contains(r));
        match (sub, role) {
            (Some(sub), _) => Self {
                role: "authenticated".into(),
                claims: json!({"sub": sub, "role": "authenticated"}),
            },
            (None, Some(role)) => Self {
                role: role.into(),
                claims: json!({ "role": role }),
            },
            (None, None) => Self {
                role: "service_role".into(),
                claims: json!({"role": "service_role"}),
            },
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }
}

/// A deployed function as loaded from `spine.function_source`.
#[derive(Debug)]
pub struct Deployed {
    pub name: String,
    pub source: String,
    pub sha256: String,
    pub limits: Limits,
    pub enabled: bool,
    /// Secret names the manifest declares (others are refused without asking).
    pub secrets: Vec<String>,
    /// Secret names the function may store as the user's own (`secrets.write`).
    pub secrets_write: Vec<String>,
    /// `verify_jwt: false`: callable without a token.
    pub public: bool,
    /// The manifest declares `users.act_as`.
    pub act_as: bool,
    /// The manifest declares `ai.embeddings`.
    pub embeddings: bool,
    /// The JSON Schemas bound to its request and response bodies
    /// (`spine.bind_schema('function', name, …)`).
    pub input: Option<Arc<NamedContract>>,
    pub output: Option<Arc<NamedContract>>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("function \"{0}\" is not deployed")]
    NotFound(String),
    #[error("function \"{0}\" is disabled")]
    Disabled(String),
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error("database unavailable: {0}")]
    Database(String),
    /// A request body breaks the function's input schema (the caller's fault),
    /// or its response body its output schema (the function's).
    #[error("the {} body does not match schema \"{schema}\": {}", if *.output { "response" } else { "request" }, summary(.violations))]
    Violates {
        output: bool,
        schema: String,
        violations: Vec<Violation>,
    },
}

pub struct Host {
    /// The threads invocations run on.
    invokers: Invokers,
    pub(crate) db: Pool,
    pub(crate) http: reqwest::Client,
    pub(crate) config: HostConfig,
    slots: Arc<Semaphore>,
    /// Loaded functions, and names found not deployed (None), with when.
    cache: Mutex<HashMap<String, Cached>>,
    /// Register into the process's registry to serve them.
    pub metrics: crate::metrics::FunctionMetrics,
    /// Per-plugin health, reported to `spine.plugin_health`.
    health: Arc<crate::health::Health>,
}

impl Host {
    pub fn new(config: HostConfig) -> Arc<Self> {
        // fetch over HTTPS: rustls on ring (a no-op when the process installed one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let engine: Arc<dyn Engine> = Arc::new(QuickJs);
        Arc::new(Self {
            invokers: Invokers::start(engine, config.concurrency),
            db: Pool::new(
                &config.database,
                PoolOptions {
                    max_size: config.concurrency * 2,
                    ..PoolOptions::default()
                },
            ),
            http: reqwest::Client::builder()
                .user_agent(concat!("spine-functions/", env!("CARGO_PKG_VERSION")))
                // A redirect could lead to a host the manifest does not declare:
                // the function sees the 3xx and may fetch the new location itself.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client with these settings always builds"),
            slots: Arc::new(Semaphore::new(config.concurrency)),
            cache: Mutex::new(HashMap::new()),
            metrics: Default::default(),
            health: crate::health::Health::new(config.disable_after),
            config,
        })
    }

    /// Runs function `name` on `request` for `caller`, with the whole body in the
    /// response (a streamed one collected). `causation` is the event a job-run
    /// invocation descends from, passed on to what the function emits.
    pub async fn invoke(
        self: &Arc<Self>,
        name: &str,
        request: Request,
        caller: Caller,
        lineage: impl Into<Lineage>,
    ) -> Result<Response, HostError> {
        match self
            .run(name, request, caller, lineage.into(), false)
            .await?
        {
            Answer::Whole(response) => Ok(response),
            Answer::Streamed(_) => unreachable!("a collecting invocation has no stream"),
        }
    }

    /// [`Host::invoke`] for an HTTP caller: a body the function streams comes
    /// back as it is produced ([`Answer::Streamed`]), others whole.
    pub async fn invoke_streaming(
        self: &Arc<Self>,
        name: &str,
        request: Request,
        caller: Caller,
    ) -> Result<Answer, HostError> {
        self.run(name, request, caller, Lineage::default(), true)
            .await
    }

    /// Records an invocation's end in the metrics and its plugin's health.
    fn finish(
        self: &Arc<Self>,
        name: &str,
        result: Result<u16, &HostError>,
        started: Instant,
        from_anyone: bool,
    ) {
        let outcome = match result {
            Ok(status) if status >= 500 => "status_5xx",
            Ok(_) => "ok",
            Err(HostError::NotFound(_)) => "not_found",
            Err(HostError::Disabled(_)) => "disabled",
            Err(HostError::Database(_)) => "database",
            Err(HostError::Violates { output: false, .. }) => "invalid_input",
            Err(HostError::Violates { output: true, .. }) => "invalid_output",
            Err(HostError::Invoke(InvokeError::LimitExceeded("cpu"))) => "limit_cpu",
            Err(HostError::Invoke(InvokeError::LimitExceeded("memory"))) => "limit_memory",
            Err(HostError::Invoke(InvokeError::LimitExceeded(_))) => "limit_wall",
            Err(HostError::Invoke(InvokeError::Threw(_))) => "threw",
            Err(HostError::Invoke(InvokeError::BadModule(_))) => "bad_module",
            Err(HostError::Invoke(InvokeError::NeverSettled)) => "never_settled",
        };
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.record(name, outcome, seconds);
        self.track_health(name, outcome, result, seconds, from_anyone);
    }

    /// Counts the invocation for its plugin's health (and starts reporting it).
    fn track_health(
        self: &Arc<Self>,
        name: &str,
        outcome: &'static str,
        result: Result<u16, &HostError>,
        seconds: f64,
        from_anyone: bool,
    ) {
        use crate::health::Verdict;
        let verdict = match result {
            Ok(status) if status >= 500 => Verdict::Failed(format!("answered {status}")),
            Ok(_) => Verdict::Ok,
            Err(HostError::Invoke(InvokeError::LimitExceeded(_))) => {
                Verdict::LimitHit(outcome.into())
            }
            Err(e @ (HostError::Invoke(_) | HostError::Violates { output: true, .. })) => {
                Verdict::Failed(e.to_string())
            }
            Err(_) => Verdict::NotCounted,
        };
        self.health
            .record(name, verdict, seconds * 1000.0, from_anyone);
        let host = Arc::downgrade(self);
        self.health.start(self.db.clone(), move |plugin| {
            if let Some(host) = host.upgrade() {
                host.forget(plugin);
            }
        });
    }

    /// Drops a function from the cache: the next call reads it again.
    fn forget(&self, name: &str) {
        self.cache.lock().expect("cache lock").remove(name);
    }

    /// The pool's figures, copied into the metrics (call before rendering them).
    pub fn refresh_metrics(&self) {
        let status = self.db_status();
        self.metrics.pool_size.set(status.size as i64);
        self.metrics.pool_available.set(status.available as i64);
        self.metrics.pool_waiting.set(status.waiting as i64);
    }

    /// Runs an invocation on an invoker thread; with `stream`, a streamed body
    /// is answered as soon as its head is known and the rest follows.
    async fn run(
        self: &Arc<Self>,
        name: &str,
        request: Request,
        caller: Caller,
        lineage: Lineage,
        stream: bool,
    ) -> Result<Answer, HostError> {
        let started = Instant::now();
        let from_anyone = caller.role == "anon" && caller.user_id().is_none();
        // The slot first: lookups of unknown names count against the cap too.
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let function = match self.load(name).await {
            Ok(f) if !f.enabled => Err(HostError::Disabled(name.into())),
            other => other,
        };
        let function = match function.and_then(|f| check_body(&f, &request).map(|()| f)) {
            Ok(f) => f,
            Err(e) => {
                self.finish(name, Err(&e), started, from_anyone);
                return Err(e);
            }
        };
        let runtime = tokio::runtime::Handle::current();
        // Set by the HTTP servers (crate::request_id): console lines carry it.
        let request_id = request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(crate::request_id::HEADER))
            .map(|(_, v)| v.clone());
        let capabilities = HostCapabilities::new(
            self.clone(),
            function.clone(),
            caller,
            lineage,
            request_id,
            runtime.clone(),
        );
        let (whole_tx, whole) = tokio::sync::oneshot::channel();
        let (sink, head) = match stream {
            true => {
                let (sink, head) = ChannelSink::new(runtime.clone());
                (Some(sink), Some(head))
            }
            false => (None, None),
        };
        let limits = function.limits;
        let output = function.output.clone();
        let host = self.clone();
        self.invokers.submit(Box::new(move |engine| {
            // The slot is held until the invocation ends, also when its caller has
            // gone away: the concurrency cap counts what runs, not who waits.
            let _slot = slot;
            if whole_tx.is_closed() {
                return; // nobody waits for it any more
            }
            let mut sink = sink;
            let result = engine.invoke_into(
                &function.source,
                request,
                limits,
                Box::new(capabilities),
                sink.as_mut().map(|s| s as &mut dyn crate::engine::BodySink),
            );
            // Counted before the answer goes out, so whoever got it sees it counted.
            {
                let _runtime = runtime.enter(); // health reporting spawns a task
                let failed = result.as_ref().err().cloned().map(HostError::Invoke);
                let status = result.as_ref().map_or(0, |r| r.status);
                let recorded = failed.as_ref().map_or(Ok(status), Err);
                host.finish(&function.name, recorded, started, from_anyone);
            }
            match sink {
                Some(sink) if sink.started() => sink.finish(result.map(|_| ())),
                _ => {
                    let _ = whole_tx.send(result);
                }
            }
        }));
        let died = || InvokeError::Threw("the invocation's thread died".into());
        let Some(head) = head else {
            let response = whole.await.unwrap_or_else(|_| Err(died()))?;
            check_response(&output, &response)?;
            return Ok(Answer::Whole(response));
        };
        // Whichever comes first: the head of a stream (not checked against an
        // output schema: it is sent as it is made), or the whole answer. The
        // head is asked first: a stream that already ended has its head sent
        // *and* the whole-answer channel dropped, and an unbiased select took
        // the dropped channel half of the time ("the thread died").
        tokio::select! {
            biased;
            Ok(head) = head => Ok(Answer::Streamed(head)),
            whole = whole => {
                let response = whole.unwrap_or_else(|_| Err(died()))?;
                check_response(&output, &response)?;
                Ok(Answer::Whole(response))
            }
        }
    }

    /// Whether the database answers now (`SELECT 1` on a pooled session, within
    /// 2 s): what `/health/ready` reports.
    pub async fn ping(&self) -> Result<(), String> {
        let check = async {
            let session = self.db.get().await.map_err(|e| e.to_string())?;
            session
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(Duration::from_secs(2), check)
            .await
            .map_err(|_| "the database did not answer within 2 s".to_string())?
    }

    /// The database pool's size, idle sessions and waiting callers (for metrics).
    pub fn db_status(&self) -> PoolStatus {
        self.db.status()
    }

    /// The deployed function, from a cache younger than `cache_ttl`.
    pub async fn load(&self, name: &str) -> Result<Arc<Deployed>, HostError> {
        if let Some((at, f)) = self.cache.lock().expect("cache lock").get(name) {
            if at.elapsed() < self.config.cache_ttl {
                return f.clone().ok_or_else(|| HostError::NotFound(name.into()));
            }
        }
        let mut session = self
            .db
            .get()
            .await
            .map_err(|e| HostError::Database(e.to_string()))?;
        let tx = session
            .transaction()
            .await
            .map_err(|e| HostError::Database(crate::sql::describe(e)))?;
        // Read with the host's own role: the grants say what it may load.
        tx.execute("SELECT set_config('role', 'spine_functions', true)", &[])
            .await
            .map_err(|e| HostError::Database(crate::sql::describe(e)))?;
        let row = tx
            .query_opt(
                "SELECT source, sha256, manifest, enabled FROM spine.function_source($1)",
                &[&name],
            )
            .await;
        let row = match row {
            Ok(row) => row,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => {
                let mut cache = self.cache.lock().expect("cache lock");
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(name.to_string(), (Instant::now(), None));
                return Err(HostError::NotFound(name.into()));
            }
            Err(e) => return Err(HostError::Database(crate::sql::describe(e))),
        };
        let row = match row {
            Some(row) => row,
            None => {
                let _ = tx.commit().await;
                return Err(HostError::NotFound(name.into()));
            }
        };
        let (input, output) = contracts_of(&tx, name).await?;
        let _ = tx.commit().await;
        // Validated by spine.deploy_function; parsed again with the same code.
        let manifest = Manifest::parse(row.get(2)).map_err(|e| {
            HostError::Database(format!("the stored manifest of {name} is invalid: {e}"))
        })?;
        let function = Arc::new(Deployed {
            name: name.to_string(),
            source: row.get(0),
            sha256: row.get(1),
            limits: self.limits_for(&manifest.limits),
            enabled: row.get(3),
            secrets: manifest.permissions.secrets.read,
            secrets_write: manifest.permissions.secrets.write,
            public: !manifest.verify_jwt,
            act_as: manifest.permissions.users.act_as,
            embeddings: manifest.permissions.ai.embeddings,
            input,
            output,
        });
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(name.to_string(), (Instant::now(), Some(function.clone())));
        Ok(function)
    }

    /// The manifest's `limits` where it sets them, within the host's maximum.
    fn limits_for(&self, asked: &manifest::Limits) -> Limits {
        let (d, max) = (self.config.default_limits, self.config.max_limits);
        let pick =
            |asked: Option<u32>, default: u64, max: u64| asked.map_or(default, u64::from).min(max);
        Limits {
            memory_bytes: (pick(
                asked.memory_mb,
                (d.memory_bytes >> 20) as u64,
                (max.memory_bytes >> 20) as u64,
            ) as usize)
                << 20,
            cpu_ms: pick(asked.cpu_ms, d.cpu_ms, max.cpu_ms),
            wall_ms: pick(asked.wall_ms, d.wall_ms, max.wall_ms),
        }
    }
}

/// The schemas bound to function `name`'s input and output, compiled.
async fn contracts_of(
    tx: &tokio_postgres::Transaction<'_>,
    name: &str,
) -> Result<(Option<Arc<NamedContract>>, Option<Arc<NamedContract>>), HostError> {
    let bound = crate::contracts::load(tx, "function", name)
        .await
        .map_err(|e| match e {
            crate::contracts::LoadError::Database(e) => {
                HostError::Database(crate::sql::describe(e))
            }
            compile => HostError::Database(compile.to_string()),
        })?;
    Ok((bound.input.map(Arc::new), bound.output.map(Arc::new)))
}

/// A request body against the function's input schema. A body that is not JSON
/// breaks any schema; a bodiless request (GET) is not checked.
fn check_body(function: &Deployed, request: &Request) -> Result<(), HostError> {
    match &function.input {
        Some(contract) if !request.body.is_empty() => check_json(contract, &request.body, false),
        _ => Ok(()),
    }
}

/// A whole response body against the function's output schema (2xx only: an
/// error the function answers is not its contract's value).
fn check_response(
    output: &Option<Arc<NamedContract>>,
    response: &Response,
) -> Result<(), HostError> {
    match output {
        Some(contract) if (200..300).contains(&response.status) => {
            check_json(contract, &response.body, true)
        }
        _ => Ok(()),
    }
}

fn check_json(contract: &NamedContract, body: &[u8], output: bool) -> Result<(), HostError> {
    let violations = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => match contract.check(&value) {
            Ok(()) => return Ok(()),
            Err(violations) => violations,
        },
        Err(_) => vec![Violation {
            pointer: String::new(),
            message: "the body is not JSON".into(),
        }],
    };
    Err(HostError::Violates {
        output,
        schema: contract.name.clone(),
        violations,
    })
}
