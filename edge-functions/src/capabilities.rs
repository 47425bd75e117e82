//! What a function may do outside its sandbox, each step checked before it acts:
//!
//! - `secret`: declared in the manifest, then `spine.authorize(plugin, secrets.read,
//!   name)` for the caller (consent), then read through `spine.plugin_secrets`;
//! - `secret_set`: declared for `secrets.write`, then `spine.authorize(plugin,
//!   secrets.write, name)`, then `spine.set_my_secret` as the caller (stored as
//!   the user's own `<uid>/<NAME>`);
//! - `fetch`: `spine.authorize(plugin, network.fetch, host)`, then the request;
//!   its body is read when the function reads it: whole (`fetch_rest`, for
//!   `text()`, `json()`…) or chunk by chunk as it arrives (`fetch_read`, for
//!   `response.body`: an LLM's tokens relayed as they come);
//! - `embed`: declared in the manifest (`ai.embeddings`), then the host's own
//!   embeddings API with its model (no consent: it is the endpoint the operator
//!   embeds entities with, not a host the plugin chose);
//! - `emit`: `spine.authorize(plugin, events.emit, type)`, then `spine.emit` as
//!   the caller;
//! - `db`: PostgREST's operations (see [`crate::sql`]) in the caller's role with
//!   their JWT claims, so grants and RLS decide, as for the caller's own requests;
//!   with `spine.plugin` set, so entities of kinds the plugin may not read are
//!   invisible and writes to them fail (the database asks `spine.authorize`'s
//!   rules: `entities.read` / `entities.write`), and with `spine.causation_id` set
//!   to the job's event, so what the calls write stays in its chain.
//!
//! Decisions are taken (and audited) in their own committed transaction, so a
//! denial's audit row stays even though the function fails.

use crate::engine::{Capabilities, OpError};
use crate::host::{Caller, Deployed, Host, Lineage};
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

/// Fetched bodies a function may hold unread at once (each holds a connection);
/// a further fetch drops the oldest.
const MAX_OPEN_BODIES: usize = 16;

/// A fetched response whose body the function has not read to its end.
struct OpenBody {
    url: String,
    response: reqwest::Response,
    /// Bytes read so far (the cap counts them all).
    read: usize,
}

impl OpenBody {
    /// The next chunk, or with `whole` everything left (empty at the end);
    /// None at the end of a body read chunk by chunk.
    async fn read(&mut self, whole: bool) -> Result<Option<Vec<u8>>, OpError> {
        let mut bytes = Vec::new();
        loop {
            let chunk = self.response.chunk().await.map_err(|e| {
                let kind = if e.is_timeout() {
                    "TimeoutError"
                } else {
                    "TypeError"
                };
                OpError::new(kind, format!("fetch {}: {e}", self.url))
            })?;
            let Some(chunk) = chunk else {
                return Ok((whole || !bytes.is_empty()).then_some(bytes));
            };
            self.read += chunk.len();
            if self.read > MAX_FETCH_BODY {
                return Err(OpError::new(
                    "TypeError",
                    format!(
                        "fetch {}: the response is larger than {MAX_FETCH_BODY} bytes",
                        self.url
                    ),
                ));
            }
            bytes.extend_from_slice(&chunk);
            if !whole {
                return Ok(Some(bytes));
            }
        }
    }
}

/// Most texts one `Session.run` embeds (the stack's embedder takes 256), and
/// their largest total size.
const MAX_EMBED_INPUTS: usize = 256;
const MAX_EMBED_BYTES: usize = 1 << 20;

pub struct HostCapabilities {
    host: Arc<Host>,
    function: Arc<Deployed>,
    caller: Caller,
    lineage: Lineage,
    /// The HTTP request's id (`x-request-id`), for its console lines.
    request_id: Option<String>,
    runtime: tokio::runtime::Handle,
    /// `plugin_secrets` answers, read once per invocation.
    secrets: Option<HashMap<String, String>>,
    /// Fetched bodies not read to their end, by the id the function holds.
    bodies: HashMap<u64, OpenBody>,
    next_body: u64,
}

impl HostCapabilities {
    pub fn new(
        host: Arc<Host>,
        function: Arc<Deployed>,
        caller: Caller,
        lineage: Lineage,
        request_id: Option<String>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            host,
            function,
            caller,
            lineage,
            request_id,
            runtime,
            secrets: None,
            bodies: HashMap::new(),
            next_body: 0,
        }
    }

    fn principal(&self) -> String {
        format!("plugin:{}", self.function.name)
    }

    /// The claims a decision is asked with: the caller's, except for an anonymous
    /// call of a public function (`verify_jwt: false`), which is bounded by its
    /// manifest like a system job (there is nobody to consent; the operator
    /// deployed it) — until it acts for a user ([`Self::act_as`]).
    fn decision_claims(&self) -> Value {
        if self.function.public && self.caller.user_id().is_none() && self.caller.role == "anon" {
            json!({"role": "service_role"})
        } else {
            self.caller.claims.clone()
        }
    }

    /// Asks `spine.authorize` as the function host's role for the caller.
    async fn authorize(
        &self,
        action: &str,
        resource: &str,
        deadline: Instant,
    ) -> Result<(), OpError> {
        self.authorize_as(&self.decision_claims(), action, resource, deadline)
            .await
    }

    /// Asks `spine.authorize` as the function host's role for the user `claims`
    /// name (whose consent decides, and whom the audit row names).
    async fn authorize_as(
        &self,
        claims: &Value,
        action: &str,
        resource: &str,
        deadline: Instant,
    ) -> Result<(), OpError> {
        let allowed: bool = self
            .in_role("spine_functions", claims, deadline, |tx| {
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

    /// Runs `f` in one transaction as `role` with `claims`, committed; no
    /// statement runs past `deadline` (the invocation's wall clock).
    async fn in_role<T>(
        &self,
        role: &str,
        claims: &Value,
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
            // spine.plugin: entity reads and writes need this plugin's entities
            // permissions; spine.causation_id and spine.correlation_id: what the
            // calls write descends from — the job's event (one chain, which the
            // rules' loop guard follows) or the NATS request and its chain.
            let text = |id: Option<uuid::Uuid>| id.map(|c| c.to_string()).unwrap_or_default();
            let (cause, chain) = (text(self.lineage.cause), text(self.lineage.chain));
            tx.execute(
                "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
                        set_config('statement_timeout', $3, true), \
                        set_config('spine.plugin', $4, true), set_config('spine.causation_id', $5, true), \
                        set_config('spine.correlation_id', $6, true)",
                &[
                    &role,
                    &claims.to_string(),
                    &timeout_ms,
                    &self.function.name,
                    &cause,
                    &chain,
                ],
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
                .in_role("spine_functions", &self.decision_claims(), deadline, |tx| {
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

    /// `ctx.secrets.set(name, value)`: stores the user's own secret `name`
    /// (`spine.set_my_secret`, as the caller), when the manifest declares
    /// `secrets.write` for it and the user consented.
    async fn set_secret(&mut self, arg: &Value, deadline: Instant) -> Result<Value, OpError> {
        let type_error = |m: &str| OpError::new("TypeError", m.to_string());
        let name = arg["name"]
            .as_str()
            .ok_or_else(|| type_error("ctx.secrets.set: a name is required"))?;
        let value = arg["value"]
            .as_str()
            .ok_or_else(|| type_error("ctx.secrets.set: the value must be a string"))?;
        if !self.function.secrets_write.iter().any(|s| s == name) {
            return Err(OpError::new(
                "PermissionDenied",
                format!(
                    "secret {name} is not declared for secrets.write in the manifest of {}",
                    self.function.name
                ),
            ));
        }
        self.authorize("secrets.write", name, deadline).await?;
        let role = self.caller.role.clone();
        let (name, value) = (name.to_string(), value.to_string());
        self.in_role(&role, &self.caller.claims, deadline, |tx| {
            Box::pin(async move {
                tx.execute("SELECT spine.set_my_secret($1, $2)", &[&name, &value])
                    .await
                    .map_err(sql::describe)?;
                Ok(())
            })
        })
        .await?;
        // Read again on the next get: it may now be this user's own value.
        self.secrets = None;
        Ok(Value::Null)
    }

    /// `ctx.actAs(userId)`: from now on the invocation acts for that user (its
    /// database calls, emits, secrets and decisions), when the manifest declares
    /// `users.act_as` and the user consented (`users.act_as:*`). For a public
    /// webhook that has verified whose resource a call is about. Audited with the
    /// user it acts for.
    async fn act_as(&mut self, arg: &Value, deadline: Instant) -> Result<Value, OpError> {
        let user = arg
            .as_str()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .ok_or_else(|| OpError::new("TypeError", "ctx.actAs: a user id (uuid) is required"))?;
        if !self.function.act_as {
            return Err(OpError::new(
                "PermissionDenied",
                format!(
                    "{} does not declare users.act_as in its manifest",
                    self.principal()
                ),
            ));
        }
        let claims = json!({"sub": user.to_string(), "role": "authenticated"});
        self.authorize_as(&claims, "users.act_as", "*", deadline)
            .await?;
        self.caller = Caller {
            role: "authenticated".into(),
            claims,
        };
        self.secrets = None;
        Ok(json!({"id": user.to_string(), "role": "authenticated"}))
    }

    async fn fetch(&mut self, arg: &Value, deadline: Instant) -> Result<Value, OpError> {
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
        let response = request.send().await.map_err(|e| {
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
        if self.bodies.len() >= MAX_OPEN_BODIES {
            // A function that only looks at statuses leaves bodies unread: the
            // oldest one's connection goes (reading it later is a TypeError).
            if let Some(oldest) = self.bodies.keys().min().copied() {
                self.bodies.remove(&oldest);
            }
        }
        // The body stays on the connection until the function reads it.
        self.next_body += 1;
        self.bodies.insert(
            self.next_body,
            OpenBody {
                url: url.to_string(),
                response,
                read: 0,
            },
        );
        Ok(json!({"status": status, "headers": headers, "body": {"fetched": self.next_body}}))
    }

    /// The next chunk of a fetched body as it arrives (`{b64}`), or null at its
    /// end; with `rest`, everything left in one piece (`{text}`, or `{b64}`
    /// when it is not UTF-8). A body read to its end, or that failed, is
    /// forgotten.
    async fn fetch_body(&mut self, arg: &Value, rest: bool) -> Result<Value, OpError> {
        let id = arg.as_u64().unwrap_or_default();
        let Some(open) = self.bodies.get_mut(&id) else {
            return Err(OpError::new(
                "TypeError",
                format!("this fetched body was read to its end, or dropped unread ({MAX_OPEN_BODIES} more were fetched since)"),
            ));
        };
        let read = open.read(rest).await;
        if rest || !matches!(read, Ok(Some(_))) {
            self.bodies.remove(&id);
        }
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        Ok(match read? {
            None => Value::Null,
            // A chunk becomes a Uint8Array (natively, from base64).
            Some(chunk) if !rest => json!({ "b64": b64(&chunk) }),
            Some(all) => match String::from_utf8(all) {
                Ok(text) => json!({ "text": text }),
                Err(e) => json!({ "b64": b64(e.as_bytes()) }),
            },
        })
    }

    async fn embed(&self, arg: &Value, deadline: Instant) -> Result<Value, OpError> {
        let type_error = |m: String| OpError::new("TypeError", m);
        if !self.function.embeddings {
            return Err(OpError::new(
                "PermissionDenied",
                format!(
                    "{} may not embed text: its manifest does not declare \"ai\": {{\"embeddings\": true}}",
                    self.principal()
                ),
            ));
        }
        let Some(api) = &self.host.config.embeddings else {
            return Err(OpError::new(
                "Error",
                "Supabase.ai.Session: this host has no embeddings API (SPINE_EMBEDDINGS_URL is not set)",
            ));
        };
        let model = arg["model"].as_str().unwrap_or_default();
        if !api.is_model(model) {
            return Err(type_error(format!(
                "Supabase.ai.Session({model:?}): this host embeds with {} (SPINE_EMBEDDINGS_MODEL), \
                 the model of the entities' vectors; a query needs the same one",
                api.model
            )));
        }
        let inputs: Vec<String> = serde_json::from_value(arg["input"].clone())
            .map_err(|_| type_error("Session.run: input must be a string or strings".into()))?;
        let bytes: usize = inputs.iter().map(String::len).sum();
        if inputs.is_empty() || inputs.len() > MAX_EMBED_INPUTS || bytes > MAX_EMBED_BYTES {
            return Err(type_error(format!(
                "Session.run: 1 to {MAX_EMBED_INPUTS} texts of at most {MAX_EMBED_BYTES} bytes in all"
            )));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let vectors = api
            .embed(&self.host.http, &inputs, left)
            .await
            .map_err(|e| OpError::new("Error", e.to_string()))?;
        Ok(json!(vectors))
    }

    async fn db(&self, arg: Value, deadline: Instant) -> Result<Value, OpError> {
        let op = arg["op"].as_str().unwrap_or_default();
        let statement = sql::build(op, &arg, &self.host.config.db_schemas)
            .map_err(|e| OpError::new("TypeError", format!("ctx.db.{op}: {e}")))?;
        let role = self.caller.role.clone();
        let result = self
            .in_role(&role, &self.caller.claims, deadline, |tx| {
                Box::pin(async move { sql::run(tx, &statement).await })
            })
            .await;
        // A write the entities permissions refused rolled back with its audit row:
        // decide again in a committed transaction, so the denial stays on record.
        if let Err(e) = &result {
            if let Some((action, kind)) = entity_denial(&e.message, &self.principal()) {
                let _ = self.authorize(action, kind, deadline).await;
            }
        }
        result
    }

    async fn emit(&self, arg: Value, deadline: Instant) -> Result<Value, OpError> {
        let event_type = arg["type"].as_str().unwrap_or_default().to_string();
        self.authorize("events.emit", &event_type, deadline).await?;
        let data = arg.get("data").cloned().unwrap_or(json!({}));
        let subject = arg["subject"].as_str().map(String::from);
        let Lineage { cause, chain } = self.lineage;
        let role = self.caller.role.clone();
        let id = self
            .in_role(&role, &self.caller.claims, deadline, |tx| {
                Box::pin(async move {
                    let row = tx
                        .query_one(
                            "SELECT spine.emit($1, $2, $3, $5, $4)::text",
                            &[&event_type, &data, &subject, &cause, &chain],
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

/// `(action, kind)` of the database's refusal of an entity write for this plugin
/// (`permission denied: plugin:<name> may not entities.write on <kind> for this
/// caller …`).
fn entity_denial<'a>(message: &'a str, principal: &str) -> Option<(&'a str, &'a str)> {
    if !message.contains("SQLSTATE 42501") {
        return None;
    }
    let marker = format!("{principal} may not ");
    let rest = &message[message.find(&marker)? + marker.len()..];
    let (action, rest) = rest.split_once(" on ")?;
    let (kind, _) = rest.split_once(' ')?;
    action.starts_with("entities.").then_some((action, kind))
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
                    "secret_set" => self.set_secret(&arg, deadline).await,
                    "act_as" => self.act_as(&arg, deadline).await,
                    "fetch" => self.fetch(&arg, deadline).await,
                    "fetch_read" => self.fetch_body(&arg, false).await,
                    "fetch_rest" => self.fetch_body(&arg, true).await,
                    "fetch_cancel" => {
                        self.bodies.remove(&arg.as_u64().unwrap_or_default());
                        Ok(Value::Null)
                    }
                    "embed" => self.embed(&arg, deadline).await,
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

    /// A function's `console.*`: the invoker thread is outside any span, so what
    /// the call belongs to is written on the line itself: a job-run call's chain
    /// of events (correlation and causing event), an HTTP call's request id.
    fn log(&mut self, level: &str, message: &str) {
        let function = &self.function.name;
        let correlation_id = self.lineage.chain.map(|c| c.to_string());
        let causation_id = self.lineage.cause.map(|c| c.to_string());
        let request_id = self.request_id.as_deref();
        match level {
            "error" => {
                tracing::error!(%function, correlation_id, causation_id, request_id, "{message}")
            }
            "warn" => {
                tracing::warn!(%function, correlation_id, causation_id, request_id, "{message}")
            }
            "debug" => {
                tracing::debug!(%function, correlation_id, causation_id, request_id, "{message}")
            }
            _ => tracing::info!(%function, correlation_id, causation_id, request_id, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::entity_denial;

    #[test]
    fn reads_the_databases_entity_denials_of_this_plugin_only() {
        let m = "permission denied: plugin:crm may not entities.write on person for this caller (not declared in its manifest, or not consented to) (SQLSTATE 42501)";
        assert_eq!(
            entity_denial(m, "plugin:crm"),
            Some(("entities.write", "person"))
        );
        assert_eq!(entity_denial(m, "plugin:cr"), None);
        assert_eq!(
            entity_denial(&m.replace("42501", "22023"), "plugin:crm"),
            None
        );
        assert_eq!(
            entity_denial(
                "plugin:crm may not secrets.read on X for this caller (SQLSTATE 42501)",
                "plugin:crm"
            ),
            None
        );
    }
}
