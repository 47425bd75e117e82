//! Errors as PostgREST and GoTrue clients read them: a status and a JSON body
//! `{code, message, details, hint}`, with PostgREST's SQLSTATE → HTTP table
//! (docs/references/errors.rst, `Error.hs mapSQLtoHTTP`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Option<String>,
    pub hint: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            details: None,
            hint: None,
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// PGRST100: a query parameter that does not parse.
    pub fn bad_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PGRST100", message)
    }

    /// PGRST102: a body that is not what the request needs.
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PGRST102", message)
    }

    /// An error the database raised, mapped as PostgREST maps it. `anon`: the
    /// request had no user, so a permission error is 401, not 403.
    pub fn from_db(e: &tokio_postgres::Error, anon: bool) -> Self {
        let Some(db) = e.as_db_error() else {
            // The connection broke, or a statement timed out client-side.
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "PGRST001",
                "Database client error. Retrying the connection.",
            );
        };
        let code = db.code().code();
        ApiError {
            status: status_of(code, db.message(), anon),
            code: code.into(),
            message: db.message().into(),
            details: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
        }
    }

    pub fn body(&self) -> Value {
        json!({
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "hint": self.hint,
        })
    }
}

/// PostgREST's SQLSTATE → HTTP status.
pub fn status_of(sqlstate: &str, message: &str, anon: bool) -> StatusCode {
    let s = |n: u16| StatusCode::from_u16(n).expect("a valid status");
    if let Some(custom) = sqlstate.strip_prefix("PT") {
        if let Ok(n) = custom.parse::<u16>() {
            if let Ok(status) = StatusCode::from_u16(n) {
                return status;
            }
        }
    }
    let class = &sqlstate[..sqlstate.len().min(2)];
    match sqlstate {
        "21000" if message.contains("requires a WHERE clause") => s(400),
        "21000" => s(500),
        "22023" if message.contains("role") && message.contains("does not exist") => s(401),
        "23503" | "23505" => s(409),
        "25006" => s(405),
        "42883" | "42P01" => s(404),
        "42P17" => s(500),
        "42501" if anon => s(401),
        "42501" => s(403),
        "53400" => s(500),
        "57P01" => s(503),
        "P0001" => s(400),
        _ => match class {
            "08" => s(503),
            "09" => s(500),
            "0L" | "0P" => s(403),
            "25" | "2D" | "38" | "39" | "3B" | "40" => s(500),
            "28" => s(403),
            "53" => s(503),
            "54" | "55" | "57" | "58" | "F0" | "HV" | "XX" => s(500),
            "P0" => s(500),
            _ => s(400),
        },
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("PostgREST; error={}", self.code)) {
            response.headers_mut().insert("proxy-status", v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgrest_status_table() {
        let cases = [
            ("23505", "", false, 409),
            ("23503", "", false, 409),
            ("42501", "", true, 401),
            ("42501", "", false, 403),
            ("P0001", "", false, 400),
            ("PT402", "", false, 402),
            ("42883", "", false, 404),
            ("42P01", "", false, 404),
            ("25006", "", false, 405),
            ("22P02", "", false, 400),
            ("23502", "", false, 400),
            ("08006", "", false, 503),
            ("57P01", "", false, 503),
            ("57014", "", false, 500),
            ("XX000", "", false, 500),
            ("40001", "", false, 500),
            ("21000", "UPDATE requires a WHERE clause", false, 400),
            ("21000", "more than one row", false, 500),
            ("P0002", "", false, 500),
        ];
        for (code, message, anon, want) in cases {
            assert_eq!(status_of(code, message, anon).as_u16(), want, "{code}");
        }
    }
}
