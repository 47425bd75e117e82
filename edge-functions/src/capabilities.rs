//! What a function may do outside its sandbox, each step checked before it acts:
//!
//! - `secret`: declared in the manifest, then `spine.authorize(plugin, secrets.read,
//!   name)` for the caller (consent), then read through `spine.plugin_secrets`;
//! - `fetch`: `spine.authorize(plugin, network.fetch, host)`, then the request;
//! - `emit`: `spine.authorize(plugin, events.emit, type)`, then `spine.emit` as
//!   the caller;
//! - `db`: PostgREST's operations (see [`crate::sql`]) in the caller's role with
//!   their JWT claims, so grants and RLS decide, as for the caller's own requests.
//!
//! Decisions are taken (and audited) in their own committed transaction, so a
//! denial's audit row stays even though the function fails.

use crate::engine::{Capabilities, OpError};
use crate::host::{Caller, Deployed, Host};
use crate::sql;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Headers the HTTP client sets itself: a forged Host or length could aim a
/// function's request elsewhere than the host it was authorized for.
const FRAMING_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

/// Largest response body a function's fetch reads.
const MAX_FETCH_BODY: usize = 10 << 20;

pub struct HostCapabilities {
    host: Arc<Host>,
    function: Arc<Deployed>,
    caller: Caller,
    causation: Option<uuid::Uuid>,
    runtime: tokio::runtime::Handle,
    /// `plugin_secrets` answers, read once per invocation.
    secrets: Option<HashMap<String, String>>,
}

impl HostCapabilities {
    pub fn new(
        host: Arc<Host>,
        function: Arc<Deployed>,
        caller: Caller,
        causation: Option<uuid::Uuid>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            host,
            function,
            caller,
            causation,
            runtime,
            secrets: None,
        }
    }

    fn principal(&self) -> String {
        format!("plugin:{}", self.function.name)
    }

    /// Asks `spine.authorize` as the function host's role for the caller.
    async fn authorize(
        &self,
        action: &str,
        resource: &str,
        deadline: Instant,
    ) -> Result<(), OpError> {
        let allowed: bool = self
            .in_role("spine_functions", deadline, |tx| {
                let (principal, action, resource) =
                    (self.principal(), action.to_string(), resource.to_string());
                Box::pin(async move {
                    let row = tx
                        .query_one(
                            "SELECT spine.authorize($1, $2, $3)",
                            &[&principal, &action, &resource],
                        )
                        .await
                        .map_err(sql::describe)?;
                    Ok(row.get::<_, bool>(0))
                })
            })
            .await?;
        if allowed {
            Ok(())
        } else {
            Err(OpError::new(
                "PermissionDenied",
                format!(
                    "{} may not {action} {resource} for this caller (not declared in its manifest, or not consented to)",
                    self.principal()
                ),
            ))
        }
    }

    /// Runs `f` in one transaction as `role` with the caller's claims, committed;
    /// no statement runs past `deadline` (the invocation's wall clock).
    async fn in_role<T>(
        &self,
        role: &str,
        deadline: Instant,
        f: impl for<'a> FnOnce(
            &'a tokio_postgres::Transaction<'a>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'a>,
        >,
    ) -> Result<T, OpError> {
        let db = |e: String| OpError::new("DatabaseError", e);
        let mut session = self.host.db.get().await.map_err(|e| db(e.to_string()))?;
        // Until the transaction ends below, this session may be mid-statement: if the
        // call is abandoned (wall-clock limit), it must not go back to the pool.
        session.mark_busy();
        let timeout_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .max(1)
            .to_string();
        let out = {
            let tx = session
                .transaction()
                .await
                .map_err(|e| db(sql::describe(e)))?;
            tx.execute(
                "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
                        set_config('statement_timeout', $3, true)",
                &[&role, &self.caller.claims.to_string(), &timeout_ms],
            )
            .await
            .map_err(|e| db(sql::describe(e)))?;
            match f(&tx).await {
                Ok(out) => {
                    tx.commit().await.map_err(|e| db(sql::describe(e)))?;
                    Ok(out)
                }
                Err(e) => {
                    tx.rollback().await.map_err(|e| db(sql::describe(e)))?;
                    Err(db(e))
                }
            }
        };
        session.mark_idle();
        out
    }

    async fn secret(&mut self, name: &str, deadline: Instant) -> Result<Value, OpError> {
        if !self.function.secrets.iter().any(|s| s == name) {
            return Err(OpError::new(
                "PermissionDenied",
                format!(
                    "secret {name} is not declared in the manifest of {}",
                    self.function.name
                ),
            ));
        }
        self.authorize("secrets.read", name, deadline).await?;
        if self.secrets.is_none() {
            let plugin = self.function.name.clone();
            let rows = self
                .in_role("spine_functions", deadline, |tx| {
                    Box::pin(async move {
                        let rows = tx
                            .query(
                                "SELECT name, secret FROM spine.plugin_secrets($1)",
                                &[&plugin],
                            )
                            .await
                            .map_err(sql::describe)?;
                        Ok(rows
                            .iter()
                            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                            .collect::<HashMap<_, _>>())
                    })
                })
                .await?;
            self.secrets = Some(rows);
        }
        Ok(self
            .secrets
            .as_ref()
            .and_then(|s| s.get(name))
            .map_or(Value::Null, |v| json!(v)))
    }

    async fn fetch(&self, arg: &Value, deadline: Instant) -> Result<Value, OpError> {
        let type_error = |m: String| OpError::new("TypeError", m);
        let url = arg["url"]
            .as_str()
            .ok_or_else(|| type_error("fetch: no url".into()))?;
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| type_error(format!("fetch: bad url {url}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(type_error(format!(
                "fetch: scheme {} is not http(s)",
                parsed.scheme()
            )));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| type_error(format!("fetch: {url} has no host")))?;
        self.authorize("network.fetch", host, deadline).await?;
        let method =
            reqwest::Method::from_bytes(arg["method"].as_str().unwrap_or("GET").as_bytes())
                .map_err(|_| type_error("fetch: bad method".into()))?;
        let mut request = self
            .host
            .http
            .request(method, parsed)
            .timeout(deadline.saturating_duration_since(Instant::now()));
        for pair in arg["headers"].as_array().into_iter().flatten() {
            if let (Some(k), Some(v)) = (pair[0].as_str(), pair[1].as_str()) {
                if !FRAMING_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                    request = request.header(k, v);
                }
            }
        }
        match &arg["body"] {
            Value::Object(b) if b.contains_key("text") => {
                request = request.body(b["text"].as_str().unwrap_or_default().to_string())
            }
            Value::Object(b) if b.contains_key("b64") => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b["b64"].as_str().unwrap_or_default())
                    .map_err(|_| type_error("fetch: bad body".into()))?;
                request = request.body(bytes)
            }
            _ => {}
        }
        let mut response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                OpError::new(
                    "TimeoutError",
                    format!("fetch {url}: the wall-clock limit passed"),
                )
            } else {
                OpError::new("TypeError", format!("fetch {url} failed: {e}"))
            }
        })?;
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| OpError::new("TypeError", format!("fetch {url}: {e}")))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_FETCH_BODY {
                return Err(OpError::new(
                    "TypeError",
                    format!("fetch {url}: the response is larger than {MAX_FETCH_BODY} bytes"),
                ));
            }
        }
        let body = match String::from_utf8(body) {
            Ok(text) => json!({ "text": text }),
            Err(e) => {
                json!({ "b64": base64::engine::general_purpose::STANDARD.encode(e.into_bytes()) })
            }
        };
        Ok(json!({"status": status, "headers": headers, "body": body}))
    }

    async fn db(&self, arg: Value, deadline: Instant) -> Result<Value, OpError> {
        let op = arg["op"].as_str().unwrap_or_default();
        let statement = sql::build(op, &arg, &self.host.config.db_schemas)
            .map_err(|e| OpError::new("TypeError", format!("ctx.db.{op}: {e}")))?;
        let role = self.caller.role.clone();
        self.in_role(&role, deadline, |tx| {
            Box::pin(async move { sql::run(tx, &statement).await })
        })
        .await
    }

    async fn emit(&self, arg: Value, deadline: Instant) -> Result<Value, OpError> {
        let event_type = arg["type"].as_str().unwrap_or_default().to_string();
        self.authorize("events.emit", &event_type, deadline).await?;
        let data = arg.get("data").cloned().unwrap_or(json!({}));
        let subject = arg["subject"].as_str().map(String::from);
        let causation = self.causation;
        let role = self.caller.role.clone();
        let id = self
            .in_role(&role, deadline, |tx| {
                Box::pin(async move {
                    let row = tx
                        .query_one(
                            "SELECT spine.emit($1, $2, $3, NULL, $4)::text",
                            &[&event_type, &data, &subject, &causation],
                        )
                        .await
                        .map_err(sql::describe)?;
                    Ok(row.get::<_, String>(0))
                })
            })
            .await?;
        Ok(json!({ "id": id }))
    }
}

impl Capabilities for HostCapabilities {
    fn call(&mut self, op: &str, arg: Value, deadline: Instant) -> Result<Value, OpError> {
        if op == "user" {
            // Known locally: no trip through the runtime.
            return Ok(json!({"id": self.caller.user_id(), "role": self.caller.role}));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let runtime = self.runtime.clone();
        let op = op.to_string();
        runtime.block_on(async {
            let work = async {
                match op.as_str() {
                    "secret" => {
                        self.secret(arg.as_str().unwrap_or_default(), deadline)
                            .await
                    }
                    "fetch" => self.fetch(&arg, deadline).await,
                    "db" => self.db(arg, deadline).await,
                    "emit" => self.emit(arg, deadline).await,
                    other => Err(OpError::new(
                        "TypeError",
                        format!("no host operation {other}"),
                    )),
                }
            };
            tokio::time::timeout(left, work).await.unwrap_or_else(|_| {
                Err(OpError::new(
                    "TimeoutError",
                    format!("{op}: the wall-clock limit passed"),
                ))
            })
        })
    }

    fn log(&mut self, level: &str, message: &str) {
        let function = &self.function.name;
        match level {
            "error" => tracing::error!(%function, "{message}"),
            "warn" => tracing::warn!(%function, "{message}"),
            "debug" => tracing::debug!(%function, "{message}"),
            _ => tracing::info!(%function, "{message}"),
        }
    }
}
