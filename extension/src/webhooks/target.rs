//! What a webhook delivers to and on which row changes, checked when it is created
//! so a delivery never fails for a reason that was visible up front.

use serde_json::{json, Map, Value};
pub use spine_core::jobs::payloads::WebhookTarget as Target;
use spine_core::jobs::payloads::DEFAULT_WEBHOOK_TIMEOUT_MS;

/// Longest delivery timeout a webhook may ask for (the `http` handler's own cap).
pub const MAX_TIMEOUT_MS: u64 = 300_000;

/// Headers Spine sets itself on every delivery; a target may not override them.
const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "idempotency-key",
    "x-spine-signature",
    "x-spine-webhook",
    "content-length",
];

/// Validates a target, `{"url": …, "headers": {…}, "timeout_ms": n}` or
/// `{"function": "name"}`, into its stored form ([`Target`], defined in
/// spine-core because the worker reads it back).
pub fn parse(target: &Value) -> Result<Target, String> {
    let obj = target
        .as_object()
        .ok_or("target must be an object: {\"url\": …} or {\"function\": …}")?;
    let known = ["url", "headers", "timeout_ms", "function"];
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "unknown key \"{k}\" in target (expected url, headers, timeout_ms or function)"
        ));
    }
    match (obj.get("url"), obj.get("function")) {
        (Some(_), Some(_)) => Err("target has both url and function; pick one".into()),
        (None, None) => Err("target needs a \"url\" or a \"function\"".into()),
        (None, Some(f)) => {
            if obj.len() > 1 {
                return Err("a function target takes no headers or timeout_ms".into());
            }
            let name = f.as_str().ok_or("function must be a string")?;
            if !spine_core::names::PLUGIN.accepts(name) {
                return Err(format!("\"{name}\" is not a function name"));
            }
            Ok(Target::Function {
                function: name.to_string(),
            })
        }
        (Some(u), None) => {
            let url = u.as_str().ok_or("url must be a string")?;
            let parsed = url::Url::parse(url).map_err(|e| format!("url \"{url}\": {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(format!("url \"{url}\" must be http(s)://host/…"));
            }
            let mut headers = Map::new();
            if let Some(h) = obj.get("headers") {
                let h = h.as_object().ok_or("headers must be an object")?;
                for (k, v) in h {
                    let valid_name = !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                    if !valid_name {
                        return Err(format!("header name \"{k}\" is not a token"));
                    }
                    if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                        return Err(format!("header {k} is set by Spine on every delivery"));
                    }
                    let v = v.as_str().ok_or(format!("header {k} must be a string"))?;
                    if v.contains(['\r', '\n', '\0']) {
                        return Err(format!("header {k} has a line break or NUL"));
                    }
                    headers.insert(k.clone(), json!(v));
                }
            }
            let timeout_ms = match obj.get("timeout_ms") {
                None => DEFAULT_WEBHOOK_TIMEOUT_MS,
                Some(t) => t
                    .as_u64()
                    .filter(|t| (1..=MAX_TIMEOUT_MS).contains(t))
                    .ok_or(format!("timeout_ms must be 1 to {MAX_TIMEOUT_MS}"))?,
            };
            Ok(Target::Url {
                url: url.to_string(),
                headers,
                timeout_ms,
            })
        }
    }
}

/// INSERT, UPDATE and/or DELETE (any case), without repeats, in that order.
pub fn parse_events(events: &[Option<String>]) -> Result<Vec<&'static str>, String> {
    if events.is_empty() {
        return Err("events must name at least one of INSERT, UPDATE, DELETE".into());
    }
    let mut out = Vec::new();
    for e in events {
        let e = e.as_deref().ok_or("events must not contain NULL")?;
        let op = ["INSERT", "UPDATE", "DELETE"]
            .into_iter()
            .find(|op| op.eq_ignore_ascii_case(e))
            .ok_or(format!("\"{e}\" is not INSERT, UPDATE or DELETE"))?;
        if !out.contains(&op) {
            out.push(op);
        }
    }
    out.sort_by_key(|op| ["INSERT", "UPDATE", "DELETE"].iter().position(|o| o == op));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_targets() {
        let t =
            parse(&json!({"url": "https://h.example/x", "headers": {"Authorization": "Bearer k"}}))
                .unwrap();
        assert_eq!(
            t.to_value(),
            json!({"url": "https://h.example/x", "headers": {"Authorization": "Bearer k"}, "timeout_ms": 10000})
        );
        assert_eq!(
            t.redacted()["headers"],
            json!({"Authorization": "<redacted>"})
        );
        for (bad, why) in [
            (json!("https://h"), "object"),
            (json!({}), "needs"),
            (json!({"url": "ftp://h/x"}), "http(s)"),
            (json!({"url": "nope"}), "url"),
            (json!({"url": "http://h", "function": "f"}), "both"),
            (
                json!({"url": "http://h", "headers": {"X-Spine-Signature": "x"}}),
                "set by Spine",
            ),
            (
                json!({"url": "http://h", "headers": {"A": "b\r\nc: d"}}),
                "line break",
            ),
            (json!({"url": "http://h", "headers": {"a b": "c"}}), "token"),
            (json!({"url": "http://h", "timeout_ms": 0}), "timeout_ms"),
            (json!({"url": "http://h", "retries": 3}), "unknown key"),
        ] {
            let e = parse(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn function_targets() {
        assert_eq!(
            parse(&json!({"function": "sms-sender"})).unwrap(),
            Target::Function {
                function: "sms-sender".into()
            }
        );
        assert!(parse(&json!({"function": "Bad Name"})).is_err());
        assert!(parse(&json!({"function": "f", "timeout_ms": 5})).is_err());
    }

    #[test]
    fn events() {
        let e =
            |v: &[&str]| parse_events(&v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>());
        assert_eq!(
            e(&["delete", "INSERT", "insert"]).unwrap(),
            vec!["INSERT", "DELETE"]
        );
        assert!(e(&[]).is_err());
        assert!(e(&["TRUNCATE"]).unwrap_err().contains("TRUNCATE"));
        assert!(parse_events(&[None]).is_err());
    }
}
