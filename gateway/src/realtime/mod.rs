//! `/realtime/v1`: Supabase Realtime's protocol served from Spine's outbox.
//!
//! - [`protocol`]: Phoenix frames (vsn 1.0.0 and 2.0.0);
//! - [`socket`]: one websocket's channels (join, leave, token refresh,
//!   broadcast, presence);
//! - [`hub`]: the joined channels of this process, client broadcasts, presence;
//! - [`outbox`]: the reader that routes committed changes and database
//!   broadcasts to channels, and replays a channel from its position;
//! - [`catalog`]: published tables and how visibility is decided per role;
//! - [`filter`]: postgres_changes filters;
//! - [`cluster`]: broadcasts and presence shared between gateways over NATS.

pub mod catalog;
pub mod cluster;
pub mod filter;
pub mod hub;
pub mod outbox;
pub mod protocol;
pub mod socket;

use crate::error::ApiError;
use crate::keys::ApiKeys;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hub::Hub;
use protocol::UserPayload;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Largest frame a client may send (broadcasts are limited further).
const MAX_FRAME: usize = 1024 * 1024;

pub struct Realtime {
    pub hub: Arc<Hub>,
    pub reader: Arc<outbox::Reader>,
    pub pool: spine_db::Pool,
    pub keys: Arc<ApiKeys>,
}

impl Realtime {
    /// Starts the outbox reader; joins wait until it follows the outbox.
    pub fn start(
        pool: spine_db::Pool,
        db: spine_db::DbConfig,
        keys: Arc<ApiKeys>,
        nats: Option<spine_nats::NatsConfig>,
    ) -> Arc<Realtime> {
        let hub = Arc::new(Hub::default());
        let reader = Arc::new(outbox::Reader::default());
        let rt = Arc::new(Realtime {
            hub: hub.clone(),
            reader: reader.clone(),
            pool,
            keys,
        });
        if let Some(url) = nats {
            let hub = hub.clone();
            tokio::spawn(async move {
                if let Err(e) = cluster::join(hub, url).await {
                    tracing::error!(error = %e, "realtime: cannot share broadcasts and presence over NATS");
                }
            });
        }
        tokio::spawn(outbox::run(hub, reader, db));
        rt
    }

    /// What a user may do on a private topic (`spine.realtime_channel_access`).
    pub async fn channel_access(&self, sub_topic: &str, claims: &Value) -> Result<Access, String> {
        let session = self
            .pool
            .get()
            .await
            .map_err(|e| format!("Unavailable: {e}"))?;
        let row = session
            .query_one(
                "SELECT read_broadcast, write_broadcast, read_presence, write_presence \
                 FROM spine.realtime_channel_access($1, $2)",
                &[&sub_topic, claims],
            )
            .await
            .map_err(|e| format!("Unavailable: {e}"))?;
        Ok(Access {
            read_broadcast: row.get(0),
            write_broadcast: row.get(1),
            read_presence: row.get(2),
            write_presence: row.get(3),
        })
    }

    pub fn metrics_text(&self) -> String {
        format!(
            "# TYPE spine_gateway_realtime_sockets gauge\nspine_gateway_realtime_sockets {}\n\
             # TYPE spine_gateway_realtime_channels gauge\nspine_gateway_realtime_channels {}\n\
             # TYPE spine_gateway_realtime_messages counter\nspine_gateway_realtime_messages_total {}\n",
            self.hub.sockets.load(Ordering::Relaxed),
            self.hub.channel_count(),
            self.hub.delivered_messages.load(Ordering::Relaxed),
        )
    }
}

/// What a user may do on a channel: everything on a public one; on a private
/// one what the policies of `spine.realtime_messages` allow.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub read_broadcast: bool,
    pub write_broadcast: bool,
    pub read_presence: bool,
    pub write_presence: bool,
}

impl Access {
    pub const PUBLIC: Access = Access {
        read_broadcast: true,
        write_broadcast: true,
        read_presence: true,
        write_presence: true,
    };
}

pub fn router(rt: Arc<Realtime>) -> Router {
    Router::new()
        .route("/websocket", get(websocket))
        .route("/api/broadcast", post(broadcast_batch))
        .route("/api/broadcast/{topic}/events/{event}", post(broadcast_one))
        .with_state(rt)
}

fn connect_error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// `GET /realtime/v1/websocket?apikey=…&vsn=…`: the key is checked before the
/// upgrade, and a bad one is an HTTP error with a JSON body, as Supabase does.
async fn websocket(
    State(rt): State<Arc<Realtime>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let vsn = match protocol::Vsn::parse(params.get("vsn").map(String::as_str)) {
        Ok(v) => v,
        Err(e) => return connect_error(StatusCode::BAD_REQUEST, e),
    };
    let apikey = params
        .get("apikey")
        .map(String::as_str)
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(apikey) = apikey else {
        return connect_error(StatusCode::UNAUTHORIZED, "apikey is required".into());
    };
    let caller = match rt.keys.caller(None, Some(apikey)).await {
        Ok(c) => c,
        Err(e) => return connect_error(StatusCode::UNAUTHORIZED, format!("invalid apikey: {e}")),
    };
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| socket::serve(rt, socket, vsn, caller))
}

#[derive(Deserialize)]
struct Batch {
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    topic: String,
    event: String,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    private: bool,
}

/// The caller of a REST broadcast; any valid key may send to public topics.
async fn rest_caller(rt: &Realtime, headers: &HeaderMap) -> Result<crate::keys::Caller, ApiError> {
    let readable = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).is_some();
    if !readable("apikey") && !readable("authorization") {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_api_key",
            "an apikey header is required",
        ));
    }
    rt.keys
        .from_headers(headers)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "bad_jwt", e.to_string()))
}

/// A private message needs its sender's write permission on the topic.
async fn authorize(
    rt: &Realtime,
    caller: &crate::keys::Caller,
    m: &Message,
) -> Result<(), ApiError> {
    if !m.private {
        return Ok(());
    }
    let access = rt
        .channel_access(&m.topic, &caller.claims)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e))?;
    if access.write_broadcast {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "unauthorized",
            format!("no permission to write to the private channel {}", m.topic),
        ))
    }
}

fn check(m: &Message) -> Result<(), ApiError> {
    let bad = |why: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_broadcast", why);
    if m.topic.is_empty() || m.topic.len() > 246 || m.event.is_empty() || m.event.len() > 255 {
        return Err(bad(
            "topic (1-246 bytes) and event (1-255 bytes) are required",
        ));
    }
    if m.payload.to_string().len() > socket::MAX_BROADCAST_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_size_exceeded",
            "a broadcast payload has at most 256 KiB",
        ));
    }
    Ok(())
}

fn send(rt: &Realtime, m: &Message) {
    rt.hub.broadcast(
        &hub::scope(&format!("realtime:{}", m.topic), m.private),
        &m.event,
        &UserPayload::Json(m.payload.clone()),
        None,
    );
}

/// `POST /realtime/v1/api/broadcast` `{"messages": [{topic, event, payload}]}` → 202.
async fn broadcast_batch(
    State(rt): State<Arc<Realtime>>,
    headers: HeaderMap,
    body: Result<Json<Batch>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let caller = rest_caller(&rt, &headers).await?;
    let Json(batch) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.body_text()))?;
    if batch.messages.len() > 100 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_broadcast",
            "at most 100 messages per request",
        ));
    }
    // All checked before any is sent.
    for m in &batch.messages {
        check(m)?;
        authorize(&rt, &caller, m).await?;
    }
    for m in &batch.messages {
        send(&rt, m);
    }
    Ok(StatusCode::ACCEPTED)
}

/// `POST /realtime/v1/api/broadcast/{topic}/events/{event}` (realtime-js
/// `httpSend`), the body being the payload → 202.
async fn broadcast_one(
    State(rt): State<Arc<Realtime>>,
    Path((topic, event)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let caller = rest_caller(&rt, &headers).await?;
    let Json(payload) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.body_text()))?;
    let message = Message {
        topic,
        event,
        payload,
        private: params.get("private").map(String::as_str) == Some("true"),
    };
    check(&message)?;
    authorize(&rt, &caller, &message).await?;
    send(&rt, &message);
    Ok(StatusCode::ACCEPTED)
}
