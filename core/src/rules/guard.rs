//! Guards: which rules an event can match, found without evaluating them.
//!
//! Most rules test a field of the event for a value (`event.data.kind ==
//! "invoice"`, `"vip" in event.data.tags`), alone, as one part of an `and`, or
//! as alternatives of an `or`. Such tests are the rule's *guard*: an event that
//! fails every one of them cannot match, whatever the rest of the condition says.
//! A [`GuardIndex`] over an owner's rules maps each tested path and value to its
//! rules, so an event is evaluated against the rules its values name and the
//! unguarded ones, not against all of them.
//!
//! The index leaves a rule out only on positive evidence: a *string* at an
//! `==` path that differs from the value, or a *list* at an `in` path that
//! lacks it. A missing field, a number, an object or (for `in`) a string keeps
//! every rule tested on that path, and evaluation decides as before.
//!
//! Measured with `cargo xtask bench rules`, same session (bench/RESULTS.md): at
//! 100 rules, every one guarded by the kind it names, an event cost 2.14× a bare
//! emit with each rule evaluated.

use super::jsonlogic::{Expr, Requirement};
use serde_json::Value;
use std::collections::HashMap;

/// The tests of which a condition needs at least one, all on data under one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub alternatives: Vec<Requirement>,
}

impl Guard {
    /// The guard of `condition`, if it has one whose every test reads data under
    /// `root` (`event`: what is in hand before any table is read).
    pub fn of(condition: &Expr, root: &str) -> Option<Guard> {
        let alternatives = condition.requirements()?;
        let under_root = |r: &Requirement| {
            let (Requirement::Equals { path, .. } | Requirement::Contains { path, .. }) = r;
            path.first().is_some_and(|first| first == root)
        };
        (!alternatives.is_empty() && alternatives.iter().all(under_root))
            .then_some(Guard { alternatives })
    }

    /// Whether `data` rules the guarded condition out: it fails every test.
    pub fn rules_out(&self, data: &Value) -> bool {
        self.alternatives.iter().all(|r| match r {
            Requirement::Equals { path, value } => {
                matches!(crate::json::lookup(data, path), Some(Value::String(s)) if s != value)
            }
            Requirement::Contains { path, value } => {
                matches!(crate::json::lookup(data, path), Some(Value::Array(items))
                    if !items.iter().any(|i| i.as_str() == Some(value)))
            }
        })
    }
}

/// Rules by guard, by position in the owner's list (its evaluation order).
#[derive(Debug, Default)]
pub struct GuardIndex {
    tests: Vec<TestedPath>,
    unguarded: Vec<usize>,
}

/// The rules that test one path one way (`==` or `in`).
#[derive(Debug)]
struct TestedPath {
    path: Vec<String>,
    contains: bool,
    by_value: HashMap<String, Vec<usize>>,
    /// Every position tested on this path, for data that gives no evidence.
    all: Vec<usize>,
}

impl GuardIndex {
    /// The index of a list of rules, given each one's guard (`None`: unguarded).
    pub fn new<'g>(guards: impl IntoIterator<Item = Option<&'g Guard>>) -> GuardIndex {
        let mut index = GuardIndex::default();
        for (position, guard) in guards.into_iter().enumerate() {
            let Some(guard) = guard else {
                index.unguarded.push(position);
                continue;
            };
            for r in &guard.alternatives {
                let (path, value, contains) = match r {
                    Requirement::Equals { path, value } => (path, value, false),
                    Requirement::Contains { path, value } => (path, value, true),
                };
                let at = index
                    .tests
                    .iter()
                    .position(|t| t.path == *path && t.contains == contains)
                    .unwrap_or_else(|| {
                        index.tests.push(TestedPath {
                            path: path.clone(),
                            contains,
                            by_value: HashMap::new(),
                            all: Vec::new(),
                        });
                        index.tests.len() - 1
                    });
                let t = &mut index.tests[at];
                t.by_value.entry(value.clone()).or_default().push(position);
                t.all.push(position);
            }
        }
        index
    }

    /// The positions of the rules `data` may match, ascending and once each: the
    /// unguarded ones and those with a test the data does not fail.
    pub fn select(&self, data: &Value) -> Vec<usize> {
        let mut selected = self.unguarded.clone();
        for t in &self.tests {
            let mut named = |key: &str| {
                if let Some(positions) = t.by_value.get(key) {
                    selected.extend_from_slice(positions);
                }
            };
            match (t.contains, crate::json::lookup(data, &t.path)) {
                (false, Some(Value::String(s))) => named(s),
                // Strict equality: only the list's strings can be the value.
                (true, Some(Value::Array(items))) => {
                    items.iter().filter_map(Value::as_str).for_each(named)
                }
                _ => selected.extend_from_slice(&t.all),
            }
        }
        if !self.tests.is_empty() {
            selected.sort_unstable();
            selected.dedup();
        }
        selected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn guard_of(condition: Value) -> Option<Guard> {
        Guard::of(&Expr::compile(&condition).unwrap(), "event")
    }

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(String::from).collect()
    }

    fn kind_is(kind: &str) -> Requirement {
        Requirement::Equals {
            path: path("event.data.kind"),
            value: kind.into(),
        }
    }

    fn tagged(tag: &str) -> Requirement {
        Requirement::Contains {
            path: path("event.data.tags"),
            value: tag.into(),
        }
    }

    fn guard(alternatives: Vec<Requirement>) -> Option<Guard> {
        Some(Guard { alternatives })
    }

    #[test]
    fn what_makes_a_guard() {
        let kind_a = json!({"==": [{"var": "event.data.kind"}, "a"]});
        let tag_a = json!({"in": ["a", {"var": "event.data.tags"}]});
        assert_eq!(guard_of(kind_a.clone()), guard(vec![kind_is("a")]));
        assert_eq!(
            guard_of(json!({"===": ["a", {"var": "event.data.kind"}]})),
            guard(vec![kind_is("a")])
        );
        assert_eq!(guard_of(tag_a.clone()), guard(vec![tagged("a")]));
        // One part of an `and` suffices.
        assert_eq!(
            guard_of(json!({"and": [{">": [{"var": "event.data.n"}, 1]}, kind_a]})),
            guard(vec![kind_is("a")])
        );
        // Every part of an `or`, together; nested in an `and`, as the benchmark's.
        assert_eq!(
            guard_of(json!({"and": [
                {">=": [{"var": "event.data.n"}, 0]},
                {"or": [kind_a, {"and": [tag_a, {"==": [{"var": "state.mode"}, "busy"]}]}]}
            ]})),
            guard(vec![kind_is("a"), tagged("a")])
        );
    }

    #[test]
    fn what_is_not_a_guard() {
        for condition in [
            // An alternative without a test.
            json!({"or": [{"==": [{"var": "event.data.kind"}, "a"]}, true]}),
            // An alternative on another root (state is read from a table, later).
            json!({"or": [{"==": [{"var": "event.data.kind"}, "a"]}, {"==": [{"var": "state.mode"}, "a"]}]}),
            json!({"==": [{"var": "state.mode"}, "busy"]}),
            json!({"!": {"==": [{"var": "event.data.kind"}, "a"]}}),
            json!({"!=": [{"var": "event.data.kind"}, "a"]}),
            // Not a string: loose equality converts (1 == "1").
            json!({"==": [{"var": "event.data.kind"}, 1]}),
            json!({"in": [1, {"var": "event.data.tags"}]}),
            // The list is the literal, the value the variable.
            json!({"in": [{"var": "event.data.kind"}, ["a", "b"]]}),
            // A default stands in for a missing field.
            json!({"==": [{"var": ["event.data.kind", "a"]}, "a"]}),
            // Chained: three terms.
            json!({"==": [{"var": "event.data.kind"}, "a", "a"]}),
            json!({"if": [{"==": [{"var": "event.data.kind"}, "a"]}, true, true]}),
        ] {
            assert_eq!(guard_of(condition.clone()), None, "{condition}");
        }
    }

    /// The promise the index rests on: when `rules_out` says so, the condition is
    /// falsy for that data.
    #[test]
    fn a_ruled_out_condition_is_false_on_that_data() {
        let conditions = [
            json!({"==": [{"var": "event.data.kind"}, "a"]}),
            json!({"===": [{"var": "event.data.kind"}, "a"]}),
            json!({"and": [true, {"==": ["a", {"var": "event.data.kind"}]}, {"var": "event.data.n"}]}),
            json!({"in": ["a", {"var": "event.data.tags"}]}),
            json!({"or": [
                {"==": [{"var": "event.data.kind"}, "a"]},
                {"and": [{"in": ["a", {"var": "event.data.tags"}]}, {"var": "event.data.n"}]}
            ]}),
        ];
        let values = [
            json!("b"),
            json!(""),
            json!("A"),
            json!("a "),
            json!("a"),
            json!("xax"),
            json!(null),
            json!(1),
            json!(["a"]),
            json!(["b", 1, null]),
            json!([]),
            json!({"a": 1}),
        ];
        for condition in &conditions {
            let expr = Expr::compile(condition).unwrap();
            let guard = Guard::of(&expr, "event").expect("guarded");
            for kind in &values {
                for tags in &values {
                    let data = json!({"event": {"data": {"kind": kind, "tags": tags, "n": 1}}});
                    if guard.rules_out(&data) {
                        let got = expr.eval(&data);
                        assert!(
                            !crate::rules::jsonlogic::truthy(&got),
                            "{condition} on {data}"
                        );
                    }
                }
            }
        }
        let only_kind = guard_of(conditions[0].clone()).unwrap();
        let at = |kind: Value| only_kind.rules_out(&json!({"event": {"data": {"kind": kind}}}));
        assert!(at(json!("b")));
        assert!(!at(json!("a")));
        assert!(!at(json!(null)));
        assert!(!at(json!(["b"])));
        assert!(!only_kind.rules_out(&json!({"event": {}})));
        let only_tag = guard_of(conditions[3].clone()).unwrap();
        let at = |tags: Value| only_tag.rules_out(&json!({"event": {"data": {"tags": tags}}}));
        assert!(at(json!(["b"])));
        assert!(at(json!([])));
        assert!(!at(json!(["b", "a"])));
        assert!(!at(json!("xax")), "a string haystack matches substrings");
    }

    #[test]
    fn the_index_selects_the_named_and_the_unguarded_in_order() {
        let a = Guard {
            alternatives: vec![kind_is("a")],
        };
        let b = Guard {
            alternatives: vec![kind_is("b")],
        };
        let b_or_tag_x = Guard {
            alternatives: vec![kind_is("b"), tagged("x")],
        };
        // positions: 0 a, 1 none, 2 b, 3 a, 4 b or tag x, 5 none
        let index = GuardIndex::new([Some(&a), None, Some(&b), Some(&a), Some(&b_or_tag_x), None]);
        let at = |kind: Value, tags: Value| {
            index.select(&json!({"event": {"data": {"kind": kind, "tags": tags}}}))
        };
        assert_eq!(at(json!("a"), json!([])), vec![0, 1, 3, 5]);
        assert_eq!(at(json!("b"), json!(["x"])), vec![1, 2, 4, 5]);
        assert_eq!(at(json!("c"), json!(["y", "x", 3])), vec![1, 4, 5]);
        assert_eq!(at(json!("c"), json!(["y"])), vec![1, 5]);
        // No evidence at a path: every rule tested on it stays.
        assert_eq!(at(json!(7), json!([])), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(at(json!("c"), json!("x")), vec![1, 4, 5]);
        assert_eq!(index.select(&json!({"event": {}})), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(GuardIndex::new([None, None]).select(&json!({})), vec![0, 1]);
    }
}
