//! An event as the relay reads it from `spine.events_after`, and its wire format:
//! the CloudEvents envelope defined once in [`spine_core::envelope`].

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use spine_core::envelope::{CloudEvent, EventFields};
use tokio_postgres::types::Json;
use uuid::Uuid;

/// One committed event as read from `spine.events_after`.
#[derive(Debug, Clone)]
pub struct Event {
    pub commit_seq: i64,
    pub seq: i64,
    pub id: Uuid,
    pub event_type: String,
    pub source: String,
    pub subject: Option<String>,
    pub owner_id: Option<Uuid>,
    /// Passed through as JSON text: the relay never needs to look inside it.
    pub data: Box<RawValue>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub committed_at: DateTime<Utc>,
}

impl Event {
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            commit_seq: row.try_get("commit_seq")?,
            seq: row.try_get("seq")?,
            id: row.try_get("id")?,
            event_type: row.try_get("type")?,
            source: row.try_get("source")?,
            subject: row.try_get("subject")?,
            owner_id: row.try_get("owner_id")?,
            data: row.try_get::<_, Json<Box<RawValue>>>("data")?.0,
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get("causation_id")?,
            occurred_at: row.try_get("occurred_at")?,
            committed_at: row.try_get("committed_at")?,
        })
    }

    /// The CloudEvents JSON envelope; absent optional attributes are omitted.
    pub fn cloudevent_json(&self) -> serde_json::Result<Vec<u8>> {
        let time = spine_core::time::rfc3339_micros(self.occurred_at.timestamp_micros());
        serde_json::to_vec(&CloudEvent::new(EventFields {
            id: self.id,
            source: &self.source,
            event_type: &self.event_type,
            subject: self.subject.as_deref(),
            time: &time,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            owner_id: self.owner_id,
            data: &*self.data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Event {
        Event {
            commit_seq: 7,
            seq: 42,
            id: Uuid::parse_str("01a2128e-a16f-725a-9849-0b06cf0f690d").unwrap(),
            event_type: "data.EntityCreated".into(),
            source: "/spine".into(),
            subject: Some("entity/1".into()),
            owner_id: None,
            data: RawValue::from_string(json!({"name": "Ada"}).to_string()).unwrap(),
            correlation_id: Uuid::parse_str("01a2128e-a16f-725a-9849-0b06cf0f690d").unwrap(),
            causation_id: None,
            occurred_at: DateTime::parse_from_rfc3339("2026-11-25T11:54:27.058096Z")
                .unwrap()
                .with_timezone(&Utc),
            committed_at: Utc::now(),
        }
    }

    /// The row's fields reach the envelope (its shape is tested in spine-core):
    /// the time with fixed microseconds, the data as the text Postgres returned.
    #[test]
    fn the_row_becomes_the_envelope() {
        let ce: serde_json::Value =
            serde_json::from_slice(&sample().cloudevent_json().unwrap()).unwrap();
        assert_eq!(ce["time"], "2026-11-25T11:54:27.058096Z");
        assert_eq!(ce["source"], "/spine");
        assert_eq!(ce["subject"], "entity/1");
        assert_eq!(ce["data"], json!({"name": "Ada"}));
        let mut whole_second = sample();
        whole_second.occurred_at = DateTime::parse_from_rfc3339("2026-11-25T11:54:27Z")
            .unwrap()
            .with_timezone(&Utc);
        let ce: serde_json::Value =
            serde_json::from_slice(&whole_second.cloudevent_json().unwrap()).unwrap();
        assert_eq!(ce["time"], "2026-11-25T11:54:27.000000Z");
    }
}
