use super::*;
use serde_json::json;

fn run(logic: Value, data: Value) -> Value {
    Expr::compile(&logic).unwrap().eval(&data)
}

/// Cases from the JsonLogic documentation and its shared test suite.
#[test]
fn standard_operators() {
    let cases = [
        (json!({"==": [1, 1]}), json!(null), json!(true)),
        (json!({"==": [1, "1"]}), json!(null), json!(true)),
        (json!({"==": [0, false]}), json!(null), json!(true)),
        (json!({"===": [1, "1"]}), json!(null), json!(false)),
        (json!({"!=": [1, 2]}), json!(null), json!(true)),
        (json!({"!==": [1, 1.0]}), json!(null), json!(false)),
        (json!({"!": [[]]}), json!(null), json!(true)),
        (json!({"!!": ["0"]}), json!(null), json!(true)),
        (json!({"or": [false, 0, "a"]}), json!(null), json!("a")),
        (json!({"and": [true, "", 3]}), json!(null), json!("")),
        (json!({">": [2, 1]}), json!(null), json!(true)),
        (json!({">=": [1, 1]}), json!(null), json!(true)),
        (json!({"<": [1, 2, 3]}), json!(null), json!(true)),
        (json!({"<": [1, 1, 3]}), json!(null), json!(false)),
        (json!({"<=": [1, 1, 3]}), json!(null), json!(true)),
        (json!({"max": [1, 2, 3]}), json!(null), json!(3)),
        (json!({"min": [1, 2, 3]}), json!(null), json!(1)),
        (json!({"+": [4, 2]}), json!(null), json!(6)),
        (json!({"+": ["3", 1]}), json!(null), json!(4)),
        (json!({"-": [4, 2]}), json!(null), json!(2)),
        (json!({"-": [2]}), json!(null), json!(-2)),
        (json!({"*": [2, 2.5]}), json!(null), json!(5)),
        (json!({"/": [1, 4]}), json!(null), json!(0.25)),
        (json!({"%": [101, 2]}), json!(null), json!(1)),
        (
            json!({"in": ["Spring", "Springfield"]}),
            json!(null),
            json!(true),
        ),
        (json!({"in": ["b", ["a", "b"]]}), json!(null), json!(true)),
        (
            json!({"cat": ["I love", " pie"]}),
            json!(null),
            json!("I love pie"),
        ),
        (json!({"cat": ["n=", 1.5]}), json!(null), json!("n=1.5")),
        (
            json!({"substr": ["jsonlogic", 4]}),
            json!(null),
            json!("logic"),
        ),
        (
            json!({"substr": ["jsonlogic", -5]}),
            json!(null),
            json!("logic"),
        ),
        (
            json!({"substr": ["jsonlogic", 1, 3]}),
            json!(null),
            json!("son"),
        ),
        (
            json!({"substr": ["jsonlogic", 4, -2]}),
            json!(null),
            json!("log"),
        ),
        (
            json!({"merge": [[1, 2], 3, [4]]}),
            json!(null),
            json!([1, 2, 3, 4]),
        ),
        (
            json!({"if": [true, "yes", "no"]}),
            json!(null),
            json!("yes"),
        ),
        (
            json!({"if": [false, 1, false, 2, 3]}),
            json!(null),
            json!(3),
        ),
        (json!({"?:": [false, 1, 2]}), json!(null), json!(2)),
        (json!({"var": ["a"]}), json!({"a": 1}), json!(1)),
        (json!({"var": "a.b"}), json!({"a": {"b": "x"}}), json!("x")),
        (json!({"var": 1}), json!(["a", "b"]), json!("b")),
        (json!({"var": ["z", 26]}), json!({"a": 1}), json!(26)),
        (json!({"var": ""}), json!(7), json!(7)),
        (
            json!({"missing": ["a", "b"]}),
            json!({"a": 1}),
            json!(["b"]),
        ),
        (
            json!({"missing_some": [1, ["a", "b"]]}),
            json!({"a": 1}),
            json!([]),
        ),
        (
            json!({"missing_some": [2, ["a", "b"]]}),
            json!({"a": 1}),
            json!(["b"]),
        ),
        (
            json!({"map": [{"var": "xs"}, {"*": [{"var": ""}, 2]}]}),
            json!({"xs": [1, 2]}),
            json!([2, 4]),
        ),
        (
            json!({"filter": [[1, 2, 3], {"%": [{"var": ""}, 2]}]}),
            json!(null),
            json!([1, 3]),
        ),
        (
            json!({"reduce": [[1, 2, 3], {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}),
            json!(null),
            json!(6),
        ),
        (
            json!({"all": [[1, 2], {">": [{"var": ""}, 0]}]}),
            json!(null),
            json!(true),
        ),
        (
            json!({"all": [[], {">": [{"var": ""}, 0]}]}),
            json!(null),
            json!(false),
        ),
        (
            json!({"some": [[-1, 2], {">": [{"var": ""}, 0]}]}),
            json!(null),
            json!(true),
        ),
        (
            json!({"none": [[-1, -2], {">": [{"var": ""}, 0]}]}),
            json!(null),
            json!(true),
        ),
        (
            json!({"var": {"cat": ["a", ".b"]}}),
            json!({"a": {"b": 5}}),
            json!(5),
        ),
        (json!(["a", {"var": "x"}]), json!({"x": 1}), json!(["a", 1])),
    ];
    for (logic, data, expected) in cases {
        assert_eq!(
            run(logic.clone(), data.clone()),
            expected,
            "{logic} on {data}"
        );
    }
}

#[test]
fn invalid_rules_are_refused_when_compiled() {
    for (logic, expected) in [
        (
            json!({"frobnicate": [1]}),
            "unknown operator \"frobnicate\"",
        ),
        (
            json!({"==": [1]}),
            "\"==\" takes at least 2 arguments, got 1",
        ),
        (
            json!({"and": [{"nope": []}]}),
            "in \"and\": unknown operator \"nope\"",
        ),
        (json!({"var": "a..b"}), "empty segment"),
        (json!({"var": [true]}), "var path must be"),
        (json!({"==": [1, 1], "!=": [1, 2]}), "exactly one key"),
        (json!({"and": true}), "\"and\" takes a list of arguments"),
        (
            json!({"<": {"var": "xs"}}),
            "\"<\" takes a list of arguments",
        ),
        (json!({"-": []}), "\"-\" takes at least 1 argument, got 0"),
        (json!({"%": 7}), "\"%\" takes at least 2 arguments, got 1"),
        (json!({"map": [null, 1]}), "needs a list to go over"),
        (
            json!({"filter": [[1], null]}),
            "needs an expression for each item",
        ),
        (json!({"val": [["up"], "a"]}), "val scope must be [number]"),
        (json!({"exists": [true]}), "path segments are"),
    ] {
        let err = Expr::compile(&logic).unwrap_err();
        assert!(err.contains(expected), "{logic}: {err}");
    }
}

/// A var whose first key is absent is reported, so a caller can add that part
/// of the context and evaluate again.
#[test]
fn missing_roots_are_reported() {
    let e = Expr::compile(&json!({"and": [
        {"==": [{"var": "event.kind"}, "a"]},
        {"==": [{"var": "state.mode"}, "busy"]}
    ]}))
    .unwrap();
    let short = json!({"event": {"kind": "b"}});
    let r = e.evaluate(&short);
    assert_eq!(*r.value, json!(false));
    assert!(!r.reached_missing_root, "short-circuited before state");
    let partial = json!({"event": {"kind": "a"}});
    let r = e.evaluate(&partial);
    assert_eq!(*r.value, json!(false));
    assert!(r.reached_missing_root, "reached for state");
    let whole = json!({"event": {"kind": "a"}, "state": {"mode": "busy"}});
    let r = e.evaluate(&whole);
    assert_eq!(*r.value, json!(true));
    assert!(!r.reached_missing_root);
}

#[test]
fn inputs_are_the_var_paths() {
    let e = Expr::compile(&json!({"and": [
        {"==": [{"var": "event.data.caller"}, "Partner"]},
        {"==": [{"var": ["state.location", "Home"]}, "Work"]}
    ]}))
    .unwrap();
    let mut paths = Vec::new();
    e.var_paths(&mut paths);
    assert_eq!(paths, ["event.data.caller", "state.location"]);
    let items = Expr::compile(
        &json!({"some": [{"var": "event.data.items"}, {"==": [{"var": "price"}, 1]}]}),
    )
    .unwrap();
    let mut paths = Vec::new();
    items.var_paths(&mut paths);
    assert_eq!(
        paths,
        ["event.data.items"],
        "item fields are not context inputs"
    );
}

fn error_of(logic: Value, data: Value) -> EvalError {
    Expr::compile(&logic).unwrap().try_eval(&data).unwrap_err()
}

/// A value with no number is an error, not a silent NaN; the old API reads it
/// as null (so a condition that errs does not match) and says why.
#[test]
fn errors_are_values() {
    for (logic, data, expected) in [
        (json!({"+": ["a", 1]}), json!(null), EvalError::NaN),
        (json!({"/": [1, 0]}), json!(null), EvalError::NaN),
        (json!({"<": [1, [2]]}), json!(null), EvalError::NaN),
        (
            json!({"==": [2023, "2024-01-01"]}),
            json!(null),
            EvalError::NaN,
        ),
        (
            json!({"all": [{"var": "x"}, true]}),
            json!({"x": 5}),
            EvalError::InvalidArguments,
        ),
        (
            json!({"-": {"var": "xs"}}),
            json!({"xs": []}),
            EvalError::InvalidArguments,
        ),
        (
            json!({"throw": "boom"}),
            json!(null),
            EvalError::Thrown(Box::new(json!("boom"))),
        ),
    ] {
        assert_eq!(error_of(logic.clone(), data.clone()), expected, "{logic}");
        let e = Expr::compile(&logic).unwrap();
        let r = e.evaluate(&data);
        assert_eq!(*r.value, Value::Null, "{logic}");
        assert_eq!(r.error, Some(expected), "{logic}");
    }
    assert_eq!(
        EvalError::Thrown(Box::new(json!("boom"))).to_value(),
        json!({"type": "boom"})
    );
    assert_eq!(
        EvalError::Thrown(Box::new(json!({"type": "x", "code": 7}))).to_value(),
        json!({"type": "x", "code": 7})
    );
}

/// `try` returns its first argument that evaluates; each fallback reads the
/// error as its data, and the last error stands if none does.
#[test]
fn try_catches_and_throw_raises() {
    let cases = [
        (
            json!({"try": [{"/": [1, 0]}, {"val": "type"}]}),
            json!("NaN"),
        ),
        (
            json!({"try": [{"throw": "a"}, {"throw": "b"}, {"val": "type"}]}),
            json!("b"),
        ),
        (
            json!({"try": [{"throw": {"val": [[1], "err"]}}, {"val": "type"}]}),
            json!("custom"),
        ),
        (json!({"try": [1, {"throw": "unused"}]}), json!(1)),
    ];
    for (logic, expected) in cases {
        assert_eq!(
            run(logic.clone(), json!({"err": {"type": "custom"}})),
            expected,
            "{logic}"
        );
    }
    assert_eq!(
        error_of(
            json!({"try": [{"throw": "a"}, {"throw": "b"}]}),
            json!(null)
        ),
        EvalError::Thrown(Box::new(json!("b")))
    );
}

/// Comparisons chain pairwise and stop at the first pair that fails; null is
/// 0 against numbers but never equals a string.
#[test]
fn comparisons_chain_lazily() {
    for (logic, expected) in [
        (json!({"<": [1, 2, 3, 4]}), true),
        (json!({">=": [3, 3, 1]}), true),
        (json!({"==": [1, 2, {"throw": "not lazy"}]}), false),
        (json!({"!=": [3, 2, 3]}), true),
        (json!({"==": [null, 0]}), true),
        (json!({"==": [null, ""]}), false),
        (json!({"!=": [{"var": "status"}, "paid"]}), true),
        (json!({"<": ["2023", "2024-01-01"]}), true),
        (json!({"===": [0, {"+": "0"}]}), true),
    ] {
        assert_eq!(run(logic.clone(), json!({})), json!(expected), "{logic}");
    }
}

/// Arithmetic takes any number of arguments, or one expression whose list value
/// is the arguments; `preserve` keeps a list from being read as logic.
#[test]
fn variadic_arithmetic_and_spreads() {
    for (logic, expected) in [
        (json!({"+": []}), json!(0)),
        (json!({"*": []}), json!(1)),
        (json!({"-": [10, 2, 3]}), json!(5)),
        (json!({"/": [8, 2, 2]}), json!(2)),
        (json!({"/": [4]}), json!(0.25)),
        (json!({"%": [8, 6, 3]}), json!(2)),
        (json!({"+": {"var": "xs"}}), json!(6)),
        (json!({"max": {"var": "xs"}}), json!(3)),
        (json!({"cat": {"var": "words"}}), json!("ab")),
        (json!({"*": {"preserve": [2, 8]}}), json!(16)),
        (json!({"+": "1.5"}), json!(1.5)),
    ] {
        let data = json!({"xs": [1, 2, 3], "words": ["a", "b"]});
        assert_eq!(run(logic.clone(), data), expected, "{logic}");
    }
}

/// `val` reads one key per segment (dots included), `[[n], …]` climbs out of
/// iterators: one level to the iteration (its index), two to the data around.
#[test]
fn val_and_scopes() {
    let data = json!({"a.b": 1, "a": {"b": 2}, "k": 10, "xs": [1, 2], "n": null});
    for (logic, expected) in [
        (json!({"val": "a.b"}), json!(1)),
        (json!({"val": ["a", "b"]}), json!(2)),
        (json!({"val": ["xs", 1]}), json!(2)),
        (json!({"val": {"cat": ["k", ""]}}), json!(10)),
        (json!({"exists": "n"}), json!(true)),
        (json!({"exists": ["a", "c"]}), json!(false)),
        (json!({"??": [{"val": "n"}, {"val": "k"}]}), json!(10)),
        (
            json!({"map": [{"val": "xs"}, {"+": [{"val": []}, {"val": [[1], "index"]}, {"val": [[2], "k"]}]}]}),
            json!([11, 13]),
        ),
        (
            json!({"map": [[["x"]], {"map": [{"val": []}, {"val": [[-4], "k"]}]}]}),
            json!([[10]]),
        ),
        (
            json!({"reduce": [{"val": "xs"}, {"+": [{"val": "accumulator"}, {"val": [[1], "index"]}]}, 0]}),
            json!(1),
        ),
        // Past the outermost scope is the outermost scope.
        (json!({"val": [[9], "k"]}), json!(10)),
    ] {
        assert_eq!(run(logic.clone(), data.clone()), expected, "{logic}");
    }
}

/// Only a lookup in the data notes a missing first key: an item's missing field
/// is not a missing part of the context, the data read from inside an iterator
/// is.
#[test]
fn missing_roots_through_scopes() {
    let items =
        Expr::compile(&json!({"some": [{"var": "event.items"}, {"==": [{"var": "sku"}, 1]}]}))
            .unwrap();
    let data = json!({"event": {"items": [{"qty": 1}]}});
    let r = items.evaluate(&data);
    assert_eq!(*r.value, json!(false));
    assert!(!r.reached_missing_root);
    let outer =
        Expr::compile(&json!({"map": [{"var": "event.items"}, {"val": [[2], "state", "mode"]}]}))
            .unwrap();
    let data = json!({"event": {"items": [1]}});
    let r = outer.evaluate(&data);
    assert_eq!(*r.value, json!([null]));
    assert!(r.reached_missing_root);
    let exists = Expr::compile(&json!({"exists": ["state"]})).unwrap();
    assert!(exists.evaluate(&json!({"event": {}})).reached_missing_root);
}

/// `val` and `exists` paths are inputs where they read the data, including
/// from inside an iterator by level, and not where they read an item or an
/// error.
#[test]
fn inputs_include_val_paths() {
    let e = Expr::compile(&json!({"and": [
        {"val": ["event", "type"]},
        {"exists": "state"},
        {"map": [{"var": "event.items"}, {"+": [{"val": "price"}, {"val": [[2], "entity", "rate"]}]}]},
        {"try": [1, {"val": "type"}]}
    ]}))
    .unwrap();
    let mut paths = Vec::new();
    e.var_paths(&mut paths);
    assert_eq!(paths, ["event.type", "state", "event.items", "entity.rate"]);
}

/// The hot path allocates nothing: a var, a literal and a comparison's boolean
/// come back borrowed.
#[test]
fn lookups_and_comparisons_borrow() {
    let data = json!({"type": "order.created", "data": {"total": 250}});
    for logic in [
        json!({"var": "data.total"}),
        json!({"val": ["data", "total"]}),
        json!("literal"),
        json!({"and": [
            {"==": [{"var": "type"}, "order.created"]},
            {">": [{"var": "data.total"}, 100]}
        ]}),
    ] {
        let e = Expr::compile(&logic).unwrap();
        assert!(matches!(e.eval_ref(&data), Cow::Borrowed(_)), "{logic}");
    }
}
