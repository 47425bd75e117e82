//! `/auth/v1`: the GoTrue subset supabase-js needs. Not built yet: every route
//! answers 404 with a JSON body.

use crate::keys::ApiKeys;
use axum::http::StatusCode;
use axum::Router;
use std::sync::Arc;

/// What `/auth/v1` needs besides the database.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// HS256 secret access tokens are signed with.
    pub jwt_secret: String,
    /// Lifetime of an access token, in seconds.
    pub jwt_exp_secs: u64,
}

/// The `/auth/v1` routes (paths relative to `/auth/v1`), state applied.
pub fn router(_pool: spine_db::Pool, _keys: Arc<ApiKeys>, _settings: AuthSettings) -> Router {
    Router::new().fallback(|| async {
        crate::error::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "/auth/v1 is not served yet",
        )
    })
}
