//! A timing check for the JsonLogic hot path, run by hand:
//! `cargo test -p spine-core --release --test jsonlogic_timing -- --ignored --nocapture`.
//! The rules engine evaluates a few hundred conditions per event, so ns/eval of a
//! typical condition is the figure to watch when the evaluator changes.

use serde_json::json;
use spine_core::rules::jsonlogic::{truthy, Expr};
use std::hint::black_box;
use std::time::Instant;

const RUNS: u32 = 1_000_000;

/// Prints ns/eval of a typical condition (a type match and a threshold).
#[test]
#[ignore = "timing, run by hand in release"]
fn typical_condition_ns_per_eval() {
    let condition = Expr::compile(&json!({"and": [
        {"==": [{"var": "type"}, "order.created"]},
        {">": [{"var": "data.total"}, 100]}
    ]}))
    .unwrap();
    let event = json!({
        "type": "order.created",
        "source": "shop",
        "id": "e-1",
        "data": {"total": 250, "currency": "EUR", "lines": [{"sku": "a", "qty": 1}]}
    });
    assert!(truthy(&condition.eval_ref(&event)));
    for round in 0..7 {
        let start = Instant::now();
        let mut hits = 0u32;
        for _ in 0..RUNS {
            if truthy(&black_box(&condition).eval_ref(black_box(&event))) {
                hits += 1;
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(RUNS);
        assert_eq!(hits, RUNS);
        println!("round {round}: {ns:.1} ns/eval");
    }
}
