//! JSON helpers shared by the domains.
//!
//! - Reading a value at a path: object keys, and array indexes written as numbers
//!   (`items.0.price`). Mappings, JsonLogic `var`, templates and firing inputs all
//!   read paths this way.
//! - The size of a value as JSON text, for the limits on events, entities, state
//!   and audit details, counted without building the text.

use serde::Serialize;
use serde_json::Value;

/// Counts the bytes of JSON text without building it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How many bytes `value` takes as (compact) JSON text.
pub fn text_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut count = ByteCount(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The value at `path`, if every step exists.
pub fn lookup<'a, S: AsRef<str>>(data: &'a Value, path: &[S]) -> Option<&'a Value> {
    path.iter().try_fold(data, |v, key| match v {
        Value::Object(m) => m.get(key.as_ref()),
        Value::Array(a) => key.as_ref().parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The value at a dotted path (`event.data.caller`); empty segments are skipped.
pub fn lookup_dotted<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    let steps: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    lookup(data, &steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_and_arrays() {
        let v = json!({"a": {"b": [10, {"c": "x"}]}});
        assert_eq!(lookup(&v, &["a", "b", "0"]), Some(&json!(10)));
        assert_eq!(lookup_dotted(&v, "a.b.1.c"), Some(&json!("x")));
        assert_eq!(lookup_dotted(&v, "a.z"), None);
        assert_eq!(lookup(&v, &["a", "b", "x"]), None);
        assert_eq!(lookup::<&str>(&v, &[]), Some(&v));
    }

    #[test]
    fn text_len_is_the_json_length() {
        let v = json!({"a": [1, "é"], "b": null});
        assert_eq!(text_len(&v), serde_json::to_string(&v).unwrap().len());
    }
}
