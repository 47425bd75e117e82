//! Rules: JsonLogic conditions on events, evaluated in Rust inside the transaction
//! that emitted the event, with actions (enqueue, emit, set_state, call_function,
//! webhook) and a record of every firing. Tables are in `sql/rules.sql`.
//!
//! - [`jsonlogic`]: the condition language, compiled once.
//! - [`template`]: `{{path}}` substitution in action payloads.
//! - [`actions`]: the action list, validated when a rule is saved.
//! - [`cache`]: compiled rules per owner, invalidated when rules change.
//! - [`engine`]: evaluation on each event, firing, actions.
//! - [`explain`]: why a rule did or did not fire for an event.

pub mod actions;
pub mod cache;
pub mod engine;
pub mod explain;

use crate::caller;
use crate::error::{internal, SpineError};
use crate::spi_ext::{one_prepared, optional_row, returning_one, run_prepared};
use actions::Action;
use cache::Rule;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::BuiltinOid::{JSONBOID, TEXTOID, UUIDOID};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::Value;

/// Longest rule name.
const MAX_NAME_LEN: usize = 100;
/// Most rules one user may have: every one is evaluated on each of their events.
const MAX_RULES_PER_OWNER: i64 = 1000;
/// Most state keys one user may have, and the largest value (JSON text).
const MAX_STATE_KEYS: i64 = 1000;
const MAX_STATE_VALUE_BYTES: usize = 64 * 1024;

/// Sets (or, with None, deletes) a key of `owner`'s state, within the limits.
pub fn put_state(owner: Uuid, key: &str, value: Option<&Value>) -> Result<(), SpineError> {
    if key.is_empty() || key.len() > 200 {
        return Err(SpineError::InvalidParameter {
            name: "state key",
            reason: "must be 1 to 200 bytes".into(),
        });
    }
    let Some(value) = value else {
        return run_prepared(
            "DELETE FROM spine.state WHERE owner_id = $1 AND key = $2",
            &[UUIDOID, TEXTOID],
            &[owner.into(), key.into()],
        )
        .map_err(internal("state"));
    };
    let size = spine_core::json::text_len(value);
    if size > MAX_STATE_VALUE_BYTES {
        return Err(SpineError::TooLarge {
            what: "state value",
            actual: size,
            limit: MAX_STATE_VALUE_BYTES,
        });
    }
    // Upsert first; only a new key (xmax = 0: inserted, not updated) can breach
    // the key limit, and the error then undoes the insert.
    let inserted = one_prepared::<bool>(
        "INSERT INTO spine.state (owner_id, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (owner_id, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now() \
         RETURNING xmax = 0",
        &[UUIDOID, TEXTOID, JSONBOID],
        &[owner.into(), key.into(), JsonB(value.clone()).into()],
    )
    .map_err(internal("state"))?
    .unwrap_or(false);
    if !inserted {
        return Ok(());
    }
    let keys = one_prepared::<i64>(
        "SELECT count(*) FROM spine.state WHERE owner_id = $1",
        &[UUIDOID],
        &[owner.into()],
    )
    .map_err(internal("state"))?
    .unwrap_or(0);
    if keys > MAX_STATE_KEYS {
        return Err(SpineError::TooLarge {
            what: "state (keys)",
            actual: keys as usize,
            limit: MAX_STATE_KEYS as usize,
        });
    }
    Ok(())
}

/// Saves (creates or replaces, by name) a rule of the current user (or, for
/// service_role, of `owner`). Everything is validated here: the event pattern,
/// the JsonLogic condition (operators, arities, var paths) and every action, and
/// the queues its enqueue actions name must accept users' jobs. Returns the id.
#[allow(clippy::too_many_arguments)]
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn save_rule(
    name: Option<&str>,
    on_event: Option<&str>,
    condition: Option<JsonB>,
    actions: Option<JsonB>,
    priority: default!(Option<i32>, 0),
    enabled: default!(Option<bool>, true),
    owner: default!(Option<Uuid>, "NULL"),
) -> Result<Uuid, ErrorReport> {
    let priority = priority.ok_or(SpineError::NullArgument("priority"))?;
    let enabled = enabled.ok_or(SpineError::NullArgument("enabled"))?;
    let name = name.ok_or(SpineError::NullArgument("name"))?;
    let on_event = on_event.ok_or(SpineError::NullArgument("on_event"))?;
    let condition = condition.ok_or(SpineError::NullArgument("condition"))?;
    let actions = actions.ok_or(SpineError::NullArgument("actions"))?;
    if name.trim().is_empty() || name.len() > MAX_NAME_LEN {
        return Err(SpineError::InvalidParameter {
            name: "rule name",
            reason: format!("must be 1 to {MAX_NAME_LEN} bytes"),
        }
        .into());
    }
    let owner = caller::acting_owner(owner, "rules")?;
    let compiled = Rule::compile(
        Uuid::from_bytes([0; 16]),
        name.into(),
        on_event.into(),
        &condition.0,
        &actions.0,
    )
    .map_err(|reason| SpineError::InvalidParameter {
        name: "rule",
        reason,
    })?;
    for action in &compiled.actions {
        if let Action::Enqueue { queue, .. } = action {
            engine::check_queue_for_users(queue)?;
        }
    }
    let others = Spi::get_one_with_args::<i64>(
        "SELECT count(*) FROM spine.rules WHERE owner_id = $1 AND name <> $2",
        &[owner.into(), name.into()],
    )
    .map_err(internal("save rule"))?
    .unwrap_or(0);
    if others >= MAX_RULES_PER_OWNER {
        return Err(SpineError::TooLarge {
            what: "rules of one user",
            actual: others as usize + 1,
            limit: MAX_RULES_PER_OWNER as usize,
        }
        .into());
    }
    let id = returning_one::<Uuid>(
        "INSERT INTO spine.rules (owner_id, name, on_event, condition, actions, priority, enabled) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (owner_id, name) DO UPDATE SET on_event = EXCLUDED.on_event, \
             condition = EXCLUDED.condition, actions = EXCLUDED.actions, \
             priority = EXCLUDED.priority, enabled = EXCLUDED.enabled, updated_at = now() \
         RETURNING id",
        &[
            owner.into(),
            name.into(),
            on_event.into(),
            condition.into(),
            actions.into(),
            priority.into(),
            enabled.into(),
        ],
    )
    .map_err(internal("save rule"))?
    .ok_or_else(|| SpineError::Internal {
        context: "save rule",
        message: "no id".into(),
    })?;
    Ok(id)
}

/// Deletes a rule of the current user (or, for service_role, of `owner`); its
/// firings are kept. False when there was none.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn delete_rule(
    name: Option<&str>,
    owner: default!(Option<Uuid>, "NULL"),
) -> Result<bool, ErrorReport> {
    let name = name.ok_or(SpineError::NullArgument("name"))?;
    let owner = caller::acting_owner(owner, "rules")?;
    let deleted = optional_row(returning_one::<bool>(
        "DELETE FROM spine.rules WHERE owner_id = $1 AND name = $2 RETURNING true",
        &[owner.into(), name.into()],
    ))
    .map_err(internal("delete rule"))?
    .flatten()
    .is_some();
    Ok(deleted)
}

/// Sets a key of the current user's state (what rules read as `state.<key>`);
/// NULL deletes it.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn set_state(key: Option<&str>, value: Option<JsonB>) -> Result<(), ErrorReport> {
    let key = key.ok_or(SpineError::NullArgument("key"))?;
    let owner = caller::acting_owner(None, "rules")?;
    Ok(put_state(owner, key, value.as_ref().map(|v| &v.0))?)
}

/// Evaluates the owner's rules again on a stored event (e.g. after adding a rule):
/// rules that already fired for it do nothing (their jobs are keyed by the event),
/// others fire now. Returns how many fired.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn replay_event(event_id: Option<Uuid>) -> Result<i64, ErrorReport> {
    let event_id = event_id.ok_or(SpineError::NullArgument("event_id"))?;
    let stored = explain::load_event(event_id)?;
    let emitted = stored.as_emitted();
    let Some(owner) = emitted.owner_id else {
        return Ok(0);
    };
    Ok(engine::on_event(&engine::EventInfo {
        event: &emitted,
        owner,
    })? as i64)
}

/// Current state value of the user, for SQL callers: `spine.get_state('location')`.
#[pg_extern(security_definer, stable)]
#[search_path(pg_catalog, pg_temp)]
fn get_state(key: Option<&str>) -> Result<Option<JsonB>, ErrorReport> {
    let key = key.ok_or(SpineError::NullArgument("key"))?;
    let Some(owner) = caller::request_user()? else {
        return Ok(None);
    };
    Ok(optional_row(Spi::get_one_with_args::<JsonB>(
        "SELECT value FROM spine.state WHERE owner_id = $1 AND key = $2",
        &[owner.into(), key.into()],
    ))
    .map_err(internal("get state"))?
    .flatten())
}
