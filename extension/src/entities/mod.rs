//! Entities: the unified model (`sql/entities.sql`). Every write goes through
//! here so that each create, update and delete emits `data.EntityCreated`,
//! `data.EntityUpdated` (with the changed fields) or `data.EntityDeleted` in the
//! same transaction — which is what rules, search sync and plugins consume.

mod embeddings;

use crate::caller;
use crate::error::{internal, SpineError};
use crate::events::{emit_event, emit_events, NewEvent};
use crate::policy;
use crate::spi_ext::{one_prepared, optional_row, returning_one, run_prepared};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::BuiltinOid::{INT4OID, JSONBOID, TEXTOID, UUIDOID};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Map, Value};
use spine_core::manifest::Action;
use spine_core::{locks, names};

/// Largest entity data (JSON text): it travels in events (512 KiB) with room to spare.
pub const MAX_DATA_BYTES: usize = 256 * 1024;

/// Entity kinds, source names, edge relations ([`names::KIND`]).
pub fn check_kind(kind: &str) -> Result<(), SpineError> {
    if names::KIND.accepts(kind) {
        Ok(())
    } else {
        Err(SpineError::InvalidParameter {
            name: "entity kind",
            reason: format!(
                "\"{kind}\" must be lowercase letters, digits and _, starting with a letter"
            ),
        })
    }
}

/// One batch per owner at a time, until the transaction ends: two concurrent
/// ingest batches naming the same new person would otherwise both miss the other's
/// keys and create two entities, and a record landed by one would look new to the
/// other. `spine.delete_entity` takes it too, so no entity vanishes mid-batch.
pub fn lock_owner(owner: Uuid) -> Result<(), SpineError> {
    run_prepared(
        "SELECT pg_advisory_xact_lock($1, hashtext($2::text))",
        &[INT4OID, UUIDOID],
        &[locks::ENTITY_OWNER.class.into(), owner.into()],
    )
    .map_err(internal("entities: owner lock"))
}

pub fn check_size(data: &Map<String, Value>) -> Result<(), SpineError> {
    let size = spine_core::json::text_len(data);
    if size > MAX_DATA_BYTES {
        return Err(SpineError::TooLarge {
            what: "entity data",
            actual: size,
            limit: MAX_DATA_BYTES,
        });
    }
    Ok(())
}

/// Emits a `data.Entity*` event about entity `id` (subject `entity/<id>`).
pub fn entity_event(
    event_type: &'static str,
    owner: Uuid,
    id: Uuid,
    data: Value,
) -> Result<Uuid, SpineError> {
    emit_event(NewEvent {
        event_type,
        data: JsonB(data),
        subject: Some(&format!("entity/{id}")),
        owner_id: Some(owner),
        correlation_id: None,
        causation_id: None,
    })
}

/// Emits `data.Entity*` events about many entities of `owner` in one statement,
/// in the order given: `(type, entity id, data)`.
pub fn entity_events(
    owner: Uuid,
    events: Vec<(&'static str, Uuid, Value)>,
) -> Result<(), SpineError> {
    let subjects: Vec<String> = events
        .iter()
        .map(|(_, id, _)| format!("entity/{id}"))
        .collect();
    let batch: Vec<NewEvent<'_>> = events
        .into_iter()
        .zip(&subjects)
        .map(|((event_type, _, data), subject)| NewEvent {
            event_type,
            data: JsonB(data),
            subject: Some(subject),
            owner_id: Some(owner),
            correlation_id: None,
            causation_id: None,
        })
        .collect();
    emit_events(&batch)?;
    Ok(())
}

/// Creates an entity and emits `data.EntityCreated`.
pub fn create(owner: Uuid, kind: &str, data: &Map<String, Value>) -> Result<Uuid, SpineError> {
    check_kind(kind)?;
    check_size(data)?;
    let id = one_prepared::<Uuid>(
        "INSERT INTO spine.entities (owner_id, kind, data) VALUES ($1, $2, $3) RETURNING id",
        &[UUIDOID, TEXTOID, JSONBOID],
        &[
            owner.into(),
            kind.into(),
            JsonB(Value::Object(data.clone())).into(),
        ],
    )
    .map_err(internal("entities: create"))?
    .ok_or_else(|| SpineError::Internal {
        context: "entities: create",
        message: "no id".into(),
    })?;
    entity_event(
        "data.EntityCreated",
        owner,
        id,
        json!({"id": id.to_string(), "kind": kind, "fields": data}),
    )?;
    Ok(id)
}

/// An entity's kind and data, as stored.
pub type Stored = (String, Map<String, Value>);

/// Loads (and locks) one of the owner's entities.
pub fn load(owner: Uuid, id: Uuid) -> Result<Option<Stored>, SpineError> {
    let row = optional_row(Spi::get_two_with_args::<String, JsonB>(
        "SELECT kind, data FROM spine.entities WHERE id = $1 AND owner_id = $2 FOR UPDATE",
        &[id.into(), owner.into()],
    ))
    .map_err(internal("entities: load"))?;
    Ok(match row {
        Some((Some(kind), Some(data))) => {
            Some((kind, data.0.as_object().cloned().unwrap_or_default()))
        }
        _ => None,
    })
}

/// Replaces an entity's data, bumping its version, and emits `data.EntityUpdated`
/// with `changed` (`{field: {from, to}}`); does nothing when nothing changed.
pub fn update(
    owner: Uuid,
    id: Uuid,
    kind: &str,
    data: &Map<String, Value>,
    changed: Map<String, Value>,
) -> Result<bool, SpineError> {
    if changed.is_empty() {
        return Ok(false);
    }
    check_size(data)?;
    run_prepared(
        "UPDATE spine.entities SET data = $2, version = version + 1, updated_at = now() WHERE id = $1",
        &[UUIDOID, JSONBOID],
        &[id.into(), JsonB(Value::Object(data.clone())).into()],
    )
    .map_err(internal("entities: update"))?;
    entity_event(
        "data.EntityUpdated",
        owner,
        id,
        updated_event_data(id, kind, changed),
    )?;
    Ok(true)
}

/// The data of a `data.EntityUpdated` event: `{id, kind, changed: {field: {from,
/// to}}}`. An entity may hold up to 256 KiB, so replacing most of a large one
/// gives a diff larger than an event may be (512 KiB); then the event carries
/// only the new values (`truncated: "from"`), or, if even those do not fit, only
/// which fields changed (`{field: {}}`, `truncated: "values"`). The update itself
/// never fails for it.
pub fn updated_event_data(id: Uuid, kind: &str, changed: Map<String, Value>) -> Value {
    let full = json!({"id": id.to_string(), "kind": kind, "changed": changed});
    if spine_core::json::text_len(&full) <= crate::events::MAX_DATA_BYTES {
        return full;
    }
    let Value::Object(mut event) = full else {
        unreachable!("built as an object above")
    };
    let Some(Value::Object(changed)) = event.remove("changed") else {
        unreachable!("built with a changed object above")
    };
    let new_values: Map<String, Value> = changed
        .iter()
        .map(|(field, change)| (field.clone(), json!({"to": change["to"]})))
        .collect();
    let mut smaller = event.clone();
    smaller.insert("changed".into(), Value::Object(new_values));
    smaller.insert("truncated".into(), json!("from"));
    if spine_core::json::text_len(&smaller) <= crate::events::MAX_DATA_BYTES {
        return Value::Object(smaller);
    }
    let names: Map<String, Value> = changed.keys().map(|f| (f.clone(), json!({}))).collect();
    event.insert("changed".into(), Value::Object(names));
    event.insert("truncated".into(), json!("values"));
    Value::Object(event)
}

/// The changed fields between two versions of an entity's data.
pub fn diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut changed = Map::new();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            changed.insert(
                k.clone(),
                json!({"from": old.get(k).cloned().unwrap_or(Value::Null), "to": v}),
            );
        }
    }
    for (k, v) in old {
        if !new.contains_key(k) {
            changed.insert(k.clone(), json!({"from": v, "to": null}));
        }
    }
    changed
}

/// Adds an edge between two of the owner's entities (ignored when present).
pub fn link(owner: Uuid, from: Uuid, rel: &str, to: Uuid) -> Result<(), SpineError> {
    run_prepared(
        "INSERT INTO spine.edges (owner_id, from_id, rel, to_id) \
         SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM spine.entities WHERE id = $2 AND owner_id = $1) \
            AND EXISTS (SELECT 1 FROM spine.entities WHERE id = $4 AND owner_id = $1) \
         ON CONFLICT DO NOTHING",
        &[UUIDOID, UUIDOID, TEXTOID, UUIDOID],
        &[owner.into(), from.into(), rel.into(), to.into()],
    )
    .map_err(internal("entities: link"))
}

/// Creates an entity, or (with `id`) replaces the data of one of the user's
/// entities. Emits data.EntityCreated / data.EntityUpdated. Returns the id.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn upsert_entity(
    kind: Option<&str>,
    data: Option<JsonB>,
    id: default!(Option<Uuid>, "NULL"),
    owner: default!(Option<Uuid>, "NULL"),
) -> Result<Uuid, ErrorReport> {
    let kind = kind.ok_or(SpineError::NullArgument("kind"))?;
    let data = data.ok_or(SpineError::NullArgument("data"))?.0;
    let Value::Object(data) = data else {
        return Err(SpineError::InvalidParameter {
            name: "entity data",
            reason: "must be a JSON object".into(),
        }
        .into());
    };
    let owner = caller::acting_owner(owner, "entities")?;
    policy::require_plugin(Action::EntitiesWrite, kind)?;
    let Some(id) = id else {
        return Ok(create(owner, kind, &data)?);
    };
    let (stored_kind, old) = load(owner, id)?.ok_or_else(|| SpineError::NotFound {
        kind: "entity",
        name: id.to_string(),
    })?;
    if stored_kind != kind {
        return Err(SpineError::InvalidParameter {
            name: "entity kind",
            reason: format!("entity {id} is a {stored_kind}, not a {kind}"),
        }
        .into());
    }
    let changed = diff(&old, &data);
    update(owner, id, kind, &data, changed)?;
    Ok(id)
}

/// Deletes one of the user's entities (its keys and edges go with it) and emits
/// data.EntityDeleted. False when there was none.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn delete_entity(
    id: Option<Uuid>,
    owner: default!(Option<Uuid>, "NULL"),
) -> Result<bool, ErrorReport> {
    let id = id.ok_or(SpineError::NullArgument("id"))?;
    let owner = caller::acting_owner(owner, "entities")?;
    // Not in the middle of an ingest of this owner, which resolves identity keys
    // to entities it then merges into.
    lock_owner(owner)?;
    let kind = optional_row(returning_one::<String>(
        "DELETE FROM spine.entities WHERE id = $1 AND owner_id = $2 RETURNING kind",
        &[id.into(), owner.into()],
    ))
    .map_err(internal("entities: delete"))?
    .flatten();
    let Some(kind) = kind else {
        return Ok(false);
    };
    // Checked after the delete (the kind comes with it); a denial undoes it.
    policy::require_plugin(Action::EntitiesWrite, &kind)?;
    entity_event(
        "data.EntityDeleted",
        owner,
        id,
        json!({"id": id.to_string(), "kind": kind}),
    )?;
    Ok(true)
}

/// Relates two of the user's entities (`rel`: lowercase words, e.g. works_at).
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn add_edge(
    from_id: Option<Uuid>,
    rel: Option<&str>,
    to_id: Option<Uuid>,
    owner: default!(Option<Uuid>, "NULL"),
) -> Result<bool, ErrorReport> {
    let from = from_id.ok_or(SpineError::NullArgument("from_id"))?;
    let to = to_id.ok_or(SpineError::NullArgument("to_id"))?;
    let rel = rel.ok_or(SpineError::NullArgument("rel"))?;
    check_kind(rel).map_err(|_| SpineError::InvalidParameter {
        name: "rel",
        reason: format!("\"{rel}\" must be lowercase letters, digits and _"),
    })?;
    let owner = caller::acting_owner(owner, "entities")?;
    let kinds = Spi::get_one_with_args::<Vec<String>>(
        "SELECT array_agg(kind) FROM spine.entities WHERE owner_id = $1 AND id IN ($2, $3)",
        &[owner.into(), from.into(), to.into()],
    )
    .map_err(internal("entities: edge"))?
    .unwrap_or_default();
    // An edge changes what both ends are related to.
    for kind in &kinds {
        policy::require_plugin(Action::EntitiesWrite, kind)?;
    }
    if kinds.len() < if from == to { 1 } else { 2 } {
        return Err(SpineError::NotFound {
            kind: "entity",
            name: format!("{from} or {to}"),
        }
        .into());
    }
    link(owner, from, rel, to)?;
    Ok(true)
}

#[cfg(test)]
mod event_size_tests {
    use super::updated_event_data;
    use crate::events::MAX_DATA_BYTES;
    use pgrx::Uuid;
    use serde_json::{json, Map, Value};

    fn changes(n: usize, from: &str, to: &str) -> Map<String, Value> {
        (0..n)
            .map(|i| (format!("f{i}"), json!({"from": from, "to": to})))
            .collect()
    }

    /// Small diffs are sent whole; a diff too large for an event drops the old
    /// values, then the new ones, and always names every changed field.
    #[test]
    fn updated_event_fits_the_event_limit() {
        let id = Uuid::from_bytes([7; 16]);
        let small = updated_event_data(id, "person", changes(3, "a", "b"));
        assert_eq!(small["changed"]["f1"], json!({"from": "a", "to": "b"}));
        assert!(small.get("truncated").is_none());

        // 12,000 fields of 12-byte values: the whole diff is ~650 KB, the new
        // values alone ~370 KB.
        let v = "x".repeat(12);
        let big = updated_event_data(id, "person", changes(12_000, &v, &v));
        assert_eq!(big["truncated"], "from");
        assert_eq!(big["changed"]["f11999"], json!({"to": v}));
        assert!(big.to_string().len() <= MAX_DATA_BYTES);

        // New values alone too large: only the names remain.
        let w = "y".repeat(40);
        let huge = updated_event_data(id, "person", changes(12_000, &w, &w));
        assert_eq!(huge["truncated"], "values");
        assert_eq!(huge["changed"].as_object().unwrap().len(), 12_000);
        assert_eq!(huge["changed"]["f0"], json!({}));
        assert!(huge.to_string().len() <= MAX_DATA_BYTES);
    }
}
