//! JsonLogic (jsonlogic.com), compiled once and evaluated many times.
//!
//! [`Expr::compile`] turns a rule's condition into a tree, refusing unknown
//! operators, wrong arities and malformed `var` paths, so a bad rule is an error
//! when it is saved, not when an event arrives. [`Expr::eval`] evaluates the tree
//! against a JSON context with JsonLogic's semantics: JavaScript truthiness (`0`,
//! `""`, `[]`, `null`, `false` are false), loose `==` with type coercion, `var`
//! with dotted paths and defaults, `<`/`<=` with three arguments ("between").
//!
//! Operators: `var missing missing_some if ?: == === != !== ! !! or and > >= < <=
//! max min + - * / % in cat substr merge map filter reduce all some none`.

use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::cell::Cell;

/// Deepest nesting accepted (a condition is data written by users).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Value),
    Array(Vec<Expr>),
    /// `{"var": path}` or `{"var": [path, default]}`; the path is split once.
    Var {
        path: Vec<String>,
        default: Option<Box<Expr>>,
    },
    /// `{"var": <expression>}`: a path computed at run time.
    DynamicVar(Box<Expr>, Option<Box<Expr>>),
    Op(Op, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Missing,
    MissingSome,
    If,
    Eq,
    StrictEq,
    Ne,
    StrictNe,
    Not,
    Truthy,
    Or,
    And,
    Gt,
    Ge,
    Lt,
    Le,
    Max,
    Min,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    In,
    Cat,
    Substr,
    Merge,
    Map,
    Filter,
    Reduce,
    All,
    Some,
    None,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "missing" => Op::Missing,
            "missing_some" => Op::MissingSome,
            "if" | "?:" => Op::If,
            "==" => Op::Eq,
            "===" => Op::StrictEq,
            "!=" => Op::Ne,
            "!==" => Op::StrictNe,
            "!" => Op::Not,
            "!!" => Op::Truthy,
            "or" => Op::Or,
            "and" => Op::And,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "max" => Op::Max,
            "min" => Op::Min,
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "in" => Op::In,
            "cat" => Op::Cat,
            "substr" => Op::Substr,
            "merge" => Op::Merge,
            "map" => Op::Map,
            "filter" => Op::Filter,
            "reduce" => Op::Reduce,
            "all" => Op::All,
            "some" => Op::Some,
            "none" => Op::None,
            _ => return None,
        })
    }

    /// Allowed argument counts (min, max).
    fn arity(self) -> (usize, usize) {
        match self {
            Op::Not | Op::Truthy => (1, 1),
            Op::Eq | Op::StrictEq | Op::Ne | Op::StrictNe | Op::Gt | Op::Ge | Op::Div | Op::Mod => {
                (2, 2)
            }
            Op::In => (2, 2),
            Op::Lt | Op::Le => (2, 3),
            Op::Substr => (2, 3),
            Op::MissingSome => (2, 2),
            Op::Map | Op::Filter | Op::All | Op::Some | Op::None => (2, 2),
            Op::Reduce => (3, 3),
            Op::Sub => (1, 2),
            Op::Or | Op::And | Op::Max | Op::Min | Op::Add | Op::Mul => (1, usize::MAX),
            Op::If | Op::Missing | Op::Cat | Op::Merge => (0, usize::MAX),
        }
    }
}

/// Splits a dotted var path; `""` is the whole context.
fn split_path(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
    if parts.iter().any(String::is_empty) {
        return Err(format!("var path \"{path}\" has an empty segment"));
    }
    Ok(parts)
}

fn path_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

impl Expr {
    /// Compiles a JsonLogic expression; the error says what and where.
    pub fn compile(value: &Value) -> Result<Expr, String> {
        compile(value, 0)
    }

    /// Every constant var path (dotted) the expression reads, for recording the
    /// inputs a decision used.
    pub fn var_paths(&self, out: &mut Vec<String>) {
        match self {
            Expr::Var { path, default } => {
                let p = path.join(".");
                // `{"var": ""}` is the whole data, not an input worth recording.
                if !p.is_empty() && !out.contains(&p) {
                    out.push(p);
                }
                if let Some(d) = default {
                    d.var_paths(out);
                }
            }
            Expr::DynamicVar(e, d) => {
                e.var_paths(out);
                if let Some(d) = d {
                    d.var_paths(out);
                }
            }
            // The body of map/filter/all/some/none/reduce reads each item (or
            // {current, accumulator}), not the context: only the list counts.
            Expr::Op(Op::Map | Op::Filter | Op::All | Op::Some | Op::None | Op::Reduce, items) => {
                for (n, i) in items.iter().enumerate() {
                    if n != 1 {
                        i.var_paths(out);
                    }
                }
            }
            Expr::Array(items) | Expr::Op(_, items) => {
                for i in items {
                    i.var_paths(out);
                }
            }
            Expr::Literal(_) => {}
        }
    }

    pub fn eval(&self, data: &Value) -> Value {
        self.eval_ref(data).into_owned()
    }

    /// Evaluates without copying what it only reads: a `var` or a literal comes
    /// back borrowed.
    pub fn eval_ref<'a>(&'a self, data: &'a Value) -> Cow<'a, Value> {
        self.evaluate(data).value
    }

    /// [`Expr::eval_ref`], and whether a `var` found its first key missing from
    /// `data`: a caller can leave an expensive part of the context out, and
    /// evaluate again with it only when a condition actually reached for it.
    pub fn evaluate<'a>(&'a self, data: &'a Value) -> Evaluation<'a> {
        let missing_root = Cell::new(false);
        let value = self.eval_in(Cx {
            data,
            missing_root: &missing_root,
        });
        Evaluation {
            value,
            reached_missing_root: missing_root.get(),
        }
    }

    fn eval_in<'a>(&'a self, cx: Cx<'a, '_>) -> Cow<'a, Value> {
        match self {
            Expr::Literal(v) => Cow::Borrowed(v),
            Expr::Array(items) => Cow::Owned(Value::Array(
                items.iter().map(|e| e.eval_in(cx).into_owned()).collect(),
            )),
            Expr::Var { path, default } => match lookup(cx, path) {
                Some(v) if !v.is_null() => Cow::Borrowed(v),
                _ => default.as_ref().map_or(NULL, |d| d.eval_in(cx)),
            },
            Expr::DynamicVar(e, default) => {
                let found = path_of(&e.eval_in(cx))
                    .and_then(|p| split_path(&p).ok())
                    .and_then(|p| lookup(cx, &p));
                match found {
                    Some(v) if !v.is_null() => Cow::Borrowed(v),
                    _ => default.as_ref().map_or(NULL, |d| d.eval_in(cx)),
                }
            }
            Expr::Op(op, args) => eval_op(*op, args, cx),
        }
    }
}

const NULL: Cow<'static, Value> = Cow::Owned(Value::Null);

fn compile(value: &Value, depth: usize) -> Result<Expr, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    match value {
        Value::Array(items) => Ok(Expr::Array(
            items
                .iter()
                .map(|v| compile(v, depth + 1))
                .collect::<Result<_, _>>()?,
        )),
        Value::Object(map) if map.len() == 1 => {
            let (name, raw_args) = map.iter().next().expect("one entry");
            let args: Vec<&Value> = match raw_args {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            if name == "var" {
                return compile_var(&args, depth);
            }
            let op = Op::parse(name).ok_or_else(|| format!("unknown operator \"{name}\""))?;
            let (min, max) = op.arity();
            if args.len() < min || args.len() > max {
                return Err(format!(
                    "\"{name}\" takes {} arguments, got {}",
                    if min == max {
                        min.to_string()
                    } else if max == usize::MAX {
                        format!("at least {min}")
                    } else {
                        format!("{min} to {max}")
                    },
                    args.len()
                ));
            }
            let compiled = args
                .into_iter()
                .map(|a| compile(a, depth + 1))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("in \"{name}\": {e}"))?;
            Ok(Expr::Op(op, compiled))
        }
        Value::Object(map) if map.is_empty() => Ok(Expr::Literal(value.clone())),
        Value::Object(map) => Err(format!(
            "an operation has exactly one key, this object has {} ({})",
            map.len(),
            map.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
        other => Ok(Expr::Literal(other.clone())),
    }
}

fn compile_var(args: &[&Value], depth: usize) -> Result<Expr, String> {
    if args.len() > 2 {
        return Err(format!(
            "\"var\" takes a path and a default, got {} arguments",
            args.len()
        ));
    }
    let default = args
        .get(1)
        .map(|d| compile(d, depth + 1).map(Box::new))
        .transpose()?;
    let path = args.first().copied().unwrap_or(&Value::Null);
    match path_of(path) {
        Some(p) => Ok(Expr::Var {
            path: split_path(&p)?,
            default,
        }),
        None if matches!(path, Value::Object(_)) => Ok(Expr::DynamicVar(
            Box::new(compile(path, depth + 1)?),
            default,
        )),
        None => Err(format!("var path must be a string or number, got {path}")),
    }
}

/// What an evaluation carries down the expression: the data, and where to note
/// that a `var` found its first key missing.
#[derive(Clone, Copy)]
struct Cx<'a, 'c> {
    data: &'a Value,
    missing_root: &'c Cell<bool>,
}

/// The result of [`Expr::evaluate`].
pub struct Evaluation<'a> {
    pub value: Cow<'a, Value>,
    /// A `var` looked up a first key that `data` does not have.
    pub reached_missing_root: bool,
}

fn lookup<'a>(cx: Cx<'a, '_>, path: &[String]) -> Option<&'a Value> {
    if let (Some(first), Value::Object(m)) = (path.first(), cx.data) {
        if !m.contains_key(first) {
            cx.missing_root.set(true);
            return None;
        }
    }
    crate::json::lookup(cx.data, path)
}

/// JavaScript truthiness, as JsonLogic defines it.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

/// JavaScript `Number(v)`: NaN where it has no number.
fn to_number(v: &Value) -> f64 {
    match v {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) if s.trim().is_empty() => 0.0,
        Value::String(s) => s.trim().parse().unwrap_or(f64::NAN),
        Value::Array(a) if a.is_empty() => 0.0,
        Value::Array(a) if a.len() == 1 => to_number(&a[0]),
        _ => f64::NAN,
    }
}

/// JavaScript `String(v)`.
fn to_text(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number_text(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                if x.is_null() {
                    String::new()
                } else {
                    to_text(x)
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

fn number_text(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::Number(Number::from(f as i64))
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// JavaScript `==` (abstract equality) on JSON values.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(_), Value::Number(_)) => to_number(a) == to_number(b),
        (Value::Array(_) | Value::Object(_), Value::Array(_) | Value::Object(_)) => {
            std::ptr::eq(a, b)
        }
        (Value::Array(_) | Value::Object(_), _) => loose_eq(&Value::String(to_text(a)), b),
        (_, Value::Array(_) | Value::Object(_)) => loose_eq(a, &Value::String(to_text(b))),
        _ => to_number(a) == to_number(b),
    }
}

/// JavaScript `===`.
fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => to_number(a) == to_number(b),
        (Value::Array(_) | Value::Object(_), _) => false,
        _ => a == b,
    }
}

/// JavaScript relational comparison (`<`): strings compare as strings, anything
/// else as numbers.
fn less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x < y,
        _ => to_number(a) < to_number(b),
    }
}

/// JavaScript `<=`: strings compare as strings, anything else as numbers (NaN
/// compares false).
fn less_or_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x <= y,
        _ => to_number(a) <= to_number(b),
    }
}

fn eval_op<'a>(op: Op, args: &'a [Expr], cx: Cx<'a, '_>) -> Cow<'a, Value> {
    let arg = |i: usize| args.get(i).map_or(NULL, |e| e.eval_in(cx));
    let owned = |v: Value| -> Cow<'a, Value> { Cow::Owned(v) };
    let boolean = |b: bool| -> Cow<'a, Value> { Cow::Owned(Value::Bool(b)) };
    match op {
        Op::Not => boolean(!truthy(&arg(0))),
        Op::Truthy => boolean(truthy(&arg(0))),
        Op::Or | Op::And => {
            let mut last = NULL;
            for e in args {
                last = e.eval_in(cx);
                if truthy(&last) == (op == Op::Or) {
                    return last;
                }
            }
            last
        }
        Op::If => {
            let mut i = 0;
            while i + 1 < args.len() {
                if truthy(&args[i].eval_in(cx)) {
                    return args[i + 1].eval_in(cx);
                }
                i += 2;
            }
            if i < args.len() {
                args[i].eval_in(cx)
            } else {
                NULL
            }
        }
        Op::Eq => boolean(loose_eq(&arg(0), &arg(1))),
        Op::Ne => boolean(!loose_eq(&arg(0), &arg(1))),
        Op::StrictEq => boolean(strict_eq(&arg(0), &arg(1))),
        Op::StrictNe => boolean(!strict_eq(&arg(0), &arg(1))),
        Op::Gt => boolean(less(&arg(1), &arg(0))),
        Op::Ge => boolean(less_or_equal(&arg(1), &arg(0))),
        Op::Lt | Op::Le => {
            let values: Vec<Cow<'a, Value>> = args.iter().map(|e| e.eval_in(cx)).collect();
            let cmp = |a: &Value, b: &Value| {
                if op == Op::Lt {
                    less(a, b)
                } else {
                    less_or_equal(a, b)
                }
            };
            boolean(values.windows(2).all(|w| cmp(&w[0], &w[1])))
        }
        Op::Max | Op::Min => {
            let nums: Vec<f64> = args.iter().map(|e| to_number(&e.eval_in(cx))).collect();
            if nums.iter().any(|n| n.is_nan()) {
                return NULL;
            }
            let pick = if op == Op::Max { f64::max } else { f64::min };
            owned(nums.into_iter().reduce(pick).map_or(Value::Null, number))
        }
        Op::Add => owned(number(args.iter().map(|e| to_number(&e.eval_in(cx))).sum())),
        Op::Mul => owned(number(
            args.iter().map(|e| to_number(&e.eval_in(cx))).product(),
        )),
        Op::Sub => owned(match args.len() {
            1 => number(-to_number(&arg(0))),
            _ => number(to_number(&arg(0)) - to_number(&arg(1))),
        }),
        Op::Div => owned(number(to_number(&arg(0)) / to_number(&arg(1)))),
        Op::Mod => owned(number(to_number(&arg(0)) % to_number(&arg(1)))),
        Op::In => boolean(match arg(1).as_ref() {
            Value::Array(items) => {
                let needle = arg(0);
                items.iter().any(|x| strict_eq(x, &needle))
            }
            Value::String(s) => s.contains(&to_text(&arg(0))),
            _ => false,
        }),
        // json-logic-js joins its arguments: null (and a missing var) is "".
        Op::Cat => owned(Value::String(
            args.iter()
                .map(|e| match e.eval_in(cx).as_ref() {
                    Value::Null => String::new(),
                    v => to_text(v),
                })
                .collect(),
        )),
        Op::Substr => {
            let s: Vec<char> = to_text(&arg(0)).chars().collect();
            let len = s.len() as i64;
            let start = to_number(&arg(1)) as i64;
            let start = if start < 0 {
                (len + start).max(0)
            } else {
                start.min(len)
            };
            let end = match args.get(2) {
                None => len,
                Some(e) => {
                    let n = to_number(&e.eval_in(cx)) as i64;
                    if n < 0 {
                        (len + n).max(start)
                    } else {
                        (start + n).min(len)
                    }
                }
            };
            owned(Value::String(
                s[start as usize..end.max(start) as usize].iter().collect(),
            ))
        }
        Op::Merge => owned(Value::Array(
            args.iter()
                .flat_map(|e| match e.eval_in(cx).into_owned() {
                    Value::Array(a) => a,
                    other => vec![other],
                })
                .collect(),
        )),
        Op::Missing => {
            let keys: Vec<Value> = match args {
                [one] => match one.eval_in(cx).into_owned() {
                    Value::Array(a) => a,
                    other => vec![other],
                },
                many => many.iter().map(|e| e.eval_in(cx).into_owned()).collect(),
            };
            owned(Value::Array(
                keys.into_iter().filter(|k| is_missing(cx, k)).collect(),
            ))
        }
        Op::MissingSome => {
            let need = to_number(&arg(0)) as usize;
            let keys = match arg(1).into_owned() {
                Value::Array(a) => a,
                other => vec![other],
            };
            let missing: Vec<Value> = keys.iter().filter(|k| is_missing(cx, k)).cloned().collect();
            owned(Value::Array(if keys.len() - missing.len() >= need {
                Vec::new()
            } else {
                missing
            }))
        }
        Op::Map | Op::Filter | Op::All | Op::Some | Op::None => {
            let list = arg(0);
            let empty = Vec::new();
            let items = match list.as_ref() {
                Value::Array(a) => a,
                _ => &empty,
            };
            let body = &args[1];
            match op {
                Op::Map => owned(Value::Array(
                    items
                        .iter()
                        .map(|x| body.eval_ref(x).into_owned())
                        .collect(),
                )),
                Op::Filter => owned(Value::Array(
                    items
                        .iter()
                        .filter(|x| truthy(&body.eval_ref(x)))
                        .cloned()
                        .collect(),
                )),
                // JsonLogic: `all` of an empty list is false.
                Op::All => {
                    boolean(!items.is_empty() && items.iter().all(|x| truthy(&body.eval_ref(x))))
                }
                Op::Some => boolean(items.iter().any(|x| truthy(&body.eval_ref(x)))),
                _ => boolean(!items.iter().any(|x| truthy(&body.eval_ref(x)))),
            }
        }
        Op::Reduce => {
            let items = match arg(0).into_owned() {
                Value::Array(a) => a,
                _ => Vec::new(),
            };
            let mut acc = arg(2).into_owned();
            for item in items {
                let mut scope = Map::new();
                scope.insert("current".into(), item);
                scope.insert("accumulator".into(), acc);
                acc = args[1].eval_ref(&Value::Object(scope)).into_owned();
            }
            owned(acc)
        }
    }
}

fn is_missing(cx: Cx<'_, '_>, key: &Value) -> bool {
    match path_of(key).and_then(|p| split_path(&p).ok()) {
        Some(path) => lookup(cx, &path).is_none_or(|v| v.is_null() || v == ""),
        None => true,
    }
}

#[cfg(test)]
mod tests {
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
            (json!({"==": [1]}), "\"==\" takes 2 arguments, got 1"),
            (
                json!({"and": [{"nope": []}]}),
                "in \"and\": unknown operator \"nope\"",
            ),
            (json!({"var": "a..b"}), "empty segment"),
            (json!({"var": [true]}), "var path must be"),
            (json!({"==": [1, 1], "!=": [1, 2]}), "exactly one key"),
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
}
