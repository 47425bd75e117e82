//! Walks a compiled tree against the data.
//!
//! Results are `Cow`: a `var`, a `val` or a literal comes back borrowed from the
//! data or the tree, so the usual condition (compare a field with a constant)
//! allocates nothing. Errors are values of [`EvalError`], caught by `try`.

use super::coerce::{loose_eq, number, order, strict_eq, to_number, to_text, truthy};
use super::compile::{path_of, split_path, Node, Op, Path};
use super::EvalError;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Ordering;

type Eval<'a> = Result<Cow<'a, Value>, EvalError>;

static NULL: Value = Value::Null;
static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

#[inline]
fn boolean<'a>(b: bool) -> Cow<'a, Value> {
    Cow::Borrowed(if b { &TRUE } else { &FALSE })
}

/// One scope of the chain `val` climbs with `[level]`: the data, then for each
/// iterator an index level and the item, for `try` the error.
pub(super) struct Scope<'a, 's> {
    level: Level<'a>,
    parent: Option<&'s Scope<'a, 's>>,
}

#[derive(Clone, Copy)]
enum Level<'a> {
    Data(&'a Value),
    /// An iteration, read as `{"index": i}`.
    Index(usize),
}

impl<'a> Scope<'a, '_> {
    pub(super) fn root(data: &'a Value) -> Self {
        Scope {
            level: Level::Data(data),
            parent: None,
        }
    }

    /// `levels` steps out; past the outermost scope is the outermost scope.
    fn up(&self, levels: usize) -> &Self {
        let mut scope = self;
        for _ in 0..levels {
            match scope.parent {
                Some(p) => scope = p,
                None => break,
            }
        }
        scope
    }
}

/// What an evaluation carries down the tree: the scope chain, and where to note
/// that a lookup found its first key missing from the data.
#[derive(Clone, Copy)]
pub(super) struct Cx<'a, 's> {
    scope: &'s Scope<'a, 's>,
    missing_root: &'s Cell<bool>,
}

impl<'a, 's> Cx<'a, 's> {
    pub(super) fn new(scope: &'s Scope<'a, 's>, missing_root: &'s Cell<bool>) -> Self {
        Cx {
            scope,
            missing_root,
        }
    }

    /// The value at `path` in `scope`. Noting a missing first key only at the
    /// data (not in an item) keeps `reached_missing_root` meaning "the context
    /// lacks a part", whatever the iterators do.
    #[inline]
    fn lookup<S: AsRef<str>>(&self, scope: &Scope<'a, '_>, path: &[S]) -> Option<Cow<'a, Value>> {
        match scope.level {
            Level::Data(data) => match (scope.parent, path.split_first(), data) {
                // The first key is looked up once, to note its absence and to
                // go on from what it found.
                (None, Some((first, rest)), Value::Object(m)) => match m.get(first.as_ref()) {
                    Some(found) => crate::json::lookup(found, rest).map(Cow::Borrowed),
                    None => {
                        self.missing_root.set(true);
                        None
                    }
                },
                _ => crate::json::lookup(data, path).map(Cow::Borrowed),
            },
            Level::Index(i) => match path {
                [] => Some(Cow::Owned(json!({ "index": i }))),
                [key] if key.as_ref() == "index" => Some(Cow::Owned(i.into())),
                _ => None,
            },
        }
    }

    /// `body` evaluated with `level` as its scope, inside this one.
    fn within<'l, T>(
        self,
        level: Level<'l>,
        body: impl FnOnce(Cx<'l, '_>) -> Result<T, EvalError>,
    ) -> Result<T, EvalError>
    where
        'a: 'l,
    {
        let scope = Scope {
            level,
            parent: Some(self.scope),
        };
        body(Cx {
            scope: &scope,
            missing_root: self.missing_root,
        })
    }

    /// `body` evaluated once per item, each in an index scope and the item's.
    fn each_item<'l>(
        self,
        items: &'l [Value],
        mut body: impl FnMut(&'l Value, Cx<'l, '_>) -> Result<bool, EvalError>,
    ) -> Result<(), EvalError>
    where
        'a: 'l,
    {
        for (i, item) in items.iter().enumerate() {
            let go_on = self.within(Level::Index(i), |cx| {
                cx.within(Level::Data(item), |cx| body(item, cx))
            })?;
            if !go_on {
                break;
            }
        }
        Ok(())
    }
}

pub(super) fn eval<'a>(node: &'a Node, cx: Cx<'a, '_>) -> Eval<'a> {
    match node {
        Node::Literal(v) => Ok(Cow::Borrowed(v)),
        Node::Array(items) => Ok(Cow::Owned(Value::Array(
            items
                .iter()
                .map(|e| eval(e, cx).map(Cow::into_owned))
                .collect::<Result<_, _>>()?,
        ))),
        Node::Var { path, default } => match cx.lookup(cx.scope, path) {
            Some(v) if !v.is_null() => Ok(v),
            _ => default
                .as_ref()
                .map_or(Ok(Cow::Borrowed(&NULL)), |d| eval(d, cx)),
        },
        Node::DynamicVar { path, default } => {
            let found = path_of(&*eval(path, cx)?)
                .and_then(|p| split_path(&p).ok())
                .and_then(|p| cx.lookup(cx.scope, &p));
            match found {
                Some(v) if !v.is_null() => Ok(v),
                _ => default
                    .as_ref()
                    .map_or(Ok(Cow::Borrowed(&NULL)), |d| eval(d, cx)),
            }
        }
        Node::Val { level, path } => {
            let scope = cx.scope.up(*level);
            Ok(lookup_path(cx, scope, path)?.unwrap_or(Cow::Borrowed(&NULL)))
        }
        Node::Exists(path) => Ok(boolean(lookup_path(cx, cx.scope, path)?.is_some())),
        Node::Op(op, args) => eval_op(*op, args, cx),
        Node::Spread(op, arg) => {
            let value = eval(arg, cx)?;
            let result = match value.as_ref() {
                Value::Array(items) => apply(*op, items.iter().map(|v| Ok(Cow::Borrowed(v)))),
                one => apply(*op, std::iter::once(Ok(Cow::Borrowed(one)))),
            };
            result.map(Cow::Owned)
        }
    }
}

fn lookup_path<'a>(
    cx: Cx<'a, '_>,
    scope: &Scope<'a, '_>,
    path: &'a Path,
) -> Result<Option<Cow<'a, Value>>, EvalError> {
    match path {
        Path::Static(keys) => Ok(cx.lookup(scope, keys)),
        Path::Dynamic(nodes) => {
            let mut keys = Vec::with_capacity(nodes.len());
            for n in nodes {
                match path_of(&*eval(n, cx)?) {
                    Some(key) => keys.push(key),
                    None => return Ok(None),
                }
            }
            Ok(cx.lookup(scope, &keys))
        }
    }
}

fn eval_op<'a>(op: Op, args: &'a [Node], cx: Cx<'a, '_>) -> Eval<'a> {
    let arg = |i: usize| {
        args.get(i)
            .map_or(Ok(Cow::Borrowed(&NULL)), |e| eval(e, cx))
    };
    let owned = |v: Value| -> Eval<'a> { Ok(Cow::Owned(v)) };
    match op {
        Op::Not => Ok(boolean(!truthy(&*arg(0)?))),
        Op::Truthy => Ok(boolean(truthy(&*arg(0)?))),
        Op::Or | Op::And => {
            let mut last = boolean(false);
            for e in args {
                last = eval(e, cx)?;
                if truthy(&last) == (op == Op::Or) {
                    break;
                }
            }
            Ok(last)
        }
        Op::Coalesce => {
            for e in args {
                let v = eval(e, cx)?;
                if !v.is_null() {
                    return Ok(v);
                }
            }
            Ok(Cow::Borrowed(&NULL))
        }
        Op::If => {
            let mut i = 0;
            while i + 1 < args.len() {
                if truthy(&*eval(&args[i], cx)?) {
                    return eval(&args[i + 1], cx);
                }
                i += 2;
            }
            arg(i)
        }
        Op::Eq | Op::Ne | Op::StrictEq | Op::StrictNe | Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            // Chained, and lazy: `a < b < c` stops at the first pair that fails.
            let (first, rest) = args.split_first().ok_or(EvalError::InvalidArguments)?;
            let mut prev = eval(first, cx)?;
            for e in rest {
                let next = eval(e, cx)?;
                if !compare(op, &prev, &next)? {
                    return Ok(boolean(false));
                }
                prev = next;
            }
            Ok(boolean(true))
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Mod | Op::Max | Op::Min | Op::Cat => {
            apply(op, args.iter().map(|e| eval(e, cx))).map(Cow::Owned)
        }
        Op::In => {
            let needle = arg(0)?;
            Ok(boolean(match arg(1)?.as_ref() {
                Value::Array(items) => items.iter().any(|x| strict_eq(x, &needle)),
                Value::String(s) => s.contains(&to_text(&needle)),
                _ => false,
            }))
        }
        Op::Substr => {
            let text = to_text(&*arg(0)?);
            let start = to_number(&*arg(1)?).unwrap_or(0.0);
            let length = match args.get(2) {
                Some(e) => Some(to_number(&*eval(e, cx)?).unwrap_or(0.0)),
                None => None,
            };
            owned(Value::String(substr(&text, start, length)))
        }
        Op::Merge => {
            let mut out = Vec::new();
            for e in args {
                match eval(e, cx)?.into_owned() {
                    Value::Array(a) => out.extend(a),
                    other => out.push(other),
                }
            }
            owned(Value::Array(out))
        }
        Op::Missing => {
            let keys: Vec<Value> = match args {
                [one] => match eval(one, cx)?.into_owned() {
                    Value::Array(a) => a,
                    other => vec![other],
                },
                many => many
                    .iter()
                    .map(|e| eval(e, cx).map(Cow::into_owned))
                    .collect::<Result<_, _>>()?,
            };
            owned(Value::Array(
                keys.into_iter().filter(|k| is_missing(cx, k)).collect(),
            ))
        }
        Op::MissingSome => {
            let need = to_number(&*arg(0)?).unwrap_or(0.0) as usize;
            let keys = match arg(1)?.into_owned() {
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
        Op::Map | Op::Filter | Op::All | Op::Some | Op::None => iterate(op, args, cx),
        Op::Reduce => {
            let list = arg(0)?;
            let mut acc = arg(2)?.into_owned();
            if let Value::Array(items) = list.as_ref() {
                for (i, item) in items.iter().enumerate() {
                    // The body reads `{"current": item, "accumulator": so far}`.
                    let mut scope = Map::new();
                    scope.insert("current".into(), item.clone());
                    scope.insert("accumulator".into(), std::mem::take(&mut acc));
                    let scope = Value::Object(scope);
                    acc = cx.within(Level::Index(i), |cx| {
                        cx.within(Level::Data(&scope), |cx| {
                            eval(&args[1], cx).map(Cow::into_owned)
                        })
                    })?;
                }
            }
            owned(acc)
        }
        Op::Try => {
            let (first, rest) = args.split_first().ok_or(EvalError::InvalidArguments)?;
            let mut error = match eval(first, cx) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            // Each fallback runs with the error (`{"type": …}`) as its data.
            for fallback in rest {
                let caught = error.to_value();
                match cx.within(Level::Data(&caught), |cx| {
                    eval(fallback, cx).map(Cow::into_owned)
                }) {
                    Ok(v) => return owned(v),
                    Err(e) => error = e,
                }
            }
            Err(error)
        }
        Op::Throw => Err(EvalError::Thrown(Box::new(arg(0)?.into_owned()))),
    }
}

/// `map`, `filter`, `all`, `some`, `none`: the body runs in each item's scope.
fn iterate<'a>(op: Op, args: &'a [Node], cx: Cx<'a, '_>) -> Eval<'a> {
    let list = eval(&args[0], cx)?;
    let items: &[Value] = match list.as_ref() {
        Value::Array(a) => a,
        // Nothing to map or filter; but "all of" something that is not a list
        // has no answer.
        _ if matches!(op, Op::Map | Op::Filter) => &[],
        _ => return Err(EvalError::InvalidArguments),
    };
    let body = &args[1];
    let mut out = Vec::new();
    // `some` and `none` look for a truthy item, `all` for a falsy one.
    let mut found = false;
    cx.each_item(items, |item, cx| {
        let v = eval(body, cx)?;
        Ok(match op {
            Op::Map => {
                out.push(v.into_owned());
                true
            }
            Op::Filter => {
                if truthy(&v) {
                    out.push(item.clone());
                }
                true
            }
            Op::All => {
                found = !truthy(&v);
                !found
            }
            _ => {
                found = truthy(&v);
                !found
            }
        })
    })?;
    Ok(match op {
        Op::Map | Op::Filter => Cow::Owned(Value::Array(out)),
        // JsonLogic: `all` of an empty list is false.
        Op::All => boolean(!items.is_empty() && !found),
        Op::Some => boolean(found),
        _ => boolean(!found),
    })
}

/// One link of a comparison chain.
#[inline]
fn compare(op: Op, a: &Value, b: &Value) -> Result<bool, EvalError> {
    Ok(match op {
        Op::Eq => loose_eq(a, b)?,
        Op::Ne => !loose_eq(a, b)?,
        Op::StrictEq => strict_eq(a, b),
        Op::StrictNe => !strict_eq(a, b),
        Op::Lt => order(a, b)? == Ordering::Less,
        Op::Le => order(a, b)? != Ordering::Greater,
        Op::Gt => order(a, b)? == Ordering::Greater,
        _ => order(a, b)? != Ordering::Less,
    })
}

/// The variadic operators over values, from a list of expressions or a spread
/// list alike.
fn apply<'v>(
    op: Op,
    mut values: impl ExactSizeIterator<Item = Result<Cow<'v, Value>, EvalError>>,
) -> Result<Value, EvalError> {
    match op {
        Op::Cat => {
            let mut text = String::new();
            for v in values {
                match v?.as_ref() {
                    Value::Null => {}
                    Value::String(s) => text.push_str(s),
                    other => text.push_str(&to_text(other)),
                }
            }
            Ok(Value::String(text))
        }
        Op::Add => number(fold_numbers(values, 0.0, |a, b| a + b)?),
        Op::Mul => number(fold_numbers(values, 1.0, |a, b| a * b)?),
        Op::Max | Op::Min => {
            let Some(first) = values.next() else {
                return Ok(Value::Null);
            };
            let first = to_number(&*first?)?;
            let pick = if op == Op::Max { f64::max } else { f64::min };
            number(fold_numbers(values, first, pick)?)
        }
        _ => {
            let count = values.len();
            if count < if op == Op::Mod { 2 } else { 1 } {
                return Err(EvalError::InvalidArguments);
            }
            let first = to_number(&*values.next().ok_or(EvalError::InvalidArguments)??)?;
            let result = match (op, count) {
                (Op::Sub, 1) => -first,
                (Op::Div, 1) => 1.0 / first,
                (Op::Sub, _) => fold_numbers(values, first, |a, b| a - b)?,
                (Op::Div, _) => fold_numbers(values, first, |a, b| a / b)?,
                _ => fold_numbers(values, first, |a, b| a % b)?,
            };
            number(result)
        }
    }
}

fn fold_numbers<'v>(
    mut values: impl Iterator<Item = Result<Cow<'v, Value>, EvalError>>,
    start: f64,
    step: fn(f64, f64) -> f64,
) -> Result<f64, EvalError> {
    values.try_fold(start, |acc, v| Ok(step(acc, to_number(&*v?)?)))
}

/// JavaScript's `substr(start, length)` on characters; negative values count
/// from the end.
fn substr(text: &str, start: f64, length: Option<f64>) -> String {
    let chars: Vec<char> = text.chars().collect();
    let len = chars.len() as i64;
    let start = start as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start.min(len)
    };
    let end = match length.map(|n| n as i64) {
        None => len,
        Some(n) if n < 0 => (len + n).max(start),
        Some(n) => (start + n).min(len),
    };
    chars[start as usize..end.max(start) as usize]
        .iter()
        .collect()
}

fn is_missing(cx: Cx<'_, '_>, key: &Value) -> bool {
    match path_of(key).and_then(|p| split_path(&p).ok()) {
        Some(path) => cx
            .lookup(cx.scope, &path)
            .is_none_or(|v| v.is_null() || *v == ""),
        None => true,
    }
}
