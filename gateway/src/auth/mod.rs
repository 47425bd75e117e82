//! `/auth/v1`: the GoTrue (Supabase Auth) subset supabase-js 2.119 needs, over
//! Spine's own `auth.users`, `auth.sessions` and `auth.refresh_tokens`
//! (migration `20261206000000_auth_users.sql`, GoTrue's columns).
//!
//! - [`session`]: sign-up, sign-in and refresh (`/signup`, `/token`), the
//!   signed-in user (`/user`), sign-out (`/logout`), `/settings`, the public
//!   signing key (`/.well-known/jwks.json`);
//! - [`admin`]: `/admin/users` for the service role;
//! - [`users`]: rows as GoTrue's JSON and the statements on them;
//! - [`tokens`]: access tokens (HS256 or ES256, GoTrue's claims) and refresh tokens
//!   (random, stored as SHA-256); [`password`]: bcrypt off the async workers;
//! - [`limits`]: rate limits on sign-in and sign-up; [`error`]: GoTrue's error
//!   body; [`db`]: one pooled connection and its transaction.
//!
//! Every response carries `X-Supabase-Api-Version: 2024-01-01`, which tells
//! auth-js to read the error code from `code`.

pub mod admin;
pub mod db;
pub mod error;
pub mod limits;
pub mod password;
pub mod session;
pub mod tokens;
pub mod users;

pub use error::AuthError;
pub use limits::{Limit, RateLimits};

use crate::keys::ApiKeys;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// What `/auth/v1` needs besides the database.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// What access tokens are signed with: the JWT secret, or an ES256 key.
    pub signer: Arc<spine_core::signing::Signer>,
    /// Lifetime of an access token, in seconds.
    pub jwt_exp_secs: u64,
}

/// Settings with defaults that [`router`] uses; [`router_with`] takes others.
#[derive(Debug, Clone, Copy)]
pub struct AuthOptions {
    pub limits: RateLimits,
    /// Largest request body, in bytes (413 above it).
    pub max_body: usize,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            limits: RateLimits::default(),
            max_body: 1 << 20,
        }
    }
}

/// The API version GoTrue answers with (`X-Supabase-Api-Version`).
pub const API_VERSION: &str = "2024-01-01";

pub struct Auth {
    pub pool: spine_db::Pool,
    pub keys: Arc<ApiKeys>,
    pub settings: AuthSettings,
    pub limiters: limits::Limiters,
}

pub type State = axum::extract::State<Arc<Auth>>;

/// The `/auth/v1` routes (paths relative to `/auth/v1`), state applied.
pub fn router(pool: spine_db::Pool, keys: Arc<ApiKeys>, settings: AuthSettings) -> Router {
    router_with(pool, keys, settings, AuthOptions::default())
}

/// [`router`] with other rate limits or body limit.
pub fn router_with(
    pool: spine_db::Pool,
    keys: Arc<ApiKeys>,
    settings: AuthSettings,
    options: AuthOptions,
) -> Router {
    let auth = Arc::new(Auth {
        pool,
        keys,
        settings,
        limiters: limits::Limiters::new(options.limits),
    });
    Router::new()
        .route("/signup", post(session::signup))
        .route("/token", post(session::token))
        .route("/user", get(session::get_user).put(session::update_user))
        .route("/logout", post(session::logout))
        .route("/settings", get(session::settings))
        .route("/.well-known/jwks.json", get(session::jwks))
        .route("/admin/users", get(admin::list).post(admin::create))
        .route(
            "/admin/users/{id}",
            get(admin::get).put(admin::update).delete(admin::delete),
        )
        .fallback(|| async { AuthError::new(StatusCode::NOT_FOUND, "not_found", "Not Found") })
        .method_not_allowed_fallback(|| async {
            AuthError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method Not Allowed",
            )
        })
        .layer(DefaultBodyLimit::max(options.max_body))
        .layer(axum::middleware::map_response(api_version))
        .with_state(auth)
}

async fn api_version(mut response: Response) -> Response {
    response.headers_mut().insert(
        "x-supabase-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    response
}

/// The peer address of the connection, when the server provides it
/// (`into_make_service_with_connect_info::<SocketAddr>()`). Forwarding
/// headers are not read: see [`limits`].
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// A JSON request body: 413 above the limit, 400 `bad_json` when it does not
/// parse. The parser's message names the position, never the input (which
/// may hold a password).
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, AuthError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AuthError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                "Request body is too large",
            )
        } else {
            AuthError::bad_request("bad_json", "Could not read the request body")
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "a field has the wrong type",
            serde_json::error::Category::Eof => "unexpected end of input",
            _ => "invalid JSON",
        };
        AuthError::bad_request(
            "bad_json",
            format!(
                "Could not parse request body as JSON: {what} at line {} column {}",
                e.line(),
                e.column()
            ),
        )
    })
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
