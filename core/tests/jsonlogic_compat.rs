//! The public JsonLogic conformance suites (github.com/json-logic/compat-tables,
//! folder `suites/`) run through Spine's evaluator: every case must pass.
//!
//! The suites are not kept in this repository (see `jsonlogic-compat.md` beside
//! this file); the test reads them from `$JSONLOGIC_COMPAT_DIR` (which
//! `cargo xtask test` points at a complete copy or at the files crates.io has),
//! else from `shared/jsonlogic-compat/` beside the repository.
//!
//! A case is `{"description", "rule", "data"?, "result"}` or, for an error,
//! `{…, "error": {"type": …}}`; strings between cases are section headings. As in
//! the suites' own runners, an error case passes when evaluation fails with that
//! error (`{"type": "NaN"}`, a thrown value). A rule Spine refuses when it is
//! compiled (wrong argument count, `{"and": 5}`) counts as
//! `{"type": "Invalid Arguments"}`, and only where the case expects that error.

use serde_json::{json, Value};
use spine_core::rules::jsonlogic::Expr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the suites are: `$JSONLOGIC_COMPAT_DIR`, or `shared/jsonlogic-compat`
/// beside the repository (as CI lays `shared/` out).
fn suites_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("JSONLOGIC_COMPAT_DIR") {
        return Some(PathBuf::from(dir));
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/jsonlogic-compat");
    beside.join("index.json").is_file().then_some(beside)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.json` file under `dir` but the index, as paths relative to it.
fn suite_files(dir: &Path, under: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(under).expect("suites folder") {
        let path = entry.expect("suites entry").path();
        if path.is_dir() {
            suite_files(dir, &path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            let rel = path.strip_prefix(dir).expect("under dir");
            let rel = rel.to_string_lossy().replace('\\', "/");
            if rel != "index.json" {
                out.push(rel);
            }
        }
    }
}

/// Equal as JSON, numbers by value (`2` and `2.0` are the same result).
fn same(got: &Value, expected: &Value) -> bool {
    match (got, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, x)| b.get(k).is_some_and(|y| same(x, y)))
        }
        _ => got == expected,
    }
}

/// What running one case gave: a value, an error (as `{"type": …}`), or a
/// refusal to compile.
fn run_case(rule: &Value, data: &Value) -> Result<Value, Value> {
    let expr = Expr::compile(rule).map_err(|e| json!({"compile error": e}))?;
    expr.try_eval(data).map_err(|e| e.to_value())
}

fn passes(case: &serde_json::Map<String, Value>, got: &Result<Value, Value>) -> bool {
    match (case.get("result"), case.get("error"), got) {
        (Some(expected), None, Ok(value)) => same(value, expected),
        (None, Some(expected), Err(error)) if error.get("compile error").is_some() => {
            *expected == json!({"type": "Invalid Arguments"})
        }
        (None, Some(expected), Err(error)) => error == expected,
        _ => false,
    }
}

/// Every case of every suite in index.json passes, and none is skipped.
#[test]
fn compat_tables_suites_all_pass() {
    let Some(dir) = suites_dir() else {
        eprintln!(
            "SKIP jsonlogic-compat: no suites found (set JSONLOGIC_COMPAT_DIR or lay them in \
             shared/jsonlogic-compat, see core/tests/jsonlogic-compat.md); nothing run"
        );
        return;
    };
    let index: Vec<String> =
        serde_json::from_value(read_json(&dir.join("index.json"))).expect("index.json lists files");
    let mut on_disk = Vec::new();
    suite_files(&dir, &dir, &mut on_disk);
    on_disk.sort();
    let mut listed = index.clone();
    listed.sort();
    assert_eq!(listed, on_disk, "index.json must list every suite file");

    let (mut in_files, mut run, mut failed) = (0, 0, 0);
    let mut table = String::from("suite                                passed  failed\n");
    let mut failures = String::new();
    for file in &index {
        let suite = read_json(&dir.join(file));
        let entries = suite
            .as_array()
            .unwrap_or_else(|| panic!("{file}: not a list"));
        let (mut file_passed, mut file_failed) = (0, 0);
        for entry in entries {
            // Strings are section headings.
            let Some(case) = entry.as_object() else {
                assert!(
                    entry.is_string(),
                    "{file}: entry {entry} is neither case nor heading"
                );
                continue;
            };
            in_files += 1;
            let rule = case
                .get("rule")
                .unwrap_or_else(|| panic!("{file}: case without rule"));
            let data = case.get("data").unwrap_or(&Value::Null);
            let got = run_case(rule, data);
            run += 1;
            if passes(case, &got) {
                file_passed += 1;
            } else {
                file_failed += 1;
                let expected = case
                    .get("result")
                    .map(|r| format!("result {r}"))
                    .or_else(|| case.get("error").map(|e| format!("error {e}")))
                    .unwrap_or_else(|| "neither result nor error".into());
                let got = match &got {
                    Ok(v) => format!("result {v}"),
                    Err(e) => format!("error {e}"),
                };
                let description = case
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let _ = writeln!(
                    failures,
                    "{file}: {description}\n  rule     {rule}\n  data     {data}\n  expected {expected}\n  got      {got}"
                );
            }
        }
        failed += file_failed;
        let _ = writeln!(table, "{file:<36} {file_passed:>6}  {file_failed:>6}");
    }
    let _ = writeln!(table, "{:<36} {:>6}  {failed:>6}", "total", run - failed);
    println!("{table}");
    assert_eq!(run, in_files, "every case in the files was run");
    assert!(run > 0, "the suites hold cases");
    assert_eq!(
        failed, 0,
        "{failed} of {run} cases failed:\n{table}\n{failures}"
    );
    println!(
        "jsonlogic-compat: {run} passed, 0 failed, of {in_files} cases in {} files",
        index.len()
    );
}
