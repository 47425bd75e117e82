//! `ctx.db`: PostgREST's operations, not SQL text. A function calls functions
//! (`rpc`) and reads or writes tables (`select`, `insert`, `update`, `delete`) in
//! the schemas the host exposes, as the caller's role with their JWT claims, so
//! grants and RLS decide, exactly as for the caller's own PostgREST requests.
//!
//! Why no SQL text: a statement can call `set_config('role', …)` or
//! `set_config('request.jwt.claims', …)` and then run more SQL through
//! `query_to_xml` in the same statement, i.e. take any role the host's login role
//! may assume or act as any user. Identifiers here are validated and quoted, values
//! are bind parameters, and only functions the schemas expose can be called.

use bytes::BytesMut;
use serde_json::{json, Map, Value};
use tokio_postgres::types::{to_sql_checked, IsNull, Kind, ToSql, Type};
use tokio_postgres::GenericClient;

/// Most rows one call returns to a function.
pub const MAX_ROWS: usize = 10_000;

type Param = Box<dyn ToSql + Sync + Send>;

/// A statement built from a `ctx.db` call: SQL returning one jsonb per row.
#[derive(Debug, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

/// Builds the statement for `op` (`rpc`, `select`, `insert`, `update`, `delete`)
/// with JSON argument `arg`, if its names are valid and in `schemas`.
pub fn build(op: &str, arg: &Value, schemas: &[String]) -> Result<Statement, String> {
    let mut params = Vec::new();
    let limit = MAX_ROWS + 1;
    let sql = match op {
        "rpc" => {
            let function = qualified(arg["function"].as_str(), schemas)?;
            let args = object(&arg["args"], "args")?;
            let mut named = Vec::new();
            for (k, v) in args {
                named.push(format!(
                    "{} => ${}",
                    ident(k)?,
                    push(&mut params, v.clone())
                ));
            }
            format!(
                "SELECT to_jsonb(r) FROM {function}({}) AS r LIMIT {limit}",
                named.join(", ")
            )
        }
        "select" => {
            let table = qualified(arg["table"].as_str(), schemas)?;
            let columns = match &arg["columns"] {
                Value::Null => "*".to_string(),
                Value::Array(cols) if !cols.is_empty() => cols
                    .iter()
                    .map(|c| {
                        c.as_str()
                            .ok_or("columns must be names")
                            .and_then(|c| ident(c).map_err(|_| "bad column"))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?
                    .join(", "),
                _ => return Err("columns must be a non-empty array of names".into()),
            };
            let filter = eq_filter(&arg["eq"], &mut params)?;
            let order = match arg["order"].as_str() {
                None => String::new(),
                Some(o) => match o.strip_prefix('-') {
                    Some(col) => format!(" ORDER BY {} DESC", ident(col)?),
                    None => format!(" ORDER BY {}", ident(o)?),
                },
            };
            let n = match &arg["limit"] {
                Value::Null => limit,
                v => v
                    .as_u64()
                    .filter(|n| (1..=MAX_ROWS as u64).contains(n))
                    .ok_or(format!("limit must be 1 to {MAX_ROWS}"))? as usize,
            };
            format!("SELECT to_jsonb(x) FROM (SELECT {columns} FROM {table} t{filter}{order} LIMIT {n}) x")
        }
        "insert" => {
            let table = qualified(arg["table"].as_str(), schemas)?;
            let rows: Vec<Value> = match &arg["rows"] {
                Value::Array(rows) if !rows.is_empty() => rows.clone(),
                Value::Object(_) => vec![arg["rows"].clone()],
                _ => return Err("insert needs an object or a non-empty array of objects".into()),
            };
            let mut columns: Vec<String> = Vec::new();
            for row in &rows {
                for k in object(row, "each row")?.keys() {
                    if !columns.contains(k) {
                        columns.push(k.clone());
                    }
                }
            }
            if columns.is_empty() {
                return Err("insert needs at least one column".into());
            }
            let cols = columns
                .iter()
                .map(|c| ident(c))
                .collect::<Result<Vec<_>, _>>()?
                .join(", ");
            let p = push(&mut params, Value::Array(rows));
            format!(
                "WITH w AS (INSERT INTO {table} AS t ({cols}) SELECT {cols} \
                 FROM jsonb_populate_recordset(NULL::{table}, ${p}) RETURNING to_jsonb(t) AS j) \
                 SELECT j FROM w LIMIT {limit}"
            )
        }
        "update" => {
            let table = qualified(arg["table"].as_str(), schemas)?;
            let values = object(&arg["values"], "values")?;
            if values.is_empty() {
                return Err("update needs values".into());
            }
            let cols = values
                .keys()
                .map(|c| ident(c))
                .collect::<Result<Vec<_>, _>>()?
                .join(", ");
            let p = push(&mut params, arg["values"].clone());
            let filter = eq_filter(&arg["eq"], &mut params)?;
            if filter.is_empty() {
                return Err("update needs an eq filter (no table-wide writes)".into());
            }
            format!(
                "WITH w AS (UPDATE {table} AS t SET ({cols}) = \
                 (SELECT {cols} FROM jsonb_populate_record(NULL::{table}, ${p})){filter} \
                 RETURNING to_jsonb(t) AS j) SELECT j FROM w LIMIT {limit}"
            )
        }
        "delete" => {
            let table = qualified(arg["table"].as_str(), schemas)?;
            let filter = eq_filter(&arg["eq"], &mut params)?;
            if filter.is_empty() {
                return Err("delete needs an eq filter (no table-wide writes)".into());
            }
            format!(
                "WITH w AS (DELETE FROM {table} AS t{filter} RETURNING to_jsonb(t) AS j) \
                 SELECT j FROM w LIMIT {limit}"
            )
        }
        other => return Err(format!("ctx.db has no operation {other}")),
    };
    Ok(Statement { sql, params })
}

/// Runs `statement` on `client` (already in the caller's role and claims):
/// `{"rows": [...]}`.
///
/// Parameters are typed as PostgREST types them: by the catalog (the function's
/// argument, the column). Types with a binary form here take the JSON value as
/// is; any other type (`timestamptz`, `interval`, enums, `vector`, arrays,
/// domains) — and a string given for a number, boolean or uuid — goes in as text
/// through the type's input function, a composite as a JSON object through
/// `jsonb_populate_record`. That takes a second prepare only when such a
/// parameter is present.
pub async fn run<C: GenericClient>(client: &C, statement: &Statement) -> Result<Value, String> {
    let mut prepared = client.prepare(&statement.sql).await.map_err(describe)?;
    let types: Vec<Type> = prepared.params().to_vec();
    let plan: Vec<Binding> = types
        .iter()
        .zip(&statement.params)
        .map(|(ty, v)| Binding::for_value(ty, v))
        .collect();
    if plan.iter().any(|b| !matches!(b, Binding::Native)) {
        let sql = with_casts(&statement.sql, &types, &plan);
        prepared = client.prepare(&sql).await.map_err(describe)?;
    }
    let bound: Vec<Param> = types
        .iter()
        .zip(&statement.params)
        .zip(&plan)
        .enumerate()
        .map(|(i, ((ty, v), b))| match b {
            Binding::Native => bind(i + 1, ty, v),
            Binding::Text => Ok(Box::new(as_text(ty, v)) as Param),
            Binding::Record => Ok(Box::new(v.clone()) as Param),
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<&(dyn ToSql + Sync)> = bound
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = client.query(&prepared, &refs).await.map_err(describe)?;
    if rows.len() > MAX_ROWS {
        return Err(format!(
            "more than {MAX_ROWS} rows; a function gets at most that many (add a limit or a filter)"
        ));
    }
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            r.try_get::<_, Option<Value>>(0)
                .map(|v| v.unwrap_or(Value::Null))
        })
        .collect::<Result<_, _>>()
        .map_err(describe)?;
    Ok(json!({ "rows": rows }))
}

/// How one parameter goes to Postgres.
#[derive(Debug, Clone, PartialEq)]
enum Binding {
    /// In the type's binary form ([`bind`]).
    Native,
    /// As text, cast to the type (its input function parses it).
    Text,
    /// A JSON object, as a composite through `jsonb_populate_record`.
    Record,
}

impl Binding {
    fn for_value(ty: &Type, v: &Value) -> Binding {
        let native = match *ty {
            Type::BOOL => v.is_boolean(),
            Type::INT2 | Type::INT4 | Type::INT8 => v.is_i64(),
            Type::FLOAT4 | Type::FLOAT8 => v.is_number(),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => true,
            Type::UUID => v.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()),
            Type::JSON | Type::JSONB => true,
            Type::TEXT_ARRAY => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            _ => false,
        };
        if native || v.is_null() {
            Binding::Native
        } else if matches!(ty.kind(), Kind::Composite(_)) && v.is_object() {
            Binding::Record
        } else {
            Binding::Text
        }
    }
}

/// `statement`'s SQL with each `$n` that is not bound natively wrapped in a cast
/// to its type. The SQL is built here (identifiers validated, no literals), so a
/// `$` is always a parameter.
fn with_casts(sql: &str, types: &[Type], plan: &[Binding]) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let token = &rest[at..at + 1 + digits];
        let n: usize = token[1..].parse().unwrap_or(0);
        match (plan.get(n.wrapping_sub(1)), types.get(n.wrapping_sub(1))) {
            (Some(Binding::Text), Some(ty)) => {
                out.push_str(&format!("({token}::text)::{}", type_name(ty)))
            }
            (Some(Binding::Record), Some(ty)) => out.push_str(&format!(
                "jsonb_populate_record(NULL::{}, {token}::jsonb)",
                type_name(ty)
            )),
            _ => out.push_str(token),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

/// `"schema"."name"` of a type as the catalog names it.
fn type_name(ty: &Type) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    format!("{}.{}", quote(ty.schema()), quote(ty.name()))
}

/// A JSON value as the text the type's input function reads: a string as it is,
/// an array for an array type as an array literal (`{1,"a b",NULL}`), anything
/// else as JSON (what `vector`, numbers and booleans read).
fn as_text(ty: &Type, v: &Value) -> String {
    match (v, ty.kind()) {
        (Value::String(s), _) => s.clone(),
        (Value::Array(items), Kind::Array(_)) => array_literal(items),
        (other, _) => other.to_string(),
    }
}

fn array_literal(items: &[Value]) -> String {
    let element = |v: &Value| match v {
        Value::Null => "NULL".to_string(),
        Value::Array(inner) => array_literal(inner),
        Value::String(s) => quote_element(s),
        other => quote_element(&other.to_string()),
    };
    format!(
        "{{{}}}",
        items.iter().map(element).collect::<Vec<_>>().join(",")
    )
}

/// An array element, double-quoted with `"` and `\` escaped (so commas, braces,
/// spaces and the word NULL stay text).
fn quote_element(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The database's message, with its SQLSTATE: a function can tell 42501 from 23505.
pub fn describe(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

fn push(params: &mut Vec<Value>, v: Value) -> usize {
    params.push(v);
    params.len()
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(EMPTY.get_or_init(Map::new)),
        _ => Err(format!("{what} must be an object")),
    }
}

/// ` WHERE t."a" = $1 AND …` for `{a: 1, …}`; NULL values compare with IS NULL.
fn eq_filter(eq: &Value, params: &mut Vec<Value>) -> Result<String, String> {
    let mut terms = Vec::new();
    for (k, v) in object(eq, "eq")? {
        if v.is_null() {
            terms.push(format!("t.{} IS NULL", ident(k)?));
        } else {
            terms.push(format!("t.{} = ${}", ident(k)?, push(params, v.clone())));
        }
    }
    Ok(if terms.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", terms.join(" AND "))
    })
}

/// A quoted identifier: letters, digits and `_`, not starting with a digit.
fn ident(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(format!("\"{name}\""))
    } else {
        Err(format!("\"{name}\" is not a valid name"))
    }
}

/// `schema.name` or `name` (the first exposed schema), quoted; the schema must be
/// one the host exposes.
fn qualified(name: Option<&str>, schemas: &[String]) -> Result<String, String> {
    let name = name.ok_or("a table or function name is required")?;
    let (schema, object) = match name.split_once('.') {
        Some((s, o)) => (s.to_string(), o),
        None => (schemas.first().cloned().unwrap_or_default(), name),
    };
    if !schemas.contains(&schema) {
        return Err(format!(
            "schema {schema} is not exposed to functions (exposed: {})",
            schemas.join(", ")
        ));
    }
    Ok(format!("{}.{}", ident(&schema)?, ident(object)?))
}

/// A JSON value as the parameter type Postgres inferred for `$n`.
fn bind(n: usize, ty: &Type, v: &Value) -> Result<Param, String> {
    if v.is_null() {
        return Ok(Box::new(Null));
    }
    let wrong = || format!("parameter {n} is {ty}; {v} does not fit");
    Ok(match *ty {
        Type::BOOL => Box::new(v.as_bool().ok_or_else(wrong)?),
        Type::INT2 => Box::new(i16::try_from(v.as_i64().ok_or_else(wrong)?).map_err(|_| wrong())?),
        Type::INT4 => Box::new(i32::try_from(v.as_i64().ok_or_else(wrong)?).map_err(|_| wrong())?),
        Type::INT8 => Box::new(v.as_i64().ok_or_else(wrong)?),
        Type::FLOAT4 => Box::new(v.as_f64().ok_or_else(wrong)? as f32),
        Type::FLOAT8 => Box::new(v.as_f64().ok_or_else(wrong)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            Box::new(match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        }
        Type::UUID => Box::new(
            v.as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .ok_or_else(wrong)?,
        ),
        Type::JSON | Type::JSONB => Box::new(v.clone()),
        Type::TEXT_ARRAY => Box::new(
            v.as_array()
                .ok_or_else(wrong)?
                .iter()
                .map(|e| e.as_str().map(str::to_string).ok_or_else(wrong))
                .collect::<Result<Vec<String>, _>>()?,
        ),
        _ => {
            return Err(format!(
                "parameter {n} has type {ty}, which ctx.db does not bind (pass a function taking text or jsonb)"
            ))
        }
    })
}

/// SQL NULL of whatever type the parameter has.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas() -> Vec<String> {
        vec!["public".into(), "spine".into()]
    }

    #[test]
    fn builds_quoted_parameterized_statements() {
        let s = build(
            "rpc",
            &json!({"function": "spine.ingest", "args": {"source": "crm", "records": []}}),
            &schemas(),
        )
        .unwrap();
        assert_eq!(
            s.sql,
            "SELECT to_jsonb(r) FROM \"spine\".\"ingest\"(\"records\" => $1, \"source\" => $2) AS r LIMIT 10001"
        );
        assert_eq!(s.params, vec![json!([]), json!("crm")]);
        let s = build(
            "select",
            &json!({"table": "notes", "columns": ["id", "body"], "eq": {"owner": "x", "gone": null}, "order": "-id", "limit": 5}),
            &schemas(),
        )
        .unwrap();
        assert_eq!(
            s.sql,
            "SELECT to_jsonb(x) FROM (SELECT \"id\", \"body\" FROM \"public\".\"notes\" t WHERE t.\"gone\" IS NULL AND t.\"owner\" = $1 ORDER BY \"id\" DESC LIMIT 5) x"
        );
    }

    #[test]
    fn refuses_what_is_not_a_name_or_not_exposed() {
        let s = schemas();
        for (op, arg, why) in [
            (
                "rpc",
                json!({"function": "pg_catalog.set_config"}),
                "not exposed",
            ),
            (
                "rpc",
                json!({"function": "query_to_xml\"(1)--"}),
                "not a valid name",
            ),
            ("select", json!({"table": "vault.secrets"}), "not exposed"),
            (
                "select",
                json!({"table": "t", "order": "a; DROP"}),
                "not a valid name",
            ),
            (
                "select",
                json!({"table": "t", "eq": {"a b": 1}}),
                "not a valid name",
            ),
            (
                "update",
                json!({"table": "t", "values": {"a": 1}}),
                "eq filter",
            ),
            ("delete", json!({"table": "t"}), "eq filter"),
            ("insert", json!({"table": "t", "rows": []}), "non-empty"),
            ("exec", json!({}), "no operation"),
        ] {
            let e = build(op, &arg, &s).unwrap_err();
            assert!(e.contains(why), "{op} {arg}: {e}");
        }
    }

    #[test]
    fn casts_only_what_is_not_bound_natively() {
        let types = [Type::INT4, Type::TIMESTAMPTZ, Type::INT4_ARRAY];
        let plan = [Binding::Native, Binding::Text, Binding::Text];
        assert_eq!(
            with_casts("SELECT f(a => $1, b => $2, c => $3) WHERE x = $2", &types, &plan),
            "SELECT f(a => $1, b => ($2::text)::\"pg_catalog\".\"timestamptz\", c => ($3::text)::\"pg_catalog\".\"_int4\") WHERE x = ($2::text)::\"pg_catalog\".\"timestamptz\""
        );
        // $1 is not the start of $10.
        let mut many = vec![Binding::Native; 10];
        many[0] = Binding::Text;
        let types = vec![Type::DATE; 10];
        assert_eq!(
            with_casts("$1 $10", &types, &many),
            "($1::text)::\"pg_catalog\".\"date\" $10"
        );
    }

    #[test]
    fn picks_a_binding_by_type_and_value() {
        assert_eq!(Binding::for_value(&Type::INT4, &json!(5)), Binding::Native);
        assert_eq!(Binding::for_value(&Type::INT4, &json!("5")), Binding::Text);
        assert_eq!(
            Binding::for_value(&Type::UUID, &json!("nope")),
            Binding::Text
        );
        assert_eq!(
            Binding::for_value(&Type::TIMESTAMPTZ, &json!("2026-12-06T10:00:00Z")),
            Binding::Text
        );
        assert_eq!(
            Binding::for_value(&Type::TIMESTAMPTZ, &Value::Null),
            Binding::Native
        );
        assert_eq!(
            Binding::for_value(&Type::TEXT_ARRAY, &json!(["a"])),
            Binding::Native
        );
        assert_eq!(
            Binding::for_value(&Type::TEXT_ARRAY, &json!([1])),
            Binding::Text
        );
    }

    #[test]
    fn arrays_become_array_literals() {
        assert_eq!(
            as_text(
                &Type::TEXT_ARRAY,
                &json!(["a b", "NULL", "q\"x", null, "back\\slash"])
            ),
            r#"{"a b","NULL","q\"x",NULL,"back\\slash"}"#
        );
        assert_eq!(
            as_text(&Type::INT4_ARRAY, &json!([[1, 2], [3, 4]])),
            r#"{{"1","2"},{"3","4"}}"#
        );
        // Not an array type (pgvector's vector reads JSON's form).
        assert_eq!(as_text(&Type::TEXT, &json!([0.5, 1])), "[0.5,1]");
        assert_eq!(as_text(&Type::INTERVAL, &json!("1 hour")), "1 hour");
    }
}
