//! NATS request/reply into Spine: the worker answers `svc.{service}.{verb}`
//! (configurable, e.g. the cells platform's `cbs.{service}.{verb}`) in a queue
//! group, so several workers share the load and each request is answered once.
//!
//! A verb is served by a SQL function exposed with `spine.expose_service`
//! ([`sql`]), or else by the edge function named like the service (the verb is
//! its path). Either runs as the caller the request's JWT names (the
//! `Authorization` header, or the envelope's `authorization`), anon without one.
//! Envelopes and error codes are spine-core's ([`spine_core::service`]).
//!
//! Bounded: at most `max_in_flight` requests run at once per process (excess
//! answered `UNAVAILABLE` at once, not queued), each within `timeout`, payloads
//! up to `max_payload` bytes (`LIMIT` beyond).

mod contracts;
mod function;
mod sql;

use crate::config::{Config, ServicesConfig};
use contracts::VerbContracts;
use futures_util::StreamExt;
use serde_json::{json, Value};
use spine_core::service::{ErrorCode, Reply, Request};
use spine_functions::host::{Caller, Host};
use spine_functions::jwt::Keys;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};

/// How long a verb's SQL function, or its absence, is remembered: exposing or
/// unexposing a verb takes effect within this, and a request saves a round trip.
const TARGET_TTL: std::time::Duration = std::time::Duration::from_secs(1);

type Targets = std::sync::Mutex<HashMap<(String, String), Resolved>>;

/// A verb as the cache knows it: who serves it, and its contracts.
#[derive(Clone)]
struct Resolved {
    at: std::time::Instant,
    target: Target,
    contracts: Arc<VerbContracts>,
}

/// Who serves a verb here.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    /// The SQL function exposed for it (schema-qualified, quoted).
    Sql(String),
    /// The edge function named like the service.
    Function,
    /// Nothing here: another service on the same subjects may answer it.
    NotHere,
}

/// What serving a request needs, shared by the requests in flight.
struct Served {
    config: ServicesConfig,
    db: spine_db::Pool,
    host: Arc<Host>,
    keys: Option<Arc<Keys>>,
    nats: async_nats::Client,
    targets: Targets,
}

pub async fn run(
    config: Arc<Config>,
    host: Arc<Host>,
    keys: Option<Arc<Keys>>,
    shutdown: watch::Receiver<bool>,
) {
    let Some(services) = config.services.clone() else {
        return;
    };
    let db = spine_db::Pool::new(
        &config.database,
        spine_db::PoolOptions {
            max_size: services.max_in_flight.clamp(1, 32),
            ..spine_db::PoolOptions::default()
        },
    );
    let (config, db, host, keys, services) = (&config, &db, &host, &keys, &services);
    crate::supervise::restart_with_backoff("services", shutdown, |mut stop| async move {
        let nats = config.nats.connect().await?;
        let served = Arc::new(Served {
            config: services.clone(),
            db: db.clone(),
            host: host.clone(),
            keys: keys.clone(),
            nats: nats.clone(),
            targets: Default::default(),
        });
        session(served, &mut stop).await
    })
    .await
}

/// Subscribes in the queue group and answers until shutdown; then lets the
/// requests in flight finish (within the timeout).
async fn session(served: Arc<Served>, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
    let subject = served.config.subject.wildcard();
    let mut requests = served
        .nats
        .queue_subscribe(subject.clone(), served.config.queue_group.clone())
        .await?;
    tracing::info!(%subject, group = %served.config.queue_group, "serving NATS requests");
    let in_flight = Arc::new(Semaphore::new(served.config.max_in_flight));
    loop {
        let message = tokio::select! {
            m = requests.next() => match m {
                Some(m) => m,
                None => anyhow::bail!("the NATS subscription ended"),
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(reply_to) = message.reply.clone() else {
            continue; // a publish, not a request: nobody to answer
        };
        let served = served.clone();
        match in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    if let Some(reply) = served.answer(&message).await {
                        served.send(reply_to, &reply).await;
                    }
                    drop(permit);
                });
            }
            // Refused at once, but only for a verb known to be served here:
            // another service's requests are not this worker's to answer.
            Err(_) if served.known_here(&message.subject) => {
                let request =
                    envelope_of(&message.payload).unwrap_or_else(|_| Request::new(Value::Null));
                let reply = Reply::error(
                    &request,
                    ErrorCode::Unavailable,
                    "too many requests in flight here: retry",
                    json!({"max_in_flight": served.config.max_in_flight}),
                );
                served.send(reply_to, &reply).await;
            }
            Err(_) => {}
        }
    }
    let _ = requests.unsubscribe().await;
    let all = served.config.max_in_flight as u32;
    let _ = tokio::time::timeout(served.config.timeout, in_flight.acquire_many(all)).await;
    let _ = served.nats.flush().await;
    Ok(())
}

fn envelope_of(payload: &[u8]) -> Result<Request, serde_json::Error> {
    serde_json::from_slice(payload)
}

impl Served {
    async fn send(&self, to: async_nats::Subject, reply: &Reply) {
        let body = serde_json::to_vec(reply).expect("a reply serializes");
        if let Err(e) = self.nats.publish(to, body.into()).await {
            tracing::warn!(error = %e, "could not send a reply");
        }
    }

    /// The reply to one request (never an error of the loop, whatever it
    /// holds), or None for a verb nothing here serves: cells serving other
    /// services on the same subjects answer those.
    async fn answer(&self, message: &async_nats::Message) -> Option<Reply> {
        let (service, verb) = self.config.subject.split(&message.subject)?;
        let target = match self.target(service, verb).await {
            Ok(Resolved {
                target: Target::NotHere,
                ..
            }) => return None,
            other => other,
        };
        Some(self.answer_served(message, service, verb, target).await)
    }

    async fn answer_served(
        &self,
        message: &async_nats::Message,
        service: &str,
        verb: &str,
        target: Result<Resolved, Failure>,
    ) -> Reply {
        if message.payload.len() > self.config.max_payload {
            return Reply::error(
                &Request::new(Value::Null),
                ErrorCode::Limit,
                format!("the request is over {} bytes", self.config.max_payload),
                json!({"max_payload": self.config.max_payload}),
            );
        }
        let request = match envelope_of(&message.payload) {
            Ok(r) => r,
            Err(e) => {
                return Reply::error(
                    &Request::new(Value::Null),
                    ErrorCode::Validation,
                    format!("not a request envelope: {e}"),
                    json!({"pointer": ""}),
                )
            }
        };
        let resolved = match target {
            Ok(t) => t,
            Err(failure) => {
                return Reply::error(&request, failure.code, failure.message, failure.details)
            }
        };
        let authorization = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Authorization").or_else(|| h.get("authorization")))
            .map(|v| v.as_str().to_string())
            .or_else(|| request.authorization.clone());
        let caller = match self.caller(authorization.as_deref()).await {
            Ok(c) => c,
            Err(message) => {
                return Reply::error(&request, ErrorCode::Forbidden, message, Value::Null)
            }
        };
        if let Err(failure) = resolved.contracts.check_input(&request.data) {
            return Reply::error(&request, failure.code, failure.message, failure.details);
        }
        let served = tokio::time::timeout(
            self.config.timeout,
            self.dispatch(
                &resolved,
                service,
                verb,
                &request,
                caller,
                authorization.is_some(),
            ),
        )
        .await;
        match served {
            Ok(Ok(data)) => Reply::ok(&request, data),
            Ok(Err(failure)) => {
                Reply::error(&request, failure.code, failure.message, failure.details)
            }
            Err(_) => Reply::error(
                &request,
                ErrorCode::Timeout,
                format!(
                    "{service}.{verb} did not answer within {} ms (it may still have run)",
                    self.config.timeout.as_millis()
                ),
                Value::Null,
            ),
        }
    }

    /// Who the request acts for: the JWT's role and claims, or anon.
    async fn caller(&self, authorization: Option<&str>) -> Result<Caller, String> {
        let Some(header) = authorization else {
            return Ok(Caller::anon());
        };
        let Some(keys) = &self.keys else {
            return Err("this worker has no JWT keys (SPINE_JWT_SECRET, SPINE_JWKS_URL)".into());
        };
        keys.verify_header(Some(header))
            .await
            .map(Caller::from_jwt)
            .map_err(|e| e.to_string())
    }

    async fn dispatch(
        &self,
        resolved: &Resolved,
        service: &str,
        verb: &str,
        request: &Request,
        caller: Caller,
        has_token: bool,
    ) -> Result<Value, Failure> {
        let named = format!("{service}.{verb}");
        let contracts = &resolved.contracts;
        match &resolved.target {
            // Checked inside the transaction: a reply that breaks its contract
            // rolls the verb's writes back.
            Target::Sql(function) => {
                let output: &sql::CheckOutput<'_> = &|data| contracts.check_output(&named, data);
                sql::call(
                    &self.db,
                    function,
                    request,
                    &caller,
                    self.config.timeout,
                    contracts.output.is_some().then_some(output),
                )
                .await
            }
            _ => {
                let data =
                    function::call(&self.host, service, verb, request, caller, has_token).await?;
                contracts.check_output(&named, &data)?;
                Ok(data)
            }
        }
    }

    /// Who serves `service.verb` here, from a cache younger than [`TARGET_TTL`]:
    /// an exposed SQL function, else a deployed edge function named like the
    /// service, else nothing.
    async fn target(&self, service: &str, verb: &str) -> Result<Resolved, Failure> {
        let key = (service.to_string(), verb.to_string());
        if let Some(resolved) = self.targets.lock().expect("targets lock").get(&key) {
            if resolved.at.elapsed() < TARGET_TTL {
                return Ok(resolved.clone());
            }
        }
        let target = match sql::target(&self.db, service, verb).await? {
            Some(function) => Target::Sql(function),
            None => match self.host.load(service).await {
                Ok(_) => Target::Function,
                Err(spine_functions::host::HostError::NotFound(_)) => Target::NotHere,
                Err(e) => return Err(Failure::new(ErrorCode::Unavailable, e.to_string())),
            },
        };
        let contracts = match target {
            Target::NotHere => VerbContracts::default(),
            _ => contracts::load(&self.db, service, verb).await?,
        };
        let resolved = Resolved {
            at: std::time::Instant::now(),
            target,
            contracts: Arc::new(contracts),
        };
        let mut targets = self.targets.lock().expect("targets lock");
        if targets.len() >= 4096 {
            targets.clear(); // requests for made-up verbs must not grow it without bound
        }
        targets.insert(key, resolved.clone());
        Ok(resolved)
    }

    /// Whether the cache says `subject`'s verb is served here.
    fn known_here(&self, subject: &str) -> bool {
        let Some((service, verb)) = self.config.subject.split(subject) else {
            return false;
        };
        let key = (service.to_string(), verb.to_string());
        matches!(
            self.targets.lock().expect("targets lock").get(&key),
            Some(Resolved {
                target: Target::Sql(_) | Target::Function,
                ..
            })
        )
    }
}

/// A failed verb, as its reply will say it.
pub(crate) struct Failure {
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            details: Value::Null,
        }
    }
}
