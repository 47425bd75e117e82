//! The SQL reference covers the extension exactly: every function the extension
//! installs (found in the catalog through its extension membership, in every
//! schema: `spine`, `auth`, `vault`) has exactly one `### \`schema.name(…)\``
//! heading in `docs/sql/*.md`, and no heading names a function that does not exist.

use spine_tests::connect;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `schema.name` → the pages whose level-3 headings document it.
fn documented() -> BTreeMap<String, Vec<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/sql");
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("docs/sql exists") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let page = path.file_name().unwrap().to_string_lossy().to_string();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let Some(rest) = line.strip_prefix("### `") else {
                continue;
            };
            let Some((name, _)) = rest.split_once('(') else {
                continue;
            };
            if name.contains('.')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._".contains(c))
            {
                found
                    .entry(name.to_string())
                    .or_default()
                    .push(page.clone());
            }
        }
    }
    found
}

/// Every function in the catalog appears on exactly one page; every documented
/// function exists.
#[tokio::test]
async fn every_sql_function_is_documented_once() {
    let db = connect().await;
    let installed: BTreeSet<String> = db
        .query(
            "SELECT DISTINCT p.pronamespace::regnamespace::text || '.' || p.proname \
               FROM pg_proc p \
               JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid \
                               AND d.deptype = 'e' \
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'spine'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        installed.len() > 50,
        "only {} functions found",
        installed.len()
    );
    let documented = documented();
    let mut problems = Vec::new();
    for name in &installed {
        match documented.get(name).map(Vec::as_slice) {
            None | Some([]) => problems.push(format!("{name} has no heading in docs/sql/*.md")),
            Some([_]) => {}
            Some(pages) => problems.push(format!("{name} is documented on {pages:?}: pick one")),
        }
    }
    for name in documented.keys().filter(|n| !installed.contains(*n)) {
        problems.push(format!(
            "{name} is documented but the extension has no such function"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
