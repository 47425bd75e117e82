//! The `filter` of a postgres_changes binding, as realtime-js sends it:
//! `column=op.value`, several joined by commas (all must hold), an optional
//! `not.` before the operator; operators `eq neq lt lte gt gte in like ilike
//! match imatch is isdistinct` (Supabase Realtime's set). Values compare as the
//! column's type: numbers as numbers, timestamps as instants, the rest as text.
//! SQL's NULL rules hold: a comparison with NULL matches nothing, also under
//! `not.`; only `is` and `isdistinct` see NULLs.

use regex::Regex;
use serde_json::Value;

/// At most this many values in `in.(…)` (Supabase's limit).
const MAX_IN_VALUES: usize = 100;

#[derive(Debug, Clone)]
pub struct Filter {
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
struct Condition {
    column: String,
    negated: bool,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Compare(Cmp, String),
    In(Vec<String>),
    Pattern(Regex),
    Is(Option<bool>),
    IsDistinct(String),
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl Filter {
    /// Parses a filter; `columns` are the table's, so an unknown column is an
    /// error at join time rather than a subscription that never matches.
    pub fn parse(text: &str, columns: &[(String, String)]) -> Result<Filter, String> {
        let mut conditions = Vec::new();
        for part in split_top_level(text)? {
            let (column, rest) = part
                .split_once('=')
                .ok_or_else(|| format!("filter {part:?} is not column=operator.value"))?;
            if !columns.iter().any(|(name, _)| name == column) {
                return Err(format!(
                    "filter column {column:?} is not a column of the table"
                ));
            }
            let (negated, rest) = match rest.strip_prefix("not.") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let (op, value) = rest
                .split_once('.')
                .ok_or_else(|| format!("filter {part:?} has no operator"))?;
            let test = match op {
                "eq" => Test::Compare(Cmp::Eq, unquote(value)),
                "neq" => Test::Compare(Cmp::Neq, unquote(value)),
                "lt" => Test::Compare(Cmp::Lt, unquote(value)),
                "lte" => Test::Compare(Cmp::Lte, unquote(value)),
                "gt" => Test::Compare(Cmp::Gt, unquote(value)),
                "gte" => Test::Compare(Cmp::Gte, unquote(value)),
                "in" => Test::In(in_list(value)?),
                "like" | "ilike" => Test::Pattern(like_regex(&unquote(value), op == "ilike")?),
                "match" | "imatch" => Test::Pattern(
                    regex::RegexBuilder::new(&unquote(value))
                        .case_insensitive(op == "imatch")
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| format!("filter {part:?}: {e}"))?,
                ),
                "is" => Test::Is(match value {
                    "null" | "unknown" => None,
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => return Err(format!("is.{value}: use is.null, is.true, is.false or is.unknown")),
                }),
                "isdistinct" => Test::IsDistinct(unquote(value)),
                _ => return Err(format!("filter operator {op:?} is not one of eq neq lt lte gt gte in like ilike match imatch is isdistinct")),
            };
            conditions.push(Condition {
                column: column.to_string(),
                negated,
                test,
            });
        }
        Ok(Filter { conditions })
    }

    /// Whether a record (column → JSON value) passes; `column_type` gives a
    /// column's `pg_type.typname`.
    pub fn matches(&self, record: &Value, column_type: impl Fn(&str) -> Option<String>) -> bool {
        self.conditions.iter().all(|c| {
            let value = record.get(&c.column).unwrap_or(&Value::Null);
            let kind = Kind::of(column_type(&c.column).as_deref().unwrap_or("text"));
            let result = c.test.eval(value, kind);
            match (result, c.negated) {
                (Some(r), negated) => r != negated,
                (None, _) => false,
            }
        })
    }
}

/// Splits on commas outside quotes and parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut quoted, mut start) = (Vec::new(), 0i32, false, 0);
    for (i, ch) in text.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted || depth != 0 {
        return Err(format!(
            "filter {text:?} has an unclosed quote or parenthesis"
        ));
    }
    parts.push(&text[start..]);
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("filter {text:?} has an empty condition"));
    }
    Ok(parts)
}

fn unquote(value: &str) -> String {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
        .unwrap_or_else(|| value.to_string())
}

fn in_list(value: &str) -> Result<Vec<String>, String> {
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| format!("in.{value}: write in.(a,b,c)"))?;
    let items: Vec<String> = split_top_level(inner)?.into_iter().map(unquote).collect();
    if items.len() > MAX_IN_VALUES {
        return Err(format!("in.(…) takes at most {MAX_IN_VALUES} values"));
    }
    Ok(items)
}

/// SQL LIKE as an anchored regex: `%` any run, `_` one character, `\` escapes.
fn like_regex(pattern: &str, case_insensitive: bool) -> Result<Regex, String> {
    let mut re = String::from("^");
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => re.push_str(".*"),
            '_' => re.push('.'),
            '\\' => re.push_str(&regex::escape(
                &chars.next().map(String::from).unwrap_or_default(),
            )),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::RegexBuilder::new(&re)
        .case_insensitive(case_insensitive)
        .dot_matches_new_line(true)
        .build()
        .map_err(|e| e.to_string())
}

/// How a column's values compare.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Number,
    Bool,
    Instant,
    Text,
}

impl Kind {
    fn of(typname: &str) -> Kind {
        match typname {
            "int2" | "int4" | "int8" | "float4" | "float8" | "numeric" | "oid" => Kind::Number,
            "bool" => Kind::Bool,
            "timestamptz" | "timestamp" | "date" => Kind::Instant,
            _ => Kind::Text,
        }
    }
}

/// A value as text, as Postgres would print it (strings unquoted).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Orders a record's value against a literal; None when either is NULL or
/// they cannot be compared as the column's type.
fn compare(value: &Value, literal: &str, kind: Kind) -> Option<std::cmp::Ordering> {
    let text = text_of(value)?;
    match kind {
        Kind::Number => {
            let a: f64 = text.parse().ok()?;
            let b: f64 = literal.parse().ok()?;
            a.partial_cmp(&b)
        }
        Kind::Bool => {
            let parse = |s: &str| match s {
                "true" | "t" => Some(true),
                "false" | "f" => Some(false),
                _ => None,
            };
            Some(parse(&text)?.cmp(&parse(literal)?))
        }
        Kind::Instant => match (instant(&text), instant(literal)) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => Some(text.as_str().cmp(literal)),
        },
        Kind::Text => Some(text.as_str().cmp(literal)),
    }
}

fn instant(text: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .or_else(|| chrono::DateTime::parse_from_rfc3339(&format!("{text}Z")).ok())
        .or_else(|| chrono::DateTime::parse_from_rfc3339(&format!("{text}T00:00:00Z")).ok())
}

impl Test {
    fn eval(&self, value: &Value, kind: Kind) -> Option<bool> {
        use std::cmp::Ordering::*;
        match self {
            Test::Compare(cmp, literal) => {
                let o = compare(value, literal, kind)?;
                Some(match cmp {
                    Cmp::Eq => o == Equal,
                    Cmp::Neq => o != Equal,
                    Cmp::Lt => o == Less,
                    Cmp::Lte => o != Greater,
                    Cmp::Gt => o == Greater,
                    Cmp::Gte => o != Less,
                })
            }
            Test::In(items) => {
                text_of(value)?;
                Some(
                    items
                        .iter()
                        .any(|item| compare(value, item, kind) == Some(Equal)),
                )
            }
            Test::Pattern(re) => Some(re.is_match(&text_of(value)?)),
            Test::Is(expected) => Some(match (expected, value) {
                (None, v) => v.is_null(),
                (Some(b), Value::Bool(v)) => b == v,
                (Some(_), _) => false,
            }),
            Test::IsDistinct(literal) => Some(match value {
                Value::Null => true,
                v => compare(v, literal, kind) != Some(Equal),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn columns() -> Vec<(String, String)> {
        [
            ("id", "int8"),
            ("task", "text"),
            ("done", "bool"),
            ("at", "timestamptz"),
            ("note", "text"),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
    }

    fn check(filter: &str, record: Value) -> bool {
        let cols = columns();
        Filter::parse(filter, &cols).unwrap().matches(&record, |c| {
            cols.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone())
        })
    }

    #[test]
    fn comparisons_follow_the_column_type() {
        let r = json!({"id": 10, "task": "b", "done": true, "at": "2026-12-06T10:00:00+01:00", "note": null});
        assert!(check("id=eq.10", r.clone()));
        assert!(check("id=gt.9", r.clone()), "numeric, not text order");
        assert!(!check("id=lt.9", r.clone()));
        assert!(check("task=gte.a", r.clone()));
        assert!(check("done=eq.true", r.clone()));
        assert!(
            check("at=eq.2026-12-06T09:00:00Z", r.clone()),
            "instants, not text"
        );
        assert!(check("id=in.(1,10,100)", r.clone()));
        assert!(!check("id=in.(1,2)", r.clone()));
        assert!(check("task=like.b%", r.clone()));
        assert!(check("task=ilike.B", r.clone()));
        assert!(!check("task=like.B", r.clone()));
        assert!(check("task=match.^[a-c]$", r.clone()));
        assert!(check("id=gt.1,task=eq.b", r.clone()));
        assert!(!check("id=gt.1,task=eq.c", r.clone()));
        assert!(check("id=not.eq.11", r.clone()));
        assert!(check(r#"task=in.("a,b",b)"#, r.clone()));
    }

    #[test]
    fn nulls_follow_sql() {
        let r = json!({"id": 1, "note": null, "done": null});
        assert!(!check("note=eq.x", r.clone()));
        assert!(
            !check("note=not.eq.x", r.clone()),
            "NULL under not. is still not a match"
        );
        assert!(check("note=is.null", r.clone()));
        assert!(!check("note=not.is.null", r.clone()));
        assert!(check("done=is.unknown", r.clone()));
        assert!(check("note=isdistinct.x", r.clone()));
        assert!(!check("id=isdistinct.1", r.clone()));
    }

    #[test]
    fn bad_filters_are_errors() {
        let cols = columns();
        for bad in [
            "id",
            "id=eq",
            "nope=eq.1",
            "id=between.1",
            "id=in.1,2",
            "task=is.maybe",
            "id=eq.1,",
            "task=in.(\"a)",
            "task=match.(",
        ] {
            assert!(Filter::parse(bad, &cols).is_err(), "{bad}");
        }
        let many = format!(
            "id=in.({})",
            (0..101)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(Filter::parse(&many, &cols).is_err());
    }
}
