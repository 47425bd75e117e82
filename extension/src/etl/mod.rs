//! ETL: raw connector records → entities (`sql/etl.sql`).
//!
//! - [`mapping`]: the declarative mapping, validated when a source is saved.
//! - [`normalize`]: trim, lowercase, email, E.164 phone, timestamp, number, boolean.
//!
//! `spine.ingest(source, records)` skips the records it has seen before (same
//! source, external id and payload hash: they change nothing and emit nothing),
//! maps the others, resolves their identity keys to an existing entity or creates
//! one, links the entity to the source (edge `described_by`), emits
//! `connector.DataReceived` plus the entity events, and lands each new record in
//! `spine.raw_records` once, with its outcome. A record that fails is kept with
//! its error and reported; it never aborts the batch.

mod backfill;
pub mod batch;

use crate::entities;
use crate::error::{internal, SpineError};
use crate::events::{emit_event, NewEvent};
use crate::spi_ext::{optional_row, returning_one, run_prepared};
use batch::Counts;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::BuiltinOid::{
    BYTEAARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TEXTOID, UUIDARRAYOID, UUIDOID,
};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use spine_core::etl::mapping::Mapping;
use spine_core::manifest::Action;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// Most records in one ingest call.
const MAX_BATCH: usize = 10_000;

/// A source ready to ingest into: its mapping compiled, and its entity.
struct Source {
    mapping: Rc<Mapping>,
    entity: Uuid,
}

// Compiled mappings per backend (a backend is one thread), keyed by owner, source
// name and the source's updated_at: saving a source changes the key.
thread_local! {
    static COMPILED: RefCell<HashMap<(Uuid, String, String), Rc<Mapping>>> = RefCell::new(HashMap::new());
}

fn check_name(name: &str) -> Result<(), SpineError> {
    entities::check_kind(name).map_err(|_| SpineError::InvalidParameter {
        name: "source name",
        reason: format!(
            "\"{name}\" must be lowercase letters, digits and _, starting with a letter"
        ),
    })
}

fn load_source(owner: Uuid, name: &str) -> Result<Source, SpineError> {
    let row = Spi::connect(|client| {
        let t = client.select(
            "SELECT mapping, entity_id, updated_at::text FROM spine.sources WHERE owner_id = $1 AND name = $2",
            Some(1),
            &[owner.into(), name.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>(Some((
            r.get::<JsonB>(1)?,
            r.get::<Uuid>(2)?,
            r.get::<String>(3)?.unwrap_or_default(),
        )))
    })
    .map_err(internal("etl: load source"))?;
    let Some((Some(mapping), Some(entity), version)) = row else {
        return Err(SpineError::NotFound {
            kind: "source",
            name: name.into(),
        });
    };
    let key = (owner, name.to_string(), version);
    if let Some(found) = COMPILED.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(Source {
            mapping: found,
            entity,
        });
    }
    let compiled = Rc::new(
        Mapping::parse(&mapping.0).map_err(|reason| SpineError::Internal {
            context: "etl: stored mapping no longer compiles",
            message: reason,
        })?,
    );
    COMPILED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(key, compiled.clone());
    });
    Ok(Source {
        mapping: compiled,
        entity,
    })
}

/// Creates or replaces a source of the user (or, for service_role, of `owner`)
/// with its mapping, validated here. Returns the source's entity id.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn save_source(
    name: Option<&str>,
    mapping: Option<JsonB>,
    owner: default!(Option<Uuid>, "NULL"),
) -> Result<Uuid, ErrorReport> {
    let name = name.ok_or(SpineError::NullArgument("name"))?;
    let mapping = mapping.ok_or(SpineError::NullArgument("mapping"))?;
    check_name(name)?;
    Mapping::parse(&mapping.0).map_err(|reason| SpineError::InvalidParameter {
        name: "mapping",
        reason,
    })?;
    let owner = crate::caller::acting_owner(owner, "sources")?;
    let existing = optional_row(returning_one::<Uuid>(
        "UPDATE spine.sources SET mapping = $3, updated_at = clock_timestamp() \
         WHERE owner_id = $1 AND name = $2 RETURNING entity_id",
        &[owner.into(), name.into(), JsonB(mapping.0.clone()).into()],
    ))
    .map_err(internal("etl: save source"))?
    .flatten();
    if let Some(entity) = existing {
        return Ok(entity);
    }
    let mut data = Map::new();
    data.insert("name".into(), json!(name));
    let entity = entities::create(owner, "source", &data)?;
    Spi::run_with_args(
        "INSERT INTO spine.sources (owner_id, name, mapping, entity_id) VALUES ($1, $2, $3, $4)",
        &[owner.into(), name.into(), mapping.into(), entity.into()],
    )
    .map_err(internal("etl: save source"))?;
    Ok(entity)
}

/// Announces what a call changed; a call that changed nothing (a re-sync of
/// unchanged records) announces nothing, so it does not wake rules.
fn data_received(owner: Uuid, source: &str, counts: &Counts, what: &str) -> Result<(), SpineError> {
    // Rejected records are news when they arrive, not when a reprocess leaves them
    // rejected.
    let rejected_news = if what == "ingest" { counts.rejected } else { 0 };
    if counts.created + counts.updated + rejected_news == 0 {
        return Ok(());
    }
    let mut data = counts.json();
    data["source"] = json!(source);
    data["operation"] = json!(what);
    if let Some(m) = data.as_object_mut() {
        m.remove("errors");
        m.remove("conflicts");
    }
    emit_event(NewEvent {
        event_type: "connector.DataReceived",
        data: JsonB(data),
        subject: Some(&format!("source/{source}")),
        owner_id: Some(owner),
        correlation_id: None,
        causation_id: None,
    })?;
    Ok(())
}

/// Lands, maps and upserts a batch of raw records of `source`; returns
/// `{received, created, updated, unchanged, rejected, errors: [{external_id, reason}],
/// conflicts: [{external_id, entity, key, belongs_to}]}`.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn ingest(
    source: Option<&str>,
    records: Option<JsonB>,
    owner: default!(Option<Uuid>, "NULL"),
) -> Result<JsonB, ErrorReport> {
    let name = source.ok_or(SpineError::NullArgument("source"))?;
    let records = records.ok_or(SpineError::NullArgument("records"))?.0;
    let Value::Array(records) = records else {
        return Err(SpineError::InvalidParameter {
            name: "records",
            reason: "must be a JSON array of objects".into(),
        }
        .into());
    };
    if records.len() > MAX_BATCH {
        return Err(SpineError::InvalidParameter {
            name: "records",
            reason: format!("{} records; at most {MAX_BATCH} per call", records.len()),
        }
        .into());
    }
    let owner = crate::caller::acting_owner(owner, "sources")?;
    let src = load_source(owner, name)?;
    crate::policy::require_plugin(Action::EntitiesWrite, &src.mapping.kind)?;
    entities::lock_owner(owner)?;
    let mut counts = Counts {
        received: records.len() as i64,
        ..Counts::default()
    };
    let external_ids: Vec<Option<String>> =
        records.iter().map(|r| src.mapping.external_id(r)).collect();
    // Serialised once: hashed here, and parsed again by the landing INSERT.
    let mut texts: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect();
    let mut hashes: Vec<Vec<u8>> = texts
        .iter()
        .map(|t| Sha256::digest(t.as_bytes()).to_vec())
        .collect();
    // New: neither landed before (same external id and payload hash) nor earlier in
    // this batch. The owner lock keeps this true until the landing below.
    let seen = landed_before(owner, name, &external_ids, &hashes)?;
    let mut taken: HashSet<RecordKey> = HashSet::new();
    let new: Vec<usize> = (0..records.len())
        .filter(|&i| {
            let key = (external_ids[i].clone(), hashes[i].clone());
            !seen.contains(&key) && taken.insert(key)
        })
        .collect();
    // Seen before, byte for byte: nothing to do.
    counts.unchanged += (records.len() - new.len()) as i64;
    let mut records: Vec<Option<Value>> = records.into_iter().map(Some).collect();
    let items: Vec<batch::Item> = new
        .iter()
        .map(|&i| batch::Item {
            external_id: external_ids[i].clone(),
            record: records[i].take().unwrap_or(Value::Null),
        })
        .collect();
    let earlier = batch::entities_of_records(owner, name, &items)?;
    let dispositions =
        batch::process(owner, &src.mapping, src.entity, items, earlier, &mut counts)?;
    // Land the new records once, with what became of them.
    let mut land = Landing::default();
    for (&i, d) in new.iter().zip(dispositions) {
        land.external_ids.push(external_ids[i].clone());
        land.payloads.push(std::mem::take(&mut texts[i]));
        land.hashes.push(std::mem::take(&mut hashes[i]));
        land.errors.push(d.error);
        land.entities.push(d.entity);
    }
    land.write(owner, name)?;
    data_received(owner, name, &counts, "ingest")?;
    Ok(JsonB(counts.json()))
}

/// What makes a raw record the same record: its external id and payload hash.
type RecordKey = (Option<String>, Vec<u8>);

/// The (external id, payload hash) pairs among these that `source` has landed.
fn landed_before(
    owner: Uuid,
    source: &str,
    external_ids: &[Option<String>],
    hashes: &[Vec<u8>],
) -> Result<HashSet<RecordKey>, SpineError> {
    // Records without an external id are matched by hash alone (the identity index
    // treats NULLs as equal); a separate probe, so the join stays an index lookup.
    let without_id: Vec<Vec<u8>> = external_ids
        .iter()
        .zip(hashes)
        .filter(|(e, _)| e.is_none())
        .map(|(_, h)| h.clone())
        .collect();
    // Read-write SPI: in READ COMMITTED each statement then takes a new snapshot, so
    // this sees records that batches holding the owner lock before us landed.
    Spi::connect_mut(|client| {
        let mut seen = HashSet::new();
        for r in client.update(
            "SELECT r.external_id, r.payload_hash \
               FROM unnest($3::text[], $4::bytea[]) AS u(e, h) \
               JOIN spine.raw_records r \
                 ON r.owner_id = $1 AND r.source = $2 AND r.external_id = u.e AND r.payload_hash = u.h \
             UNION ALL \
             SELECT NULL, r.payload_hash FROM spine.raw_records r \
              WHERE r.owner_id = $1 AND r.source = $2 AND r.external_id IS NULL \
                AND r.payload_hash = ANY ($5::bytea[])",
            None,
            &[
                owner.into(),
                source.into(),
                external_ids.to_vec().into(),
                hashes.to_vec().into(),
                without_id.into(),
            ],
        )? {
            seen.insert((
                r.get::<String>(1)?,
                r.get::<Vec<u8>>(2)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(seen)
    })
    .map_err(internal("etl: seen records"))
}

/// New raw records with their outcome, landed in one statement.
#[derive(Default)]
struct Landing {
    external_ids: Vec<Option<String>>,
    payloads: Vec<String>,
    hashes: Vec<Vec<u8>>,
    errors: Vec<Option<String>>,
    entities: Vec<Option<Uuid>>,
}

impl Landing {
    fn write(self, owner: Uuid, source: &str) -> Result<(), SpineError> {
        if self.payloads.is_empty() {
            return Ok(());
        }
        run_prepared(
            "INSERT INTO spine.raw_records \
                    (owner_id, source, external_id, payload, payload_hash, status, error, entity_id, processed_at) \
             SELECT $1, $2, e, p::jsonb, h, CASE WHEN err IS NULL THEN 'processed' ELSE 'rejected' END, \
                    err, ent, now() \
               FROM unnest($3::text[], $4::text[], $5::bytea[], $6::text[], $7::uuid[]) \
                    WITH ORDINALITY AS u(e, p, h, err, ent, n) \
              ORDER BY n \
             ON CONFLICT (owner_id, source, external_id, payload_hash) DO NOTHING",
            &[
                UUIDOID,
                TEXTOID,
                TEXTARRAYOID,
                TEXTARRAYOID,
                BYTEAARRAYOID,
                TEXTARRAYOID,
                UUIDARRAYOID,
            ],
            &[
                owner.into(),
                source.into(),
                self.external_ids.into(),
                self.payloads.into(),
                self.hashes.into(),
                self.errors.into(),
                self.entities.into(),
            ],
        )
        .map_err(internal("etl: land records"))
    }
}

/// Those of `records` (by raw id) of which a later version, under the external id
/// the current mapping reads, was processed.
fn replaced_later(
    owner: Uuid,
    source: &str,
    records: &[&Rejected],
) -> Result<HashSet<i64>, SpineError> {
    let (ids, external_ids): (Vec<i64>, Vec<Option<String>>) = records
        .iter()
        .map(|r| (r.raw_id, r.external_id.clone()))
        .unzip();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    Spi::connect_mut(|client| {
        let mut found = HashSet::new();
        for r in client.update(
            "SELECT u.i FROM unnest($3::bigint[], $4::text[]) AS u(i, x) \
              WHERE EXISTS (SELECT 1 FROM spine.raw_records n \
                             WHERE n.owner_id = $1 AND n.source = $2 AND n.external_id = u.x \
                               AND n.id > u.i AND n.status = 'processed')",
            None,
            &[owner.into(), source.into(), ids.into(), external_ids.into()],
        )? {
            if let Some(id) = r.get::<i64>(1)? {
                found.insert(id);
            }
        }
        Ok::<_, pgrx::spi::SpiError>(found)
    })
    .map_err(internal("etl: reprocess"))
}

/// A rejected raw record, read again by [`reprocess`].
struct Rejected {
    raw_id: i64,
    /// As the current mapping reads it.
    external_id: Option<String>,
    /// As it was landed.
    landed_as: Option<String>,
    hash: Vec<u8>,
    record: Value,
}

/// Maps the rejected raw records of `source` again (after its mapping was fixed);
/// returns the same counts as ingest.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn reprocess(
    source: Option<&str>,
    owner: default!(Option<Uuid>, "NULL"),
) -> Result<JsonB, ErrorReport> {
    let name = source.ok_or(SpineError::NullArgument("source"))?;
    let owner = crate::caller::acting_owner(owner, "sources")?;
    let src = load_source(owner, name)?;
    crate::policy::require_plugin(Action::EntitiesWrite, &src.mapping.kind)?;
    entities::lock_owner(owner)?;
    // A rejected version that a later version of the same record (same external id)
    // has replaced is superseded, not applied over it.
    Spi::run_with_args(
        "UPDATE spine.raw_records r SET status = 'superseded' \
          WHERE r.owner_id = $1 AND r.source = $2 AND r.status = 'rejected' \
            AND EXISTS (SELECT 1 FROM spine.raw_records n \
                         WHERE n.owner_id = r.owner_id AND n.source = r.source \
                           AND n.external_id = r.external_id AND n.id > r.id AND n.status = 'processed')",
        &[owner.into(), name.into()],
    )
    .map_err(internal("etl: reprocess"))?;
    let rejected = Spi::connect_mut(|client| {
        let mut out = Vec::new();
        for r in client.update(
            "SELECT id, payload, external_id, payload_hash FROM spine.raw_records \
             WHERE owner_id = $1 AND source = $2 AND status = 'rejected' ORDER BY id FOR UPDATE",
            None,
            &[owner.into(), name.into()],
        )? {
            let record = r.get::<JsonB>(2)?.map_or(Value::Null, |j| j.0);
            out.push(Rejected {
                raw_id: r.get::<i64>(1)?.unwrap_or_default(),
                // With the current mapping: a fixed external_id path applies too.
                external_id: src.mapping.external_id(&record),
                landed_as: r.get::<String>(3)?,
                hash: r.get::<Vec<u8>>(4)?.unwrap_or_default(),
                record,
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(internal("etl: reprocess"))?;
    // A record whose external id the current mapping reads differently is landed
    // again under that id, so a later ingest of it is recognised; unless it landed
    // under that id already (ingested again after the fix), or a later version of
    // it was processed: then this copy is superseded, as above.
    let renamed: Vec<&Rejected> = rejected
        .iter()
        .filter(|r| r.external_id != r.landed_as)
        .collect();
    let landed_already = landed_before(
        owner,
        name,
        &renamed
            .iter()
            .map(|r| r.external_id.clone())
            .collect::<Vec<_>>(),
        &renamed.iter().map(|r| r.hash.clone()).collect::<Vec<_>>(),
    )?;
    let replaced = replaced_later(owner, name, &renamed)?;
    // Copies of one record landed under different ids (the mapping's external_id
    // changed more than once) come together under the new one: the newest stays.
    let mut newest: HashMap<RecordKey, i64> = HashMap::new();
    for r in &renamed {
        let id = newest
            .entry((r.external_id.clone(), r.hash.clone()))
            .or_insert(r.raw_id);
        *id = (*id).max(r.raw_id);
    }
    let (duplicates, rejected): (Vec<Rejected>, Vec<Rejected>) =
        rejected.into_iter().partition(|r| {
            let key = (r.external_id.clone(), r.hash.clone());
            r.external_id != r.landed_as
                && (replaced.contains(&r.raw_id)
                    || landed_already.contains(&key)
                    || newest.get(&key) != Some(&r.raw_id))
        });
    if !duplicates.is_empty() {
        run_prepared(
            "UPDATE spine.raw_records SET status = 'superseded' WHERE id = ANY ($1)",
            &[INT8ARRAYOID],
            &[duplicates
                .iter()
                .map(|r| r.raw_id)
                .collect::<Vec<_>>()
                .into()],
        )
        .map_err(internal("etl: reprocess"))?;
    }
    let mut raw_ids = Vec::with_capacity(rejected.len());
    let mut landed_ids = Vec::with_capacity(rejected.len());
    let items: Vec<batch::Item> = rejected
        .into_iter()
        .map(|r| {
            raw_ids.push(r.raw_id);
            landed_ids.push(r.external_id.clone());
            batch::Item {
                external_id: r.external_id,
                record: r.record,
            }
        })
        .collect();
    let mut counts = Counts {
        received: items.len() as i64,
        ..Counts::default()
    };
    let earlier = batch::entities_of_records(owner, name, &items)?;
    let dispositions =
        batch::process(owner, &src.mapping, src.entity, items, earlier, &mut counts)?;
    let (errors, entities): (Vec<Option<String>>, Vec<Option<Uuid>>) = dispositions
        .into_iter()
        .map(|d| (d.error, d.entity))
        .unzip();
    if !raw_ids.is_empty() {
        run_prepared(
            "UPDATE spine.raw_records r \
                SET status = CASE WHEN u.err IS NULL THEN 'processed' ELSE 'rejected' END, \
                    error = u.err, entity_id = u.e, external_id = u.x, processed_at = now() \
               FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::text[]) AS u(i, err, e, x) \
              WHERE r.id = u.i",
            &[INT8ARRAYOID, TEXTARRAYOID, UUIDARRAYOID, TEXTARRAYOID],
            &[
                raw_ids.into(),
                errors.into(),
                entities.into(),
                landed_ids.into(),
            ],
        )
        .map_err(internal("etl: record status"))?;
    }
    data_received(owner, name, &counts, "reprocess")?;
    Ok(JsonB(counts.json()))
}

/// Gives the entities a source built the identity keys its processed records
/// have under today's normalizers (after an upgrade changed them, e.g. the phone
/// normalizer's move to libphonenumber's metadata): the latest processed version
/// of each record is mapped again and every key it yields that no entity holds is
/// added to the entity that record built. Keys already held stay as they are, so
/// records in the old form and in the new one both find the entity; a new key
/// another entity holds is reported as a conflict and not moved. Returns
/// `{records, keys_added, conflicts, unmappable}`.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn rekey(
    source: Option<&str>,
    owner: default!(Option<Uuid>, "NULL"),
) -> Result<JsonB, ErrorReport> {
    let name = source.ok_or(SpineError::NullArgument("source"))?;
    let owner = crate::caller::acting_owner(owner, "sources")?;
    let src = load_source(owner, name)?;
    crate::policy::require_plugin(Action::EntitiesWrite, &src.mapping.kind)?;
    entities::lock_owner(owner)?;
    let records = Spi::connect(|client| {
        let mut out = Vec::new();
        // One row per record (a record without an external id is its own), the
        // latest processed version, whose entity still exists.
        for r in client.select(
            "SELECT DISTINCT ON (coalesce(r.external_id, 'raw:' || r.id)) r.payload, r.entity_id \
               FROM spine.raw_records r JOIN spine.entities e ON e.id = r.entity_id \
              WHERE r.owner_id = $1 AND r.source = $2 AND r.status = 'processed' \
              ORDER BY coalesce(r.external_id, 'raw:' || r.id), r.id DESC",
            None,
            &[owner.into(), name.into()],
        )? {
            let payload = r.get::<JsonB>(1)?.map_or(Value::Null, |j| j.0);
            if let Some(entity) = r.get::<Uuid>(2)? {
                out.push((payload, entity));
            }
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(internal("etl: rekey"))?;
    let (mut types, mut values, mut entities_of) = (Vec::new(), Vec::new(), Vec::new());
    let mut unmappable = 0i64;
    for (payload, entity) in &records {
        match src.mapping.apply(payload) {
            Ok(mapped) => {
                for (key_type, key_value) in mapped.keys {
                    types.push(key_type);
                    values.push(key_value);
                    entities_of.push(*entity);
                }
            }
            Err(_) => unmappable += 1,
        }
    }
    let counts = Spi::get_two_with_args::<i64, i64>(
        "WITH wanted AS (SELECT DISTINCT ON (t, v) t, v, e \
                           FROM unnest($2::text[], $3::text[], $4::uuid[]) AS u(t, v, e)), \
              added AS (INSERT INTO spine.entity_keys (owner_id, key_type, key_value, entity_id) \
                        SELECT $1, t, v, e FROM wanted ON CONFLICT DO NOTHING RETURNING 1) \
         SELECT (SELECT count(*) FROM added), \
                (SELECT count(*) FROM wanted w JOIN spine.entity_keys k \
                   ON k.owner_id = $1 AND k.key_type = w.t AND k.key_value = w.v \
                  WHERE k.entity_id <> w.e)",
        &[
            owner.into(),
            types.into(),
            values.into(),
            entities_of.into(),
        ],
    )
    .map_err(internal("etl: rekey"))?;
    let (added, conflicts) = (counts.0.unwrap_or(0), counts.1.unwrap_or(0));
    crate::audit::record(
        "etl.rekeyed",
        Some(&format!("source:{name}")),
        json!({"records": records.len(), "keys_added": added, "conflicts": conflicts}),
    )?;
    Ok(JsonB(json!({
        "records": records.len(),
        "keys_added": added,
        "conflicts": conflicts,
        "unmappable": unmappable,
    })))
}
