//! Advisory-lock classes: every `pg_advisory*_lock(class, key)` Spine takes uses
//! one of these classes, each for one purpose. Classes are part of the protocol
//! between processes (a worker and the extension of another version must agree),
//! so a class never changes meaning once released.
//!
//! SQL cannot import these constants; the SQL that takes a lock names its class
//! as a literal in the one file listed as its `home`, and a test here scans every
//! SQL and Rust source of the workspace and fails on a class that is not declared
//! or that appears in a second place.

/// One advisory-lock class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockClass {
    pub class: i32,
    /// What the lock serialises, and what its key is.
    pub purpose: &'static str,
    /// The one source file (from the workspace root) that takes it.
    pub home: &'static str,
}

/// The holder of a sink (relay or search sync): session-level, key
/// `hashtext(sink name)`. Sink names are unique across kinds, so one class serves
/// every kind, and two kinds can never drive one cursor.
pub const SINK: LockClass = LockClass {
    class: 1_397_770_574,
    purpose: "one holder per sink; key hashtext(sink name)",
    home: "worker/src/sink.rs",
};

/// Commit order of emitting transactions: key 0, held from the deferred stamp
/// until the commit is visible (`sql/events.sql`).
pub const COMMIT_ORDER: LockClass = LockClass {
    class: 1_397_770_575,
    purpose: "commit order of emitting transactions; key 0",
    home: "extension/sql/events.sql",
};

/// A capped queue's running count: key `hashtext(queue)`, taken by `fetch_jobs`.
pub const QUEUE_CAP: LockClass = LockClass {
    class: 1_397_770_576,
    purpose: "per-queue concurrency cap; key hashtext(queue)",
    home: "extension/sql/jobs.sql",
};

/// An idempotency key moving between live jobs and the archive.
pub const IDEMPOTENCY_KEY: LockClass = LockClass {
    class: 1_397_770_577,
    purpose: "job idempotency key; key hashtext(queue/owner/key)",
    home: "extension/sql/jobs.sql",
};

/// An owner's entity set during ingest and `delete_entity`: key `hashtext(owner)`.
pub const ENTITY_OWNER: LockClass = LockClass {
    class: 1_397_770_578,
    purpose: "an owner's entities during ingest and delete; key hashtext(owner)",
    home: "extension/src/entities/mod.rs",
};

/// Every class, in number order.
pub const ALL: [LockClass; 5] = [SINK, COMMIT_ORDER, QUEUE_CAP, IDEMPOTENCY_KEY, ENTITY_OWNER];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if name != "target"
                    && name != "node_modules"
                    && !name.to_string_lossy().starts_with('.')
                {
                    sources(&path, out);
                }
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("rs" | "sql")
            ) {
                out.push(path);
            }
        }
    }

    /// Numbers of the form 13977705dd, with or without `_` separators.
    fn class_literals(text: &str) -> Vec<i32> {
        let digits: Vec<(usize, char)> = text.char_indices().collect();
        let mut found = Vec::new();
        let mut i = 0;
        while i < digits.len() {
            if digits[i].1.is_ascii_digit() && (i == 0 || !digits[i - 1].1.is_ascii_alphanumeric())
            {
                let mut number = String::new();
                let mut j = i;
                while j < digits.len() && (digits[j].1.is_ascii_digit() || digits[j].1 == '_') {
                    if digits[j].1 != '_' {
                        number.push(digits[j].1);
                    }
                    j += 1;
                }
                if number.len() == 10 && number.starts_with("13977705") {
                    found.push(number.parse().unwrap());
                }
                i = j;
            } else {
                i += 1;
            }
        }
        found
    }

    #[test]
    fn classes_are_distinct() {
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert_ne!(a.class, b.class, "{} and {}", a.purpose, b.purpose);
            }
        }
    }

    /// Every advisory-lock class in the workspace's sources is declared here, and
    /// each appears in one place only (its home, or nowhere but here when Rust
    /// takes it through the constant).
    #[test]
    fn every_class_in_the_sources_is_declared_and_used_once() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut files = Vec::new();
        sources(root, &mut files);
        let this = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/locks.rs");
        let mut seen: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        // Upgrade scripts (`spine--A--B.sql`) repeat their home's functions by
        // design; the upgrade test checks they make the same objects.
        let upgrade_script = |f: &Path| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("spine--") && n.matches("--").count() == 2)
        };
        for file in files.iter().filter(|f| **f != this && !upgrade_script(f)) {
            let text = std::fs::read_to_string(file).unwrap();
            for class in class_literals(&text) {
                let rel = file.strip_prefix(root).unwrap().display().to_string();
                seen.entry(class).or_default().push(rel);
            }
        }
        assert!(files.len() > 50, "scanned only {} files", files.len());
        for (class, places) in &seen {
            let declared = ALL.iter().find(|c| c.class == *class);
            let declared = declared.unwrap_or_else(|| {
                panic!("advisory-lock class {class} in {places:?} is not declared in core/src/locks.rs")
            });
            assert_eq!(
                places,
                &vec![declared.home.to_string()],
                "class {class} ({}) must appear once, in {}",
                declared.purpose,
                declared.home
            );
        }
    }

    #[test]
    fn literals_are_found_with_and_without_separators() {
        assert_eq!(
            class_literals("lock(1397770575, 0); x 1_397_770_576 y 21397770575"),
            vec![1_397_770_575, 1_397_770_576]
        );
    }
}
