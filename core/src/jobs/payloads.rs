//! The payloads of the jobs Spine itself enqueues, one definition for the writer
//! (rules' actions, database webhooks) and the reader (the worker's handlers).
//!
//! Readers deserialize leniently (unknown keys are kept out of the way, not
//! refused): a payload written by an older Spine must still run after an upgrade.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Who caused a job that has no owner (a database webhook fired by a write of a
/// role without a user): the function it runs acts as this role/user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

/// A job of the `function` queue: run an edge function with `payload` as its
/// JSON body. Written by rules' `call_function` actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionJob {
    pub function: String,
    #[serde(default)]
    pub payload: Value,
    /// The event that caused the job: what the function emits is caused by it,
    /// so the rules' loop guard follows the chain through the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// The chain `event_id` belongs to: the trace id of the call's `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

/// A job of the `http` queue: one HTTP request. Written by rules' `webhook`
/// actions; anyone allowed into the queue may enqueue one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpJob {
    pub url: String,
    /// `POST` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, Value>,
    /// The body: a string is sent as is, anything else as JSON. Without it the
    /// whole payload is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The chain of events the request belongs to (a rule's webhook action): sent
    /// as the trace id of its `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
}

/// A job of the `net` queue: one request of `net.http_get` / `http_post` /
/// `http_delete` (pg_net's API), written by `spine.net_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetJob {
    pub method: String,
    pub url: String,
    /// Query parameters appended to the URL, URL-encoded.
    #[serde(default)]
    pub params: Map<String, Value>,
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// The body as text (pg_net sends the JSON body's text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub timeout_ms: u64,
}

/// A job of the `webhook` queue: deliver one row change to a database webhook.
/// Written by the webhook trigger (`sql/webhooks.sql`, `jsonb_build_object` with
/// these keys); the worker's webhook tests deliver what it writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookJob {
    pub webhook: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// Supabase's webhook body: `{type, table, schema, record, old_record}`.
    #[serde(default)]
    pub body: Value,
    /// The event the write descends from (`spine.causation_id` of the writing
    /// transaction) and its chain, when there was one: a function target's events
    /// join that chain, and the delivery's `traceparent` carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
}

/// Where a database webhook delivers, as `spine.create_webhook` validates and
/// stores it (`spine.webhooks.target`) and the worker reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WebhookTarget {
    /// A POST to `url` with `headers`, given up after `timeout_ms`.
    Url {
        url: String,
        #[serde(default)]
        headers: Map<String, Value>,
        #[serde(default = "default_webhook_timeout_ms")]
        timeout_ms: u64,
    },
    /// An edge function, run in-process by the worker.
    Function { function: String },
}

/// A webhook target's timeout when it names none.
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 10_000;

fn default_webhook_timeout_ms() -> u64 {
    DEFAULT_WEBHOOK_TIMEOUT_MS
}

impl WebhookTarget {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a WebhookTarget serializes")
    }

    /// The target for logs and the audit log: header names without their values
    /// (they are often credentials, and the audit log keeps what it is given).
    pub fn redacted(&self) -> Value {
        let mut v = self.to_value();
        if let Some(headers) = v.get_mut("headers").and_then(Value::as_object_mut) {
            for value in headers.values_mut() {
                *value = Value::String("<redacted>".into());
            }
        }
        v
    }
}

impl FunctionJob {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a FunctionJob serializes")
    }
}

impl HttpJob {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("an HttpJob serializes")
    }
}

/// Reads a payload as `T`; the error says which job kind and why.
pub fn parse<'a, T: Deserialize<'a>>(kind: &str, payload: &'a Value) -> Result<T, String> {
    T::deserialize(payload).map_err(|e| format!("not a {kind} job payload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn function_job_round_trips_and_omits_absent_fields() {
        let job = FunctionJob {
            function: "sms-sender".into(),
            payload: json!({"to": "+49"}),
            event_id: None,
            correlation_id: None,
            actor: None,
        };
        let v = job.to_value();
        assert_eq!(
            v,
            json!({"function": "sms-sender", "payload": {"to": "+49"}})
        );
        assert_eq!(parse::<FunctionJob>("function", &v).unwrap(), job);
    }

    #[test]
    fn readers_tolerate_unknown_keys_and_name_what_is_missing() {
        let v = json!({"function": "f", "later_field": 1});
        assert_eq!(
            parse::<FunctionJob>("function", &v).unwrap().payload,
            Value::Null
        );
        let err = parse::<FunctionJob>("function", &json!({"payload": {}})).unwrap_err();
        assert!(err.contains("function"), "{err}");
        let err = parse::<HttpJob>("http", &json!({"url": 3})).unwrap_err();
        assert!(err.contains("http job"), "{err}");
    }

    #[test]
    fn webhook_targets_round_trip_and_redact_header_values() {
        let url = WebhookTarget::Url {
            url: "https://h.example/x".into(),
            headers: json!({"Authorization": "Bearer k"})
                .as_object()
                .unwrap()
                .clone(),
            timeout_ms: 500,
        };
        let v = url.to_value();
        assert_eq!(parse::<WebhookTarget>("target", &v).unwrap(), url);
        assert_eq!(url.redacted()["headers"]["Authorization"], "<redacted>");
        let f: WebhookTarget = parse("target", &json!({"function": "sms-sender"})).unwrap();
        assert_eq!(
            f,
            WebhookTarget::Function {
                function: "sms-sender".into()
            }
        );
        let bare: WebhookTarget = parse("target", &json!({"url": "https://h"})).unwrap();
        assert!(matches!(
            bare,
            WebhookTarget::Url {
                timeout_ms: DEFAULT_WEBHOOK_TIMEOUT_MS,
                ..
            }
        ));
    }

    #[test]
    fn webhook_job_reads_what_the_trigger_writes() {
        let v = json!({"webhook": "on_insert", "actor": {"role": "anon"},
                       "body": {"type": "INSERT", "record": {"id": 1}}});
        let job: WebhookJob = parse("webhook", &v).unwrap();
        assert_eq!(job.actor.unwrap().role.as_deref(), Some("anon"));
        assert_eq!(job.body["type"], "INSERT");
    }
}
