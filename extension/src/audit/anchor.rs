//! Anchors: copies of the chain's head kept outside the database.
//!
//! `audit_verify()` catches any change to the log by someone who cannot also
//! rewrite the rest of the chain and its head consistently. A superuser who can
//! (triggers off, hashes recomputed) is caught by comparing with a copy of the head
//! taken earlier and kept where they cannot reach: `spine.audit_anchor()` (run
//! every minute by pg_cron) emits the head as an `audit.HeadAnchored` event, which
//! the relay publishes to NATS JetStream; an auditor later checks a copy with
//! `spine.audit_verify_anchor(seq, hash)`.

use crate::error::{internal, SpineError};
use crate::events::{emit_event, NewEvent};
use crate::spi_ext::{optional_row, returning_one};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

/// Emits the chain's head as an `audit.HeadAnchored` event, unless it has not
/// moved since the last anchor. Returns the anchored seq, or NULL.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn audit_anchor() -> Result<Option<i64>, ErrorReport> {
    let head = optional_row(Spi::get_two::<i64, Vec<u8>>(
        "SELECT seq, hash FROM spine.audit_head",
    ))
    .map_err(internal("audit: anchor"))?;
    let Some((Some(seq), Some(hash))) = head else {
        return Ok(None);
    };
    let newer = optional_row(returning_one::<bool>(
        "INSERT INTO spine.audit_anchors (seq, hash) VALUES ($1, $2) \
         ON CONFLICT (seq) DO NOTHING RETURNING true",
        &[seq.into(), hash.clone().into()],
    ))
    .map_err(internal("audit: anchor"))?
    .flatten();
    if newer != Some(true) {
        // This head was anchored already.
        return Ok(None);
    }
    emit_event(NewEvent {
        event_type: "audit.HeadAnchored",
        data: JsonB(json!({"seq": seq, "hash": hex::encode(&hash)})),
        subject: Some("audit/head"),
        owner_id: None,
        correlation_id: None,
        causation_id: None,
    })?;
    Ok(Some(seq))
}

/// Whether the log still has row `seq` with hash `hash` (from an anchor kept
/// outside the database, hex or bytea). Together with `audit_verify()` this shows
/// that nothing up to that row was rewritten since the anchor was taken.
#[pg_extern(security_definer, stable)]
#[search_path(pg_catalog, pg_temp)]
fn audit_verify_anchor(seq: Option<i64>, hash: Option<&[u8]>) -> Result<bool, ErrorReport> {
    let seq = seq.ok_or(SpineError::NullArgument("seq"))?;
    let hash = hash.ok_or(SpineError::NullArgument("hash"))?;
    let stored = optional_row(Spi::get_one_with_args::<Vec<u8>>(
        "SELECT hash FROM spine.audit_log WHERE seq = $1",
        &[seq.into()],
    ))
    .map_err(internal("audit: verify anchor"))?
    .flatten();
    Ok(stored.as_deref() == Some(hash))
}
