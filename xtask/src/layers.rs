//! `cargo xtask layers`: the extension's modules depend on each other in one
//! direction. Every top-level module has a layer; a `crate::<module>` path outside
//! test code may name a module of a lower layer, or of its own layer as long as
//! no cycle forms. An edge up the table, or a cycle, fails the check (and with it
//! `cargo xtask test`).
//!
//! The one call that goes up (events → rules: the outbox runs rules in the
//! emitting transaction) is wired at run time: `_PG_init` registers the rules
//! engine as the events listener (`extension/src/events/listener.rs`).
//!
//! It reads the source text rather than a compiler's graph: `crate::` paths are
//! how the tree imports (no glob or `super::super` reaches across modules), and a
//! text scan runs in milliseconds without a pgrx build.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first. Within a layer, edges are allowed if they form no cycle.
pub const LAYERS: &[&[&str]] = &[
    &["error", "schema"],
    &["gucs", "spi_ext", "caller", "invalidation", "meta"],
    &["contracts", "events", "jobs"],
    &["audit", "policy", "entities", "rules"],
    &["etl", "search", "webhooks", "realtime"],
    &["vault", "functions"],
];

pub fn run(root: &Path) -> Result<()> {
    let src = root.join("extension/src");
    let edges = edges(&src)?;
    let problems = check(&edges);
    if !problems.is_empty() {
        bail!(
            "the extension's module layers are broken (see xtask/src/layers.rs):\n  {}",
            problems.join("\n  ")
        );
    }
    println!(
        "layers: {} modules, {} edges, all downward and acyclic",
        edges.keys().count(),
        edges.values().map(BTreeSet::len).sum::<usize>()
    );
    Ok(())
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// What is wrong with the graph: unknown modules, upward edges, cycles.
pub fn check(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut problems = Vec::new();
    for (from, tos) in edges {
        let Some(from_layer) = layer_of(from) else {
            problems.push(format!("module `{from}` has no layer: add it to LAYERS"));
            continue;
        };
        for to in tos {
            match layer_of(to) {
                None => problems.push(format!("module `{to}` has no layer: add it to LAYERS")),
                Some(to_layer) if to_layer > from_layer => problems.push(format!(
                    "`{from}` (layer {from_layer}) uses `crate::{to}` (layer {to_layer}): an upward edge"
                )),
                Some(_) => {}
            }
        }
    }
    for cycle in cycles(edges) {
        problems.push(format!("import cycle: {}", cycle.join(" → ")));
    }
    // A module without a layer is reported once, however many use it.
    let mut seen = BTreeSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    problems
}

/// One cycle per strongly connected component of more than one module (DFS).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn dfs(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            found.push(cycle);
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            dfs(next, edges, path, done, found);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        dfs(node, edges, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

/// `module → modules it names as crate::<m>`, from every file under `src`,
/// leaving out test modules and comments.
fn edges(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    collect(src, &mut files)?;
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let top = rel
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .context("empty path")?;
        if top == "lib" {
            // The crate root wires modules together (`_PG_init`); it sits above all.
            continue;
        }
        let text = std::fs::read_to_string(&file)?;
        let entry = edges.entry(top.clone()).or_default();
        for target in crate_paths(&non_test_code(&text)) {
            if target != top {
                entry.insert(target);
            }
        }
    }
    Ok(edges)
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The text without `//` comments and without the bodies of modules marked
/// `#[cfg(test)]` or `#[cfg(any(test, …))]` (tests may reach anywhere).
pub fn non_test_code(text: &str) -> String {
    let mut out = String::new();
    let mut test_attr = false;
    let mut skip_depth: Option<i64> = None;
    let mut depth: i64 = 0;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let trimmed = code.trim();
        let opens = code.matches('{').count() as i64;
        let closes = code.matches('}').count() as i64;
        if skip_depth.is_none() {
            if trimmed.starts_with("#[cfg(") && trimmed.contains("test") {
                test_attr = true;
            } else if test_attr && (trimmed.starts_with("mod ") || trimmed.starts_with("pub mod "))
            {
                skip_depth = Some(depth);
                test_attr = false;
            } else if !trimmed.starts_with("#[") && !trimmed.is_empty() {
                test_attr = false;
            }
        }
        depth += opens - closes;
        match skip_depth {
            Some(start) if depth <= start => skip_depth = None,
            Some(_) => {}
            None => {
                out.push_str(code);
                out.push('\n');
            }
        }
    }
    out
}

/// The module names that follow `crate::`.
pub fn crate_paths(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // `spine_core::` and the like end in "crate::" too; only the keyword counts.
            *at == 0 || !code[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, m)| {
            code[at + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    }

    #[test]
    fn downward_edges_pass_and_upward_ones_fail() {
        assert!(check(&graph(&[("rules", "events"), ("events", "gucs")])).is_empty());
        let problems = check(&graph(&[("events", "rules")]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("upward"), "{problems:?}");
    }

    #[test]
    fn a_cycle_within_a_layer_fails() {
        let problems = check(&graph(&[("audit", "entities"), ("entities", "audit")]));
        assert!(problems.iter().any(|p| p.contains("cycle")), "{problems:?}");
    }

    #[test]
    fn test_modules_and_comments_are_left_out() {
        let code = "use crate::events;\n// crate::vault\n#[cfg(test)]\nmod tests {\n    use crate::rules;\n    fn f() { }\n}\nfn g() { crate::gucs::x(); }\n";
        let kept = non_test_code(code);
        assert_eq!(
            crate_paths(&kept),
            ["events", "gucs"].iter().map(|s| s.to_string()).collect()
        );
        assert!(crate_paths("spine_core::json::x").is_empty());
    }
}
