//! An event as written by [`super::emit_events`], handed to the listener (the
//! rules engine) after the INSERT, and read back by `spine.explain`.

use pgrx::Uuid;
use serde_json::Value;
use spine_core::envelope::{CloudEvent, EventFields, SOURCE};

/// One written event. Spine's own INSERT leaves `source` to its column default,
/// which is [`SOURCE`] (a test compares the two).
pub struct Emitted<'a> {
    pub id: Uuid,
    pub event_type: &'a str,
    pub subject: Option<&'a str>,
    pub owner_id: Option<Uuid>,
    pub data: &'a Value,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    /// When it occurred, in microseconds since 1970-01-01 UTC; written as the
    /// envelope's `time` only when an envelope is built (most events need none).
    pub occurred_at: i64,
}

fn uuid(id: Uuid) -> uuid::Uuid {
    uuid::Uuid::from_bytes(*id.as_bytes())
}

impl Emitted<'_> {
    /// The CloudEvents envelope the relay publishes for this event
    /// ([`spine_core::envelope`]), as the JSON a rule condition sees as `event`.
    pub fn envelope(&self) -> Value {
        let time = spine_core::time::rfc3339_micros(self.occurred_at);
        serde_json::to_value(CloudEvent::new(EventFields {
            id: uuid(self.id),
            source: SOURCE,
            event_type: self.event_type,
            subject: self.subject,
            time: &time,
            correlation_id: uuid(self.correlation_id),
            causation_id: self.causation_id.map(uuid),
            owner_id: self.owner_id.map(uuid),
            data: self.data,
        }))
        .expect("an envelope of JSON values serializes")
    }
}
