//! From a parsed [`Query`] and the schema cache to SQL. Identifiers come from
//! the cache (a name the cache does not know is an error, not SQL); every value
//! is a text bind parameter cast to the column's type by Postgres, so `vector`,
//! `timestamptz`, enums and arrays parse as they would behind PostgREST.

use super::cache::Column;
use super::query::{Arrow, Condition, Field, Op, OrderTerm, Quantifier, Query, SelectItem};
use crate::error::ApiError;
use crate::request::quote_ident;
use axum::http::StatusCode;

/// The bind parameters of a statement, all text.
#[derive(Debug, Default)]
pub struct Params(pub Vec<String>);

impl Params {
    /// Adds a value; returns its placeholder, typed text.
    pub fn push(&mut self, value: impl Into<String>) -> String {
        self.0.push(value.into());
        format!("${}::text", self.0.len())
    }
}

/// What the statement reads from: its columns, and how they are qualified.
pub struct Relation<'a> {
    /// For messages: `public.todos`.
    pub name: String,
    pub columns: &'a [Column],
}

impl Relation<'_> {
    fn column(&self, name: &str) -> Result<&Column, ApiError> {
        self.columns.iter().find(|c| c.name == name).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "42703",
                format!("column {}.{name} does not exist", self.name),
            )
        })
    }
}

/// The SQL of a field and the type its values are cast to.
fn field_sql(rel: &Relation, f: &Field, params: &mut Params) -> Result<(String, String), ApiError> {
    let column = rel.column(&f.column)?;
    let mut sql = format!("_t.{}", quote_ident(&column.name));
    let mut type_name = column.type_name.clone();
    for (arrow, key) in &f.path {
        let key_sql = if key.chars().all(|c| c.is_ascii_digit()) && key.len() < 10 {
            format!(
                "{}::int",
                params.push(key.clone()).trim_end_matches("::text")
            )
        } else {
            params.push(key.clone())
        };
        // Any JSON-ish column: read it as jsonb, as PostgREST does.
        let base = if type_name == "jsonb" || type_name == "json" || sql.ends_with(')') {
            sql.clone()
        } else {
            format!("{sql}::jsonb")
        };
        match arrow {
            Arrow::Json => {
                sql = format!("({base} -> {key_sql})");
                type_name = "jsonb".into();
            }
            Arrow::Text => {
                sql = format!("({base} ->> {key_sql})");
                type_name = "text".into();
            }
        }
    }
    Ok((sql, type_name))
}

/// `CAST($n::text AS type)`.
fn value(params: &mut Params, v: &str, type_name: &str) -> String {
    format!("CAST({} AS {type_name})", params.push(v))
}

/// A Postgres array literal of `items`, every item quoted.
pub fn array_literal(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// `f LIKE ANY(…)`, `f >= ALL(…)`: the operator against a list, the list one
/// array parameter of the column's type (text for the pattern operators).
fn quantified_sql(
    f: &str,
    t: &str,
    op: Op,
    quantifier: Quantifier,
    values: &[String],
    params: &mut Params,
) -> String {
    let which = match quantifier {
        Quantifier::Any => "ANY",
        Quantifier::All => "ALL",
    };
    let (left, sym, items, element) = match op {
        Op::Like | Op::Ilike => (
            format!("{f}::text"),
            if op == Op::Like { "LIKE" } else { "ILIKE" },
            values.iter().map(|v| v.replace('*', "%")).collect(),
            "text",
        ),
        Op::Match | Op::Imatch => (
            format!("{f}::text"),
            if op == Op::Match { "~" } else { "~*" },
            values.to_vec(),
            "text",
        ),
        _ => (
            f.to_string(),
            match op {
                Op::Gt => ">",
                Op::Gte => ">=",
                Op::Lt => "<",
                Op::Lte => "<=",
                _ => "=",
            },
            values.to_vec(),
            t.trim_end_matches("[]"),
        ),
    };
    let list = value(params, &array_literal(&items), &format!("{element}[]"));
    format!("{left} {sym} {which}({list})")
}

fn condition_sql(rel: &Relation, c: &Condition, params: &mut Params) -> Result<String, ApiError> {
    match c {
        Condition::Logic {
            or,
            negated,
            children,
        } => {
            if children.is_empty() {
                return Ok(if *negated { "false" } else { "true" }.into());
            }
            let parts: Result<Vec<String>, ApiError> = children
                .iter()
                .map(|c| condition_sql(rel, c, params))
                .collect();
            let joined = parts?.join(if *or { " OR " } else { " AND " });
            Ok(if *negated {
                format!("NOT ({joined})")
            } else {
                format!("({joined})")
            })
        }
        Condition::Filter {
            field,
            negated,
            op,
            config,
            quantifier,
            values,
        } => {
            let (f, t) = field_sql(rel, field, params)?;
            if let Some(quantifier) = quantifier {
                let sql = quantified_sql(&f, &t, *op, *quantifier, values, params);
                return Ok(if *negated {
                    format!("NOT ({sql})")
                } else {
                    sql
                });
            }
            let first = values.first().map(String::as_str).unwrap_or_default();
            let compare =
                |sym: &str, params: &mut Params| format!("{f} {sym} {}", value(params, first, &t));
            let sql = match op {
                Op::Eq => compare("=", params),
                Op::Neq => compare("<>", params),
                Op::Gt => compare(">", params),
                Op::Gte => compare(">=", params),
                Op::Lt => compare("<", params),
                Op::Lte => compare("<=", params),
                Op::Like => format!("{f}::text LIKE {}", params.push(first.replace('*', "%"))),
                Op::Ilike => format!("{f}::text ILIKE {}", params.push(first.replace('*', "%"))),
                Op::Match => format!("{f}::text ~ {}", params.push(first)),
                Op::Imatch => format!("{f}::text ~* {}", params.push(first)),
                Op::Is => {
                    let what = match first.to_ascii_lowercase().as_str() {
                        "null" => "NULL",
                        "true" => "TRUE",
                        "false" => "FALSE",
                        _ => "UNKNOWN",
                    };
                    format!("{f} IS {what}")
                }
                Op::IsDistinct => format!("{f} IS DISTINCT FROM {}", value(params, first, &t)),
                Op::In if values.is_empty() => "false".into(),
                Op::In => {
                    let element = t.trim_end_matches("[]");
                    format!(
                        "{f} = ANY({})",
                        value(params, &array_literal(values), &format!("{element}[]"))
                    )
                }
                Op::Cs => compare("@>", params),
                Op::Cd => compare("<@", params),
                Op::Ov => compare("&&", params),
                Op::Sl => compare("<<", params),
                Op::Sr => compare(">>", params),
                Op::Nxr => compare("&<", params),
                Op::Nxl => compare("&>", params),
                Op::Adj => compare("-|-", params),
                Op::Fts | Op::Plfts | Op::Phfts | Op::Wfts => {
                    let function = match op {
                        Op::Fts => "to_tsquery",
                        Op::Plfts => "plainto_tsquery",
                        Op::Phfts => "phraseto_tsquery",
                        _ => "websearch_to_tsquery",
                    };
                    let cfg = config
                        .as_ref()
                        .map(|c| format!("CAST({} AS regconfig), ", params.push(c.clone())));
                    let cfg = cfg.unwrap_or_default();
                    let vector = if t == "tsvector" {
                        f.clone()
                    } else {
                        format!("to_tsvector({cfg}{f}::text)")
                    };
                    format!("{vector} @@ {function}({cfg}{})", params.push(first))
                }
            };
            Ok(if *negated {
                format!("NOT ({sql})")
            } else {
                sql
            })
        }
    }
}

/// `WHERE …` for the query's conditions ("" when there are none).
pub fn where_sql(rel: &Relation, q: &Query, params: &mut Params) -> Result<String, ApiError> {
    if q.conditions.is_empty() {
        return Ok(String::new());
    }
    let parts: Result<Vec<String>, ApiError> = q
        .conditions
        .iter()
        .map(|c| condition_sql(rel, c, params))
        .collect();
    Ok(format!(" WHERE {}", parts?.join(" AND ")))
}

/// The select list; every output named as PostgREST names it.
pub fn select_sql(
    rel: &Relation,
    items: &[SelectItem],
    params: &mut Params,
) -> Result<String, ApiError> {
    if items.is_empty() {
        return Ok("_t.*".into());
    }
    let mut out = Vec::new();
    for item in items {
        match item {
            SelectItem::Star => out.push("_t.*".to_string()),
            SelectItem::Field { field, alias, cast } => {
                let (mut sql, _) = field_sql(rel, field, params)?;
                if let Some(c) = cast {
                    sql = format!("CAST({sql} AS {c})");
                }
                let name = alias
                    .clone()
                    .or_else(|| field.path.last().map(|(_, k)| k.clone()))
                    .unwrap_or_else(|| field.column.clone());
                out.push(format!("{sql} AS {}", quote_ident(&name)));
            }
        }
    }
    Ok(out.join(", "))
}

pub fn order_sql(
    rel: &Relation,
    terms: &[OrderTerm],
    params: &mut Params,
) -> Result<String, ApiError> {
    if terms.is_empty() {
        return Ok(String::new());
    }
    let mut out = Vec::new();
    for t in terms {
        let (f, _) = field_sql(rel, &t.field, params)?;
        let dir = if t.descending { "DESC" } else { "ASC" };
        let nulls = match t.nulls_first {
            Some(true) => " NULLS FIRST",
            Some(false) => " NULLS LAST",
            None => "",
        };
        out.push(format!("{f} {dir}{nulls}"));
    }
    Ok(format!(" ORDER BY {}", out.join(", ")))
}

/// ` LIMIT n OFFSET m`, the limit capped at `max_rows` (0: no cap).
pub fn page_sql(q: &Query, max_rows: u64) -> String {
    let limit = match (q.limit, max_rows) {
        (Some(l), 0) => Some(l),
        (Some(l), m) => Some(l.min(m)),
        (None, 0) => None,
        (None, m) => Some(m),
    };
    let mut sql = String::new();
    if let Some(l) = limit {
        sql.push_str(&format!(" LIMIT {l}"));
    }
    if let Some(o) = q.offset {
        sql.push_str(&format!(" OFFSET {o}"));
    }
    sql
}

/// What a read counts besides its page (`Prefer: count=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    None,
    /// Every matching row.
    Exact,
    /// Matching rows, but no more than this many: `count=estimated` counts
    /// exactly up to a bound and asks the planner beyond it.
    AtMost(u64),
}

/// A read of `from` (`"s"."t" AS _t`, or a function call aliased `_t`):
/// columns (total or NULL, rows in the page, the page as JSON text).
pub fn read_sql(
    rel: &Relation,
    from: &str,
    q: &Query,
    total: Total,
    max_rows: u64,
    params: &mut Params,
) -> Result<String, ApiError> {
    let select = select_sql(rel, &q.select, params)?;
    let filter = where_sql(rel, q, params)?;
    let order = order_sql(rel, &q.order, params)?;
    let page = page_sql(q, max_rows);
    let total = match total {
        Total::Exact => format!("(SELECT count(*) FROM {from}{filter})"),
        Total::AtMost(n) => {
            format!("(SELECT count(*) FROM (SELECT 1 FROM {from}{filter} LIMIT {n}) _c)")
        }
        Total::None => "NULL::int8".into(),
    };
    Ok(format!(
        "SELECT {total}, count(*), coalesce(json_agg(_r), '[]')::text \
           FROM (SELECT {select} FROM {from}{filter}{order}{page}) _r"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::query::parse;

    fn columns() -> Vec<Column> {
        ["id:bigint", "name:text", "data:jsonb", "tags:text[]"]
            .iter()
            .map(|c| {
                let (n, t) = c.split_once(':').unwrap();
                Column {
                    name: n.into(),
                    type_name: t.into(),
                    nullable: true,
                    has_default: false,
                }
            })
            .collect()
    }

    fn build(pairs: &[(&str, &str)]) -> Result<(String, Vec<String>), ApiError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let q = parse(&pairs, &[])?;
        let cols = columns();
        let rel = Relation {
            name: "public.t".into(),
            columns: &cols,
        };
        let mut params = Params::default();
        let sql = read_sql(
            &rel,
            "\"public\".\"t\" AS _t",
            &q,
            Total::Exact,
            1000,
            &mut params,
        )?;
        Ok((sql, params.0))
    }

    #[test]
    fn values_are_parameters_and_names_come_from_the_cache() {
        let (sql, params) = build(&[
            ("select", "id,name"),
            ("name", "eq.x'; DROP TABLE t; --"),
            ("id", "in.(1,2)"),
            ("order", "id.desc"),
            ("limit", "5000"),
        ])
        .unwrap();
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(sql.contains("LIMIT 1000"), "max_rows caps: {sql}");
        assert!(
            sql.contains("_t.\"name\" = CAST($1::text AS text)"),
            "{sql}"
        );
        assert!(sql.contains("= ANY(CAST($2::text AS bigint[]))"), "{sql}");
        assert_eq!(params, vec!["x'; DROP TABLE t; --", "{\"1\",\"2\"}"]);
    }

    #[test]
    fn unknown_columns_are_errors_not_sql() {
        for pairs in [
            vec![("select", "id,\"x;drop\"")],
            vec![("nope", "eq.1")],
            vec![("order", "nope.desc")],
            vec![("or", "(id.eq.1,nope.eq.2)")],
        ] {
            let err = build(&pairs).unwrap_err();
            assert_eq!(err.code, "42703", "{pairs:?}");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn json_paths_and_logic() {
        let (sql, params) =
            build(&[("data->a->>b", "eq.1"), ("or", "(id.eq.1,tags.cs.{x})")]).unwrap();
        assert!(
            sql.contains("((_t.\"data\" -> $1::text) ->> $2::text) = CAST($3::text AS text)"),
            "{sql}"
        );
        assert!(
            sql.contains(
                "(_t.\"id\" = CAST($4::text AS bigint) OR _t.\"tags\" @> CAST($5::text AS text[]))"
            ),
            "{sql}"
        );
        assert_eq!(params[4], "{x}");
    }

    #[test]
    fn array_literals_quote_everything() {
        assert_eq!(
            array_literal(&["a".into(), "b,\"c\"".into(), "\\".into()]),
            "{\"a\",\"b,\\\"c\\\"\",\"\\\\\"}"
        );
    }
}
