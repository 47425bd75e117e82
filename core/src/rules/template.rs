//! Action templates: JSON in which strings may name values of the evaluation
//! context with `{{path}}`. A string that is exactly one placeholder becomes the
//! value itself (any JSON type: `"{{event.data}}"` is an object); placeholders
//! inside a longer string are interpolated as text. Paths are dotted and start at
//! `event`, `entity` or `state`; they are checked when the rule is saved. A path
//! with no value is `null` (or empty text inside a string).

use crate::json::lookup;
use serde_json::{Map, Value};

/// Roots a template or condition may read.
pub const ROOTS: [&str; 3] = ["event", "entity", "state"];

#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    Literal(Value),
    /// The whole string is one placeholder.
    Value(Vec<String>),
    /// Text and placeholders.
    Text(Vec<Part>),
    Array(Vec<Template>),
    Object(Vec<(String, Template)>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Path(Vec<String>),
}

fn parse_path(raw: &str) -> Result<Vec<String>, String> {
    let path: Vec<String> = raw.trim().split('.').map(str::to_string).collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!("placeholder {{{{{raw}}}}} is not a dotted path"));
    }
    if !ROOTS.contains(&path[0].as_str()) {
        return Err(format!(
            "placeholder {{{{{raw}}}}} must start with {}",
            ROOTS.join(", ")
        ));
    }
    Ok(path)
}

fn parse_text(s: &str) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| format!("unclosed placeholder in \"{s}\""))?
            + start;
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_string()));
        }
        parts.push(Part::Path(parse_path(&rest[start + 2..end])?));
        rest = &rest[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(match parts.as_slice() {
        [] => Template::Literal(Value::String(String::new())),
        [Part::Path(p)] => Template::Value(p.clone()),
        [Part::Text(t)] => Template::Literal(Value::String(t.clone())),
        _ => Template::Text(parts),
    })
}

impl Template {
    pub fn compile(value: &Value) -> Result<Template, String> {
        Ok(match value {
            Value::String(s) => parse_text(s)?,
            Value::Array(a) => {
                Template::Array(a.iter().map(Template::compile).collect::<Result<_, _>>()?)
            }
            Value::Object(m) => Template::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), Template::compile(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => Template::Literal(other.clone()),
        })
    }

    pub fn render(&self, context: &Value) -> Value {
        match self {
            Template::Literal(v) => v.clone(),
            Template::Value(path) => lookup(context, path).cloned().unwrap_or(Value::Null),
            Template::Text(parts) => Value::String(
                parts
                    .iter()
                    .map(|p| match p {
                        Part::Text(t) => t.clone(),
                        Part::Path(path) => match lookup(context, path) {
                            None | Some(Value::Null) => String::new(),
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                        },
                    })
                    .collect(),
            ),
            Template::Array(items) => {
                Value::Array(items.iter().map(|t| t.render(context)).collect())
            }
            Template::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, t)| (k.clone(), t.render(context)))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_values_and_interpolation() {
        let context = json!({"event": {"id": "e1", "data": {"caller": "Partner", "n": 2}},
                             "state": {"location": "Work"}});
        let t = Template::compile(&json!({
            "to": "{{event.data.caller}}",
            "text": "At {{state.location}}, call #{{event.data.n}} from {{ event.data.caller }}",
            "data": "{{event.data}}",
            "missing": "{{entity.name}}",
            "fixed": [1, "plain"]
        }))
        .unwrap();
        assert_eq!(
            t.render(&context),
            json!({"to": "Partner", "text": "At Work, call #2 from Partner",
                   "data": {"caller": "Partner", "n": 2}, "missing": null, "fixed": [1, "plain"]})
        );
    }

    #[test]
    fn bad_placeholders_are_refused() {
        for (t, expected) in [
            (json!("{{user.id}}"), "must start with"),
            (json!("{{event..id}}"), "dotted path"),
            (json!("hello {{event.id"), "unclosed"),
        ] {
            let err = Template::compile(&t).unwrap_err();
            assert!(err.contains(expected), "{t}: {err}");
        }
    }
}
