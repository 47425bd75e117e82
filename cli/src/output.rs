//! Tables for a person, JSON for a program: every command builds its result as
//! JSON values and hands it here.

use crate::db::Row;
use comfy_table::{presets::NOTHING, Cell, ContentArrangement, Table};
use serde_json::Value;

pub struct Out {
    pub json: bool,
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out { json }
    }

    /// The whole result of a command: JSON as is, or `human` for a person.
    pub fn emit(&self, json: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{json}");
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }

    /// Rows as a table with these columns (JSON: an array of the rows).
    pub fn rows(&self, columns: &[&str], rows: &[Row]) {
        let json = Value::Array(rows.iter().cloned().map(Value::Object).collect());
        self.emit(&json, || table(columns, rows));
    }
}

/// A borderless table, headers in capitals like `kubectl get`, `(none)` when empty.
pub fn table(columns: &[&str], rows: &[Row]) -> String {
    if rows.is_empty() {
        return "(none)".into();
    }
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|c| Cell::new(c.to_uppercase())));
    for row in rows {
        t.add_row(columns.iter().map(|c| Cell::new(cell(row.get(*c)))));
    }
    // comfy-table pads each line with a leading space in this preset.
    t.lines()
        .map(|l| l.trim().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A value as a table shows it: strings bare, null empty, JSON compact and cut.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => shorten(s, 80),
        Some(v) => shorten(&v.to_string(), 80),
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Row {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn tables_align_and_show_values_plainly() {
        let rows = vec![
            row(json!({"queue": "http", "dead": 0, "payload": {"a": 1}})),
            row(json!({"queue": "function", "dead": 12, "payload": null})),
        ];
        let t = table(&["queue", "dead", "payload"], &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("QUEUE"), "{t}");
        assert!(lines[1].contains(r#"{"a":1}"#), "{t}");
        // Columns line up: DEAD's values start where its header does.
        let at = lines[0].find("DEAD").unwrap();
        assert_eq!(&lines[2][at..at + 2], "12", "{t}");
    }

    #[test]
    fn empty_and_long_values() {
        assert_eq!(table(&["a"], &[]), "(none)");
        let long = "x".repeat(200);
        assert_eq!(cell(Some(&json!(long))).chars().count(), 80);
    }
}
