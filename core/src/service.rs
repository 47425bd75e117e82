//! NATS request/reply into Spine: the envelopes a request and its reply travel
//! in (one definition for the worker that serves verbs and the cells that call
//! them), the error codes, and how a Postgres error becomes one.
//!
//! A request is `{id, correlation_id, causation_id, type, time, data}` (all but
//! `data` optional; `id` is made up when missing); the reply is
//! `{id, correlation_id, causation_id, ok: true, data}` or
//! `{…, ok: false, error: {code, message, details}}`. The reply's causation is
//! the request and its correlation the request's (or the request itself, which
//! starts a chain), so events written while serving it join that chain.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A request envelope as callers send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    #[serde(default = "Uuid::new_v4")]
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// What the caller calls the request (informational).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// RFC 3339, when the caller made it (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `Bearer <jwt>` when the caller cannot set the `Authorization` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    #[serde(default)]
    pub data: Value,
}

impl Request {
    pub fn new(data: Value) -> Self {
        Request {
            id: Uuid::new_v4(),
            correlation_id: None,
            causation_id: None,
            kind: None,
            time: None,
            authorization: None,
            data,
        }
    }

    /// The chain the request belongs to: its own, or it starts one.
    pub fn chain(&self) -> Uuid {
        self.correlation_id.unwrap_or(self.id)
    }
}

/// Why a request failed, as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request or its data is malformed or fails a check (SQLSTATE 22xxx,
    /// 23xxx): fix it before retrying.
    Validation,
    /// Not allowed for this caller (42501, a bad token): retrying will not help.
    Forbidden,
    /// No such service, verb or row (P0002, 42704, 42883, a NULL answer).
    NotFound,
    /// A limit of the caller or the payload (54xxx, too large).
    Limit,
    /// The verb did not answer in time (57014): it may still have run.
    Timeout,
    /// Too busy or a dependency is down: retry later.
    Unavailable,
    /// Anything else; the message says no more than that.
    Internal,
}

/// The error of a failed reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default)]
    pub details: Value,
}

/// A reply envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    pub fn ok(to: &Request, data: Value) -> Self {
        Reply {
            id: Uuid::new_v4(),
            correlation_id: to.chain(),
            causation_id: to.id,
            ok: true,
            data: Some(data),
            error: None,
        }
    }

    pub fn error(
        to: &Request,
        code: ErrorCode,
        message: impl Into<String>,
        details: Value,
    ) -> Self {
        Reply {
            id: Uuid::new_v4(),
            correlation_id: to.chain(),
            causation_id: to.id,
            ok: false,
            data: None,
            error: Some(ErrorBody {
                code,
                message: message.into(),
                details,
            }),
        }
    }
}

/// The code for a Postgres error's SQLSTATE; `None`: [`ErrorCode::Internal`],
/// whose message must not pass the database's text on.
pub fn code_for_sqlstate(state: &str) -> Option<ErrorCode> {
    Some(match state {
        "42501" | "28000" | "28P01" => ErrorCode::Forbidden,
        "P0002" | "42704" | "42883" | "42P01" | "02000" => ErrorCode::NotFound,
        "57014" => ErrorCode::Timeout,
        "53300" | "57P03" | "40001" | "40P01" | "55P03" => ErrorCode::Unavailable,
        s if s.starts_with("22") || s.starts_with("23") => ErrorCode::Validation,
        s if s.starts_with("54") => ErrorCode::Limit,
        _ => return None,
    })
}

/// The code for an HTTP status a function answered with (edge-function verbs).
pub fn code_for_status(status: u16) -> ErrorCode {
    match status {
        400 | 409 | 415 | 422 => ErrorCode::Validation,
        401 | 403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        413 | 429 | 546 => ErrorCode::Limit,
        408 | 504 => ErrorCode::Timeout,
        503 => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

/// A subject template such as `svc.{service}.{verb}` or `cbs.{service}.{verb}`:
/// fixed tokens, then `{service}` and `{verb}`, one token each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    prefix: Vec<String>,
}

impl SubjectTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        let tokens: Vec<&str> = template.split('.').collect();
        let n = tokens.len();
        if n < 3 || tokens[n - 2] != "{service}" || tokens[n - 1] != "{verb}" {
            return Err(format!(
                "{template:?} must end in .{{service}}.{{verb}} after at least one fixed token"
            ));
        }
        let prefix = &tokens[..n - 2];
        if let Some(bad) = prefix
            .iter()
            .find(|t| t.is_empty() || t.contains(['*', '>', '{', '}', ' ']))
        {
            return Err(format!(
                "{template:?}: {bad:?} is not a fixed subject token"
            ));
        }
        Ok(SubjectTemplate {
            prefix: prefix.iter().map(|t| t.to_string()).collect(),
        })
    }

    /// What to subscribe to: the prefix and two wildcards.
    pub fn wildcard(&self) -> String {
        format!("{}.*.*", self.prefix.join("."))
    }

    /// The subject of `service`'s `verb`.
    pub fn subject(&self, service: &str, verb: &str) -> String {
        format!("{}.{service}.{verb}", self.prefix.join("."))
    }

    /// `(service, verb)` of a subject this template matches.
    pub fn split<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let tokens: Vec<&str> = subject.split('.').collect();
        if tokens.len() != self.prefix.len() + 2
            || tokens[..self.prefix.len()]
                .iter()
                .zip(&self.prefix)
                .any(|(a, b)| *a != b)
        {
            return None;
        }
        Some((tokens[tokens.len() - 2], tokens[tokens.len() - 1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_round_trip_and_chain() {
        let req: Request = serde_json::from_value(json!({"data": {"x": 1}})).unwrap();
        assert_eq!(req.chain(), req.id);
        let reply = Reply::ok(&req, json!(2));
        assert_eq!((reply.correlation_id, reply.causation_id), (req.id, req.id));
        let chained = Request {
            correlation_id: Some(Uuid::nil()),
            ..req.clone()
        };
        let err = Reply::error(&chained, ErrorCode::NotFound, "no", json!({}));
        let v = serde_json::to_value(&err).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "NOT_FOUND");
        assert_eq!(v["correlation_id"], Uuid::nil().to_string());
        assert!(v.get("data").is_none());
        assert_eq!(serde_json::from_value::<Reply>(v).unwrap(), err);
    }

    #[test]
    fn sqlstates_map_to_codes() {
        for (state, code) in [
            ("22023", Some(ErrorCode::Validation)),
            ("23505", Some(ErrorCode::Validation)),
            ("42501", Some(ErrorCode::Forbidden)),
            ("P0002", Some(ErrorCode::NotFound)),
            ("42883", Some(ErrorCode::NotFound)),
            ("57014", Some(ErrorCode::Timeout)),
            ("54000", Some(ErrorCode::Limit)),
            ("40001", Some(ErrorCode::Unavailable)),
            ("XX000", None),
            ("42P17", None),
        ] {
            assert_eq!(code_for_sqlstate(state), code, "{state}");
        }
        assert_eq!(code_for_status(422), ErrorCode::Validation);
        assert_eq!(code_for_status(500), ErrorCode::Internal);
    }

    #[test]
    fn subject_templates() {
        let t = SubjectTemplate::parse("cbs.{service}.{verb}").unwrap();
        assert_eq!(t.wildcard(), "cbs.*.*");
        assert_eq!(t.subject("notes", "create"), "cbs.notes.create");
        assert_eq!(t.split("cbs.notes.create"), Some(("notes", "create")));
        assert_eq!(t.split("cbs.notes"), None);
        assert_eq!(t.split("other.notes.create"), None);
        let deep = SubjectTemplate::parse("acme.svc.{service}.{verb}").unwrap();
        assert_eq!(deep.split("acme.svc.a.b"), Some(("a", "b")));
        for bad in [
            "{service}.{verb}",
            "svc.{verb}.{service}",
            "svc.*.{service}.{verb}",
            "svc",
        ] {
            assert!(SubjectTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
