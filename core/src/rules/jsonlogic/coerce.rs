//! JsonLogic's type coercions: truthiness, numbers, text, and the comparisons
//! built on them.
//!
//! They follow JavaScript (which JsonLogic was written in) except where the
//! conformance suites (json-logic/compat-tables) settle on something stricter: a
//! number that cannot be had (`"abc"`, a list, an object) is an error
//! ([`EvalError::NaN`]) instead of a silent `NaN`, and `null` compares as `0`.

use super::EvalError;
use serde_json::{Number, Value};
use std::cmp::Ordering;

/// JavaScript truthiness, as JsonLogic defines it.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

/// JavaScript `Number(v)` for scalars; lists and objects have no number (JS
/// would turn `[5]` into 5, the suites refuse it).
#[inline]
pub(super) fn to_number(v: &Value) -> Result<f64, EvalError> {
    let n = match v {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => parse_number(s),
        Value::Array(_) | Value::Object(_) => f64::NAN,
    };
    if n.is_nan() {
        Err(EvalError::NaN)
    } else {
        Ok(n)
    }
}

/// JavaScript `Number(string)`: blank is 0, decimal and exponent forms, `0x`/`0o`/
/// `0b` integers, `Infinity`. Rust's own parser also takes `inf` and `nan`,
/// which JavaScript does not, hence the character check.
fn parse_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    let radix = |prefix: &str, radix: u32| {
        t.strip_prefix(prefix)
            .filter(|d| !d.is_empty())
            .map(|d| u64::from_str_radix(d, radix).map_or(f64::NAN, |n| n as f64))
    };
    if let Some(n) = radix("0x", 16)
        .or_else(|| radix("0X", 16))
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0O", 8))
        .or_else(|| radix("0b", 2))
        .or_else(|| radix("0B", 2))
    {
        return n;
    }
    match t.trim_start_matches(['+', '-']) {
        "Infinity" => {
            if t.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }
        }
        _ if t
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E')) =>
        {
            t.parse().unwrap_or(f64::NAN)
        }
        _ => f64::NAN,
    }
}

/// JavaScript `String(v)`.
pub(super) fn to_text(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number_text(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                if x.is_null() {
                    String::new()
                } else {
                    to_text(x)
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

fn number_text(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

/// A JSON number from an arithmetic result: whole numbers as integers (`2`, not
/// `2.0`); NaN and the infinities, which JSON cannot hold, are [`EvalError::NaN`].
pub(super) fn number(f: f64) -> Result<Value, EvalError> {
    if !f.is_finite() {
        Err(EvalError::NaN)
    } else if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Ok(Value::Number(Number::from(f as i64)))
    } else {
        Ok(Number::from_f64(f).map_or(Value::Null, Value::Number))
    }
}

/// Loose `==`: strings with strings, otherwise as numbers, `null` as 0 against a
/// number or boolean. A list or object, or a side with no number, is NaN.
#[inline]
pub(super) fn loose_eq(a: &Value, b: &Value) -> Result<bool, EvalError> {
    Ok(match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
            return Err(EvalError::NaN)
        }
        // As in JavaScript, null equals only null (and, per the suites, 0 and
        // false) and never a string: a missing field is not equal to "".
        (Value::Null, Value::String(_)) | (Value::String(_), Value::Null) => false,
        _ => to_number(a)? == to_number(b)?,
    })
}

/// JavaScript `===`: same type and value. Lists and objects are never identical
/// (JavaScript compares them by reference, and each evaluation makes its own).
#[inline]
pub(super) fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(_) | Value::Object(_), _) => false,
        _ => a == b,
    }
}

/// Relational order (`<`, `<=`, `>`, `>=`): strings with strings
/// lexicographically, anything else as numbers; a list, an object, or a side
/// with no number is NaN.
#[inline]
pub(super) fn order(a: &Value, b: &Value) -> Result<Ordering, EvalError> {
    if let (Value::String(x), Value::String(y)) = (a, b) {
        return Ok(x.cmp(y));
    }
    let (x, y) = (to_number(a)?, to_number(b)?);
    // Neither is NaN (to_number refuses it), so the order is total.
    Ok(x.partial_cmp(&y).unwrap_or(Ordering::Equal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Numbers are read from text as JavaScript's `Number()` reads them.
    #[test]
    fn text_to_number_follows_javascript() {
        for (text, expected) in [
            ("", Some(0.0)),
            (" 12 ", Some(12.0)),
            ("-1.5", Some(-1.5)),
            ("1e2", Some(100.0)),
            (".5", Some(0.5)),
            ("0x10", Some(16.0)),
            ("inf", None),
            ("nan", None),
            ("1_000", None),
            ("12px", None),
        ] {
            assert_eq!(to_number(&json!(text)).ok(), expected, "{text:?}");
        }
        assert_eq!(parse_number("-Infinity"), f64::NEG_INFINITY);
        assert_eq!(to_number(&json!([1])), Err(EvalError::NaN));
    }
}
