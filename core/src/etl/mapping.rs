//! Mappings: how a connector's raw records become entities. Declarative JSON,
//! validated when a source is saved and compiled once:
//!
//! ```json
//! {"kind": "person",
//!  "external_id": "id",
//!  "fields": {
//!    "name":    {"path": "full_name", "normalize": ["trim"], "required": true},
//!    "email":   {"path": "contact.email", "normalize": ["email"]},
//!    "phone":   {"path": "tel", "normalize": [{"phone": {"region": "DE"}}]},
//!    "born":    {"path": "dob", "normalize": ["timestamp"]},
//!    "origin":  {"constant": "crm"},
//!    "display": {"concat": [{"path": "first"}, " ", {"path": "last"}], "normalize": ["trim"]}},
//!  "identity": ["email", "phone"],
//!  "merge": "incoming",
//!  "keep_existing": ["name"]}
//! ```
//!
//! `identity` names the fields whose values identify an entity across sources;
//! `merge` says which side wins when a record updates an existing entity
//! (`incoming`, the default, or `existing`), `keep_existing` lists fields where the
//! existing value wins regardless. A missing or null incoming value never erases one.

use super::normalize::Normalizer;
use crate::json::lookup;
use serde_json::{Map, Value};

/// Most fields in one mapping.
const MAX_FIELDS: usize = 100;
/// Longest identity key value (bytes): well under the b-tree limit of `entity_keys`.
const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Path(Vec<String>),
    Constant(Value),
    Concat(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Path(Vec<String>),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Field {
    name: String,
    source: Source,
    normalize: Vec<Normalizer>,
    required: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub kind: String,
    external_id: Vec<String>,
    fields: Vec<Field>,
    pub identity: Vec<String>,
    prefer_existing: bool,
    keep_existing: Vec<String>,
}

/// What one record maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub data: Map<String, Value>,
    /// (identity field, normalized value as text)
    pub keys: Vec<(String, String)>,
}

fn path(raw: &str) -> Result<Vec<String>, String> {
    let p: Vec<String> = raw.split('.').map(str::to_string).collect();
    if raw.is_empty() || p.iter().any(String::is_empty) {
        return Err(format!(
            "path \"{raw}\" must be dotted names, e.g. contact.email"
        ));
    }
    Ok(p)
}

fn identifier(kind: &str, name: &str) -> Result<(), String> {
    let ok = crate::names::KIND.accepts(name);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} \"{name}\" must be lowercase letters, digits and _, starting with a letter"
        ))
    }
}

fn parse_field(name: &str, spec: &Value) -> Result<Field, String> {
    identifier("field", name)?;
    let m = spec
        .as_object()
        .ok_or_else(|| format!("field \"{name}\": expected an object"))?;
    for key in m.keys() {
        if !["path", "constant", "concat", "normalize", "required"].contains(&key.as_str()) {
            return Err(format!("field \"{name}\": unknown key \"{key}\""));
        }
    }
    let sources = ["path", "constant", "concat"]
        .iter()
        .filter(|k| m.contains_key(**k))
        .count();
    if sources != 1 {
        return Err(format!(
            "field \"{name}\": needs exactly one of path, constant, concat"
        ));
    }
    let source = if let Some(p) = m.get("path") {
        Source::Path(
            path(
                p.as_str()
                    .ok_or_else(|| format!("field \"{name}\": path must be text"))?,
            )
            .map_err(|e| format!("field \"{name}\": {e}"))?,
        )
    } else if let Some(c) = m.get("constant") {
        Source::Constant(c.clone())
    } else {
        let parts = m["concat"]
            .as_array()
            .ok_or_else(|| format!("field \"{name}\": concat must be a list"))?;
        Source::Concat(
            parts
                .iter()
                .map(|p| match p {
                    Value::String(t) => Ok(Part::Text(t.clone())),
                    Value::Object(o) if o.len() == 1 && o.contains_key("path") => o["path"]
                        .as_str()
                        .ok_or_else(|| "path must be text".to_string())
                        .and_then(path)
                        .map(Part::Path),
                    other => Err(format!(
                        "concat takes text and {{\"path\": …}}, got {other}"
                    )),
                })
                .collect::<Result<_, _>>()
                .map_err(|e| format!("field \"{name}\": {e}"))?,
        )
    };
    let normalize = match m.get("normalize") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(Normalizer::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("field \"{name}\": {e}"))?,
        Some(_) => return Err(format!("field \"{name}\": normalize must be a list")),
    };
    let required = match m.get("required") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(format!("field \"{name}\": required must be true or false")),
    };
    Ok(Field {
        name: name.to_string(),
        source,
        normalize,
        required,
    })
}

impl Mapping {
    pub fn parse(value: &Value) -> Result<Mapping, String> {
        let m = value
            .as_object()
            .ok_or_else(|| "a mapping is a JSON object".to_string())?;
        for key in m.keys() {
            if ![
                "kind",
                "external_id",
                "fields",
                "identity",
                "merge",
                "keep_existing",
            ]
            .contains(&key.as_str())
            {
                return Err(format!("unknown key \"{key}\""));
            }
        }
        let kind = m
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| "kind is required".to_string())?;
        identifier("kind", kind)?;
        let external_id = match m.get("external_id") {
            None => "id",
            Some(Value::String(p)) => p.as_str(),
            Some(other) => return Err(format!("external_id must be a path string, got {other}")),
        };
        let external_id = path(external_id).map_err(|e| format!("external_id: {e}"))?;
        let fields_spec = m
            .get("fields")
            .and_then(Value::as_object)
            .filter(|f| !f.is_empty() && f.len() <= MAX_FIELDS)
            .ok_or_else(|| format!("fields must be an object of 1 to {MAX_FIELDS} fields"))?;
        let fields: Vec<Field> = fields_spec
            .iter()
            .map(|(name, spec)| parse_field(name, spec))
            .collect::<Result<_, _>>()?;
        let names = |key: &str| -> Result<Vec<String>, String> {
            let list = match m.get(key) {
                None => return Ok(Vec::new()),
                Some(Value::Array(l)) => l,
                Some(_) => return Err(format!("{key} must be a list of field names")),
            };
            list.iter()
                .map(|v| {
                    let n = v.as_str().unwrap_or_default();
                    if fields.iter().any(|f| f.name == n) {
                        Ok(n.to_string())
                    } else {
                        Err(format!("{key}: \"{v}\" is not a field of this mapping"))
                    }
                })
                .collect()
        };
        let identity = names("identity")?;
        // A constant is the same for every record: as an identity key it would
        // merge the whole source into one entity.
        if let Some(f) = fields
            .iter()
            .find(|f| identity.contains(&f.name) && matches!(f.source, Source::Constant(_)))
        {
            return Err(format!(
                "identity: \"{}\" is a constant, the same for every record",
                f.name
            ));
        }
        let keep_existing = names("keep_existing")?;
        let prefer_existing = match m.get("merge") {
            None => false,
            Some(v) if v == "incoming" => false,
            Some(v) if v == "existing" => true,
            Some(other) => {
                return Err(format!("merge {other} is not \"incoming\" or \"existing\""))
            }
        };
        Ok(Mapping {
            kind: kind.to_string(),
            external_id,
            fields,
            identity,
            prefer_existing,
            keep_existing,
        })
    }

    /// The record's id in its source: text or an integer.
    /// None when missing, empty, or longer than an identity key may be (the landing
    /// zone indexes it): such a record is rejected and landed without one.
    pub fn external_id(&self, record: &Value) -> Option<String> {
        match lookup(record, &self.external_id)? {
            Value::String(s) if !s.is_empty() && s.len() <= MAX_KEY_BYTES => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Maps one record; the error names the field.
    pub fn apply(&self, record: &Value) -> Result<Mapped, String> {
        if !record.is_object() {
            return Err("a record must be a JSON object".into());
        }
        let mut data = Map::new();
        for f in &self.fields {
            let raw = match &f.source {
                Source::Path(p) => lookup(record, p).cloned().unwrap_or(Value::Null),
                Source::Constant(c) => c.clone(),
                Source::Concat(parts) => {
                    // Separators alone are no value: without any of its paths the
                    // concatenation is null.
                    let has_value = parts.iter().any(|p| match p {
                        Part::Path(p) => lookup(record, p).is_some_and(|v| !v.is_null()),
                        Part::Text(_) => false,
                    });
                    if has_value {
                        Value::String(
                            parts
                                .iter()
                                .map(|p| match p {
                                    Part::Text(t) => t.clone(),
                                    Part::Path(p) => match lookup(record, p) {
                                        Some(Value::String(s)) => s.clone(),
                                        Some(Value::Null) | None => String::new(),
                                        Some(other) => other.to_string(),
                                    },
                                })
                                .collect(),
                        )
                    } else {
                        Value::Null
                    }
                }
            };
            let value = f
                .normalize
                .iter()
                .try_fold(raw, |v, n| n.apply(v))
                .map_err(|e| format!("field \"{}\": {e}", f.name))?;
            // An empty value is no value: it never erases a stored one.
            let empty = value.is_null() || value == Value::String(String::new());
            if empty && f.required {
                return Err(format!("field \"{}\" is required", f.name));
            }
            if !empty {
                data.insert(f.name.clone(), value);
            }
        }
        let mut keys = Vec::with_capacity(self.identity.len());
        for k in &self.identity {
            let text = match data.get(k) {
                None => continue,
                Some(Value::String(s)) if s.is_empty() => continue,
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            // Keys are indexed: a longer one would fail the whole batch's insert.
            if text.len() > MAX_KEY_BYTES {
                return Err(format!(
                    "field \"{k}\" is an identity key of {} bytes; the limit is {MAX_KEY_BYTES}",
                    text.len()
                ));
            }
            keys.push((k.clone(), text));
        }
        Ok(Mapped { data, keys })
    }

    /// Merges incoming fields into an existing entity's data; returns the result
    /// and the changed fields as `{field: {"from": …, "to": …}}`.
    pub fn merge(
        &self,
        existing: &Map<String, Value>,
        incoming: &Map<String, Value>,
    ) -> (Map<String, Value>, Map<String, Value>) {
        let mut merged = existing.clone();
        let mut changed = Map::new();
        for (k, v) in incoming {
            let old = existing.get(k);
            let existing_wins = old.is_some_and(|o| !o.is_null())
                && (self.prefer_existing || self.keep_existing.contains(k));
            if existing_wins || old == Some(v) {
                continue;
            }
            changed.insert(
                k.clone(),
                serde_json::json!({"from": old.cloned().unwrap_or(Value::Null), "to": v}),
            );
            merged.insert(k.clone(), v.clone());
        }
        (merged, changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn person() -> Mapping {
        Mapping::parse(&json!({
            "kind": "person",
            "fields": {
                "name": {"path": "full_name", "normalize": ["trim"], "required": true},
                "email": {"path": "contact.email", "normalize": ["email"]},
                "phone": {"path": "tel", "normalize": [{"phone": {"region": "DE"}}]},
                "vip": {"path": "flags.vip", "normalize": ["boolean"]},
                "origin": {"constant": "crm"},
                "display": {"concat": [{"path": "first"}, " ", {"path": "last"}], "normalize": ["trim"]}
            },
            "identity": ["email", "phone"],
            "keep_existing": ["name"]
        }))
        .unwrap()
    }

    #[test]
    fn maps_a_record() {
        let m = person();
        let rec = json!({"id": 7, "full_name": " Ada Lovelace ", "contact": {"email": "ADA@Example.com"},
                         "tel": "030 1234567", "flags": {"vip": "yes"}, "first": "Ada", "last": "L."});
        assert_eq!(m.external_id(&rec).as_deref(), Some("7"));
        let out = m.apply(&rec).unwrap();
        assert_eq!(
            Value::Object(out.data.clone()),
            json!({"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+49301234567",
                   "vip": true, "origin": "crm", "display": "Ada L."})
        );
        assert_eq!(
            out.keys,
            [
                ("email".to_string(), "ada@example.com".to_string()),
                ("phone".to_string(), "+49301234567".to_string())
            ]
        );
    }

    #[test]
    fn rejects_records_with_reasons() {
        let m = person();
        assert!(m
            .apply(&json!({"id": 1}))
            .unwrap_err()
            .contains("\"name\" is required"));
        let err = m
            .apply(&json!({"id": 1, "full_name": "x", "contact": {"email": "nope"}}))
            .unwrap_err();
        assert!(err.contains("field \"email\""), "{err}");
        assert!(m.apply(&json!([1])).is_err());
        let by_code = Mapping::parse(&json!({
            "kind": "p", "fields": {"code": {"path": "code"}}, "identity": ["code"]
        }))
        .unwrap();
        let err = by_code
            .apply(&json!({"id": 1, "code": "x".repeat(1100)}))
            .unwrap_err();
        assert!(err.contains("identity key of 1100 bytes"), "{err}");
        assert_eq!(m.external_id(&json!({"full_name": "x"})), None);
        assert_eq!(m.external_id(&json!({"id": "x".repeat(1025)})), None);
    }

    #[test]
    fn merge_keeps_what_it_should() {
        let m = person();
        let existing = json!({"name": "Ada", "email": "a@x.org", "vip": false})
            .as_object()
            .unwrap()
            .clone();
        let incoming =
            json!({"name": "Ada L.", "email": "a@x.org", "vip": true, "phone": "+49301234567"})
                .as_object()
                .unwrap()
                .clone();
        let (merged, changed) = m.merge(&existing, &incoming);
        assert_eq!(merged["name"], json!("Ada"), "keep_existing");
        assert_eq!(merged["vip"], json!(true));
        assert_eq!(
            Value::Object(changed),
            json!({"vip": {"from": false, "to": true}, "phone": {"from": null, "to": "+49301234567"}})
        );
    }

    #[test]
    fn invalid_mappings_say_why() {
        for (mapping, expected) in [
            (json!({"fields": {"a": {"path": "a"}}}), "kind is required"),
            (
                json!({"kind": "Person", "fields": {"a": {"path": "a"}}}),
                "kind \"Person\"",
            ),
            (json!({"kind": "p", "fields": {}}), "fields must be"),
            (
                json!({"kind": "p", "fields": {"a": {"path": "a..b"}}}),
                "dotted names",
            ),
            (
                json!({"kind": "p", "fields": {"a": {"path": "a", "constant": 1}}}),
                "exactly one of",
            ),
            (
                json!({"kind": "p", "fields": {"a": {"path": "a", "normalize": ["upper"]}}}),
                "unknown normalizer",
            ),
            (
                json!({"kind": "p", "fields": {"a": {"path": "a"}}, "identity": ["b"]}),
                "not a field",
            ),
            (
                json!({"kind": "p", "fields": {"a": {"path": "a"}}, "merge": "newest"}),
                "merge",
            ),
            (
                json!({"kind": "p", "fields": {"a": {"path": "a", "colour": 1}}}),
                "unknown key",
            ),
            (
                json!({"kind": "p", "fields": {"a": {"path": "a"}}, "merge": true}),
                "merge true",
            ),
            (
                json!({"kind": "p", "fields": {"a": {"path": "a"}}, "external_id": 7}),
                "external_id must be a path",
            ),
            (
                json!({"kind": "p", "fields": {"a": {"path": "a"}, "src": {"constant": "crm"}},
                       "identity": ["src"]}),
                "\"src\" is a constant",
            ),
        ] {
            let err = Mapping::parse(&mapping).unwrap_err();
            assert!(err.contains(expected), "{mapping}: {err}");
        }
    }
}
