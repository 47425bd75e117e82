//! `/rest/v1/{table}` and `/rest/v1/rpc/{function}`: PostgREST's status codes,
//! headers (`Content-Range`, `Preference-Applied`) and bodies.

use super::cache::{Function, Returns, SchemaCache, Table};
use super::query::{self, Query};
use super::sql::{self, Params, Relation, Total};
use super::Rest;
use crate::error::ApiError;
use crate::keys::{ApiKeys, Caller};
use crate::request::{
    execute_once, query_checked, query_once, query_with_estimate, quote_ident, End, MaxAffected,
    RequestInfo,
};
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use spine_core::auth::JwtError;
use std::sync::Arc;
use tokio_postgres::types::ToSql;

#[derive(Clone)]
pub struct State {
    pub rest: Arc<Rest>,
    pub keys: Arc<ApiKeys>,
}

const OBJECT: &str = "application/vnd.pgrst.object+json";

/// What `Prefer` asked for.
#[derive(Debug, Default)]
struct Prefer {
    representation: bool,
    headers_only: bool,
    count: Option<Count>,
    merge: bool,
    ignore: bool,
    rollback: bool,
    /// `missing=default`: keys a row of a bulk insert lacks take the column's
    /// default, not NULL.
    missing_default: bool,
    strict: bool,
    /// `max-affected=n`, enforced with `handling=strict` (as PostgREST).
    max_affected: Option<u64>,
    /// What was understood, for `Preference-Applied`.
    applied: Vec<String>,
}

/// `Prefer: count=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    Exact,
    /// The planner's estimate (`EXPLAIN`), no scan.
    Planned,
    /// Exact up to `max_rows`, the estimate beyond.
    Estimated,
}

impl Prefer {
    fn max_affected(&self) -> Option<MaxAffected> {
        self.max_affected.filter(|_| self.strict).map(MaxAffected)
    }
}

/// The `Prefer` headers. Unknown or malformed preferences are ignored, unless
/// `handling=strict` asks for 400 `PGRST122` instead (PostgREST's rule).
fn prefer(headers: &HeaderMap) -> Result<Prefer, ApiError> {
    let mut p = Prefer::default();
    let mut invalid: Vec<&str> = Vec::new();
    for value in headers.get_all("prefer") {
        for item in value.to_str().unwrap_or_default().split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            match item {
                "return=representation" => p.representation = true,
                "return=headers-only" => p.headers_only = true,
                "return=minimal" => {}
                "count=exact" => p.count = Some(Count::Exact),
                "count=planned" => p.count = Some(Count::Planned),
                "count=estimated" => p.count = Some(Count::Estimated),
                "resolution=merge-duplicates" => p.merge = true,
                "resolution=ignore-duplicates" => p.ignore = true,
                "tx=rollback" => p.rollback = true,
                "tx=commit" => p.rollback = false,
                "missing=default" => p.missing_default = true,
                "missing=null" => p.missing_default = false,
                "handling=strict" => p.strict = true,
                "handling=lenient" => p.strict = false,
                _ => match item.strip_prefix("max-affected=").map(str::parse::<u64>) {
                    Some(Ok(n)) => p.max_affected = Some(n),
                    _ => {
                        invalid.push(item);
                        continue;
                    }
                },
            }
            p.applied.push(item.to_string());
        }
    }
    if p.strict && !invalid.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "PGRST122",
            "Invalid preferences given with handling=strict",
        )
        .details(format!("Invalid preferences: {}", invalid.join(", "))));
    }
    Ok(p)
}

async fn caller(keys: &ApiKeys, headers: &HeaderMap) -> Result<Caller, ApiError> {
    keys.from_headers(headers).await.map_err(|e| match e {
        JwtError::Expired => ApiError::new(StatusCode::UNAUTHORIZED, "PGRST303", "JWT expired"),
        other => ApiError::new(StatusCode::UNAUTHORIZED, "PGRST301", other.to_string()),
    })
}

/// Who calls and which schema, for any request: the caller from its token,
/// the media types it accepts, the schema of its profile header.
async fn addressed(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(Caller, String), ApiError> {
    let caller = caller(&state.keys, headers).await?;
    check_accept(headers)?;
    Ok((caller, profile(&state.rest, method, headers)?))
}

/// The schema a request addresses: `Accept-Profile` (GET/HEAD) or
/// `Content-Profile`, else the first exposed one.
fn profile(rest: &Rest, method: &Method, headers: &HeaderMap) -> Result<String, ApiError> {
    let name = if matches!(*method, Method::GET | Method::HEAD) {
        "accept-profile"
    } else {
        "content-profile"
    };
    match headers
        .get(name)
        .map(|v| v.to_str().unwrap_or_default().trim())
    {
        None | Some("") => Ok(rest.schemas[0].clone()),
        Some(s) if rest.schemas.iter().any(|e| e == s) => Ok(s.to_string()),
        Some(s) => Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "PGRST106",
            format!("Invalid schema: {s}"),
        )
        .hint(format!(
            "Only the following schemas are exposed: {}",
            rest.schemas.join(", ")
        ))),
    }
}

/// Whether an overload takes one unnamed `json`/`jsonb` argument: the whole
/// body, whatever its keys.
fn single_json_argument(overloads: &[Function]) -> bool {
    overloads.iter().any(|f| {
        f.args.len() == 1 && f.args[0].name.is_empty() && f.args[0].type_name.starts_with("json")
    })
}

/// The path as the client sent it (`/rest/v1/…`), for `request.path`.
fn original_path(parts: &axum::http::request::Parts) -> String {
    parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| parts.uri.path().to_string(), |u| u.0.path().to_string())
}

/// 406 PGRST107 for an `Accept` naming only media types Spine does not
/// produce (CSV, GeoJSON, plans): better than JSON where CSV was asked for.
fn check_accept(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let ok = accept.split(',').any(|t| {
        let t = t.split(';').next().unwrap_or_default().trim();
        t.is_empty() || matches!(t, "*/*" | "application/*" | "application/json" | OBJECT)
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "PGRST107",
            format!("None of these media types are available: {accept}"),
        ))
    }
}

fn pairs(raw: Option<String>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn body_json(rest: &Rest, body: Body) -> Result<Option<Value>, ApiError> {
    let bytes = axum::body::to_bytes(body, rest.max_body)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PGRST413",
                format!("the request body is larger than {} bytes", rest.max_body),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::bad_body(format!("Empty or invalid json: {e}")))
}

fn json_response(status: StatusCode, body: String, head: bool) -> Response {
    let mut r = Response::new(if head {
        Body::empty()
    } else {
        Body::from(body)
    });
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn set_header(r: &mut Response, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(name, v);
    }
}

fn table_of<'c>(cache: &'c SchemaCache, schema: &str, name: &str) -> Result<&'c Table, ApiError> {
    cache.table(schema, name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "PGRST205",
            format!("Could not find the table '{schema}.{name}' in the schema cache"),
        )
    })
}

/// A page of rows as PostgREST answers it: 200/206/416, `Content-Range`, one
/// object for `Accept: application/vnd.pgrst.object+json`.
fn page_response(
    rows: &[tokio_postgres::Row],
    q: &Query,
    headers: &HeaderMap,
    head: bool,
    counted: bool,
) -> Result<Response, ApiError> {
    let total = if counted {
        rows.first().and_then(|r| r.get::<_, Option<i64>>(0))
    } else {
        None
    };
    page_response_with(rows, q, headers, head, total)
}

/// [`page_response`] with the total given (the planner's, for
/// `count=planned`), not read from the rows.
fn page_response_with(
    rows: &[tokio_postgres::Row],
    q: &Query,
    headers: &HeaderMap,
    head: bool,
    total: Option<i64>,
) -> Result<Response, ApiError> {
    let counted = total.is_some();
    let row = rows
        .first()
        .ok_or_else(|| ApiError::bad_query("no result"))?;
    let n: i64 = row.get(1);
    let body: String = row.get(2);
    let offset = q.offset.unwrap_or(0) as i64;
    let wants_object = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(OBJECT));
    if wants_object {
        if n != 1 {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "PGRST116",
                "Cannot coerce the result to a single JSON object",
            )
            .details(format!("The result contains {n} rows")));
        }
        let mut list: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        let one = list.pop().unwrap_or(Value::Null).to_string();
        let mut r = json_response(StatusCode::OK, one, head);
        set_header(
            &mut r,
            "content-range",
            format!("0-0/{}", total.map_or("*".into(), |t| t.to_string())),
        );
        return Ok(r);
    }
    if let Some(t) = total {
        if offset > t {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "PGRST103",
                "Requested range not satisfiable",
            )
            .details(format!(
                "An offset of {offset} was requested, but there are only {t} rows."
            )));
        }
    }
    let total_text = total.map_or("*".to_string(), |t| t.to_string());
    let range = if n == 0 {
        format!("*/{total_text}")
    } else {
        format!("{offset}-{}/{total_text}", offset + n - 1)
    };
    let partial = counted && total.is_some_and(|t| n < t);
    let status = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut r = json_response(status, body, head);
    set_header(&mut r, "content-range", range);
    Ok(r)
}

fn end(p: &Prefer) -> End {
    if p.rollback {
        End::Rollback
    } else {
        End::Commit
    }
}

fn params_of(p: &Params) -> Vec<&(dyn ToSql + Sync)> {
    p.0.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// `/rest/v1/{table}`: GET/HEAD read, POST insert or upsert, PATCH, DELETE.
pub async fn table(
    axum::extract::State(state): axum::extract::State<State>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Response {
    let prefer = prefer(request.headers());
    let applied = applied_preferences(&prefer);
    let mut r = table_inner(state, name, raw, request, prefer)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    announce(&mut r, applied);
    r
}

/// The preferences a request's `Prefer` named that were understood.
fn applied_preferences(prefer: &Result<Prefer, ApiError>) -> Option<String> {
    prefer
        .as_ref()
        .ok()
        .map(|p| p.applied.join(", "))
        .filter(|a| !a.is_empty())
}

/// `Preference-Applied` on a successful answer, as PostgREST sends it.
fn announce(r: &mut Response, applied: Option<String>) {
    if let (true, Some(applied)) = (r.status().is_success(), applied) {
        set_header(r, "preference-applied", applied);
    }
}

async fn table_inner(
    state: State,
    name: String,
    raw: Option<String>,
    request: Request,
    prefer: Result<Prefer, ApiError>,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let (method, headers) = (&parts.method, &parts.headers);
    let (caller, schema) = addressed(&state, method, headers).await?;
    let cache = state.rest.cache();
    let table = table_of(&cache, &schema, &name)?;
    let q = query::parse(&pairs(raw), &[])?;
    // A bad Prefer is answered here, after the caller and the resource.
    let p = prefer?;
    let rel = Relation {
        name: format!("{schema}.{name}"),
        columns: &table.columns,
    };
    let target = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
    let read_only = matches!(*method, Method::GET | Method::HEAD);
    let path = original_path(&parts);
    let info = RequestInfo {
        method,
        path: &path,
        headers,
        caller: &caller,
        schema: &schema,
        read_only,
    };
    match *method {
        Method::GET | Method::HEAD => {
            let head = *method == Method::HEAD;
            let from = format!("{target} AS _t");
            let max_rows = state.rest.max_rows;
            let total = match p.count {
                None => Total::None,
                Some(Count::Exact) => Total::Exact,
                Some(Count::Planned) => Total::None,
                // Without max-rows there is no bound to estimate beyond.
                Some(Count::Estimated) if max_rows == 0 => Total::Exact,
                Some(Count::Estimated) => Total::AtMost(max_rows + 1),
            };
            let mut params = Params::default();
            let sql = sql::read_sql(&rel, &from, &q, total, max_rows, &mut params)?;
            let params = params_of(&params);
            if matches!(p.count, Some(Count::Planned | Count::Estimated)) && total != Total::Exact {
                // The planner's estimate of the filtered rows, in the same
                // transaction (so under the same RLS), as PostgREST asks it.
                let mut count_params = Params::default();
                let filter = sql::where_sql(&rel, &q, &mut count_params)?;
                let count_sql = format!("SELECT 1 FROM {from}{filter}");
                let (planned, rows) = query_with_estimate(
                    &state.rest.pool,
                    info,
                    &count_sql,
                    &params_of(&count_params),
                    &sql,
                    &params,
                )
                .await?;
                let counted: Option<i64> = rows.first().and_then(|r| r.get(0));
                let total = match counted {
                    // count=estimated: exact while within max-rows.
                    Some(n) if n <= max_rows as i64 => n,
                    Some(n) => planned.max(n),
                    None => planned,
                };
                return page_response_with(&rows, &q, headers, head, Some(total));
            }
            let rows = query_once(&state.rest.pool, info, &sql, &params, End::Commit).await?;
            page_response(&rows, &q, headers, head, p.count.is_some())
        }
        Method::POST => {
            let body = body_json(&state.rest, body)
                .await?
                .ok_or_else(|| ApiError::bad_body("Empty or invalid json"))?;
            let rows: Vec<Value> = match body {
                Value::Array(items) => items,
                v @ Value::Object(_) => vec![v],
                _ => {
                    return Err(ApiError::bad_body(
                        "the body must be a JSON object or an array of objects",
                    ))
                }
            };
            let mut columns: Vec<String> = match &q.columns {
                Some(c) => c.clone(),
                None => Vec::new(),
            };
            if q.columns.is_none() {
                for r in &rows {
                    let Value::Object(m) = r else {
                        return Err(ApiError::bad_body("every item must be a JSON object"));
                    };
                    for k in m.keys() {
                        if !columns.contains(k) {
                            columns.push(k.clone());
                        }
                    }
                }
            }
            for c in &columns {
                if table.column(c).is_none() {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "PGRST204",
                        format!("Could not find the '{c}' column of '{name}' in the schema cache"),
                    ));
                }
            }
            let mut params = Params::default();
            let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
            let cols = cols.join(", ");
            let lacking = |r: &Value| columns.iter().any(|c| r.get(c).is_none());
            let source = if p.missing_default && rows.iter().any(lacking) {
                defaults_for_missing(&target, &columns, &rows, &mut params)?
            } else {
                let body_param = params.push(Value::Array(rows).to_string());
                format!(
                    "SELECT {cols} FROM json_populate_recordset(NULL::{target}, CAST({body_param} AS json)) _j"
                )
            };
            let conflict = if p.merge || p.ignore {
                let keys = q
                    .on_conflict
                    .clone()
                    .unwrap_or_else(|| table.primary_key.clone());
                if keys.is_empty() || keys.iter().any(|k| table.column(k).is_none()) {
                    return Err(ApiError::bad_query(
                        "on_conflict must name columns of a unique key",
                    ));
                }
                let keys: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
                let action = if p.ignore || columns.is_empty() {
                    "DO NOTHING".to_string()
                } else {
                    let sets: Vec<String> = columns
                        .iter()
                        .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
                        .collect();
                    format!("DO UPDATE SET {}", sets.join(", "))
                };
                format!(" ON CONFLICT ({}) {action}", keys.join(", "))
            } else {
                String::new()
            };
            let insert = if columns.is_empty() {
                format!("INSERT INTO {target} DEFAULT VALUES{conflict}")
            } else {
                format!("INSERT INTO {target} AS _t ({cols}) {source}{conflict}")
            };
            write(
                &state,
                info,
                insert,
                params,
                &rel,
                &q,
                &p,
                StatusCode::CREATED,
                headers,
                Some((&name, &table.primary_key)),
            )
            .await
        }
        Method::PATCH | Method::DELETE => {
            if q.conditions.is_empty() {
                let verb = if *method == Method::PATCH {
                    "UPDATE"
                } else {
                    "DELETE"
                };
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "21000",
                    format!("{verb} requires a WHERE clause"),
                )
                .hint("add a filter, e.g. ?id=eq.1"));
            }
            let mut params = Params::default();
            let statement = if *method == Method::PATCH {
                let body = body_json(&state.rest, body).await?;
                let Some(Value::Object(m)) = body else {
                    return Err(ApiError::bad_body("the body must be a JSON object"));
                };
                if m.is_empty() {
                    return Err(ApiError::bad_body("the body names no column"));
                }
                let mut sets = Vec::new();
                for k in m.keys() {
                    if table.column(k).is_none() {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "PGRST204",
                            format!(
                                "Could not find the '{k}' column of '{name}' in the schema cache"
                            ),
                        ));
                    }
                    sets.push(format!("{0} = _j.{0}", quote_ident(k)));
                }
                let body_param = params.push(Value::Object(m).to_string());
                let filter = sql::where_sql(&rel, &q, &mut params)?;
                format!(
                    "UPDATE {target} AS _t SET {} FROM json_populate_record(NULL::{target}, CAST({body_param} AS json)) _j{filter}",
                    sets.join(", ")
                )
            } else {
                let filter = sql::where_sql(&rel, &q, &mut params)?;
                format!("DELETE FROM {target} AS _t{filter}")
            };
            let ok = if p.representation {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            };
            write(
                &state, info, statement, params, &rel, &q, &p, ok, headers, None,
            )
            .await
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "PGRST117",
            format!("Unsupported HTTP method: {method}"),
        )),
    }
}

/// Most rows a `missing=default` insert takes when some lack a column: each
/// such row is a bind parameter, and a statement has at most 65,535.
const MAX_DEFAULTED_ROWS: usize = 10_000;

/// `Prefer: missing=default`: the rows as a `VALUES` list in which a column a
/// row lacks is `DEFAULT` (Postgres's own default: sequences, identity,
/// `auth.uid()`, …), and a column it has is read as the insert reads it.
fn defaults_for_missing(
    target: &str,
    columns: &[String],
    rows: &[Value],
    params: &mut Params,
) -> Result<String, ApiError> {
    if rows.len() > MAX_DEFAULTED_ROWS {
        return Err(ApiError::bad_body(format!(
            "missing=default takes at most {MAX_DEFAULTED_ROWS} rows when some lack a column; \
             send the rest in another request"
        )));
    }
    let mut values = Vec::with_capacity(rows.len());
    for row in rows {
        let v = params.push(row.to_string());
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match row.get(c) {
                Some(_) => format!(
                    "(json_populate_record(NULL::{target}, CAST({v} AS json))).{}",
                    quote_ident(c)
                ),
                None => "DEFAULT".to_string(),
            })
            .collect();
        values.push(format!("({})", cells.join(", ")));
    }
    Ok(format!("VALUES {}", values.join(", ")))
}

/// Runs an INSERT/UPDATE/DELETE: with `return=representation` the changed rows
/// (through the query's `select`), else only how many.
#[allow(clippy::too_many_arguments)]
async fn write(
    state: &State,
    info: RequestInfo<'_>,
    statement: String,
    mut params: Params,
    rel: &Relation<'_>,
    q: &Query,
    p: &Prefer,
    ok: StatusCode,
    headers: &HeaderMap,
    location: Option<(&str, &[String])>,
) -> Result<Response, ApiError> {
    // max-affected holds PATCH and DELETE (PostgREST's rule), not inserts.
    let max = location.is_none().then(|| p.max_affected()).flatten();
    if let (false, true, Some((table, key))) = (p.representation, p.headers_only, location) {
        if !key.is_empty() {
            return located(state, info, &statement, &params, p, table, key).await;
        }
    }
    if p.representation {
        let select = sql::select_sql(rel, &q.select, &mut params)?;
        let sql = format!(
            "WITH _t AS ({statement} RETURNING _t.*) \
             SELECT NULL::int8, count(*), coalesce(json_agg(_r), '[]')::text FROM (SELECT {select} FROM _t) _r"
        );
        let rows = query_checked(
            &state.rest.pool,
            info,
            &sql,
            &params_of(&params),
            end(p),
            max.map(|m| (m, 1)),
        )
        .await?;
        let mut r = page_response(&rows, &Query::default(), headers, false, false)?;
        *r.status_mut() = ok;
        let n: i64 = rows[0].get(1);
        set_header(&mut r, "content-range", format!("*/{n}"));
        return Ok(r);
    }
    let n = execute_once(
        &state.rest.pool,
        info,
        &statement,
        &params_of(&params),
        end(p),
        max,
    )
    .await?;
    let status = if ok == StatusCode::CREATED {
        ok
    } else {
        StatusCode::NO_CONTENT
    };
    let mut r = json_response(status, String::new(), true);
    r.headers_mut().remove(header::CONTENT_TYPE);
    set_header(&mut r, "content-range", format!("*/{n}"));
    Ok(r)
}

/// An insert with `Prefer: return=headers-only`: 201 and, for one row, its
/// `Location` by primary key (`/todos?id=eq.34`), as PostgREST answers.
async fn located(
    state: &State,
    info: RequestInfo<'_>,
    statement: &str,
    params: &Params,
    p: &Prefer,
    table: &str,
    key: &[String],
) -> Result<Response, ApiError> {
    let cols: Vec<String> = key
        .iter()
        .map(|k| format!("_t.{}", quote_ident(k)))
        .collect();
    let sql = format!(
        "WITH _t AS ({statement} RETURNING _t.*) \
         SELECT count(*), (SELECT row_to_json(_k)::text FROM (SELECT {} FROM _t LIMIT 1) _k) FROM _t",
        cols.join(", ")
    );
    let rows = query_once(&state.rest.pool, info, &sql, &params_of(params), end(p)).await?;
    let n: i64 = rows[0].get(0);
    let first: Option<String> = rows[0].get(1);
    let mut r = json_response(StatusCode::CREATED, String::new(), true);
    r.headers_mut().remove(header::CONTENT_TYPE);
    set_header(&mut r, "content-range", format!("*/{n}"));
    if let (1, Some(first)) = (n, first) {
        let row: serde_json::Map<String, Value> = serde_json::from_str(&first).unwrap_or_default();
        let query: Vec<String> = key
            .iter()
            .map(|k| {
                let v = match row.get(k) {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "null".into(),
                };
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                format!("{}=eq.{}", enc(k), enc(&v))
            })
            .collect();
        let path = url::form_urlencoded::byte_serialize(table.as_bytes()).collect::<String>();
        set_header(&mut r, "location", format!("/{path}?{}", query.join("&")));
    }
    Ok(r)
}

/// `/rest/v1/rpc/{function}`: POST with named arguments in a JSON object, GET
/// and HEAD with them in the query string.
pub async fn rpc(
    axum::extract::State(state): axum::extract::State<State>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Response {
    let prefer = prefer(request.headers());
    let applied = applied_preferences(&prefer);
    let mut r = rpc_inner(state, name, raw, request, prefer)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    announce(&mut r, applied);
    r
}

fn pick<'f>(
    functions: &'f [Function],
    given: &[&str],
    schema: &str,
    name: &str,
) -> Result<&'f Function, ApiError> {
    let mut fits = functions.iter().filter(|f| f.accepts(given));
    let first = fits.next();
    if first.is_some() && fits.next().is_some() {
        return Err(ApiError::new(
            StatusCode::MULTIPLE_CHOICES,
            "PGRST203",
            format!(
                "Could not choose the best candidate function between overloads of \
                 {schema}.{name}({})",
                given.join(", ")
            ),
        )
        .hint("name the arguments so that one overload fits, or rename one function"));
    }
    first.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "PGRST202",
            format!(
                "Could not find the function {schema}.{name}({}) in the schema cache",
                given.join(", ")
            ),
        )
        .hint("check the function's name and argument names")
    })
}

async fn rpc_inner(
    state: State,
    name: String,
    raw: Option<String>,
    request: Request,
    prefer: Result<Prefer, ApiError>,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let (method, headers) = (&parts.method, &parts.headers);
    let (caller, schema) = addressed(&state, method, headers).await?;
    let cache = state.rest.cache();
    let overloads = cache.functions(&schema, &name);
    let all_args: Vec<&str> = overloads
        .iter()
        .flat_map(|f| f.args.iter().map(|a| a.name.as_str()))
        .filter(|n| !n.is_empty())
        .collect();
    let read_only = matches!(*method, Method::GET | Method::HEAD);
    let q = query::parse(&pairs(raw), if read_only { &all_args } else { &[] })?;
    let args: serde_json::Map<String, Value> = if read_only {
        q.other
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect()
    } else if *method == Method::POST {
        match body_json(&state.rest, body).await? {
            None => serde_json::Map::new(),
            Some(Value::Object(m))
                if !single_json_argument(overloads)
                    || overloads
                        .iter()
                        .any(|f| f.accepts(&m.keys().map(String::as_str).collect::<Vec<_>>())) =>
            {
                m
            }
            Some(other) => {
                // One unnamed json/jsonb argument takes the whole body.
                if !single_json_argument(overloads) {
                    return Err(ApiError::bad_body("the arguments must be a JSON object"));
                }
                let mut m = serde_json::Map::new();
                m.insert(String::new(), other);
                m
            }
        }
    } else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "PGRST117",
            format!("Unsupported HTTP method: {method}"),
        ));
    };
    let given: Vec<&str> = args.keys().map(String::as_str).collect();
    let f = pick(overloads, &given, &schema, &name)?;
    // A bad Prefer is answered here, after the caller and the resource.
    let p = prefer?;
    let mut params = Params::default();
    let target = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
    let (args_from, call) = if given == [""] {
        let v = params.push(args[""].to_string());
        (
            None,
            format!("{target}(CAST({v} AS {}))", f.args[0].type_name),
        )
    } else if given.is_empty() {
        (None, format!("{target}()"))
    } else {
        let v = params.push(Value::Object(args.clone()).to_string());
        let mut defs = Vec::new();
        let mut named = Vec::new();
        for a in f.args.iter().filter(|a| given.contains(&a.name.as_str())) {
            defs.push(format!("{} {}", quote_ident(&a.name), a.type_name));
            named.push(format!("{0} := _a.{0}", quote_ident(&a.name)));
        }
        (
            Some(format!(
                "jsonb_to_record(CAST({v} AS jsonb)) AS _a({})",
                defs.join(", ")
            )),
            format!("{target}({})", named.join(", ")),
        )
    };
    let path = original_path(&parts);
    // As PostgREST: a function that is not VOLATILE runs read-only, whatever
    // the method.
    let info = RequestInfo {
        method,
        path: &path,
        headers,
        caller: &caller,
        schema: &schema,
        read_only: read_only || !f.volatile,
    };
    let head = *method == Method::HEAD;
    let from_args = args_from
        .as_ref()
        .map(|a| format!(" FROM {a}"))
        .unwrap_or_default();
    match f.returns {
        Returns::Void | Returns::Scalar | Returns::Row => {
            let sql = match f.returns {
                Returns::Void => format!("SELECT NULL::text FROM (SELECT {call}{from_args}) _v"),
                Returns::Scalar => format!("SELECT to_json({call})::text{from_args}"),
                _ => match &args_from {
                    Some(a) => format!(
                        "SELECT row_to_json(_t)::text FROM {a} CROSS JOIN LATERAL {call} AS _t"
                    ),
                    None => format!("SELECT row_to_json(_t)::text FROM {call} AS _t"),
                },
            };
            let rows =
                query_once(&state.rest.pool, info, &sql, &params_of(&params), end(&p)).await?;
            if f.returns == Returns::Void {
                let mut r = json_response(StatusCode::NO_CONTENT, String::new(), true);
                r.headers_mut().remove(header::CONTENT_TYPE);
                return Ok(r);
            }
            let body: Option<String> = rows.first().and_then(|r| r.get(0));
            Ok(json_response(
                StatusCode::OK,
                body.unwrap_or_else(|| "null".into()),
                head,
            ))
        }
        Returns::Set | Returns::SetOfScalar => {
            let from = match &args_from {
                Some(a) => format!("{a} CROSS JOIN LATERAL {call} AS _t"),
                None => format!("{call} AS _t"),
            };
            let sql = if f.returns == Returns::Set {
                let rel = Relation {
                    name: format!("{schema}.{name}"),
                    columns: &f.columns,
                };
                // Counts of a function's rows are exact, whatever was asked.
                let total = if p.count.is_some() {
                    Total::Exact
                } else {
                    Total::None
                };
                sql::read_sql(&rel, &from, &q, total, state.rest.max_rows, &mut params)?
            } else {
                if !q.conditions.is_empty() || !q.order.is_empty() || !q.select.is_empty() {
                    return Err(ApiError::bad_query(
                        "a function returning a set of scalars takes no select, filter or order",
                    ));
                }
                let page = sql::page_sql(&q, state.rest.max_rows);
                let total = if p.count.is_some() {
                    format!("(SELECT count(*) FROM {from})")
                } else {
                    "NULL::int8".into()
                };
                format!(
                    "SELECT {total}, count(*), coalesce(json_agg(_v), '[]')::text FROM (SELECT _t AS _v FROM {from}{page}) _s"
                )
            };
            let rows =
                query_once(&state.rest.pool, info, &sql, &params_of(&params), end(&p)).await?;
            page_response(&rows, &q, headers, head, p.count.is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer_of(values: &[&str]) -> Result<Prefer, ApiError> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("prefer", HeaderValue::from_str(v).unwrap());
        }
        prefer(&h)
    }

    #[test]
    fn preferences_as_postgrest_reads_them() {
        // supabase-js appends: one header per call, or a comma list.
        let p = prefer_of(&["count=planned, return=representation", "missing=default"]).unwrap();
        assert_eq!(p.count, Some(Count::Planned));
        assert!(p.representation && p.missing_default);
        assert_eq!(
            p.applied,
            ["count=planned", "return=representation", "missing=default"]
        );
        // max-affected counts only with handling=strict.
        let lenient = prefer_of(&["max-affected=2"]).unwrap();
        assert_eq!(lenient.max_affected(), None);
        let strict = prefer_of(&["handling=strict", "max-affected=2"]).unwrap();
        assert_eq!(strict.max_affected(), Some(MaxAffected(2)));
        // Unknown or malformed: ignored, unless strict.
        let p = prefer_of(&["count=sometimes, max-affected=x, tx=rollback"]).unwrap();
        assert_eq!(p.count, None);
        assert!(p.rollback);
        let e = prefer_of(&["handling=strict, max-affected=-1, frobnicate"]).unwrap_err();
        let body = e.into_response();
        assert_eq!(body.status(), StatusCode::BAD_REQUEST);
    }
}
