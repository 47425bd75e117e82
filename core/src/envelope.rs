//! The wire format of an event: CloudEvents 1.0 JSON (structured mode) with the
//! extensions `correlationid`, `causationid` and `ownerid` (DESIGN.md).
//!
//! One definition for every reader and writer: the relay publishes it to NATS,
//! rule conditions see it as `event`, and the function host hands it to plugins.
//! The struct borrows its fields and is generic over `data`, so the relay
//! serializes an event's data straight from the JSON text Postgres returned
//! (`RawValue`), and the extension from the `Value` it already holds.

use serde::Serialize;
use uuid::Uuid;

/// The CloudEvents spec version Spine writes.
pub const SPEC_VERSION: &str = "1.0";

/// The `source` of events Spine writes (the default of `spine.events.source`).
pub const SOURCE: &str = "/spine";

/// `datacontenttype`: `data` is always JSON.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// One event's envelope. Absent optional attributes are omitted, never null.
#[derive(Debug, Clone, Serialize)]
pub struct CloudEvent<'a, D: ?Sized + Serialize> {
    pub specversion: &'static str,
    pub id: Uuid,
    pub source: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    /// RFC 3339 in UTC with microseconds ([`crate::time::rfc3339_micros`]).
    pub time: &'a str,
    pub datacontenttype: &'static str,
    pub correlationid: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causationid: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ownerid: Option<Uuid>,
    pub data: &'a D,
}

/// The fields of an event that are not fixed by the spec.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a, D: ?Sized> {
    pub id: Uuid,
    pub source: &'a str,
    pub event_type: &'a str,
    pub subject: Option<&'a str>,
    pub time: &'a str,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub data: &'a D,
}

impl<'a, D: ?Sized + Serialize> CloudEvent<'a, D> {
    pub fn new(e: EventFields<'a, D>) -> Self {
        CloudEvent {
            specversion: SPEC_VERSION,
            id: e.id,
            source: e.source,
            event_type: e.event_type,
            subject: e.subject,
            time: e.time,
            datacontenttype: DATA_CONTENT_TYPE,
            correlationid: e.correlation_id,
            causationid: e.causation_id,
            ownerid: e.owner_id,
            data: e.data,
        }
    }
}

/// NATS subject of an event type: `spine.<type>`, e.g. `spine.data.EntityCreated`.
pub fn nats_subject(event_type: &str) -> String {
    format!("spine.{event_type}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn envelope_has_cloudevents_attributes_and_extensions() {
        let id = Uuid::parse_str("01a2128e-a16f-725a-9849-0b06cf0f690d").unwrap();
        let data = json!({"name": "Ada"});
        let ce = serde_json::to_value(CloudEvent::new(EventFields {
            id,
            source: SOURCE,
            event_type: "data.EntityCreated",
            subject: Some("entity/1"),
            time: "2026-11-25T11:54:27.058096Z",
            correlation_id: id,
            causation_id: None,
            owner_id: None,
            data: &data,
        }))
        .unwrap();
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], "01a2128e-a16f-725a-9849-0b06cf0f690d");
        assert_eq!(ce["type"], "data.EntityCreated");
        assert_eq!(ce["source"], "/spine");
        assert_eq!(ce["subject"], "entity/1");
        assert_eq!(ce["time"], "2026-11-25T11:54:27.058096Z");
        assert_eq!(ce["datacontenttype"], "application/json");
        assert_eq!(ce["correlationid"], "01a2128e-a16f-725a-9849-0b06cf0f690d");
        assert_eq!(ce["data"]["name"], "Ada");
        assert!(ce.get("causationid").is_none(), "absent, not null");
        assert!(ce.get("ownerid").is_none());
        let keys: Vec<&String> = ce.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 9, "{keys:?}");
    }

    #[test]
    fn raw_json_data_is_written_as_is() {
        let raw = serde_json::value::RawValue::from_string(r#"{"a":[1,2]}"#.into()).unwrap();
        let id = Uuid::nil();
        let text = serde_json::to_string(&CloudEvent::new(EventFields {
            id,
            source: SOURCE,
            event_type: "x.Happened",
            subject: None,
            time: "t",
            correlation_id: id,
            causation_id: Some(id),
            owner_id: Some(id),
            data: &*raw,
        }))
        .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["data"], json!({"a": [1, 2]}));
        assert_eq!(v["ownerid"], id.to_string());
    }

    #[test]
    fn subject_is_prefixed_type() {
        assert_eq!(
            nats_subject("data.EntityCreated"),
            "spine.data.EntityCreated"
        );
    }
}
