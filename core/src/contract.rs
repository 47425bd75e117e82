//! JSON Schema contracts: a schema compiled once, and what a value that breaks it
//! gets told — the JSON Pointer of each offending value and why, never the value
//! itself (it may be a secret someone sent by mistake, and messages end up in logs).
//!
//! The extension checks event data and job payloads with these; the worker checks
//! service requests and replies. Validation is the `jsonschema` crate's; remote
//! `$ref`s are refused when a schema is compiled, because a database backend must
//! not fetch URLs.

use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// Most violations reported for one value: enough to fix a payload, bounded so a
/// hostile value cannot make an error message of megabytes.
pub const MAX_VIOLATIONS: usize = 10;

/// A compiled schema.
pub struct Contract {
    validator: jsonschema::Validator,
}

/// One value that breaks the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON Pointer (RFC 6901) to the value; `""` is the whole document.
    pub pointer: String,
    /// Why, without the value (`value is not of type "number"`).
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "at {at}: {}", self.message)
    }
}

impl Contract {
    /// Compiles a schema (draft 2020-12 unless its `$schema` names another). The
    /// error says what is wrong with the schema and where.
    pub fn compile(schema: &Value) -> Result<Contract, String> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err("a schema is a JSON object (or true/false)".into());
        }
        let validator =
            jsonschema::options()
                .build(schema)
                .map_err(|e| match e.instance_path().as_str() {
                    "" => e.masked().to_string(),
                    at => format!("at {at}: {}", e.masked()),
                })?;
        Ok(Contract { validator })
    }

    /// Checks a value; on failure, up to [`MAX_VIOLATIONS`] violations, in the
    /// order the validator found them.
    pub fn check(&self, value: &Value) -> Result<(), Vec<Violation>> {
        // The common case: one pass that stops at nothing to report.
        if self.validator.is_valid(value) {
            return Ok(());
        }
        let violations: Vec<Violation> = self
            .validator
            .iter_errors(value)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                pointer: e.instance_path().as_str().to_string(),
                message: e.masked().to_string(),
            })
            .collect();
        Err(violations)
    }
}

/// A schema with its name, as errors cite it.
pub struct NamedContract {
    pub name: String,
    contract: Contract,
}

impl std::fmt::Debug for NamedContract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedContract")
            .field("name", &self.name)
            .finish()
    }
}

impl NamedContract {
    pub fn compile(name: impl Into<String>, schema: &Value) -> Result<NamedContract, String> {
        Ok(NamedContract {
            name: name.into(),
            contract: Contract::compile(schema)?,
        })
    }

    pub fn check(&self, value: &Value) -> Result<(), Vec<Violation>> {
        self.contract.check(value)
    }
}

/// What a refusal carries for a client to act on, the same on every surface
/// (an envelope's `details`, an HTTP error's `details`):
/// `{schema, pointer (the first violation's), violations: [{pointer, message}]}`.
pub fn details(schema: &str, violations: &[Violation]) -> Value {
    serde_json::json!({
        "schema": schema,
        "pointer": violations.first().map(|v| v.pointer.as_str()),
        "violations": violations,
    })
}

/// One line for an error message: the first violation, and how many more.
pub fn summary(violations: &[Violation]) -> String {
    match violations {
        [] => "no violation".into(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order() -> Contract {
        Contract::compile(&json!({
            "type": "object",
            "required": ["sku", "qty"],
            "properties": {
                "sku": {"type": "string", "minLength": 1},
                "qty": {"type": "integer", "minimum": 1},
                "lines": {"type": "array", "items": {"type": "number"}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_conforming_value_passes() {
        assert_eq!(order().check(&json!({"sku": "a", "qty": 2})), Ok(()));
    }

    #[test]
    fn each_violation_points_at_its_value() {
        let err = order()
            .check(&json!({"sku": "a", "qty": 0, "lines": [1, "two"]}))
            .unwrap_err();
        let pointers: Vec<&str> = err.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/qty"), "{err:?}");
        assert!(pointers.contains(&"/lines/1"), "{err:?}");
        assert_eq!(err.len(), 2, "{err:?}");
    }

    #[test]
    fn a_missing_property_points_at_its_parent() {
        let err = order().check(&json!({"sku": "a"})).unwrap_err();
        assert_eq!(err[0].pointer, "");
        assert!(err[0].message.contains("qty"), "{err:?}");
        assert_eq!(summary(&err), format!("at /: {}", err[0].message));
    }

    #[test]
    fn messages_never_repeat_the_value() {
        let err = order()
            .check(&json!({"sku": "a", "qty": "hunter2-secret"}))
            .unwrap_err();
        assert!(!err[0].message.contains("hunter2"), "{err:?}");
        assert_eq!(err[0].pointer, "/qty");
    }

    #[test]
    fn violations_are_bounded() {
        let c = Contract::compile(&json!({"type": "array", "items": {"type": "string"}})).unwrap();
        let err = c.check(&json!((0..100).collect::<Vec<_>>())).unwrap_err();
        assert_eq!(err.len(), MAX_VIOLATIONS);
        assert!(summary(&err).ends_with("(and 9 more)"));
    }

    #[test]
    fn a_broken_schema_is_refused_with_where() {
        let err = Contract::compile(&json!({"type": "whole number"}))
            .err()
            .unwrap();
        assert!(err.contains("type"), "{err}");
        assert!(Contract::compile(&json!([1, 2])).is_err());
    }

    #[test]
    fn remote_references_are_refused() {
        let err = Contract::compile(&json!({"$ref": "https://example.com/schema.json"}))
            .err()
            .unwrap();
        assert!(!err.is_empty());
    }
}
