//! The transaction a request runs in, set up as PostgREST sets it up
//! (`Query/PreQuery.hs txVarQuery`): one statement sets `search_path`, `role`,
//! `request.jwt.claims`, `request.method`, `request.path` and
//! `request.headers` (lower-cased names) for this transaction only, so
//! `auth.uid()`, RLS and every `spine.*` function behave as behind PostgREST.
//! GET and HEAD run READ ONLY. A request's transaction goes out in one flight
//! ([`query_once`], [`execute_once`], [`query_with_estimate`]).

use crate::error::ApiError;
use crate::keys::Caller;
use axum::http::{HeaderMap, Method, StatusCode};
use futures_util::future::join_all;
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

/// `Prefer: handling=strict, max-affected=n`: a write that changed more rows
/// is rolled back and answered 400 `PGRST124`. The transaction's end then
/// waits for the count (one more round trip), so only such requests pay it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAffected(pub u64);

/// What a statement of a request wants back.
enum Outcome {
    Rows(Vec<Row>),
    /// Rows changed (an INSERT/UPDATE/DELETE without RETURNING).
    Count(u64),
}

/// One statement of a request.
struct Statement<'a> {
    sql: &'a str,
    params: &'a [&'a (dyn ToSql + Sync)],
    rows: bool,
}

/// A request's transaction sent in one flight: BEGIN, the context, its
/// statements and COMMIT (or ROLLBACK) are pipelined on the connection, so the
/// request costs one round trip, not four. A failing statement aborts the
/// transaction and the COMMIT then rolls back.
///
/// Measured with `cargo xtask bench gateway` (docs/benchmarks.md#gateway):
/// awaiting each step in turn kept the gateway at 25 % of the same transaction
/// sent by hand at 8 clients.
///
/// With `check` (the limit, and which column of the last statement's row
/// counts the changed rows when it returns rows), the end is sent once that
/// count is known to be within the limit.
async fn run_pipeline(
    pool: &Pool,
    info: RequestInfo<'_>,
    statements: &[Statement<'_>],
    end: End,
    check: Option<(MaxAffected, usize)>,
) -> Result<Vec<Outcome>, ApiError> {
    let mut session = session(pool).await?;
    let anon = info.caller.is_anon();
    let fail = |e: tokio_postgres::Error| ApiError::from_db(&e, anon);
    let (set, prepared) = tokio::join!(
        session.prepare_cached(SET_CONTEXT),
        join_all(statements.iter().map(|s| session.prepare_cached(s.sql)))
    );
    let set = set.map_err(fail)?;
    let prepared = prepared
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    let context = Context::of(&info);
    let end_sql = match end {
        End::Commit => "COMMIT",
        End::Rollback => "ROLLBACK",
    };
    let context = context.params();
    let runs = statements.iter().zip(&prepared).map(|(s, p)| {
        let session = &session;
        async move {
            if s.rows {
                session.query(p, s.params).await.map(Outcome::Rows)
            } else {
                session.execute(p, s.params).await.map(Outcome::Count)
            }
        }
    });
    let (began, set, outcomes, ended) = tokio::join!(
        session.batch_execute(begin_sql(info.read_only)),
        session.query(&set, &context),
        join_all(runs),
        async {
            match check {
                None => Some(session.batch_execute(end_sql).await),
                Some(_) => None,
            }
        },
    );
    let checked = async {
        began?;
        set?;
        outcomes.into_iter().collect::<Result<Vec<_>, _>>()
    }
    .await;
    let outcomes = match (checked, ended) {
        (Ok(outcomes), Some(ended)) => {
            ended.map_err(fail)?;
            outcomes
        }
        (Ok(outcomes), None) => {
            let (MaxAffected(max), column) = check.expect("no end was sent: a check");
            let n = affected(&outcomes, column);
            if n > max {
                session.batch_execute("ROLLBACK").await.map_err(fail)?;
                session.mark_idle();
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "PGRST124",
                    "Query result exceeds max-affected preference constraint",
                )
                .details(format!("The query affects {n} rows")));
            }
            session.batch_execute(end_sql).await.map_err(fail)?;
            outcomes
        }
        (Err(e), ended) => {
            if ended.is_none() {
                // The statement failed before the end was sent: end it here.
                let _ = session.batch_execute("ROLLBACK").await;
            }
            return Err(fail(e));
        }
    };
    session.mark_idle();
    Ok(outcomes)
}

/// A request of one statement whose rows are the answer.
pub async fn query_once(
    pool: &Pool,
    info: RequestInfo<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    end: End,
) -> Result<Vec<Row>, ApiError> {
    query_checked(pool, info, sql, params, end, None).await
}

/// [`query_once`] for a write whose count of changed rows is column
/// `count_column` of its one row, held to `max`.
pub async fn query_checked(
    pool: &Pool,
    info: RequestInfo<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    end: End,
    max: Option<(MaxAffected, usize)>,
) -> Result<Vec<Row>, ApiError> {
    let statement = [Statement {
        sql,
        params,
        rows: true,
    }];
    match run_pipeline(pool, info, &statement, end, max).await?.pop() {
        Some(Outcome::Rows(rows)) => Ok(rows),
        _ => unreachable!("rows were asked for"),
    }
}

/// The rows the last statement changed: its count, or `column` of its row.
fn affected(outcomes: &[Outcome], column: usize) -> u64 {
    match outcomes.last() {
        Some(Outcome::Rows(rows)) => rows
            .first()
            .and_then(|r| r.try_get::<_, i64>(column).ok())
            .unwrap_or(0) as u64,
        Some(Outcome::Count(n)) => *n,
        None => 0,
    }
}

/// A write whose answer is how many rows it changed, held to `max`.
pub async fn execute_once(
    pool: &Pool,
    info: RequestInfo<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    end: End,
    max: Option<MaxAffected>,
) -> Result<u64, ApiError> {
    let statement = [Statement {
        sql,
        params,
        rows: false,
    }];
    match run_pipeline(pool, info, &statement, end, max.map(|m| (m, 0)))
        .await?
        .pop()
    {
        Some(Outcome::Count(n)) => Ok(n),
        _ => unreachable!("a count was asked for"),
    }
}

/// A read and, before it in the same transaction, the planner's estimate of
/// `count_sql`'s rows (`EXPLAIN`): `Prefer: count=planned|estimated`.
pub async fn query_with_estimate(
    pool: &Pool,
    info: RequestInfo<'_>,
    count_sql: &str,
    count_params: &[&(dyn ToSql + Sync)],
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(i64, Vec<Row>), ApiError> {
    let explain = format!("EXPLAIN (FORMAT JSON) {count_sql}");
    let statements = [
        Statement {
            sql: &explain,
            params: count_params,
            rows: true,
        },
        Statement {
            sql,
            params,
            rows: true,
        },
    ];
    let mut outcomes = run_pipeline(pool, info, &statements, End::Commit, None).await?;
    let (Some(Outcome::Rows(rows)), Some(Outcome::Rows(plan))) = (outcomes.pop(), outcomes.pop())
    else {
        unreachable!("rows were asked for")
    };
    Ok((plan_rows(&plan)?, rows))
}

/// The top node's "Plan Rows" of an `EXPLAIN (FORMAT JSON)` answer.
fn plan_rows(plan: &[Row]) -> Result<i64, ApiError> {
    let rows = plan
        .first()
        .and_then(|r| r.try_get::<_, Value>(0).ok())
        .and_then(|v| v[0]["Plan"]["Plan Rows"].as_f64());
    rows.map(|r| r.round() as i64)
        .ok_or_else(|| ApiError::bad_query("the planner gave no row estimate"))
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
