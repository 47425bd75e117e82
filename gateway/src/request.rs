//! The transaction a request runs in, set up as PostgREST sets it up
//! (`Query/PreQuery.hs txVarQuery`): one statement sets `search_path`, `role`,
//! `request.jwt.claims`, `request.method`, `request.path` and
//! `request.headers` (lower-cased names) for this transaction only, so
//! `auth.uid()`, RLS and every `spine.*` function behave as behind PostgREST.
//! GET and HEAD run READ ONLY. A request is one statement, so its transaction
//! goes out in one flight ([`query_once`], [`execute_once`]).

use crate::error::ApiError;
use crate::keys::Caller;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value};
use spine_db::{Pool, Session};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

const SET_CONTEXT: &str = "SELECT set_config('search_path', $1, true), \
     set_config('role', $2, true), set_config('request.jwt.claims', $3, true), \
     set_config('request.method', $4, true), set_config('request.path', $5, true), \
     set_config('request.headers', $6, true)";

/// What the transaction is told about the request.
pub struct RequestInfo<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub caller: &'a Caller,
    /// The schema the request addresses (first on the search path).
    pub schema: &'a str,
    pub read_only: bool,
}

/// Headers as PostgREST passes them: a JSON object, lower-cased names. The
/// bearer token and API key are left out: a function that logs
/// `request.headers` must not log credentials.
pub fn headers_json(headers: &HeaderMap) -> String {
    let mut map = Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        if matches!(name, "authorization" | "apikey" | "cookie") {
            continue;
        }
        if let Ok(v) = value.to_str() {
            map.insert(name.to_string(), Value::String(v.to_string()));
        }
    }
    Value::Object(map).to_string()
}

/// `"schema"` quoted for the search path.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// How a request's transaction ends: `Prefer: tx=rollback` undoes its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Commit,
    Rollback,
}

/// What a one-statement request wants back.
enum Outcome {
    Rows(Vec<Row>),
    /// Rows changed (an INSERT/UPDATE/DELETE without RETURNING).
    Count(u64),
}

/// A request of one statement, its transaction sent in one flight: BEGIN, the
/// context, the statement and COMMIT (or ROLLBACK) are pipelined on the
/// connection, so the request costs one round trip, not four. A failing
/// statement aborts the transaction and the COMMIT then rolls back.
///
/// Measured with `cargo xtask bench gateway` (docs/benchmarks.md#gateway):
/// awaiting each step in turn kept the gateway at 25 % of the same transaction
/// sent by hand at 8 clients.
async fn run_once(
    pool: &Pool,
    info: RequestInfo<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    rows: bool,
    end: End,
) -> Result<Outcome, ApiError> {
    let mut session = session(pool).await?;
    let anon = info.caller.is_anon();
    let fail = |e: tokio_postgres::Error| ApiError::from_db(&e, anon);
    let (set, statement) = tokio::join!(
        session.prepare_cached(SET_CONTEXT),
        session.prepare_cached(sql)
    );
    let (set, statement) = (set.map_err(fail)?, statement.map_err(fail)?);
    let context = Context::of(&info);
    let end_sql = match end {
        End::Commit => "COMMIT",
        End::Rollback => "ROLLBACK",
    };
    let context = context.params();
    let (began, set, outcome, ended) = if rows {
        let (b, s, r, e) = tokio::join!(
            session.batch_execute(begin_sql(info.read_only)),
            session.query(&set, &context),
            session.query(&statement, params),
            session.batch_execute(end_sql),
        );
        (b, s, r.map(Outcome::Rows), e)
    } else {
        let (b, s, r, e) = tokio::join!(
            session.batch_execute(begin_sql(info.read_only)),
            session.query(&set, &context),
            session.execute(&statement, params),
            session.batch_execute(end_sql),
        );
        (b, s, r.map(Outcome::Count), e)
    };
    began.map_err(fail)?;
    set.map_err(fail)?;
    let outcome = outcome.map_err(fail)?;
    ended.map_err(fail)?;
    session.mark_idle();
    Ok(outcome)
}

/// [`run_once`] for a statement whose rows are the answer.
pub async fn query_once(
    pool: &Pool,
    info: RequestInfo<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    end: End,
) -> Result<Vec<Row>, ApiError> {
    match run_once(pool, info, sql, params, true, end).await? {
        Outcome::Rows(rows) => Ok(rows),
        Outcome::Count(_) => unreachable!("rows were asked for"),
    }
}

/// [`run_once`] for a write whose answer is how many rows it changed.
pub async fn execute_once(
    pool: &Pool,
    info: RequestInfo<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    end: End,
) -> Result<u64, ApiError> {
    match run_once(pool, info, sql, params, false, end).await? {
        Outcome::Count(n) => Ok(n),
        Outcome::Rows(_) => unreachable!("a count was asked for"),
    }
}

fn begin_sql(read_only: bool) -> &'static str {
    if read_only {
        "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY"
    } else {
        "BEGIN ISOLATION LEVEL READ COMMITTED"
    }
}

async fn session(pool: &Pool) -> Result<Session, ApiError> {
    let mut session = pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, "no database session");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "PGRST000",
            "Could not connect to the database",
        )
    })?;
    session.mark_busy();
    Ok(session)
}

/// The values of [`SET_CONTEXT`]'s parameters for a request.
struct Context<'a> {
    search_path: String,
    role: &'a str,
    claims: String,
    method: &'a str,
    path: &'a str,
    headers: String,
}

impl<'a> Context<'a> {
    fn of(info: &RequestInfo<'a>) -> Context<'a> {
        Context {
            search_path: format!("{}, public, extensions", quote_ident(info.schema)),
            role: &info.caller.role,
            claims: info.caller.claims.to_string(),
            method: info.method.as_str(),
            path: info.path,
            headers: headers_json(info.headers),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.search_path,
            &self.role,
            &self.claims,
            &self.method,
            &self.path,
            &self.headers,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn headers_are_lower_cased_and_credentials_left_out() {
        let mut h = HeaderMap::new();
        h.insert(
            "X-Client-Info",
            HeaderValue::from_static("supabase-js/2.119.0"),
        );
        h.insert("Authorization", HeaderValue::from_static("Bearer secret"));
        h.insert("apikey", HeaderValue::from_static("key"));
        let v: Value = serde_json::from_str(&headers_json(&h)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"x-client-info": "supabase-js/2.119.0"})
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("public"), "\"public\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
