//! `spine.explain(event_id)`: for each rule of the event's owner, whether it was
//! considered (enabled, `on_event` matches), whether its condition matches, whether
//! it fired, and why not — down to the first failing part of an `and`.

use super::cache::Rule;
use super::engine::{self, EventInfo};
use crate::caller;
use crate::error::{internal, SpineError};
use crate::events::Emitted;
use crate::spi_ext::optional_row;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Value};
use spine_core::rules::jsonlogic::{truthy, Expr};

/// An event read back from the outbox.
pub struct StoredEvent {
    id: Uuid,
    event_type: String,
    subject: Option<String>,
    owner: Option<Uuid>,
    data: Value,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    /// Microseconds since 1970-01-01 UTC.
    occurred_at: i64,
}

impl StoredEvent {
    /// The event as it was written.
    pub fn as_emitted(&self) -> Emitted<'_> {
        Emitted {
            id: self.id,
            event_type: &self.event_type,
            subject: self.subject.as_deref(),
            owner_id: self.owner,
            data: &self.data,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            occurred_at: self.occurred_at,
        }
    }
}

/// Loads an event the caller may see (its owner, or a privileged caller).
pub fn load_event(event_id: Uuid) -> Result<StoredEvent, SpineError> {
    let not_found = || SpineError::NotFound {
        kind: "event",
        name: event_id.to_string(),
    };
    let row = Spi::connect(|client| {
        let t = client.select(
            "SELECT type, subject, owner_id, data, correlation_id, causation_id, \
                    (extract(epoch FROM occurred_at) * 1000000)::int8 \
               FROM spine.events WHERE id = $1",
            Some(1),
            &[event_id.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>(Some(StoredEvent {
            id: event_id,
            event_type: r.get::<String>(1)?.unwrap_or_default(),
            subject: r.get::<String>(2)?,
            owner: r.get::<Uuid>(3)?,
            data: r.get::<JsonB>(4)?.map_or(Value::Null, |j| j.0),
            correlation_id: r.get::<Uuid>(5)?.unwrap_or(event_id),
            causation_id: r.get::<Uuid>(6)?,
            occurred_at: r.get::<i64>(7)?.unwrap_or_default(),
        }))
    })
    .map_err(internal("explain: load event"))?
    .ok_or_else(not_found)?;
    let visible = caller::caller_is_privileged()
        || (row.owner.is_some() && row.owner == caller::request_user()?);
    if !visible {
        // The same answer as for a missing event: ids of others' events reveal nothing.
        return Err(not_found());
    }
    Ok(row)
}

/// Why a condition is false: the first falsy operand of a top-level `and`, or the
/// condition itself.
fn failing_part(condition: &Value, ctx: &Value) -> String {
    if let Some(Value::Array(parts)) = condition.get("and") {
        for part in parts {
            if let Ok(e) = Expr::compile(part) {
                if !truthy(&e.eval(ctx)) {
                    return part.to_string();
                }
            }
        }
    }
    condition.to_string()
}

// pgrx needs the row type spelled out in the signature, so clippy's complaint
// about it cannot be met with a type alias.
#[allow(clippy::type_complexity)]
/// For every rule of the event's owner: considered, matches (now), fired, why.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn explain(
    event_id: Option<Uuid>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(rule, String),
            name!(on_event, String),
            name!(considered, bool),
            name!(matches, bool),
            name!(fired, bool),
            name!(reason, String),
            name!(inputs, JsonB),
        ),
    >,
    ErrorReport,
> {
    let event_id = event_id.ok_or(SpineError::NullArgument("event_id"))?;
    let stored = load_event(event_id)?;
    let emitted = stored.as_emitted();
    // System events (no owner) have no rules.
    let Some(owner) = emitted.owner_id else {
        return Ok(TableIterator::new(Vec::new()));
    };
    let event = EventInfo {
        event: &emitted,
        owner,
    };
    let rules: Vec<(Uuid, String, String, Value, Value, bool)> = Spi::connect(|client| {
        let mut out = Vec::new();
        for r in client.select(
            "SELECT id, name, on_event, condition, actions, enabled FROM spine.rules \
             WHERE owner_id = $1 ORDER BY priority DESC, name",
            None,
            &[event.owner.into()],
        )? {
            out.push((
                r.get::<Uuid>(1)?.unwrap_or(event_id),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<JsonB>(4)?.map_or(Value::Null, |j| j.0),
                r.get::<JsonB>(5)?.map_or(Value::Null, |j| j.0),
                r.get::<bool>(6)?.unwrap_or(false),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(internal("explain: rules"))?;
    let mut ctx = json!({"event": event.envelope()});
    engine::complete_context(&mut ctx, &event)?;
    let mut rows = Vec::new();
    for (id, name, on_event, condition, actions, enabled) in rules {
        let rule = match Rule::compile(id, name.clone(), on_event.clone(), &condition, &actions) {
            Ok(r) => r,
            Err(e) => {
                rows.push((
                    name,
                    on_event,
                    false,
                    false,
                    false,
                    format!("does not compile: {e}"),
                    JsonB(json!({})),
                ));
                continue;
            }
        };
        let recorded: Option<(Option<String>, Option<JsonB>, Option<String>)> = optional_row(
            Spi::get_three_with_args::<String, JsonB, String>(
                "SELECT fired_at::text, inputs, stopped FROM spine.rule_firings WHERE rule_id = $1 AND event_id = $2",
                &[id.into(), event_id.into()],
            ),
        )
        .map_err(internal("explain: firings"))?;
        // A match the loop guard stopped is recorded too, with why.
        let (fired, stopped) = match recorded {
            Some((at, inputs, None)) => (Some((at, inputs)), None),
            Some((_, inputs, Some(why))) => (None, Some((why, inputs))),
            None => (None, None),
        };
        let considered = enabled && rule.pattern.matches(event.event_type);
        let matches = considered && truthy(&rule.condition.eval(&ctx));
        let (reason, inputs) = match (&fired, enabled, considered, matches) {
            (None, ..) if stopped.is_some() => {
                let (why, inputs) = stopped.expect("checked");
                (
                    format!("stopped by the loop guard: {why}"),
                    inputs.map_or(json!({}), |j| j.0),
                )
            }
            (Some((at, inputs)), ..) => (
                format!("fired at {}", at.clone().unwrap_or_default()),
                inputs.as_ref().map_or(json!({}), |j| j.0.clone()),
            ),
            (None, false, ..) => ("rule is disabled".to_string(), json!({})),
            (None, true, false, _) => (
                format!("on_event \"{on_event}\" does not match \"{}\"", event.event_type),
                json!({}),
            ),
            (None, true, true, false) => (
                format!("condition is false at {}", failing_part(&condition, &ctx)),
                engine::inputs_of(&rule, &ctx),
            ),
            (None, true, true, true) => (
                "matches now but did not fire: saved or changed after the event, or stopped by the loop guard (spine.rules_max_depth)".to_string(),
                engine::inputs_of(&rule, &ctx),
            ),
        };
        rows.push((
            name,
            on_event,
            considered,
            matches,
            fired.is_some(),
            reason,
            JsonB(inputs),
        ));
    }
    Ok(TableIterator::new(rows))
}
