//! The transaction a request runs in, set up as PostgREST sets it up
//! (`Query/PreQuery.hs txVarQuery`): one statement sets `search_path`, `role`,
//! `request.jwt.claims`, `request.method`, `request.path` and
//! `request.headers` (lower-cased names) for this transaction only, so
//! `auth.uid()`, RLS and every `spine.*` function behave as behind PostgREST.
//! GET and HEAD run READ ONLY.

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

/// An open request transaction. End it with [`Tx::commit`] or
/// [`Tx::rollback`]; dropped unended, its connection is closed, not reused.
pub struct Tx {
    session: Session,
    anon: bool,
}

impl Tx {
    pub async fn begin(pool: &Pool, info: RequestInfo<'_>) -> Result<Tx, ApiError> {
        let mut session = pool.get().await.map_err(|e| {
            tracing::warn!(error = %e, "no database session");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "PGRST000",
                "Could not connect to the database",
            )
        })?;
        session.mark_busy();
        let anon = info.caller.is_anon();
        let fail = |e: tokio_postgres::Error| ApiError::from_db(&e, anon);
        let set = session.prepare_cached(SET_CONTEXT).await.map_err(fail)?;
        let search_path = format!("{}, public, extensions", quote_ident(info.schema));
        let claims = info.caller.claims.to_string();
        let method = info.method.as_str();
        let headers = headers_json(info.headers);
        let params: [&(dyn ToSql + Sync); 6] = [
            &search_path,
            &info.caller.role,
            &claims,
            &method,
            &info.path,
            &headers,
        ];
        let begin = if info.read_only {
            "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY"
        } else {
            "BEGIN ISOLATION LEVEL READ COMMITTED"
        };
        // Sent back to back on one connection (tokio-postgres pipelines them).
        let (began, set) = tokio::join!(session.batch_execute(begin), session.query(&set, &params));
        began.map_err(fail)?;
        set.map_err(fail)?;
        Ok(Tx { session, anon })
    }

    /// Rows of a statement, prepared once per connection.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ApiError> {
        let statement = self
            .session
            .prepare_cached(sql)
            .await
            .map_err(|e| self.error(e))?;
        self.session
            .query(&statement, params)
            .await
            .map_err(|e| self.error(e))
    }

    /// Rows a statement changed.
    pub async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, ApiError> {
        let statement = self
            .session
            .prepare_cached(sql)
            .await
            .map_err(|e| self.error(e))?;
        self.session
            .execute(&statement, params)
            .await
            .map_err(|e| self.error(e))
    }

    fn error(&self, e: tokio_postgres::Error) -> ApiError {
        ApiError::from_db(&e, self.anon)
    }

    pub async fn commit(self) -> Result<(), ApiError> {
        self.end("COMMIT").await
    }

    pub async fn rollback(self) -> Result<(), ApiError> {
        self.end("ROLLBACK").await
    }

    async fn end(mut self, sql: &str) -> Result<(), ApiError> {
        self.session
            .batch_execute(sql)
            .await
            .map_err(|e| ApiError::from_db(&e, self.anon))?;
        self.session.mark_idle();
        Ok(())
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
