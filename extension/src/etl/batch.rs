//! Set-based processing of a batch of new records: one statement per step for
//! the whole batch (key lookup, entity load, entity inserts, entity updates, their
//! events, keys, edges), identity resolution and merging in memory in record
//! order — so two records of one batch naming the same person become one entity,
//! exactly as if they had come one after the other. The caller records what became
//! of each record in `spine.raw_records`.

use crate::entities;
use crate::error::{internal, SpineError};
use crate::spi_ext::run_prepared;
use pgrx::pg_sys::BuiltinOid::{JSONBARRAYOID, TEXTARRAYOID, TEXTOID, UUIDARRAYOID, UUIDOID};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Map, Value};
use spine_core::etl::mapping::{self, Mapping};
use std::collections::HashMap;

/// A record waiting to be mapped.
pub struct Item {
    pub external_id: Option<String>,
    pub record: Value,
}

/// What became of a record: its entity, or why it was rejected. The caller writes
/// it to the record's row in `spine.raw_records`.
pub struct Disposition {
    pub entity: Option<Uuid>,
    pub error: Option<String>,
}

/// What happened to a batch.
#[derive(Default)]
pub struct Counts {
    pub received: i64,
    pub created: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub rejected: i64,
    pub errors: Vec<Value>,
    /// Records whose identity keys named more than one entity: the record went to
    /// one, and the keys of the others stayed where they were.
    pub conflicts: Vec<Value>,
}

impl Counts {
    pub fn json(&self) -> Value {
        json!({"received": self.received, "created": self.created, "updated": self.updated,
               "unchanged": self.unchanged, "rejected": self.rejected, "errors": self.errors,
               "conflicts": self.conflicts})
    }
}

/// What one record did to its entity.
#[derive(Debug)]
enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// A record's entity and what it did to it, or why it was rejected.
type RecordResult = Result<(Uuid, Outcome), String>;

/// An entity as this batch leaves it.
struct Working {
    kind: String,
    data: Map<String, Value>,
    created: bool,
    changed: Map<String, Value>,
}

/// A record that would make its entity too large is rejected, not the batch.
fn fits(data: &Map<String, Value>) -> Result<(), String> {
    entities::check_size(data).map_err(|e| format!("its entity would be too large: {e}"))
}

/// The entity each of these records' external ids last went to in `source`: a
/// new version of a record updates the entity its earlier versions built, even
/// when it has no identity key or its keys changed. One query, by the landing
/// zone's identity index.
pub fn entities_of_records(
    owner: Uuid,
    source: &str,
    items: &[Item],
) -> Result<HashMap<String, Uuid>, SpineError> {
    let ids: Vec<&str> = items
        .iter()
        .filter_map(|i| i.external_id.as_deref())
        .collect();
    let mut found = HashMap::new();
    if ids.is_empty() {
        return Ok(found);
    }
    // Read-write SPI: a fresh snapshot, as in the key lookup below.
    Spi::connect_mut(|client| {
        for r in client.update(
            "SELECT DISTINCT ON (r.external_id) r.external_id, r.entity_id \
               FROM spine.raw_records r \
              WHERE r.owner_id = $1 AND r.source = $2 AND r.external_id = ANY ($3::text[]) \
                AND r.entity_id IS NOT NULL \
              ORDER BY r.external_id, r.id DESC",
            None,
            &[owner.into(), source.into(), ids.into()],
        )? {
            if let (Some(e), Some(id)) = (r.get::<String>(1)?, r.get::<Uuid>(2)?) {
                found.insert(e, id);
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .map_err(internal("etl: earlier versions"))?;
    Ok(found)
}

/// Maps, resolves and writes `items` for `owner` from a source whose entity is
/// `source_entity`; adds to `counts` and returns each item's disposition, in
/// order. `earlier` names the entity of records seen before (by external id, see
/// [`entities_of_records`]). The caller holds [`entities::lock_owner`].
///
/// Six phases, one statement per database step for the whole batch: map, find
/// the keys' entities, load and lock them, resolve and merge in memory, write
/// entities and their events, write keys and provenance edges.
pub fn process(
    owner: Uuid,
    mapping: &Mapping,
    source_entity: Uuid,
    items: Vec<Item>,
    earlier: HashMap<String, Uuid>,
    counts: &mut Counts,
) -> Result<Vec<Disposition>, SpineError> {
    let mapped = map_records(mapping, &items);
    let mut key_owner = key_owners(owner, &mapped)?;
    let mut working = load_locked(owner, key_owner.values().chain(earlier.values()))?;
    // An entity deleted since its keys were read (spine.delete_entity takes the
    // owner lock, but a plain DELETE by an administrator does not) is gone with its
    // keys: forget them, so that a record naming them creates a new entity that
    // gets them.
    key_owner.retain(|_, id| working.contains_key(id.as_bytes()));
    let resolved = resolve(mapping, mapped, &items, key_owner, earlier, &mut working);
    counts.conflicts.extend(resolved.conflicts);
    write_entities(owner, mapping, &resolved.order, &mut working)?;
    write_keys_and_edges(
        owner,
        source_entity,
        resolved.new_keys,
        &resolved.order,
        &working,
    )?;
    Ok(dispositions(resolved.outcome, &items, counts))
}

/// Entities by id bytes (pgrx's Uuid is not `Hash`).
type WorkingSet = HashMap<[u8; 16], (Uuid, Working)>;

/// Identity keys (type, value) and the entity each belongs to.
type KeyOwners = HashMap<(String, String), Uuid>;

/// 1. Maps every record (pure).
fn map_records(mapping: &Mapping, items: &[Item]) -> Vec<Result<mapping::Mapped, String>> {
    items
        .iter()
        .map(|item| {
            if !item.record.is_object() {
                Err("a record must be a JSON object".to_string())
            } else if item.external_id.is_none() {
                Err(
                    "the record has no external id (mapping external_id), or one over 1 KiB"
                        .to_string(),
                )
            } else {
                mapping.apply(&item.record)
            }
        })
        .collect()
}

/// 2. The entities the batch's identity keys already point to: one query.
fn key_owners(
    owner: Uuid,
    mapped: &[Result<mapping::Mapped, String>],
) -> Result<KeyOwners, SpineError> {
    let (types, values): (Vec<String>, Vec<String>) = mapped
        .iter()
        .flatten()
        .flat_map(|m| m.keys.iter().cloned())
        .unzip();
    let mut key_owner = KeyOwners::new();
    if types.is_empty() {
        return Ok(key_owner);
    }
    // Read-write SPI: in READ COMMITTED each statement then takes a new snapshot,
    // so this sees what batches that held the owner lock before us committed.
    Spi::connect_mut(|client| {
        for r in client.update(
            "SELECT k.key_type, k.key_value, k.entity_id FROM spine.entity_keys k \
               JOIN unnest($2::text[], $3::text[]) AS u(t, v) ON k.key_type = u.t AND k.key_value = u.v \
              WHERE k.owner_id = $1",
            None,
            &[owner.into(), types.into(), values.into()],
        )? {
            if let (Some(t), Some(v), Some(e)) = (r.get::<String>(1)?, r.get::<String>(2)?, r.get::<Uuid>(3)?) {
                key_owner.insert((t, v), e);
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .map_err(internal("etl: key lookup"))?;
    Ok(key_owner)
}

/// 3. Loads the existing entities those keys and earlier versions name, locked:
///    one query.
fn load_locked<'a>(
    owner: Uuid,
    ids: impl Iterator<Item = &'a Uuid>,
) -> Result<WorkingSet, SpineError> {
    let mut ids: Vec<Uuid> = ids.copied().collect();
    ids.sort_by_key(|u| *u.as_bytes());
    ids.dedup();
    let mut working = WorkingSet::new();
    if ids.is_empty() {
        return Ok(working);
    }
    Spi::connect_mut(|client| {
        for r in client.update(
            "SELECT id, kind, data FROM spine.entities WHERE owner_id = $1 AND id = ANY ($2) \
             ORDER BY id FOR UPDATE",
            None,
            &[owner.into(), ids.into()],
        )? {
            if let (Some(id), Some(kind), Some(data)) =
                (r.get::<Uuid>(1)?, r.get::<String>(2)?, r.get::<JsonB>(3)?)
            {
                working.insert(
                    *id.as_bytes(),
                    (
                        id,
                        Working {
                            kind,
                            data: data.0.as_object().cloned().unwrap_or_default(),
                            created: false,
                            changed: Map::new(),
                        },
                    ),
                );
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .map_err(internal("etl: load entities"))?;
    Ok(working)
}

/// What resolving a batch decided.
struct Resolved {
    /// Entities the batch touched, in the order it first touched them.
    order: Vec<Uuid>,
    /// Identity keys no entity had: (type, value, entity).
    new_keys: Vec<(String, String, Uuid)>,
    /// Each record's entity and what it did to it, or why it was rejected.
    outcome: Vec<RecordResult>,
    /// Records whose keys named another entity than the one they went to.
    conflicts: Vec<Value>,
}

/// 4. Resolves and merges in record order, in memory (pure: no database).
///
/// A record goes to the entity earlier versions of it built (if that still exists
/// and is of this mapping's kind), else to its first identity key's, else to a
/// new entity. Later versions of a record in the batch follow it, and keys it
/// brings that no entity has become its entity's.
fn resolve(
    mapping: &Mapping,
    mapped: Vec<Result<mapping::Mapped, String>>,
    items: &[Item],
    mut key_owner: KeyOwners,
    mut earlier: HashMap<String, Uuid>,
    working: &mut WorkingSet,
) -> Resolved {
    let mut resolved = Resolved {
        order: Vec::new(),
        new_keys: Vec::new(),
        outcome: Vec::with_capacity(items.len()),
        conflicts: Vec::new(),
    };
    for (mapped, item) in mapped.into_iter().zip(items) {
        let m = match mapped {
            Ok(m) => m,
            Err(reason) => {
                resolved.outcome.push(Err(reason));
                continue;
            }
        };
        let external_id = item.external_id.as_deref().unwrap_or_default();
        let found = earlier
            .get(external_id)
            .copied()
            .filter(|id| {
                working
                    .get(id.as_bytes())
                    .is_some_and(|(_, w)| w.kind == mapping.kind)
            })
            .or_else(|| {
                m.keys
                    .iter()
                    .find_map(|k| key_owner.get(k).copied())
                    .filter(|id| working.contains_key(id.as_bytes()))
            });
        let (id, this) = match found {
            Some(id) => {
                let (_, w) = working.get_mut(id.as_bytes()).expect("loaded above");
                if w.kind != mapping.kind {
                    resolved.outcome.push(Err(format!(
                        "its identity keys belong to entity {id}, a {}, not a {}",
                        w.kind, mapping.kind
                    )));
                    continue;
                }
                let (merged, changed) = mapping.merge(&w.data, &m.data);
                if let Err(reason) = fits(&merged) {
                    resolved.outcome.push(Err(reason));
                    continue;
                }
                let this = if changed.is_empty() {
                    Outcome::Unchanged
                } else {
                    Outcome::Updated
                };
                for (field, change) in changed {
                    // Keep the first "from" of the batch, the last "to".
                    match w.changed.get_mut(&field) {
                        Some(c) => c["to"] = change["to"].clone(),
                        None => {
                            w.changed.insert(field, change);
                        }
                    }
                }
                w.data = merged;
                (id, this)
            }
            None => {
                if let Err(reason) = fits(&m.data) {
                    resolved.outcome.push(Err(reason));
                    continue;
                }
                let id = Uuid::from_bytes(*uuid::Uuid::new_v4().as_bytes());
                working.insert(
                    *id.as_bytes(),
                    (
                        id,
                        Working {
                            kind: mapping.kind.clone(),
                            data: m.data.clone(),
                            created: true,
                            changed: Map::new(),
                        },
                    ),
                );
                (id, Outcome::Created)
            }
        };
        // Keys of this record that belong to another entity stay there: say so.
        for (key_type, key_value) in &m.keys {
            if let Some(other) = key_owner.get(&(key_type.clone(), key_value.clone())) {
                if *other != id {
                    resolved.conflicts.push(json!({
                        "external_id": item.external_id, "entity": id.to_string(),
                        "key": {"type": key_type, "value": key_value}, "belongs_to": other.to_string()
                    }));
                }
            }
        }
        // Later versions of this record in the batch follow it.
        earlier.insert(external_id.to_string(), id);
        if !resolved.order.contains(&id) {
            resolved.order.push(id);
        }
        for k in &m.keys {
            if let std::collections::hash_map::Entry::Vacant(slot) = key_owner.entry(k.clone()) {
                slot.insert(id);
                resolved.new_keys.push((k.0.clone(), k.1.clone(), id));
            }
        }
        resolved.outcome.push(Ok((id, this)));
    }
    resolved
}

/// 5. Writes entities (one insert, one update), then their events in order.
fn write_entities(
    owner: Uuid,
    mapping: &Mapping,
    order: &[Uuid],
    working: &mut WorkingSet,
) -> Result<(), SpineError> {
    let (mut new_ids, mut new_data, mut upd_ids, mut upd_data) = (vec![], vec![], vec![], vec![]);
    for id in order {
        let (_, w) = working.get_mut(id.as_bytes()).expect("resolved above");
        // A field the batch changed and changed back is no change.
        w.changed.retain(|_, c| c["from"] != c["to"]);
        let w = &*w;
        // Sizes were checked record by record in phase 4 ([`fits`]).
        if w.created {
            new_ids.push(*id);
            new_data.push(JsonB(Value::Object(w.data.clone())));
        } else if !w.changed.is_empty() {
            upd_ids.push(*id);
            upd_data.push(JsonB(Value::Object(w.data.clone())));
        }
    }
    if !new_ids.is_empty() {
        run_prepared(
            "INSERT INTO spine.entities (id, owner_id, kind, data) \
             SELECT i, $2, $3, d FROM unnest($1::uuid[], $4::jsonb[]) AS u(i, d)",
            &[UUIDARRAYOID, UUIDOID, TEXTOID, JSONBARRAYOID],
            &[
                new_ids.into(),
                owner.into(),
                mapping.kind.as_str().into(),
                new_data.into(),
            ],
        )
        .map_err(internal("etl: create entities"))?;
    }
    if !upd_ids.is_empty() {
        run_prepared(
            "UPDATE spine.entities e SET data = u.d, version = e.version + 1, updated_at = now() \
               FROM unnest($1::uuid[], $2::jsonb[]) AS u(i, d) WHERE e.id = u.i",
            &[UUIDARRAYOID, JSONBARRAYOID],
            &[upd_ids.into(), upd_data.into()],
        )
        .map_err(internal("etl: update entities"))?;
    }
    let mut events = Vec::with_capacity(order.len());
    for id in order {
        let (_, w) = &working[id.as_bytes()];
        if w.created {
            events.push((
                "data.EntityCreated",
                *id,
                json!({"id": id.to_string(), "kind": w.kind, "fields": w.data}),
            ));
        } else if !w.changed.is_empty() {
            events.push((
                "data.EntityUpdated",
                *id,
                entities::updated_event_data(*id, &w.kind, w.changed.clone()),
            ));
        }
    }
    entities::entity_events(owner, events)
}

/// 6. Writes keys and provenance edges.
///
/// Under the owner lock nobody else writes this owner's keys, and phase 2 found
/// these absent: plain inserts, without the speculative insertion ON CONFLICT
/// costs per row. Under REPEATABLE READ or SERIALIZABLE phase 2 read an older
/// snapshot, and keys a concurrent batch committed since may be missing from it:
/// there ON CONFLICT turns that into a serialization failure (40001), which
/// clients retry, not a 23505.
fn write_keys_and_edges(
    owner: Uuid,
    source_entity: Uuid,
    new_keys: Vec<(String, String, Uuid)>,
    order: &[Uuid],
    working: &WorkingSet,
) -> Result<(), SpineError> {
    let (mut kt, mut kv, mut ke) = (vec![], vec![], vec![]);
    for (t, v, e) in new_keys {
        kt.push(t);
        kv.push(v);
        ke.push(e);
    }
    if !kt.is_empty() {
        run_prepared(
            if crate::spi_ext::snapshot_per_transaction() {
                "INSERT INTO spine.entity_keys (owner_id, key_type, key_value, entity_id) \
                 SELECT $1, t, v, e FROM unnest($2::text[], $3::text[], $4::uuid[]) AS u(t, v, e) \
                 ON CONFLICT DO NOTHING"
            } else {
                "INSERT INTO spine.entity_keys (owner_id, key_type, key_value, entity_id) \
                 SELECT $1, t, v, e FROM unnest($2::text[], $3::text[], $4::uuid[]) AS u(t, v, e)"
            },
            &[UUIDOID, TEXTARRAYOID, TEXTARRAYOID, UUIDARRAYOID],
            &[owner.into(), kt.into(), kv.into(), ke.into()],
        )
        .map_err(internal("etl: keys"))?;
    }
    // A new entity has no edge yet; one that existed may already have this one.
    let (created, existing): (Vec<Uuid>, Vec<Uuid>) = order
        .iter()
        .partition(|id| working[id.as_bytes()].1.created);
    if !created.is_empty() {
        run_prepared(
            "INSERT INTO spine.edges (owner_id, from_id, rel, to_id) \
             SELECT $1, e, 'described_by', $2 FROM unnest($3::uuid[]) AS e",
            &[UUIDOID, UUIDOID, UUIDARRAYOID],
            &[owner.into(), source_entity.into(), created.into()],
        )
        .map_err(internal("etl: edges"))?;
    }
    if !existing.is_empty() {
        run_prepared(
            "INSERT INTO spine.edges (owner_id, from_id, rel, to_id) \
             SELECT $1, e, 'described_by', $2 FROM unnest($3::uuid[]) AS e ON CONFLICT DO NOTHING",
            &[UUIDOID, UUIDOID, UUIDARRAYOID],
            &[owner.into(), source_entity.into(), existing.into()],
        )
        .map_err(internal("etl: edges"))?;
    }
    Ok(())
}

/// Each record's disposition, counted.
fn dispositions(
    outcome: Vec<RecordResult>,
    items: &[Item],
    counts: &mut Counts,
) -> Vec<Disposition> {
    outcome
        .into_iter()
        .zip(items)
        .map(|(result, item)| match result {
            Ok((id, this)) => {
                match this {
                    Outcome::Created => counts.created += 1,
                    Outcome::Updated => counts.updated += 1,
                    Outcome::Unchanged => counts.unchanged += 1,
                }
                Disposition {
                    entity: Some(id),
                    error: None,
                }
            }
            Err(reason) => {
                counts.rejected += 1;
                counts
                    .errors
                    .push(json!({"external_id": item.external_id, "reason": reason}));
                Disposition {
                    entity: None,
                    error: Some(reason),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person_mapping() -> Mapping {
        Mapping::parse(&json!({
            "kind": "person", "external_id": "id",
            "fields": {"name": {"path": "name"}, "email": {"path": "email", "normalize": ["email"]}},
            "identity": ["email"]
        }))
        .unwrap()
    }

    fn item(id: &str, record: Value) -> Item {
        Item {
            external_id: Some(id.into()),
            record,
        }
    }

    fn run(items: &[Item], key_owner: KeyOwners, working: &mut WorkingSet) -> Resolved {
        let mapping = person_mapping();
        let mapped = map_records(&mapping, items);
        resolve(&mapping, mapped, items, key_owner, HashMap::new(), working)
    }

    /// Two records of one batch naming the same new person become one entity,
    /// as if they had come one after the other; the key is new once.
    #[test]
    fn records_sharing_a_key_in_one_batch_become_one_entity() {
        let items = [
            item(
                "a",
                json!({"id": "a", "name": "Ada", "email": "ADA@example.com"}),
            ),
            item(
                "b",
                json!({"id": "b", "name": "Ada L.", "email": "ada@example.com"}),
            ),
        ];
        let mut working = WorkingSet::new();
        let r = run(&items, KeyOwners::new(), &mut working);
        assert_eq!(r.order.len(), 1);
        assert_eq!(r.new_keys.len(), 1);
        let ids: Vec<Uuid> = r.outcome.iter().map(|o| o.as_ref().unwrap().0).collect();
        assert_eq!(ids[0], ids[1]);
        assert!(matches!(r.outcome[0], Ok((_, Outcome::Created))));
        assert!(matches!(r.outcome[1], Ok((_, Outcome::Updated))));
        let (_, w) = &working[r.order[0].as_bytes()];
        assert_eq!(w.data["name"], "Ada L.");
        assert!(w.created);
    }

    /// A record whose key belongs to an entity of another kind is rejected, and
    /// the batch goes on.
    #[test]
    fn a_key_of_another_kind_rejects_the_record_only() {
        let existing = Uuid::from_bytes([7; 16]);
        let mut working = WorkingSet::new();
        working.insert(
            *existing.as_bytes(),
            (
                existing,
                Working {
                    kind: "company".into(),
                    data: Map::new(),
                    created: false,
                    changed: Map::new(),
                },
            ),
        );
        let mut keys = KeyOwners::new();
        keys.insert(("email".into(), "ada@example.com".into()), existing);
        let items = [
            item("a", json!({"id": "a", "email": "ada@example.com"})),
            item("b", json!({"id": "b", "email": "bob@example.com"})),
            item("c", json!("not an object")),
        ];
        let r = run(&items, keys, &mut working);
        assert!(r.outcome[0]
            .as_ref()
            .unwrap_err()
            .contains("a company, not a person"));
        assert!(matches!(r.outcome[1], Ok((_, Outcome::Created))));
        assert!(r.outcome[2].as_ref().unwrap_err().contains("JSON object"));
        let mut counts = Counts::default();
        let d = dispositions(r.outcome, &items, &mut counts);
        assert_eq!((counts.created, counts.rejected), (1, 2));
        assert!(d[0].entity.is_none() && d[1].entity.is_some());
    }
}
