//! The wire format of an event: CloudEvents 1.0 JSON (structured mode) with the
//! extensions `correlationid`, `causationid` and `ownerid` (DESIGN.md).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// One committed event as read from `spine.events_after`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub commit_seq: i64,
    pub seq: i64,
    pub id: Uuid,
    pub event_type: String,
    pub source: String,
    pub subject: Option<String>,
    pub owner_id: Option<Uuid>,
    pub data: Value,
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
            data: row.try_get("data")?,
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get("causation_id")?,
            occurred_at: row.try_get("occurred_at")?,
            committed_at: row.try_get("committed_at")?,
        })
    }

    /// NATS subject: `spine.<type>`, e.g. `spine.data.EntityCreated`.
    pub fn nats_subject(&self) -> String {
        format!("spine.{}", self.event_type)
    }

    /// The CloudEvents JSON envelope; absent optional attributes are omitted.
    pub fn cloudevent(&self) -> Value {
        let mut ce = Map::new();
        ce.insert("specversion".into(), json!("1.0"));
        ce.insert("id".into(), json!(self.id));
        ce.insert("source".into(), json!(self.source));
        ce.insert("type".into(), json!(self.event_type));
        if let Some(subject) = &self.subject {
            ce.insert("subject".into(), json!(subject));
        }
        ce.insert(
            "time".into(),
            json!(self
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true)),
        );
        ce.insert("datacontenttype".into(), json!("application/json"));
        ce.insert("correlationid".into(), json!(self.correlation_id));
        if let Some(cause) = self.causation_id {
            ce.insert("causationid".into(), json!(cause));
        }
        if let Some(owner) = self.owner_id {
            ce.insert("ownerid".into(), json!(owner));
        }
        ce.insert("data".into(), self.data.clone());
        Value::Object(ce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            commit_seq: 7,
            seq: 42,
            id: Uuid::parse_str("01a2128e-a16f-725a-9849-0b06cf0f690d").unwrap(),
            event_type: "data.EntityCreated".into(),
            source: "/spine".into(),
            subject: Some("entity/1".into()),
            owner_id: None,
            data: json!({"name": "Ada"}),
            correlation_id: Uuid::parse_str("01a2128e-a16f-725a-9849-0b06cf0f690d").unwrap(),
            causation_id: None,
            occurred_at: DateTime::parse_from_rfc3339("2026-11-25T11:54:27.058096Z")
                .unwrap()
                .with_timezone(&Utc),
            committed_at: Utc::now(),
        }
    }

    #[test]
    fn envelope_has_cloudevents_attributes_and_extensions() {
        let ce = sample().cloudevent();
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], "01a2128e-a16f-725a-9849-0b06cf0f690d");
        assert_eq!(ce["type"], "data.EntityCreated");
        assert_eq!(ce["source"], "/spine");
        assert_eq!(ce["subject"], "entity/1");
        assert_eq!(ce["time"], "2026-11-25T11:54:27.058096Z");
        assert_eq!(ce["correlationid"], "01a2128e-a16f-725a-9849-0b06cf0f690d");
        assert_eq!(ce["data"]["name"], "Ada");
        assert!(ce.get("causationid").is_none(), "absent, not null");
        assert!(ce.get("ownerid").is_none());
    }

    #[test]
    fn subject_is_prefixed_type() {
        assert_eq!(sample().nats_subject(), "spine.data.EntityCreated");
    }
}
