//! Errors as GoTrue sends them and auth-js reads them: a status and a JSON body
//! `{"code": "<error code>", "error_code": "<error code>", "msg": "…"}`. With the
//! response header `X-Supabase-Api-Version: 2024-01-01` (on every response,
//! see [`super::api_version`]) auth-js takes the code from `code`; older clients
//! read `error_code`, so both are sent. The message never contains a password
//! or a token.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct AuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub msg: String,
    /// Seconds until a rate-limited caller may try again (`Retry-After`).
    pub retry_after: Option<u64>,
    /// Extra top-level fields (e.g. `weak_password: {reasons}`).
    pub extra: Option<(&'static str, Value)>,
}

impl AuthError {
    pub fn new(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Self {
        AuthError {
            status,
            code,
            msg: msg.into(),
            retry_after: None,
            extra: None,
        }
    }

    pub fn bad_request(code: &'static str, msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, msg)
    }

    pub fn validation(msg: impl Into<String>) -> Self {
        Self::bad_request("validation_failed", msg)
    }

    pub fn invalid_credentials() -> Self {
        Self::bad_request("invalid_credentials", "Invalid login credentials")
    }

    /// 422 `weak_password`, with the reasons auth-js exposes
    /// (`AuthWeakPasswordError.reasons`).
    pub fn weak_password(msg: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", msg);
        e.extra = Some(("weak_password", json!({"reasons": ["length"]})));
        e
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "over_request_rate_limit",
            "Request rate limit reached",
        );
        e.retry_after = Some(retry_after.max(1));
        e
    }

    pub fn no_authorization() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "no_authorization",
            "This endpoint requires a valid Bearer token",
        )
    }

    /// GoTrue answers a token it cannot verify with 403 `bad_jwt`.
    pub fn bad_jwt(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "bad_jwt", msg)
    }

    pub fn session_not_found() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "session_not_found",
            "Session from session_id claim in JWT does not exist",
        )
    }

    pub fn not_admin() -> Self {
        Self::new(StatusCode::FORBIDDEN, "not_admin", "User not allowed")
    }

    pub fn user_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "user_not_found", "User not found")
    }

    /// Something on our side failed; the cause is logged, not sent.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected_failure",
            "Unexpected failure, please check server logs for more information",
        )
    }

    pub fn body(&self) -> Value {
        let mut body = json!({"code": self.code, "error_code": self.code, "msg": self.msg});
        if let (Some((key, value)), Some(map)) = (&self.extra, body.as_object_mut()) {
            map.insert((*key).to_string(), value.clone());
        }
        body
    }
}

/// A database error: logged with its cause, answered as 500 (auth-js retries 5xx).
impl From<tokio_postgres::Error> for AuthError {
    fn from(e: tokio_postgres::Error) -> Self {
        tracing::error!(error = %spine_db::chain(&e), "auth: database error");
        AuthError::internal()
    }
}

impl From<spine_db::Error> for AuthError {
    fn from(e: spine_db::Error) -> Self {
        tracing::error!(error = %e, "auth: no database session");
        AuthError::internal()
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_code_error_code_msg_and_extras() {
        assert_eq!(
            AuthError::invalid_credentials().body(),
            json!({"code": "invalid_credentials", "error_code": "invalid_credentials",
                   "msg": "Invalid login credentials"})
        );
        let weak = AuthError::weak_password("Password should be at least 6 characters.");
        assert_eq!(weak.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(weak.body()["weak_password"]["reasons"], json!(["length"]));
        let limited = AuthError::rate_limited(0).into_response();
        assert_eq!(limited.headers()[header::RETRY_AFTER], "1");
    }
}
