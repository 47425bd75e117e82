//! From a rule's JSON to the tree the evaluator walks, refusing what can never
//! evaluate: unknown operators, wrong argument counts, malformed paths, nesting
//! past [`MAX_DEPTH`].

use serde_json::Value;

/// Deepest nesting accepted (a condition is data written by users).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Literal(Value),
    Array(Vec<Node>),
    /// `{"var": "a.b"}` or `{"var": ["a.b", default]}`; the path is split once.
    Var {
        path: Vec<String>,
        default: Option<Box<Node>>,
    },
    /// `{"var": <expression>}`: a dotted path computed at run time.
    DynamicVar {
        path: Box<Node>,
        default: Option<Box<Node>>,
    },
    /// `{"val": [[level], key, …]}`: one key per segment (no dots), read in the
    /// scope `level` steps out from the current one.
    Val {
        level: usize,
        path: Path,
    },
    /// `{"exists": [key, …]}`: whether the path is there, even if `null`.
    Exists(Path),
    Op(Op, Vec<Node>),
    /// An arithmetic-like operator given one expression instead of a list
    /// (`{"max": {"var": "xs"}}`): a list value is its arguments.
    Spread(Op, Box<Node>),
}

/// The segments of a `val` or `exists` path: known when compiled (borrowed at
/// run time, no allocation) or computed.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Path {
    Static(Vec<String>),
    Dynamic(Vec<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
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
    Coalesce,
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
    Try,
    Throw,
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
            "??" => Op::Coalesce,
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
            "try" => Op::Try,
            "throw" => Op::Throw,
            _ => return None,
        })
    }

    /// Allowed argument counts (min, max).
    fn arity(self) -> (usize, usize) {
        match self {
            Op::Not | Op::Truthy => (0, 1),
            Op::Throw => (1, 1),
            Op::In | Op::MissingSome | Op::Map | Op::Filter | Op::All | Op::Some | Op::None => {
                (2, 2)
            }
            Op::Substr | Op::Reduce => (2, 3),
            Op::Mod => (2, usize::MAX),
            Op::Sub | Op::Div | Op::Max | Op::Min | Op::Try => (1, usize::MAX),
            Op::Or
            | Op::And
            | Op::Coalesce
            | Op::Add
            | Op::Mul
            | Op::If
            | Op::Missing
            | Op::Cat
            | Op::Merge => (0, usize::MAX),
            Op::Eq | Op::StrictEq | Op::Ne | Op::StrictNe | Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                (2, usize::MAX)
            }
        }
    }

    /// `== === != !== > >= < <=`: chained pairwise, at least two arguments.
    fn is_comparison(self) -> bool {
        matches!(
            self,
            Op::Eq | Op::StrictEq | Op::Ne | Op::StrictNe | Op::Gt | Op::Ge | Op::Lt | Op::Le
        )
    }

    /// Control flow, comparisons and iterators read their arguments by position,
    /// so they take a list: `{"and": x}` or `{"<": {"var": "xs"}}` is refused.
    fn needs_list(self) -> bool {
        self.is_comparison()
            || matches!(
                self,
                Op::If
                    | Op::And
                    | Op::Or
                    | Op::Map
                    | Op::Filter
                    | Op::Reduce
                    | Op::All
                    | Op::Some
                    | Op::None
            )
    }

    /// Variadic operators over values: given one expression, a list value is
    /// their arguments (`{"+": {"var": "xs"}}` sums the list).
    fn spreads(self) -> bool {
        matches!(
            self,
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Mod | Op::Max | Op::Min | Op::Cat
        )
    }

    /// Iterators evaluate their second argument once per item, in the item's
    /// scope; `try` evaluates each argument after the first in the error's.
    fn body_scopes(self, position: usize) -> usize {
        match self {
            Op::Map | Op::Filter | Op::Reduce | Op::All | Op::Some | Op::None if position == 1 => 2,
            Op::Try if position > 0 => 1,
            _ => 0,
        }
    }
}

/// Compiles a JsonLogic expression; the error says what and where.
pub(super) fn compile(value: &Value) -> Result<Node, String> {
    compile_at(value, 0)
}

fn compile_at(value: &Value, depth: usize) -> Result<Node, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    match value {
        Value::Array(items) => Ok(Node::Array(
            items
                .iter()
                .map(|v| compile_at(v, depth + 1))
                .collect::<Result<_, _>>()?,
        )),
        Value::Object(map) if map.len() == 1 => {
            let (name, raw_args) = map.iter().next().expect("one entry");
            compile_operation(name, raw_args, depth)
        }
        Value::Object(map) if map.is_empty() => Ok(Node::Literal(value.clone())),
        Value::Object(map) => Err(format!(
            "an operation has exactly one key, this object has {} ({})",
            map.len(),
            map.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
        other => Ok(Node::Literal(other.clone())),
    }
}

fn compile_operation(name: &str, raw_args: &Value, depth: usize) -> Result<Node, String> {
    let args: Vec<&Value> = match raw_args {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    match name {
        "var" => return compile_var(&args, depth),
        "val" => return compile_val(&args, depth),
        "exists" => return compile_path(&args, depth).map(Node::Exists),
        // Its argument is data, not logic: returned as written.
        "preserve" => return Ok(Node::Literal(raw_args.clone())),
        _ => {}
    }
    let op = Op::parse(name).ok_or_else(|| format!("unknown operator \"{name}\""))?;
    if !raw_args.is_array() {
        if op.needs_list() {
            return Err(format!("\"{name}\" takes a list of arguments"));
        }
        if op.spreads() && is_operation(raw_args) {
            // How many arguments there are is known only at run time.
            let arg = compile_at(raw_args, depth + 1).map_err(|e| format!("in \"{name}\": {e}"))?;
            return Ok(Node::Spread(op, Box::new(arg)));
        }
    }
    let (min, max) = op.arity();
    if args.len() < min || args.len() > max {
        let count = if min == max {
            min.to_string()
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        let plural = if max == 1 || (min == 1 && max == usize::MAX) {
            ""
        } else {
            "s"
        };
        return Err(format!(
            "\"{name}\" takes {count} argument{plural}, got {}",
            args.len()
        ));
    }
    if matches!(
        op,
        Op::Map | Op::Filter | Op::Reduce | Op::All | Op::Some | Op::None
    ) && args[0].is_null()
    {
        return Err(format!("\"{name}\" needs a list to go over, got null"));
    }
    // A literal null body would make every item null (map, reduce) or drop them
    // all (filter): a mistake, not a rule. `all`/`some`/`none` accept it.
    if matches!(op, Op::Map | Op::Filter | Op::Reduce) && args[1].is_null() {
        return Err(format!(
            "\"{name}\" needs an expression for each item, got null"
        ));
    }
    let compiled = args
        .into_iter()
        .map(|a| compile_at(a, depth + 1))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("in \"{name}\": {e}"))?;
    Ok(Node::Op(op, compiled))
}

/// An object with one key: an operation (a literal list or scalar is not).
fn is_operation(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.len() == 1)
}

/// Splits a dotted var path; `""` is the whole context.
pub(super) fn split_path(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
    if parts.iter().any(String::is_empty) {
        return Err(format!("var path \"{path}\" has an empty segment"));
    }
    Ok(parts)
}

/// The text of a path or path segment: a string, a number, or `null` (empty).
pub(super) fn path_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn compile_var(args: &[&Value], depth: usize) -> Result<Node, String> {
    if args.len() > 2 {
        return Err(format!(
            "\"var\" takes a path and a default, got {} arguments",
            args.len()
        ));
    }
    let default = args
        .get(1)
        .map(|d| compile_at(d, depth + 1).map(Box::new))
        .transpose()?;
    let path = args.first().copied().unwrap_or(&Value::Null);
    match path_of(path) {
        Some(p) => Ok(Node::Var {
            path: split_path(&p)?,
            default,
        }),
        None if matches!(path, Value::Object(_)) => Ok(Node::DynamicVar {
            path: Box::new(compile_at(path, depth + 1)?),
            default,
        }),
        None => Err(format!("var path must be a string or number, got {path}")),
    }
}

/// `val`: an optional `[level]` first (how many scopes out; the sign is
/// ignored), then the path.
fn compile_val(args: &[&Value], depth: usize) -> Result<Node, String> {
    let (level, path) = match args.split_first() {
        Some((Value::Array(level), rest)) => match level.as_slice() {
            [n] if n.as_i64().is_some() => {
                let n = n.as_i64().unwrap_or_default().unsigned_abs();
                (usize::try_from(n).unwrap_or(usize::MAX), rest)
            }
            _ => return Err(format!("val scope must be [number], got {}", args[0])),
        },
        _ => (0, args),
    };
    Ok(Node::Val {
        level,
        path: compile_path(path, depth)?,
    })
}

/// Path segments for `val` and `exists`: keys as written (a dot is part of the
/// key), numbers as list indexes, or expressions computing them.
fn compile_path(args: &[&Value], depth: usize) -> Result<Path, String> {
    if args.iter().all(|a| a.is_string() || a.is_number()) {
        return Ok(Path::Static(
            args.iter().filter_map(|a| path_of(a)).collect(),
        ));
    }
    args.iter()
        .map(|a| match a {
            Value::String(_) | Value::Number(_) | Value::Object(_) => compile_at(a, depth + 1),
            other => Err(format!(
                "path segments are strings, numbers or expressions, got {other}"
            )),
        })
        .collect::<Result<_, _>>()
        .map(Path::Dynamic)
}

impl Node {
    /// Every constant path read from the data (not from an item or an error),
    /// dotted; `scopes` is how many scopes deep this node is evaluated.
    /// Tests of the data of which the node needs one to be truthy, if it has
    /// such a list: `var(path) == "s"` (or `===`) and `"s" in var(path)`; any
    /// part of an `and` (truthy only when all its parts are); every part of an
    /// `or`, together. Paths are read from the data, so only outside iterators.
    pub(super) fn requirements(&self) -> Option<Vec<super::Requirement>> {
        use super::Requirement;
        let var = |node: &Node| match node {
            Node::Var {
                path,
                default: None,
            } if !path.is_empty() => Some(path.clone()),
            _ => None,
        };
        match self {
            Node::Op(Op::Eq | Op::StrictEq, args) => match args.as_slice() {
                [a, Node::Literal(Value::String(s))] | [Node::Literal(Value::String(s)), a] => {
                    var(a).map(|path| {
                        vec![Requirement::Equals {
                            path,
                            value: s.clone(),
                        }]
                    })
                }
                _ => None,
            },
            Node::Op(Op::In, args) => match args.as_slice() {
                [Node::Literal(Value::String(s)), a] => var(a).map(|path| {
                    vec![Requirement::Contains {
                        path,
                        value: s.clone(),
                    }]
                }),
                _ => None,
            },
            Node::Op(Op::And, parts) => parts
                .iter()
                .filter_map(Node::requirements)
                .min_by_key(Vec::len),
            Node::Op(Op::Or, parts) if !parts.is_empty() => {
                let mut all = Vec::new();
                for p in parts {
                    all.extend(p.requirements()?);
                }
                Some(all)
            }
            _ => None,
        }
    }

    pub(super) fn var_paths(&self, scopes: usize, out: &mut Vec<String>) {
        let mut push = |p: String| {
            // The whole data is not an input worth recording.
            if !p.is_empty() && !out.contains(&p) {
                out.push(p);
            }
        };
        match self {
            Node::Var { path, default } => {
                if scopes == 0 {
                    push(path.join("."));
                }
                if let Some(d) = default {
                    d.var_paths(scopes, out);
                }
            }
            Node::DynamicVar { path, default } => {
                path.var_paths(scopes, out);
                if let Some(d) = default {
                    d.var_paths(scopes, out);
                }
            }
            // `val` climbs to the data when its level reaches (or passes) it.
            Node::Val { level, path } => path.var_paths(scopes, *level >= scopes, out),
            Node::Exists(path) => path.var_paths(scopes, scopes == 0, out),
            Node::Op(op, items) => {
                for (n, i) in items.iter().enumerate() {
                    i.var_paths(scopes + op.body_scopes(n), out);
                }
            }
            Node::Array(items) => {
                for i in items {
                    i.var_paths(scopes, out);
                }
            }
            Node::Spread(_, arg) => arg.var_paths(scopes, out),
            Node::Literal(_) => {}
        }
    }
}

impl Path {
    fn var_paths(&self, scopes: usize, reads_data: bool, out: &mut Vec<String>) {
        match self {
            Path::Static(keys) => {
                let p = keys.join(".");
                if reads_data && !p.is_empty() && !out.contains(&p) {
                    out.push(p);
                }
            }
            Path::Dynamic(nodes) => {
                for n in nodes {
                    n.var_paths(scopes, out);
                }
            }
        }
    }
}
