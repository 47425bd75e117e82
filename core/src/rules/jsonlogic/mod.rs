//! JsonLogic (jsonlogic.com), compiled once and evaluated many times.
//!
//! [`Expr::compile`] turns a rule's condition into a tree, refusing unknown
//! operators, wrong arities and malformed paths, so a bad rule is an error when
//! it is saved, not when an event arrives. [`Expr::eval`] evaluates the tree
//! against a JSON context with JsonLogic's semantics: JavaScript truthiness (`0`,
//! `""`, `[]`, `null`, `false` are false), loose `==` with type coercion, `var`
//! with dotted paths and defaults, chained comparisons (`<` with three arguments
//! is "between"). The semantics are those of the public conformance suites
//! (json-logic/compat-tables), checked by `tests/jsonlogic_compat.rs`.
//!
//! Operators:
//! - data: `var` (dotted path, default), `val` (one key per segment,
//!   `[[n], …]` reads n scopes out: inside an iterator `[[1], "index"]` is the
//!   item's index, `[[2], …]` the data around the iterator), `exists`,
//!   `missing`, `missing_some`, `preserve` (its argument as written, not logic);
//! - logic: `if ?: and or ! !! ??` (`??`: the first argument that is not null);
//! - comparison, chained and lazy: `== === != !== > >= < <=`;
//! - arithmetic: `+ - * / % max min`, any number of arguments, or one
//!   expression whose list value is the arguments (`{"+": {"var": "xs"}}`);
//! - text: `cat substr in`; lists: `merge map filter reduce all some none`;
//! - errors: `throw` and `try` (the first argument that evaluates; a fallback
//!   reads the error, `{"type": …}`, as its data).
//!
//! A value with no number where one is needed (`{"+": ["a", 1]}`, `{"<": [1,
//! []]}`, division by zero) is an error, [`EvalError::NaN`], not a silent NaN.
//! The `try_*` methods return errors; [`Expr::eval`], [`Expr::eval_ref`] and
//! [`Expr::evaluate`] turn them into `null`, which is falsy, so a condition that
//! errs does not match.

mod coerce;
mod compile;
mod error;
mod eval;
#[cfg(test)]
mod tests;

pub use coerce::truthy;
pub use error::EvalError;

use compile::Node;
use eval::{Cx, Scope};
use serde_json::Value;
use std::borrow::Cow;
use std::cell::Cell;

/// A compiled JsonLogic expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr(Node);

/// A test of the data an expression needs ([`Expr::requirements`]). Only
/// strings are compared: `var == 1` is not one, as loose equality converts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `{"==": [{"var": path}, value]}` (or `===`, either way round).
    Equals { path: Vec<String>, value: String },
    /// `{"in": [value, {"var": path}]}`.
    Contains { path: Vec<String>, value: String },
}

/// The result of [`Expr::evaluate`].
pub struct Evaluation<'a> {
    /// The value; `null` if the evaluation erred.
    pub value: Cow<'a, Value>,
    /// A lookup in the data (`var`, `val`, `exists`, `missing`) found its first
    /// key missing.
    pub reached_missing_root: bool,
    /// Why the value is `null`, if the evaluation erred.
    pub error: Option<EvalError>,
}

impl Expr {
    /// Compiles a JsonLogic expression; the error says what and where.
    pub fn compile(value: &Value) -> Result<Expr, String> {
        compile::compile(value).map(Expr)
    }

    /// Every constant path the expression reads from the data (dotted), for
    /// recording the inputs a decision used. Paths read from an iterator's item
    /// or a caught error are not inputs.
    pub fn var_paths(&self, out: &mut Vec<String>) {
        self.0.var_paths(0, out);
    }

    /// Tests of the data of which the expression needs at least one to be
    /// truthy, when it has such a list (see [`Requirement`]); `None` when it has
    /// none that is known.
    pub fn requirements(&self) -> Option<Vec<Requirement>> {
        self.0.requirements()
    }

    /// The value, `null` if the evaluation erred (see [`Expr::try_eval`]).
    pub fn eval(&self, data: &Value) -> Value {
        self.eval_ref(data).into_owned()
    }

    /// Evaluates without copying what it only reads: a `var` or a literal comes
    /// back borrowed. `null` if the evaluation erred.
    pub fn eval_ref<'a>(&'a self, data: &'a Value) -> Cow<'a, Value> {
        self.evaluate(data).value
    }

    /// [`Expr::eval_ref`], and whether a lookup found its first key missing from
    /// `data`: a caller can leave an expensive part of the context out, and
    /// evaluate again with it only when a condition actually reached for it.
    /// An error gives a `null` value, with the error beside it.
    pub fn evaluate<'a>(&'a self, data: &'a Value) -> Evaluation<'a> {
        let missing_root = Cell::new(false);
        let (value, error) = match self.run(data, &missing_root) {
            Ok(v) => (v, None),
            Err(e) => (Cow::Owned(Value::Null), Some(e)),
        };
        Evaluation {
            value,
            reached_missing_root: missing_root.get(),
            error,
        }
    }

    /// The value, or the error JsonLogic raises (`{"type": "NaN"}`, a `throw`).
    pub fn try_eval(&self, data: &Value) -> Result<Value, EvalError> {
        self.try_eval_ref(data).map(Cow::into_owned)
    }

    /// [`Expr::try_eval`] without copying what it only reads.
    pub fn try_eval_ref<'a>(&'a self, data: &'a Value) -> Result<Cow<'a, Value>, EvalError> {
        self.run(data, &Cell::new(false))
    }

    fn run<'a>(
        &'a self,
        data: &'a Value,
        missing_root: &Cell<bool>,
    ) -> Result<Cow<'a, Value>, EvalError> {
        let root = Scope::root(data);
        eval::eval(&self.0, Cx::new(&root, missing_root))
    }
}
