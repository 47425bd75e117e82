//! A rule's actions, parsed strictly when the rule is saved:
//!
//! ```json
//! [{"enqueue":       {"queue": "messages", "payload": {…}, "priority": "realtime"}},
//!  {"emit":          {"type": "assistant.ReplyQueued", "data": {…}}},
//!  {"set_state":     {"key": "last_caller", "value": "{{event.data.caller}}"}},
//!  {"call_function": {"name": "sms-sender", "payload": {…}}},
//!  {"webhook":       {"url": "https://hooks.example.com/x", "payload": {…}, "headers": {…}}}]
//! ```
//!
//! Payloads, data and values are [`Template`]s. What needs the database (does the
//! queue exist and accept users' jobs) is checked by the caller.

use crate::events::RESERVED_DOMAINS;
use serde_json::{Map, Value};
use spine_core::event_type;
use spine_core::rules::template::Template;

/// Most actions in one rule.
const MAX_ACTIONS: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Enqueue {
        queue: String,
        payload: Template,
        priority: String,
    },
    Emit {
        event_type: String,
        data: Template,
    },
    SetState {
        key: String,
        value: Template,
    },
    /// A job running function `name`: in the built-in `function` queue, or in
    /// `queue` (one open to users, which a worker serves with the function
    /// handler: its own concurrency, rate limit and priority).
    CallFunction {
        name: String,
        payload: Template,
        queue: Option<String>,
        priority: String,
    },
    Webhook {
        url: String,
        payload: Template,
        headers: Map<String, Value>,
    },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Enqueue { .. } => "enqueue",
            Action::Emit { .. } => "emit",
            Action::SetState { .. } => "set_state",
            Action::CallFunction { .. } => "call_function",
            Action::Webhook { .. } => "webhook",
        }
    }
}

/// An action's `priority` field: realtime, interactive (the default) or background.
fn priority(action: &str, f: &Fields<'_>) -> Result<String, String> {
    match f.map.get("priority") {
        None => Ok("interactive".to_string()),
        Some(Value::String(p))
            if ["realtime", "interactive", "background"].contains(&p.as_str()) =>
        {
            Ok(p.clone())
        }
        Some(other) => Err(format!(
            "{action}: priority {other} is not realtime, interactive or background"
        )),
    }
}

/// The fields of one action object, with unknown fields refused.
struct Fields<'a> {
    kind: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn new(kind: &'static str, value: &'a Value, allowed: &[&str]) -> Result<Self, String> {
        let map = value
            .as_object()
            .ok_or_else(|| format!("{kind}: expected an object"))?;
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "{kind}: unknown field \"{unknown}\" (expected {})",
                allowed.join(", ")
            ));
        }
        Ok(Fields { kind, map })
    }

    fn text(&self, name: &str) -> Result<String, String> {
        match self.map.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(format!(
                "{}: \"{name}\" must be a non-empty string",
                self.kind
            )),
        }
    }

    fn template(&self, name: &str) -> Result<Template, String> {
        Template::compile(self.map.get(name).unwrap_or(&Value::Object(Map::new())))
            .map_err(|e| format!("{}.{name}: {e}", self.kind))
    }
}

/// Webhook targets: https URLs to a named public host. The URL is parsed the way
/// the worker's HTTP client parses it (WHATWG), so `https://0x7f.1/`,
/// `https://127.1/` or `https://169.254.43518/` are the IP addresses they stand for
/// and are refused, as are `localhost` and `.local` names (with or without a
/// trailing dot). The http handler reaches whatever a name resolves to.
fn check_webhook_url(raw: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("webhook: url \"{raw}\" {why}"));
    let Ok(url) = url::Url::parse(raw) else {
        return bad("is not a URL");
    };
    if url.scheme() != "https" {
        return bad("must start with https://");
    }
    match url.host() {
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let local = name == "localhost"
                || name.ends_with(".localhost")
                || name.ends_with(".local")
                || name.ends_with(".internal");
            if local || !name.contains('.') {
                return bad("must name a public host (no IP address, localhost or .local)");
            }
            Ok(())
        }
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
            bad("must name a public host (no IP address, localhost or .local)")
        }
        None => bad("has no host"),
    }
}

fn parse_one(value: &Value) -> Result<Action, String> {
    let map = value
        .as_object()
        .filter(|m| m.len() == 1)
        .ok_or_else(|| "each action is an object with one key: enqueue, emit, set_state, call_function or webhook".to_string())?;
    let (kind, body) = map.iter().next().expect("one entry");
    match kind.as_str() {
        "enqueue" => {
            let f = Fields::new("enqueue", body, &["queue", "payload", "priority"])?;
            let priority = priority("enqueue", &f)?;
            Ok(Action::Enqueue {
                queue: f.text("queue")?,
                payload: f.template("payload")?,
                priority,
            })
        }
        "emit" => {
            let f = Fields::new("emit", body, &["type", "data"])?;
            let event_type = f.text("type")?;
            event_type::validate(&event_type).map_err(|r| format!("emit: type \"{event_type}\" {r}"))?;
            let domain = event_type.split('.').next().unwrap_or_default();
            if RESERVED_DOMAINS.contains(&domain) {
                return Err(format!(
                    "emit: domain \"{domain}\" is reserved for Spine; rules emit in a domain of their own"
                ));
            }
            Ok(Action::Emit {
                event_type,
                data: f.template("data")?,
            })
        }
        "set_state" => {
            let f = Fields::new("set_state", body, &["key", "value"])?;
            let key = f.text("key")?;
            if key.len() > 200 {
                return Err("set_state: key is longer than 200 bytes".into());
            }
            Ok(Action::SetState {
                key,
                value: Template::compile(f.map.get("value").unwrap_or(&Value::Null))
                    .map_err(|e| format!("set_state.value: {e}"))?,
            })
        }
        "call_function" => {
            let f = Fields::new("call_function", body, &["name", "payload", "queue", "priority"])?;
            let name = f.text("name")?;
            spine_core::manifest::check_plugin_name(&name)
                .map_err(|e| format!("call_function: {e}"))?;
            let queue = match f.map.get("queue") {
                None => None,
                Some(_) => Some(f.text("queue")?),
            };
            Ok(Action::CallFunction {
                name,
                payload: f.template("payload")?,
                queue,
                priority: priority("call_function", &f)?,
            })
        }
        "webhook" => {
            let f = Fields::new("webhook", body, &["url", "payload", "headers"])?;
            let url = f.text("url")?;
            check_webhook_url(&url)?;
            let headers = match f.map.get("headers") {
                None => Map::new(),
                Some(Value::Object(h)) if h.values().all(Value::is_string) => h.clone(),
                Some(_) => return Err("webhook: headers must be an object of strings".into()),
            };
            Ok(Action::Webhook {
                url,
                payload: f.template("payload")?,
                headers,
            })
        }
        other => Err(format!(
            "unknown action \"{other}\" (expected enqueue, emit, set_state, call_function or webhook)"
        )),
    }
}

/// Parses a rule's action list; errors name the action by position.
pub fn parse(value: &Value) -> Result<Vec<Action>, String> {
    let list = value
        .as_array()
        .ok_or_else(|| "actions must be a JSON array".to_string())?;
    if list.is_empty() || list.len() > MAX_ACTIONS {
        return Err(format!("a rule has 1 to {MAX_ACTIONS} actions"));
    }
    list.iter()
        .enumerate()
        .map(|(i, a)| parse_one(a).map_err(|e| format!("action {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_parses() {
        let actions = parse(&json!([
            {"enqueue": {"queue": "messages", "payload": {"to": "{{event.data.caller}}"}, "priority": "realtime"}},
            {"emit": {"type": "assistant.ReplyQueued", "data": {"for": "{{event.id}}"}}},
            {"set_state": {"key": "last_caller", "value": "{{event.data.caller}}"}},
            {"call_function": {"name": "sms-sender", "payload": {}}},
            {"webhook": {"url": "https://hooks.example.com/in", "headers": {"X-A": "b"}}}
        ]))
        .unwrap();
        let kinds: Vec<&str> = actions.iter().map(Action::kind).collect();
        assert_eq!(
            kinds,
            ["enqueue", "emit", "set_state", "call_function", "webhook"]
        );
    }

    #[test]
    fn a_function_call_may_name_its_queue_and_priority() {
        let actions = parse(&json!([
            {"call_function": {"name": "sms", "payload": {}}},
            {"call_function": {"name": "sms", "payload": {}, "queue": "send_outgoing_message", "priority": "realtime"}}
        ]))
        .unwrap();
        match (&actions[0], &actions[1]) {
            (
                Action::CallFunction {
                    queue: None,
                    priority: p0,
                    ..
                },
                Action::CallFunction {
                    queue: Some(q),
                    priority: p1,
                    ..
                },
            ) => {
                assert_eq!(p0, "interactive");
                assert_eq!(
                    (q.as_str(), p1.as_str()),
                    ("send_outgoing_message", "realtime")
                );
            }
            other => panic!("{other:?}"),
        }
        for (action, expected) in [
            (json!({"name": "sms", "queue": 3}), "\"queue\""),
            (
                json!({"name": "sms", "priority": "soon"}),
                "call_function: priority",
            ),
            (
                json!({"name": "sms", "lane": "x"}),
                "unknown field \"lane\"",
            ),
        ] {
            let err = parse(&json!([{ "call_function": action }])).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn bad_actions_say_which_and_why() {
        for (actions, expected) in [
            (json!({}), "array"),
            (json!([]), "1 to 20"),
            (
                json!([{"launch": {}}]),
                "action 1: unknown action \"launch\"",
            ),
            (
                json!([{"enqueue": {"queue": "q", "prio": 1}}]),
                "unknown field \"prio\"",
            ),
            (
                json!([{"enqueue": {"queue": "q", "priority": "urgent"}}]),
                "priority",
            ),
            (
                json!([{"emit": {"type": "data.EntityCreated"}}]),
                "reserved",
            ),
            (json!([{"emit": {"type": "x.DoIt"}}]), "past tense"),
            (json!([{"set_state": {"key": ""}}]), "\"key\" must be"),
            (json!([{"webhook": {"url": "http://example.com"}}]), "https"),
            (
                json!([{"webhook": {"url": "https://169.254.169.254/latest"}}]),
                "public host",
            ),
            (
                json!([{"webhook": {"url": "https://localhost:8080/"}}]),
                "public host",
            ),
            (
                json!([{"enqueue": {"queue": "q", "payload": "{{secret.x}}"}}]),
                "must start with",
            ),
        ] {
            let err = parse(&actions).unwrap_err();
            assert!(err.contains(expected), "{actions}: {err}");
        }
    }
}
