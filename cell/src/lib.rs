//! `spine-cell`: typed NATS request/reply for services built on Spine.
//!
//! A *cell* is a service that talks to others over NATS request/reply, on
//! subjects like `svc.{service}.{verb}` (or your platform's `cbs.…`), with the
//! envelopes Spine's worker speaks (`spine_core::service`): a request
//! `{id, correlation_id, causation_id, type, time, data}` and a reply
//! `{…, ok, data | error{code, message, details}}`.
//!
//! - [`Cell::request`] calls a verb — one of Spine's (a SQL function exposed
//!   with `spine.expose_service`, or an edge function) or another cell's — and
//!   returns its data as your type, or a [`CellError`] whose
//!   [`ErrorCode`] says what to do about it.
//! - [`Cell::serve`] answers a service's verbs in a queue group, so several
//!   instances share the load and each request is answered once.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use spine_cell::{Cell, Handlers, Reply};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Note { id: String, body: String }
//!
//! # async fn demo() -> Result<(), spine_cell::CellError> {
//! let cell = Cell::connect("nats://127.0.0.1:4222", "svc.{service}.{verb}")
//!     .await?
//!     .with_token("eyJ…"); // the user's JWT: Spine runs the verb as them, under RLS
//! let note: Note = cell
//!     .request("notes", "create", &serde_json::json!({"body": "buy milk"}))
//!     .await?;
//!
//! // Serve `calc.add` in the queue group "calc".
//! let serving = cell
//!     .serve(
//!         "calc",
//!         Handlers::new().verb("add", |req| async move {
//!             let (a, b) = (req.data["a"].as_i64(), req.data["b"].as_i64());
//!             match (a, b) {
//!                 (Some(a), Some(b)) => Reply::data(serde_json::json!(a + b)),
//!                 _ => Reply::invalid("a and b must be integers"),
//!             }
//!         }),
//!     )
//!     .await?;
//! # drop(serving); Ok(()) }
//! ```

mod serve;

pub use serve::{Handlers, Reply, Serving};
pub use spine_core::contract::NamedContract;
pub use spine_core::service::{ErrorBody, ErrorCode, Request, SubjectTemplate};

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// Why a request produced no data.
#[derive(Debug, thiserror::Error)]
pub enum CellError {
    /// The verb answered with an error envelope.
    #[error("{code:?}: {message}")]
    Service {
        code: ErrorCode,
        message: String,
        details: serde_json::Value,
    },
    /// Nobody answered within the timeout, or nobody serves the subject.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// NATS itself failed (connecting, publishing, subscribing).
    #[error("NATS: {0}")]
    Nats(String),
    /// The reply, or its data, is not what was asked for.
    #[error("unexpected reply: {0}")]
    Decode(String),
    /// A subject template that is not `…{service}.{verb}`.
    #[error("subject template: {0}")]
    Template(String),
}

impl CellError {
    /// The service's error code, if the verb answered one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CellError::Service { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A connection to NATS that calls verbs and serves them.
#[derive(Clone)]
pub struct Cell {
    nats: async_nats::Client,
    template: SubjectTemplate,
    token: Option<String>,
    timeout: Duration,
}

impl Cell {
    /// Connects to `url`; `template` is the subject scheme (`svc.{service}.{verb}`).
    pub async fn connect(url: &str, template: &str) -> Result<Self, CellError> {
        let nats = async_nats::connect(url)
            .await
            .map_err(|e| CellError::Nats(e.to_string()))?;
        Self::new(nats, template)
    }

    /// A cell on a NATS client you configured (credentials, TLS).
    pub fn new(nats: async_nats::Client, template: &str) -> Result<Self, CellError> {
        Ok(Cell {
            nats,
            template: SubjectTemplate::parse(template).map_err(CellError::Template)?,
            token: None,
            timeout: Duration::from_secs(10),
        })
    }

    /// Requests carry `Authorization: Bearer <token>`: Spine runs its verbs as
    /// that user (anon without a token).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How long [`Cell::request`] waits for a reply (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// Calls `service.verb` with `data`; the reply's data as `R`.
    pub async fn request<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        service: &str,
        verb: &str,
        data: &T,
    ) -> Result<R, CellError> {
        let data = serde_json::to_value(data).map_err(|e| CellError::Decode(e.to_string()))?;
        self.send(service, verb, Request::new(data)).await
    }

    /// [`Cell::request`] with an envelope of your own (to continue a chain:
    /// set its `correlation_id` and `causation_id`).
    pub async fn send<R: DeserializeOwned>(
        &self,
        service: &str,
        verb: &str,
        request: Request,
    ) -> Result<R, CellError> {
        let payload = serde_json::to_vec(&request).map_err(|e| CellError::Decode(e.to_string()))?;
        let mut headers = async_nats::HeaderMap::new();
        if let Some(token) = &self.token {
            headers.insert("Authorization", format!("Bearer {token}").as_str());
        }
        let subject = self.template.subject(service, verb);
        let asked = self
            .nats
            .request_with_headers(subject.clone(), headers, payload.into());
        let message = match tokio::time::timeout(self.timeout, asked).await {
            Err(_) => return Err(CellError::NoAnswer(format!("{subject}: timed out"))),
            Ok(Err(e)) => return Err(CellError::NoAnswer(format!("{subject}: {e}"))),
            Ok(Ok(m)) => m,
        };
        let reply: spine_core::service::Reply = serde_json::from_slice(&message.payload)
            .map_err(|e| CellError::Decode(format!("{subject}: not a reply envelope: {e}")))?;
        match (reply.ok, reply.error) {
            (false, Some(error)) => Err(CellError::Service {
                code: error.code,
                message: error.message,
                details: error.details,
            }),
            (false, None) => Err(CellError::Decode(format!(
                "{subject}: ok false without an error"
            ))),
            (true, _) => serde_json::from_value(reply.data.unwrap_or_default())
                .map_err(|e| CellError::Decode(format!("{subject}: data: {e}"))),
        }
    }

    /// Answers `service`'s verbs on this cell's subjects in the queue group
    /// named like the service, until the returned [`Serving`] is stopped or
    /// dropped.
    pub async fn serve(&self, service: &str, handlers: Handlers) -> Result<Serving, CellError> {
        serve::start(self.nats.clone(), &self.template, service, handlers).await
    }
}
