//! `ctx.db.query(sql, params)`: JSON parameters bound by the types Postgres infers
//! for them, and rows returned as JSON objects (Postgres's own `to_jsonb`, so every
//! column type converts the way PostgREST would show it).

use bytes::BytesMut;
use serde_json::{json, Value};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::GenericClient;

/// Most rows one query returns to a function.
pub const MAX_ROWS: usize = 10_000;

type Param = Box<dyn ToSql + Sync + Send>;

/// Runs `sql` with `params` on `client` (already in the caller's role and claims).
/// Answers `{"rows": [...], "rowCount": n}`.
pub async fn query<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[Value],
) -> Result<Value, String> {
    let sql = sql.trim().trim_end_matches(';').trim_end();
    let statement = client.prepare(sql).await.map_err(describe)?;
    if statement.params().len() != params.len() {
        return Err(format!(
            "the query has {} parameter(s) and {} value(s) were given",
            statement.params().len(),
            params.len()
        ));
    }
    let bound: Vec<Param> = statement
        .params()
        .iter()
        .zip(params)
        .enumerate()
        .map(|(i, (ty, v))| bind(i + 1, ty, v))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&(dyn ToSql + Sync)> = bound
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    if statement.columns().is_empty() {
        let n = client.execute(&statement, &refs).await.map_err(describe)?;
        return Ok(json!({"rows": [], "rowCount": n}));
    }
    // Rows become JSON in Postgres: SELECT, VALUES and DML … RETURNING all fit a CTE.
    let wrapped = format!("WITH q AS ({sql}\n) SELECT to_jsonb(q) FROM q");
    let wrapped = client
        .prepare_typed(&wrapped, statement.params())
        .await
        .map_err(describe)?;
    let rows = client.query(&wrapped, &refs).await.map_err(describe)?;
    if rows.len() > MAX_ROWS {
        return Err(format!(
            "the query returned {} rows; a function gets at most {MAX_ROWS} (add a LIMIT)",
            rows.len()
        ));
    }
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| r.try_get::<_, Value>(0))
        .collect::<Result<_, _>>()
        .map_err(describe)?;
    let n = rows.len();
    Ok(json!({"rows": rows, "rowCount": n}))
}

/// The database's message, with its SQLSTATE: a function can tell 42501 from 23505.
pub fn describe(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// A JSON value as the parameter type Postgres inferred for `$n`.
fn bind(n: usize, ty: &Type, v: &Value) -> Result<Param, String> {
    if v.is_null() {
        return Ok(Box::new(Null));
    }
    let wrong = || {
        format!("parameter ${n} is {ty}; {v} does not fit (cast it in SQL, e.g. ${n}::text::{ty})")
    };
    Ok(match *ty {
        Type::BOOL => Box::new(v.as_bool().ok_or_else(wrong)?),
        Type::INT2 => Box::new(i16::try_from(v.as_i64().ok_or_else(wrong)?).map_err(|_| wrong())?),
        Type::INT4 => Box::new(i32::try_from(v.as_i64().ok_or_else(wrong)?).map_err(|_| wrong())?),
        Type::INT8 => Box::new(v.as_i64().ok_or_else(wrong)?),
        Type::FLOAT4 => Box::new(v.as_f64().ok_or_else(wrong)? as f32),
        Type::FLOAT8 => Box::new(v.as_f64().ok_or_else(wrong)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => Box::new(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
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
        _ => return Err(format!("parameter ${n} has type {ty}, which ctx.db.query does not bind; write ${n}::text::{ty}")),
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
