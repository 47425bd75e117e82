//! Why an evaluation failed.

use serde_json::{json, Value};
use std::fmt;

/// An evaluation that has no value: JsonLogic's runtime errors, each with the
/// `{"type": …}` object that `try` hands to its fallback and that the
/// conformance suites expect.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// A number was needed and the value has none (`"abc"`, a list, an object),
    /// or arithmetic has no finite result (division by zero): `{"type": "NaN"}`.
    NaN,
    /// An operator got arguments it cannot work with, found only at run time
    /// (`all` over something that is not a list, `-` of an empty list):
    /// `{"type": "Invalid Arguments"}`.
    InvalidArguments,
    /// `{"throw": value}`: a string `s` is `{"type": s}`, an object is itself.
    Thrown(Box<Value>),
}

impl EvalError {
    /// The error as JsonLogic data: `{"type": …}`, or the object that was thrown.
    pub fn to_value(&self) -> Value {
        match self {
            EvalError::NaN => json!({"type": "NaN"}),
            EvalError::InvalidArguments => json!({"type": "Invalid Arguments"}),
            EvalError::Thrown(v) if v.is_object() => (**v).clone(),
            EvalError::Thrown(v) => json!({ "type": v }),
        }
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::NaN => f.write_str("NaN: a value has no number"),
            EvalError::InvalidArguments => f.write_str("Invalid Arguments"),
            EvalError::Thrown(_) => write!(f, "thrown: {}", self.to_value()),
        }
    }
}

impl std::error::Error for EvalError {}
