//! `spine.backfill(source, after, batch_size)`: a source's records mapped again
//! with its current mapping, one batch per call, so a mapping change (a new field,
//! another normalizer) reaches the entities built before it. The caller pages
//! with `after` (the `last` raw id of the previous call); each call is its own
//! transaction, so a backfill of millions of records holds the owner's ingest
//! lock for one batch at a time and can stop and resume anywhere (`spine
//! backfill` does this with a progress bar).

use super::batch::{self, Counts};
use super::{data_received, load_source};
use crate::entities;
use crate::error::{internal, SpineError};
use crate::spi_ext::run_prepared;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::BuiltinOid::{INT8ARRAYOID, UUIDARRAYOID};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Value};
use spine_core::manifest::Action;

/// Most records in one call: as many as one ingest call takes.
const MAX_BATCH: i32 = super::MAX_BATCH as i32;

/// Maps the latest processed version of each of `source`'s records whose raw id
/// is above `after`, at most `batch_size` of them in raw id order, with the
/// source's current mapping; writes what changed as ingest does (entity events,
/// keys, edges, `connector.DataReceived` with operation `backfill`). A record the
/// current mapping rejects keeps its entity and status and is reported in
/// `errors`. Returns ingest's counts plus `last` (the highest raw id read, NULL
/// when there was none) and `done` (no records after `last`).
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn backfill(
    source: Option<&str>,
    after: default!(Option<i64>, "0"),
    batch_size: default!(Option<i32>, "1000"),
    owner: default!(Option<Uuid>, "NULL"),
) -> Result<JsonB, ErrorReport> {
    let name = source.ok_or(SpineError::NullArgument("source"))?;
    let after = after.ok_or(SpineError::NullArgument("after"))?;
    let batch_size = batch_size.ok_or(SpineError::NullArgument("batch_size"))?;
    if !(1..=MAX_BATCH).contains(&batch_size) {
        return Err(SpineError::InvalidParameter {
            name: "batch_size",
            reason: format!("{batch_size}; from 1 to {MAX_BATCH}"),
        }
        .into());
    }
    let owner = crate::caller::acting_owner(owner, "sources")?;
    let src = load_source(owner, name)?;
    crate::policy::require_plugin(Action::EntitiesWrite, &src.mapping.kind)?;
    entities::lock_owner(owner)?;
    let records = latest_processed(owner, name, after, batch_size)?;
    let last = records.last().map(|r| r.raw_id);
    let done = records.len() < batch_size as usize;
    let mut counts = Counts {
        received: records.len() as i64,
        ..Counts::default()
    };
    let raw_ids: Vec<i64> = records.iter().map(|r| r.raw_id).collect();
    let items: Vec<batch::Item> = records
        .into_iter()
        .map(|r| batch::Item {
            external_id: r.external_id,
            record: r.payload,
        })
        .collect();
    let earlier = batch::entities_of_records(owner, name, &items)?;
    let dispositions =
        batch::process(owner, &src.mapping, src.entity, items, earlier, &mut counts)?;
    // A mapped record may have gone to another entity (its new keys named one);
    // one it no longer maps keeps what it had.
    let (ids, entities): (Vec<i64>, Vec<Uuid>) = raw_ids
        .iter()
        .zip(dispositions)
        .filter_map(|(id, d)| d.entity.filter(|_| d.error.is_none()).map(|e| (*id, e)))
        .unzip();
    if !ids.is_empty() {
        run_prepared(
            "UPDATE spine.raw_records r SET entity_id = u.e, processed_at = now() \
               FROM unnest($1::bigint[], $2::uuid[]) AS u(i, e) WHERE r.id = u.i",
            &[INT8ARRAYOID, UUIDARRAYOID],
            &[ids.into(), entities.into()],
        )
        .map_err(internal("etl: backfill"))?;
    }
    data_received(owner, name, &counts, "backfill")?;
    let mut out = counts.json();
    out["last"] = json!(last);
    out["done"] = json!(done);
    Ok(JsonB(out))
}

/// A landed record, read again.
struct Landed {
    raw_id: i64,
    external_id: Option<String>,
    payload: Value,
}

/// The next `limit` records after `after` that are the latest processed version
/// of their external id; versions a later one replaced are history.
fn latest_processed(
    owner: Uuid,
    source: &str,
    after: i64,
    limit: i32,
) -> Result<Vec<Landed>, SpineError> {
    Spi::connect(|client| {
        let mut out = Vec::new();
        for r in client.select(
            "SELECT r.id, r.external_id, r.payload FROM spine.raw_records r \
              WHERE r.owner_id = $1 AND r.source = $2 AND r.status = 'processed' AND r.id > $3 \
                AND NOT EXISTS (SELECT 1 FROM spine.raw_records n \
                                 WHERE n.owner_id = r.owner_id AND n.source = r.source \
                                   AND n.external_id = r.external_id AND n.id > r.id \
                                   AND n.status = 'processed') \
              ORDER BY r.id LIMIT $4",
            None,
            &[
                owner.into(),
                source.into(),
                after.into(),
                i64::from(limit).into(),
            ],
        )? {
            out.push(Landed {
                raw_id: r.get::<i64>(1)?.unwrap_or_default(),
                external_id: r.get::<String>(2)?,
                payload: r.get::<JsonB>(3)?.map_or(Value::Null, |j| j.0),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(internal("etl: backfill"))
}
