//! The gateway's routes on one base URL: `/auth/v1`, `/rest/v1`,
//! `/functions/v1`, plus `/health/live`, `/health/ready` and `/metrics`. CORS
//! preflights are answered before any authentication, for every surface.

use crate::auth::limits::{Limit, RateLimits};
use crate::auth::{self, AuthOptions, AuthSettings};
use crate::config::Config;
use crate::keys::ApiKeys;
use crate::realtime::{self, Realtime};
use crate::rest::{self, Rest};
use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use spine_functions::host::Host;
use spine_functions::server::{CorsOrigins, ServerState, BODY_STALL_TIMEOUT};
use std::sync::Arc;
use tower_http::timeout::RequestBodyTimeoutLayer;

pub struct Gateway {
    pub pool: spine_db::Pool,
    pub keys: Arc<ApiKeys>,
    pub rest: Arc<Rest>,
    pub functions: Arc<ServerState>,
    pub realtime: Arc<Realtime>,
    /// What /auth/v1 signs access tokens with.
    pub signer: Arc<spine_core::signing::Signer>,
}

impl Gateway {
    /// Connects what the gateway needs; fails when the database cannot be read.
    pub async fn start(config: &Config) -> anyhow::Result<Gateway> {
        let db = spine_db::DbConfig::parse_for_process(
            &config.database_url,
            concat!("spine-gateway/", env!("CARGO_PKG_VERSION")),
        )
        .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
        spine_db::version::check_at_start(&db, "spine-gateway", env!("CARGO_PKG_VERSION")).await?;
        let pool = spine_db::Pool::new(
            &db,
            spine_db::PoolOptions {
                max_size: config.pool_size,
                ..Default::default()
            },
        );
        let signer = Arc::new(config.signer()?);
        let token_keys = Arc::new(
            spine_functions::jwt::Keys::load(config.key_settings(&signer)?)
                .await
                .context("loading the JWT keys")?,
        );
        let keys = Arc::new(ApiKeys::new(token_keys.clone()));
        let rest = Rest::start(pool.clone(), db.clone(), config)
            .await
            .context("loading the schema cache")?;
        let mut host = spine_functions::host::HostConfig::new(db.clone());
        host.db_schemas = config.schemas();
        host.embeddings = config.embeddings.api();
        let functions = Arc::new(ServerState::new(Host::new(host), token_keys));
        let realtime = Realtime::start(
            pool.clone(),
            db.clone(),
            keys.clone(),
            match config.nats_url.as_deref().filter(|u| !u.is_empty()) {
                Some(url) => Some(spine_nats::NatsConfig::new(url, config.nats.clone())?),
                None => None,
            },
        );
        Ok(Gateway {
            realtime,
            pool,
            keys,
            rest,
            functions,
            signer,
        })
    }

    pub fn router(&self, config: &Config) -> anyhow::Result<Router> {
        let cors = CorsOrigins::parse(&config.cors_origins)
            .map_err(|e| anyhow::anyhow!("SPINE_CORS_ORIGINS: {e}"))?;
        let auth_routes = if config.auth_enabled() {
            let limit = |name: &str, text: &str| {
                Limit::parse(text).map_err(|e| anyhow::anyhow!("{name}: {e}"))
            };
            auth::router_with(
                self.pool.clone(),
                self.keys.clone(),
                AuthSettings {
                    signer: self.signer.clone(),
                    jwt_exp_secs: config.jwt_exp_secs,
                },
                AuthOptions {
                    limits: RateLimits {
                        sign_in: limit("SPINE_AUTH_SIGN_IN_LIMIT", &config.sign_in_limit)?,
                        sign_up: limit("SPINE_AUTH_SIGN_UP_LIMIT", &config.sign_up_limit)?,
                    },
                    max_body: config.max_body,
                },
            )
        } else {
            Router::new().fallback(|| async {
                crate::error::ApiError::new(
                    StatusCode::NOT_FOUND,
                    "auth_off",
                    "this gateway runs with SPINE_AUTH=off: sign in through the project's auth service",
                )
            })
        };
        let health = Router::new()
            .route(
                "/health/live",
                get(|| async { Json(json!({"status": "ok"})) }),
            )
            .route("/health/ready", get(ready))
            .route("/metrics", get(metrics))
            .with_state((self.rest.clone(), self.realtime.clone()));
        Ok(Router::new()
            .nest("/auth/v1", auth_routes)
            .nest("/realtime/v1", realtime::router(self.realtime.clone()))
            .nest(
                "/rest/v1",
                rest::router(self.rest.clone(), self.keys.clone()),
            )
            .merge(
                spine_functions::server::function_routes()
                    .with_state(self.functions.clone())
                    .layer(RequestBodyTimeoutLayer::new(BODY_STALL_TIMEOUT)),
            )
            .merge(health)
            .merge(crate::sites::router(
                &crate::sites::parse(&config.sites)
                    .map_err(|e| anyhow::anyhow!("SPINE_SITES: {e}"))?,
            ))
            .merge(crate::studio::router(
                crate::keys::project_keys(config.secret()?).0,
                crate::studio::origin(config.search_public_url.as_deref())?,
            ))
            .fallback(|| async {
                crate::error::ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no route: the API is under /auth/v1, /rest/v1, /realtime/v1 and /functions/v1; the console at /studio",
                )
            })
            .layer(axum::middleware::from_fn(
                spine_functions::request_id::middleware,
            ))
            .layer(cors.layer()))
    }
}

/// Ready when the database answers, the schema cache is loaded and the
/// Realtime reader follows the outbox.
async fn ready(State((rest, realtime)): State<(Arc<Rest>, Arc<Realtime>)>) -> Response {
    let following = *realtime.reader.ready.borrow();
    match rest.ping().await {
        Ok(()) if following => {
            Json(json!({"status": "ok", "schema_cache": "loaded", "realtime": "following"}))
                .into_response()
        }
        Ok(()) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": "the realtime reader is not following the outbox yet"})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": e})),
        )
            .into_response(),
    }
}

async fn metrics(State((rest, realtime)): State<(Arc<Rest>, Arc<Realtime>)>) -> Response {
    // OpenMetrics ends with one `# EOF`, after every family.
    let text = rest
        .metrics_text()
        .replace("# EOF\n", &realtime.metrics_text())
        + "# EOF\n";
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
