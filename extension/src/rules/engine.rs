//! Evaluating rules on an event, in the transaction that emitted it, and running
//! the actions of those that match.
//!
//! The context a condition sees is `{event, entity, state}`: the CloudEvents
//! envelope, the subject entity (when the event's subject is `entity/<id>` of one
//! of the owner's entities: `{id, kind, data, version}`), and the owner's state
//! (`spine.state`); entity and state are read only when a condition reaches for
//! them or a rule fires.
//! Each firing is recorded in `spine.rule_firings` (unique per rule and event: a
//! replayed event never fires a rule twice) and announced as `rules.RuleFired`.

use super::actions::Action;
use super::cache::{self, Rule};
use crate::error::{internal, SpineError};
use crate::events::{self, Emitted, NewEvent};
use crate::gucs;
use crate::spi_ext::{one_prepared, optional_row, run_prepared};
use pgrx::pg_sys::BuiltinOid::{INT4OID, INT8OID, JSONBOID, TEXTOID, UUIDOID};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Map, Value};
use spine_core::jobs::payloads::{FunctionJob, HttpJob};
use spine_core::rules::jsonlogic::truthy;
use std::rc::Rc;

/// An event of an owner, as rules see it: rules belong to owners, so events
/// without one (system events) never reach them.
pub struct EventInfo<'a> {
    pub event: &'a Emitted<'a>,
    pub owner: Uuid,
}

impl<'a> std::ops::Deref for EventInfo<'a> {
    type Target = Emitted<'a>;
    fn deref(&self) -> &Emitted<'a> {
        self.event
    }
}

/// Why a matching rule may not fire here, if it may not: the loop guard.
///
/// Two limits, both read from the firings already recorded (so they hold across
/// transactions too, e.g. a rule → job → function → event → rule loop, as long as
/// the function passes the causation id on):
/// - `spine.rules_max_depth`: how often this rule fired on the event's causal
///   ancestors (the causation links back to the first event);
/// - `spine.rules_max_chain_firings`: how many firings the whole chain (events
///   sharing the correlation id) has had — this bounds fan-out, where rules with
///   several emit actions multiply without any one rule repeating.
///
pub fn loop_guard(rule: &Rule, event: &EventInfo<'_>) -> Result<Guard, SpineError> {
    let max_depth = gucs::rules_max_depth() as i64;
    let counts = Spi::get_two_with_args::<i64, i64>(
        "WITH RECURSIVE ancestors (id, causation_id, hops) AS ( \
             SELECT e.id, e.causation_id, 0 FROM spine.events e WHERE e.id = $1 \
             UNION ALL \
             SELECT e.id, e.causation_id, a.hops + 1 FROM spine.events e \
               JOIN ancestors a ON e.id = a.causation_id WHERE a.hops < $4) \
         SELECT (SELECT count(*) FROM ancestors a JOIN spine.rule_firings f ON f.event_id = a.id \
                  WHERE f.rule_id = $2 AND f.stopped IS NULL), \
                (SELECT count(*) FROM spine.rule_firings f \
                  WHERE f.correlation_id = $3 AND f.stopped IS NULL)",
        &[
            event.id.into(),
            rule.id.into(),
            event.correlation_id.into(),
            (gucs::rules_max_chain_firings() as i64).into(),
        ],
    )
    .map_err(internal("rules: loop guard"))?;
    let (depth, chain) = (counts.0.unwrap_or(0), counts.1.unwrap_or(0));
    Ok(if depth >= max_depth {
        Guard::Stop {
            depth: depth as i32,
            reason: format!(
                "fired {depth} time(s) up this causal chain (spine.rules_max_depth = {max_depth})"
            ),
        }
    } else if chain >= gucs::rules_max_chain_firings() as i64 {
        Guard::Stop {
            depth: depth as i32,
            reason: format!(
                "the chain already had {chain} firings (spine.rules_max_chain_firings)"
            ),
        }
    } else {
        Guard::Fire {
            depth: depth as i32,
        }
    })
}

/// The loop guard's answer, with how often the rule fired up the chain.
pub enum Guard {
    Fire { depth: i32 },
    Stop { depth: i32, reason: String },
}

/// The owner's state as one JSON object.
pub fn load_state(owner: Uuid) -> Result<Value, SpineError> {
    Ok(one_prepared::<JsonB>(
        "SELECT coalesce(jsonb_object_agg(key, value), '{}') FROM spine.state WHERE owner_id = $1",
        &[UUIDOID],
        &[owner.into()],
    )
    .map_err(internal("rules: state"))?
    .map_or(json!({}), |j| j.0))
}

/// The subject entity of an event (`subject` = `entity/<id>`, one of the owner's
/// entities) as `{id, kind, data, version}`, or null.
pub fn load_entity(event: &EventInfo<'_>) -> Result<Value, SpineError> {
    let Some(id) = event
        .subject
        .and_then(|s| s.strip_prefix("entity/"))
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
    else {
        return Ok(Value::Null);
    };
    Ok(one_prepared::<JsonB>(
        "SELECT jsonb_build_object('id', id, 'kind', kind, 'data', data, 'version', version) \
           FROM spine.entities WHERE id = $1 AND owner_id = $2",
        &[UUIDOID, UUIDOID],
        &[Uuid::from_bytes(*id.as_bytes()).into(), event.owner.into()],
    )
    .map_err(internal("rules: entity"))?
    .map_or(Value::Null, |j| j.0))
}

/// Adds the owner's state and the subject entity to an evaluation context.
pub fn complete_context(ctx: &mut Value, event: &EventInfo<'_>) -> Result<(), SpineError> {
    ctx["state"] = load_state(event.owner)?;
    ctx["entity"] = load_entity(event)?;
    Ok(())
}

/// Evaluates the owner's rules on an event that was just written, and fires the
/// ones that match. Returns how many fired.
///
/// Only the rules listening to the event's type whose equality guard the event
/// does not rule out are evaluated ([`cache::OwnerSet::select`]). The owner's
/// state is read from the table only when a condition reaches for it (JsonLogic
/// short-circuits, so `event.x == 1 and state.y == 2` on another event never
/// does) or before the first firing (actions may read or set it).
pub fn on_event(event: &EventInfo<'_>) -> Result<usize, SpineError> {
    let owned = cache::rules_of(event.owner)?;
    // Usually none listen to this type: no envelope built.
    if !owned.listens_to(event.event_type) {
        return Ok(0);
    }
    let ctx = json!({"event": event.envelope()});
    let rules = owned.select(event.event_type, &ctx);
    evaluate(event, ctx, &rules)
}

/// The events listener `_PG_init` registers ([`events::listener`]): runs the
/// rules of each written event's owner, depth-first in the order written (an
/// `emit` action's event is evaluated before the next one of the batch).
pub fn on_emitted(written: &[Emitted<'_>]) -> Result<(), SpineError> {
    for event in written {
        let Some(owner) = event.owner_id else {
            continue;
        };
        on_event(&EventInfo { event, owner })?;
    }
    Ok(())
}

/// [`on_event`] with the candidate rules selected; `ctx` holds the event only
/// (`state` and `entity` are read from their tables when needed).
fn evaluate(
    event: &EventInfo<'_>,
    mut ctx: Value,
    rules: &[Rc<Rule>],
) -> Result<usize, SpineError> {
    let mut fired = 0;
    for rule in rules {
        let partial = ctx.get("state").is_none();
        let first = rule.condition.evaluate(&ctx);
        let mut matches = truthy(&first.value);
        if partial && first.reached_missing_root {
            complete_context(&mut ctx, event)?;
            matches = truthy(&rule.condition.eval_ref(&ctx));
        }
        if !matches {
            continue;
        }
        // A first event (no cause, its own correlation id) starts its chain: until
        // one of its rules has fired (and maybe cascaded) nothing needs counting.
        let starts_chain = event.causation_id.is_none() && event.correlation_id == event.id;
        let guard = if starts_chain && fired == 0 {
            Guard::Fire { depth: 0 }
        } else {
            loop_guard(rule, event)?
        };
        let depth = match guard {
            Guard::Fire { depth } => depth,
            Guard::Stop { depth, reason } => {
                // Recorded, so the owner sees where and why a chain ended.
                record(rule, event, depth, &ctx, Some(&reason))?;
                continue;
            }
        };
        if ctx.get("state").is_none() {
            complete_context(&mut ctx, event)?;
        }
        if fire(rule, event, depth, &mut ctx)? {
            fired += 1;
        }
    }
    Ok(fired)
}

/// The values of the paths the condition read, as recorded with a firing.
pub fn inputs_of(rule: &Rule, ctx: &Value) -> Value {
    let mut inputs = Map::new();
    for path in &rule.inputs {
        let value = spine_core::json::lookup_dotted(ctx, path)
            .cloned()
            .unwrap_or(Value::Null);
        inputs.insert(path.clone(), value);
    }
    Value::Object(inputs)
}

/// Records the firing (once per rule and event) and runs the actions in order.
/// False when the rule had already fired for this event (a replay).
fn fire(
    rule: &Rule,
    event: &EventInfo<'_>,
    depth: i32,
    ctx: &mut Value,
) -> Result<bool, SpineError> {
    let Some(firing) = record(rule, event, depth, ctx, None)? else {
        return Ok(false);
    };
    let mut results = Vec::with_capacity(rule.actions.len());
    for (i, action) in rule.actions.iter().enumerate() {
        let result = run(action, i, rule, event, ctx).map_err(|e| SpineError::InRule {
            rule: rule.name.clone(),
            action: i + 1,
            source: Box::new(e),
        })?;
        results.push(result);
    }
    let results = Value::Array(results);
    run_prepared(
        "UPDATE spine.rule_firings SET actions = $2 WHERE id = $1",
        &[INT8OID, JSONBOID],
        &[firing.into(), JsonB(results.clone()).into()],
    )
    .map_err(internal("rules: record actions"))?;
    // Caused by the event, so a rule listening to rules.* meets its own firing up
    // the chain and does not re-fire on its own announcement.
    events::emit_event(NewEvent {
        event_type: "rules.RuleFired",
        data: JsonB(json!({
            "rule_id": rule.id.to_string(),
            "rule": rule.name,
            "firing_id": firing,
            "event_id": event.id.to_string(),
            "event_type": event.event_type,
            "actions": results,
        })),
        subject: Some(&format!("rule/{}", rule.id)),
        owner_id: Some(event.owner),
        correlation_id: Some(event.correlation_id),
        causation_id: Some(event.id),
    })?;
    Ok(true)
}

/// Records a firing of `rule` on `event` — or, with `stopped`, the match the
/// loop guard stopped and why — once per rule and event; the row's id, or None
/// when the rule had already been recorded for this event (a replay).
fn record(
    rule: &Rule,
    event: &EventInfo<'_>,
    depth: i32,
    ctx: &Value,
    stopped: Option<&str>,
) -> Result<Option<i64>, SpineError> {
    one_prepared::<i64>(
        "INSERT INTO spine.rule_firings \
             (rule_id, owner_id, event_id, event_type, correlation_id, depth, inputs, stopped) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (rule_id, event_id) DO NOTHING RETURNING id",
        &[
            UUIDOID, UUIDOID, UUIDOID, TEXTOID, UUIDOID, INT4OID, JSONBOID, TEXTOID,
        ],
        &[
            rule.id.into(),
            event.owner.into(),
            event.id.into(),
            event.event_type.into(),
            event.correlation_id.into(),
            depth.into(),
            JsonB(inputs_of(rule, ctx)).into(),
            stopped.into(),
        ],
    )
    .map_err(internal("rules: record firing"))
}

/// The idempotency key of the jobs an action enqueues: the event id, the rule and
/// the action's position (a replayed event finds the same key).
fn job_key(event: &EventInfo<'_>, rule: &Rule, index: usize) -> String {
    format!("event:{}:rule:{}:{}", event.id, rule.id, index + 1)
}

fn enqueue(
    queue: &str,
    owner: Uuid,
    payload: Value,
    priority: &str,
    key: &str,
) -> Result<i64, SpineError> {
    one_prepared::<i64>(
        "SELECT spine.enqueue_keyed($1, $2, $3, $4::spine.job_priority, now(), $5, 5)",
        &[TEXTOID, UUIDOID, JSONBOID, TEXTOID, TEXTOID],
        &[
            queue.into(),
            owner.into(),
            JsonB(payload).into(),
            priority.into(),
            key.into(),
        ],
    )
    .map_err(internal("rules: enqueue"))?
    .ok_or_else(|| SpineError::Internal {
        context: "rules: enqueue",
        message: "no job id".into(),
    })
}

/// A user's rule may enqueue only where the user may (the queue exists and accepts
/// users' jobs).
pub fn check_queue_for_users(queue: &str) -> Result<(), SpineError> {
    let open = optional_row(Spi::get_one_with_args::<bool>(
        "SELECT user_enqueue FROM spine.queues WHERE name = $1",
        &[queue.into()],
    ))
    .map_err(internal("rules: queue"))?
    .flatten();
    match open {
        None => Err(SpineError::NotFound {
            kind: "queue",
            name: queue.into(),
        }),
        Some(false) => Err(SpineError::PermissionDenied(format!(
            "queue \"{queue}\" does not accept users' jobs, so rules cannot enqueue into it"
        ))),
        Some(true) => Ok(()),
    }
}

fn run(
    action: &Action,
    index: usize,
    rule: &Rule,
    event: &EventInfo<'_>,
    ctx: &mut Value,
) -> Result<Value, SpineError> {
    let key = job_key(event, rule, index);
    Ok(match action {
        Action::Enqueue {
            queue,
            payload,
            priority,
        } => {
            check_queue_for_users(queue)?;
            let job = enqueue(queue, event.owner, payload.render(ctx), priority, &key)?;
            json!({"enqueue": {"queue": queue, "job_id": job}})
        }
        Action::CallFunction {
            name,
            payload,
            queue,
            priority,
        } => {
            let body = FunctionJob {
                function: name.clone(),
                payload: payload.render(ctx),
                event_id: Some(uuid::Uuid::from_bytes(*event.id.as_bytes())),
                correlation_id: Some(uuid::Uuid::from_bytes(*event.correlation_id.as_bytes())),
                actor: None,
            }
            .to_value();
            let queue = match queue {
                Some(q) => {
                    check_queue_for_users(q)?;
                    q.as_str()
                }
                None => "function",
            };
            let job = enqueue(queue, event.owner, body, priority, &key)?;
            json!({"call_function": {"name": name, "queue": queue, "job_id": job}})
        }
        Action::Webhook {
            url,
            payload,
            headers,
        } => {
            let body = HttpJob {
                url: url.clone(),
                method: Some("POST".into()),
                headers: headers.clone(),
                body: Some(payload.render(ctx)),
                timeout_ms: None,
                correlation_id: Some(uuid::Uuid::from_bytes(*event.correlation_id.as_bytes())),
            }
            .to_value();
            let job = enqueue("http", event.owner, body, "interactive", &key)?;
            json!({"webhook": {"url": url, "job_id": job}})
        }
        Action::Emit { event_type, data } => {
            let id = events::emit_event(NewEvent {
                event_type,
                data: JsonB(data.render(ctx)),
                subject: None,
                owner_id: Some(event.owner),
                correlation_id: Some(event.correlation_id),
                causation_id: Some(event.id),
            })?;
            json!({"emit": {"type": event_type, "event_id": id.to_string()}})
        }
        Action::SetState { key, value } => {
            let value = value.render(ctx);
            super::put_state(event.owner, key, Some(&value))?;
            // Later rules on the same event see the new value.
            if let Some(state) = ctx.get_mut("state").and_then(Value::as_object_mut) {
                state.insert(key.clone(), value.clone());
            }
            json!({"set_state": {"key": key, "value": value}})
        }
    })
}
