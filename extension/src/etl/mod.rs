//! ETL: raw connector records → entities (`sql/etl.sql`).
//!
//! - [`mapping`]: the declarative mapping, validated when a source is saved.
//! - [`normalize`]: trim, lowercase, email, E.164 phone, timestamp, number, boolean.
//!
//! `spine.ingest(source, records)` lands each record in `spine.raw_records`
//! (idempotent on source, external id and payload hash: a record seen before
//! changes nothing and emits nothing), maps it, resolves its identity keys to an
//! existing entity or creates one, links the entity to the source (edge
//! `described_by`), and emits `connector.DataReceived` plus the entity events. A
//! record that fails is kept with its error and reported; it never aborts the batch.

pub mod batch;
pub mod mapping;
pub mod normalize;

use crate::entities;
use crate::error::{internal, SpineError};
use crate::events::{emit_event, NewEvent};
use crate::spi_ext::optional_row;
use batch::Counts;
use mapping::Mapping;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
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
    let existing = optional_row(Spi::get_one_with_args::<Uuid>(
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
    if counts.created + counts.updated + counts.rejected == 0 {
        return Ok(());
    }
    let mut data = counts.json();
    data["source"] = json!(source);
    data["operation"] = json!(what);
    if let Some(m) = data.as_object_mut() {
        m.remove("errors");
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
/// `{received, created, updated, unchanged, rejected, errors: [{external_id, reason}]}`.
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
    let mut counts = Counts {
        received: records.len() as i64,
        ..Counts::default()
    };
    // Land the batch in one statement; what comes back is what was not seen before
    // (same external id and payload hash).
    let external_ids: Vec<Option<String>> =
        records.iter().map(|r| src.mapping.external_id(r)).collect();
    let hashes: Vec<Vec<u8>> = records
        .iter()
        .map(|r| Sha256::digest(serde_json::to_string(r).unwrap_or_default().as_bytes()).to_vec())
        .collect();
    let payloads: Vec<JsonB> = records.iter().map(|r| JsonB(r.clone())).collect();
    let landed: Vec<(i64, Option<String>, Vec<u8>)> = Spi::connect_mut(|client| {
        let mut out = Vec::new();
        for r in client.update(
            "INSERT INTO spine.raw_records (owner_id, source, external_id, payload, payload_hash) \
             SELECT $1, $2, e, p, h FROM unnest($3::text[], $4::jsonb[], $5::bytea[]) WITH ORDINALITY AS u(e, p, h, n) \
             ORDER BY n \
             ON CONFLICT (owner_id, source, external_id, payload_hash) DO NOTHING \
             RETURNING id, external_id, payload_hash",
            None,
            &[
                owner.into(),
                name.into(),
                external_ids.clone().into(),
                payloads.into(),
                hashes.clone().into(),
            ],
        )? {
            out.push((
                r.get::<i64>(1)?.unwrap_or_default(),
                r.get::<String>(2)?,
                r.get::<Vec<u8>>(3)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(internal("etl: land records"))?;
    // Back to batch positions: (external id, hash) → the records that carry it.
    let mut positions: HashMap<(Option<String>, Vec<u8>), VecDeque<usize>> = HashMap::new();
    for (i, key) in external_ids.iter().cloned().zip(hashes).enumerate() {
        positions.entry(key).or_default().push_back(i);
    }
    let mut new_records: Vec<(usize, i64)> = landed
        .into_iter()
        .filter_map(|(raw_id, ext, hash)| {
            let i = positions.get_mut(&(ext, hash))?.pop_front()?;
            Some((i, raw_id))
        })
        .collect();
    new_records.sort_unstable();
    // Seen before, byte for byte: nothing to do.
    counts.unchanged += (records.len() - new_records.len()) as i64;
    let mut records: Vec<Option<Value>> = records.into_iter().map(Some).collect();
    let items = new_records
        .into_iter()
        .map(|(i, raw_id)| batch::Item {
            raw_id,
            external_id: external_ids[i].clone(),
            record: records[i].take().unwrap_or(Value::Null),
        })
        .collect();
    batch::process(owner, &src.mapping, src.entity, items, &mut counts)?;
    data_received(owner, name, &counts, "ingest")?;
    Ok(JsonB(counts.json()))
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
    let items: Vec<batch::Item> = Spi::connect_mut(|client| {
        let mut out = Vec::new();
        for r in client.update(
            "SELECT id, payload FROM spine.raw_records \
             WHERE owner_id = $1 AND source = $2 AND status = 'rejected' ORDER BY id FOR UPDATE",
            None,
            &[owner.into(), name.into()],
        )? {
            let record = r.get::<JsonB>(2)?.map_or(Value::Null, |j| j.0);
            out.push(batch::Item {
                raw_id: r.get::<i64>(1)?.unwrap_or_default(),
                // With the current mapping: a fixed external_id path applies too.
                external_id: src.mapping.external_id(&record),
                record,
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(internal("etl: reprocess"))?;
    let mut counts = Counts {
        received: items.len() as i64,
        ..Counts::default()
    };
    batch::process(owner, &src.mapping, src.entity, items, &mut counts)?;
    data_received(owner, name, &counts, "reprocess")?;
    Ok(JsonB(counts.json()))
}
