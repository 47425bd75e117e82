//! Realtime capture: the events `sql/realtime.sql` writes for the gateway's
//! `/realtime/v1` — row changes of published tables (`realtime.RowChanged`) and
//! database broadcasts (`realtime.MessageSent`) — go into the outbox in the
//! writing transaction, so they are delivered in commit order, after commit and
//! never on rollback, and a client can resume from its position.

use crate::error::SpineError;
use crate::events::{emit_event, NewEvent};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};

/// The two event types Realtime writes (domain `realtime` is reserved).
const TYPES: &[&str] = &["realtime.RowChanged", "realtime.MessageSent"];

/// Writes one Realtime event owned by the request's user. Called by the capture
/// trigger and `spine.broadcast` (SECURITY DEFINER); not granted to anyone.
#[pg_extern(volatile)]
fn realtime_emit(kind: &str, data: JsonB, subject: &str) -> Result<Uuid, SpineError> {
    if !TYPES.contains(&kind) {
        return Err(SpineError::InvalidParameter {
            name: "kind",
            reason: format!("\"{kind}\" is not one of {TYPES:?}"),
        });
    }
    emit_event(NewEvent {
        event_type: kind,
        data,
        subject: Some(subject),
        owner_id: crate::caller::request_user()?,
        correlation_id: None,
        causation_id: None,
    })
}
