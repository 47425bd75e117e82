//! PostgREST's query string, parsed: `select`, filters (`col=op.value`,
//! `not.`, `or=(…)`, `and=(…)`), `order`, `limit`, `offset`, `columns`,
//! `on_conflict`. Pure: names here are not yet checked against the schema cache
//! (the SQL builder does that).

use crate::error::ApiError;

/// A column, maybe with a JSON path (`data->a->>b`).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub column: String,
    /// (`->` or `->>`, key); a key of digits indexes an array.
    pub path: Vec<(Arrow, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrow {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    Star,
    Field {
        field: Field,
        alias: Option<String>,
        cast: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Ilike,
    Match,
    Imatch,
    Is,
    IsDistinct,
    In,
    Cs,
    Cd,
    Ov,
    Fts,
    Plfts,
    Phfts,
    Wfts,
    /// Range operators: `<<`, `>>`, `&<`, `&>`, `-|-`.
    Sl,
    Sr,
    Nxr,
    Nxl,
    Adj,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "like" => Op::Like,
            "ilike" => Op::Ilike,
            "match" => Op::Match,
            "imatch" => Op::Imatch,
            "is" => Op::Is,
            "isdistinct" => Op::IsDistinct,
            "in" => Op::In,
            "cs" => Op::Cs,
            "cd" => Op::Cd,
            "ov" => Op::Ov,
            "fts" => Op::Fts,
            "plfts" => Op::Plfts,
            "phfts" => Op::Phfts,
            "wfts" => Op::Wfts,
            "sl" => Op::Sl,
            "sr" => Op::Sr,
            "nxr" => Op::Nxr,
            "nxl" => Op::Nxl,
            "adj" => Op::Adj,
            _ => return None,
        })
    }
}

/// The `(any)` / `(all)` modifier of `eq gt gte lt lte like ilike match imatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    Any,
    All,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Filter {
        field: Field,
        negated: bool,
        op: Op,
        /// The text-search configuration of `fts(english)`.
        config: Option<String>,
        /// `like(any).{a*,b*}`: the operator against any or all of `values`.
        quantifier: Option<Quantifier>,
        /// `in`: the list's items; otherwise one value.
        values: Vec<String>,
    },
    Logic {
        or: bool,
        negated: bool,
        children: Vec<Condition>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderTerm {
    pub field: Field,
    pub descending: bool,
    pub nulls_first: Option<bool>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Query {
    /// Empty: `*`.
    pub select: Vec<SelectItem>,
    pub conditions: Vec<Condition>,
    pub order: Vec<OrderTerm>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    pub columns: Option<Vec<String>>,
    pub on_conflict: Option<Vec<String>>,
    /// Parameters that are not filters (RPC GET arguments), in order.
    pub other: Vec<(String, String)>,
}

/// Most filters one request may carry.
pub const MAX_CONDITIONS: usize = 100;

/// Parses a query string's pairs. `args`: names that are function arguments
/// (RPC with GET), kept in [`Query::other`] instead of read as filters.
pub fn parse(pairs: &[(String, String)], args: &[&str]) -> Result<Query, ApiError> {
    let mut q = Query::default();
    for (key, value) in pairs {
        match key.as_str() {
            "select" => q.select = parse_select(value)?,
            "order" => q.order = parse_order(value)?,
            "limit" => q.limit = Some(number(key, value)?),
            "offset" => q.offset = Some(number(key, value)?),
            "columns" => q.columns = Some(parse_names(value)?),
            "on_conflict" => q.on_conflict = Some(parse_names(value)?),
            "or" | "and" | "not.or" | "not.and" => {
                let negated = key.starts_with("not.");
                let or = key.ends_with("or");
                q.conditions.push(Condition::Logic {
                    or,
                    negated,
                    children: parse_logic_list(value, 0)?,
                });
            }
            k if args.contains(&k) => q.other.push((key.clone(), value.clone())),
            _ => q.conditions.push(parse_filter(key, value)?),
        }
    }
    if count(&q.conditions) > MAX_CONDITIONS {
        return Err(ApiError::bad_query(format!(
            "more than {MAX_CONDITIONS} filters in one request"
        )));
    }
    Ok(q)
}

fn count(conditions: &[Condition]) -> usize {
    conditions
        .iter()
        .map(|c| match c {
            Condition::Filter { .. } => 1,
            Condition::Logic { children, .. } => 1 + count(children),
        })
        .sum()
}

fn number(key: &str, value: &str) -> Result<u64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_query(format!("\"{key}\" must be a whole number, got {value:?}"))
    })
}

/// `a,b` or `"a","b"` (supabase-js quotes `columns`).
fn parse_names(value: &str) -> Result<Vec<String>, ApiError> {
    split_top(value, ',')?
        .into_iter()
        .map(|n| {
            let n = unquote(n.trim());
            if n.is_empty() {
                Err(ApiError::bad_query(format!("empty name in {value:?}")))
            } else {
                Ok(n)
            }
        })
        .collect()
}

/// `col`, `col->a->>b`.
pub fn parse_field(text: &str) -> Result<Field, ApiError> {
    let text = text.trim();
    let mut parts = Vec::new();
    let mut rest = text;
    let column_end = rest.find("->").unwrap_or(rest.len());
    let column = unquote(&rest[..column_end]);
    rest = &rest[column_end..];
    while !rest.is_empty() {
        let (arrow, after) = if let Some(a) = rest.strip_prefix("->>") {
            (Arrow::Text, a)
        } else if let Some(a) = rest.strip_prefix("->") {
            (Arrow::Json, a)
        } else {
            return Err(ApiError::bad_query(format!("cannot parse field {text:?}")));
        };
        let end = after.find("->").unwrap_or(after.len());
        let key = unquote(&after[..end]);
        if key.is_empty() {
            return Err(ApiError::bad_query(format!("empty JSON key in {text:?}")));
        }
        parts.push((arrow, key));
        rest = &after[end..];
    }
    if column.is_empty() {
        return Err(ApiError::bad_query(format!("empty column in {text:?}")));
    }
    Ok(Field {
        column,
        path: parts,
    })
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else {
        s.to_string()
    }
}

/// Splits on `sep` outside parentheses and double quotes.
fn split_top(text: &str, sep: char) -> Result<Vec<&str>, ApiError> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut start) = (0i32, false, false, 0);
    for (i, ch) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth < 0 {
                    return Err(ApiError::bad_query(format!("unbalanced ')' in {text:?}")));
                }
            }
            c if c == sep && !quoted && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if depth != 0 || quoted {
        return Err(ApiError::bad_query(format!(
            "unbalanced parentheses or quotes in {text:?}"
        )));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_select(value: &str) -> Result<Vec<SelectItem>, ApiError> {
    let mut items = Vec::new();
    for raw in split_top(value, ',')? {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        if raw == "*" {
            items.push(SelectItem::Star);
            continue;
        }
        if raw.contains('(') {
            return Err(ApiError::bad_query(format!(
                "embedding related resources ({raw:?}) is not supported by Spine's gateway"
            ))
            .hint("select the related table in a request of its own"));
        }
        let (alias, rest) = match raw.split_once(':') {
            Some((a, r)) if !r.starts_with(':') && !a.contains("->") => (Some(unquote(a)), r),
            _ => (None, raw),
        };
        let (field, cast) = match rest.split_once("::") {
            Some((f, c)) => (f, Some(c.trim().to_string())),
            None => (rest, None),
        };
        if let Some(c) = &cast {
            if c.is_empty()
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ' ')
            {
                return Err(ApiError::bad_query(format!("cannot cast to {c:?}")));
            }
        }
        items.push(SelectItem::Field {
            field: parse_field(field)?,
            alias,
            cast,
        });
    }
    Ok(items)
}

fn parse_order(value: &str) -> Result<Vec<OrderTerm>, ApiError> {
    let mut terms = Vec::new();
    for raw in split_top(value, ',')? {
        let mut pieces: Vec<&str> = raw.trim().split('.').collect();
        let mut descending = false;
        let mut nulls_first = None;
        while let Some(last) = pieces.last() {
            match *last {
                "asc" => descending = false,
                "desc" => descending = true,
                "nullsfirst" => nulls_first = Some(true),
                "nullslast" => nulls_first = Some(false),
                _ => break,
            }
            pieces.pop();
        }
        let field = pieces.join(".");
        if field.is_empty() {
            return Err(ApiError::bad_query(format!("cannot parse order {value:?}")));
        }
        terms.push(OrderTerm {
            field: parse_field(&field)?,
            descending,
            nulls_first,
        });
    }
    Ok(terms)
}

/// `col=[not.]op[(config)].value`.
fn parse_filter(key: &str, value: &str) -> Result<Condition, ApiError> {
    let field = parse_field(key)?;
    let (negated, rest) = match value.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, value),
    };
    let (op_text, operand) = rest.split_once('.').ok_or_else(|| {
        ApiError::bad_query(format!(
            "\"{key}={value}\" is not a filter: use {key}=<operator>.<value>"
        ))
    })?;
    let (op_name, config) = match op_text.split_once('(') {
        Some((name, cfg)) => (
            name,
            Some(
                cfg.strip_suffix(')')
                    .ok_or_else(|| ApiError::bad_query(format!("cannot parse {op_text:?}")))?
                    .to_string(),
            ),
        ),
        None => (op_text, None),
    };
    let op = Op::parse(op_name).ok_or_else(|| {
        ApiError::bad_query(format!("unknown operator {op_name:?} in \"{key}={value}\""))
    })?;
    let quantifier = match config.as_deref() {
        Some("any") => Some(Quantifier::Any),
        Some("all") => Some(Quantifier::All),
        _ => None,
    };
    let config = if quantifier.is_some() { None } else { config };
    if quantifier.is_some()
        && !matches!(
            op,
            Op::Eq
                | Op::Gt
                | Op::Gte
                | Op::Lt
                | Op::Lte
                | Op::Like
                | Op::Ilike
                | Op::Match
                | Op::Imatch
        )
    {
        return Err(ApiError::bad_query(format!(
            "{op_name} takes no (any)/(all) modifier"
        )));
    }
    if config.is_some() && !matches!(op, Op::Fts | Op::Plfts | Op::Phfts | Op::Wfts) {
        return Err(ApiError::bad_query(format!(
            "{op_name} takes no configuration"
        )));
    }
    let values = if quantifier.is_some() {
        let list = operand
            .strip_prefix('{')
            .and_then(|l| l.strip_suffix('}'))
            .ok_or_else(|| {
                ApiError::bad_query(format!(
                    "{op_text} takes a list: {key}={op_text}.{{a,b}}, got {value:?}"
                ))
            })?;
        if list.is_empty() {
            Vec::new()
        } else {
            split_top(list, ',')?.into_iter().map(unquote).collect()
        }
    } else if op == Op::In {
        let list = operand
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| {
                ApiError::bad_query(format!("in takes a list: {key}=in.(a,b), got {value:?}"))
            })?;
        if list.is_empty() {
            Vec::new()
        } else {
            split_top(list, ',')?.into_iter().map(unquote).collect()
        }
    } else {
        vec![operand.to_string()]
    };
    if op == Op::Is
        && !matches!(
            values[0].to_ascii_lowercase().as_str(),
            "null" | "true" | "false" | "unknown"
        )
    {
        return Err(ApiError::bad_query(format!(
            "is takes null, true, false or unknown, got {:?}",
            values[0]
        )));
    }
    Ok(Condition::Filter {
        field,
        negated,
        op,
        config,
        quantifier,
        values,
    })
}

/// `(a.eq.1,b.gt.2,and(c.eq.3,d.eq.4))`: the items of an `or`/`and`.
fn parse_logic_list(value: &str, depth: usize) -> Result<Vec<Condition>, ApiError> {
    if depth > 8 {
        return Err(ApiError::bad_query("logic nested more than 8 deep"));
    }
    let inner = value
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_query(format!("or/and take a list in parentheses, got {value:?}"))
        })?;
    let mut out = Vec::new();
    for item in split_top(inner, ',')? {
        let item = item.trim();
        let (negated, body) = match item.strip_prefix("not.") {
            Some(b) => (true, b),
            None => (false, item),
        };
        if let Some(list) = body.strip_prefix("or(").map(|l| format!("({l}")) {
            out.push(Condition::Logic {
                or: true,
                negated,
                children: parse_logic_list(&list, depth + 1)?,
            });
        } else if let Some(list) = body.strip_prefix("and(").map(|l| format!("({l}")) {
            out.push(Condition::Logic {
                or: false,
                negated,
                children: parse_logic_list(&list, depth + 1)?,
            });
        } else {
            // field.[not.]op.value (`not.` before a field is not PostgREST's syntax).
            let (field, filter) = item
                .split_once('.')
                .ok_or_else(|| ApiError::bad_query(format!("cannot parse {item:?} in or/and")))?;
            out.push(parse_filter(field, filter)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<Query, ApiError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&pairs, &["arg"])
    }

    fn field(c: &str) -> Field {
        Field {
            column: c.into(),
            path: vec![],
        }
    }

    #[test]
    fn select_items() {
        let got = q(&[("select", "id,label:name,n::text,data->a->>b,*")]).unwrap();
        assert_eq!(got.select.len(), 5);
        assert_eq!(
            got.select[1],
            SelectItem::Field {
                field: field("name"),
                alias: Some("label".into()),
                cast: None
            }
        );
        assert_eq!(
            got.select[3],
            SelectItem::Field {
                field: Field {
                    column: "data".into(),
                    path: vec![(Arrow::Json, "a".into()), (Arrow::Text, "b".into())]
                },
                alias: None,
                cast: None
            }
        );
        let err = q(&[("select", "id,owner(*)")]).unwrap_err();
        assert_eq!(err.code, "PGRST100");
        assert!(q(&[("select", "n::text;drop")]).is_err());
    }

    #[test]
    fn filters_and_logic() {
        let got = q(&[
            ("id", "eq.5"),
            ("name", "not.like.*a*"),
            ("tag", "in.(a,\"b,c\")"),
            ("doc", "fts(english).cat"),
            ("or", "(id.eq.1,and(n.gt.2,n.not.is.null))"),
            ("arg", "7"),
        ])
        .unwrap();
        assert_eq!(got.conditions.len(), 5);
        assert_eq!(got.other, vec![("arg".to_string(), "7".to_string())]);
        assert_eq!(
            got.conditions[2],
            Condition::Filter {
                field: field("tag"),
                negated: false,
                op: Op::In,
                config: None,
                quantifier: None,
                values: vec!["a".into(), "b,c".into()]
            }
        );
        let like_any = q(&[("name", "like(any).{a*,\"b,c\"}")]).unwrap();
        assert_eq!(
            like_any.conditions[0],
            Condition::Filter {
                field: field("name"),
                negated: false,
                op: Op::Like,
                config: None,
                quantifier: Some(Quantifier::Any),
                values: vec!["a*".into(), "b,c".into()]
            }
        );
        let Condition::Logic { or, children, .. } = &got.conditions[4] else {
            panic!("logic")
        };
        assert!(*or);
        assert_eq!(children.len(), 2);
    }

    #[test]
    fn bad_filters_are_pgrst100() {
        for (k, v) in [
            ("id", "5"),
            ("id", "between.1"),
            ("id", "is.maybe"),
            ("id", "in.1,2"),
            ("or", "id.eq.1"),
            ("or", "(id.eq.1"),
            ("limit", "ten"),
            ("id", "eq(x).1"),
            ("id", "eq(any).1"),
            ("id", "in(any).{1}"),
            ("id", "sl(all).{1}"),
        ] {
            let err = q(&[(k, v)]).unwrap_err();
            assert_eq!(err.code, "PGRST100", "{k}={v}");
        }
        let many: Vec<(String, String)> = (0..=MAX_CONDITIONS)
            .map(|i| (format!("c{i}"), "eq.1".to_string()))
            .collect();
        assert!(parse(&many, &[]).is_err());
    }

    #[test]
    fn order_terms() {
        let got = q(&[("order", "seq.desc.nullslast,name,data->>k.asc")]).unwrap();
        assert_eq!(got.order.len(), 3);
        assert!(got.order[0].descending);
        assert_eq!(got.order[0].nulls_first, Some(false));
        assert_eq!(got.order[2].field.path, vec![(Arrow::Text, "k".into())]);
    }

    #[test]
    fn quoted_columns() {
        let got = q(&[("columns", "\"a\",\"b\""), ("on_conflict", "id")]).unwrap();
        assert_eq!(got.columns, Some(vec!["a".into(), "b".into()]));
        assert_eq!(got.on_conflict, Some(vec!["id".into()]));
    }
}
