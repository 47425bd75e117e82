//! Serving a service's verbs: one queue-group subscription per service, a task
//! per request, a reply envelope for every outcome (a verb nobody handles is
//! `NOT_FOUND`, a handler that panics is `INTERNAL`, data that breaks the verb's
//! contract is `VALIDATION` with the pointers, as Spine's own verbs answer).
//! A handler sees the caller's `Authorization` in `request.authorization`
//! (from the NATS header when the envelope has none), to act as the caller in
//! what it asks Spine.

use crate::{CellError, ErrorCode, Request, SubjectTemplate};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde_json::Value;
use spine_core::contract::{self, NamedContract};
use spine_core::service::Reply as Envelope;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// What a handler answers: data, or an error with its code.
pub struct Reply(Result<Value, (ErrorCode, String, Value)>);

impl Reply {
    pub fn data(data: impl Into<Value>) -> Self {
        Reply(Ok(data.into()))
    }

    pub fn error(code: ErrorCode, message: impl Into<String>, details: Value) -> Self {
        Reply(Err((code, message.into(), details)))
    }

    /// `VALIDATION`: the request's data is not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::error(ErrorCode::Validation, message, Value::Null)
    }

    /// `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::error(ErrorCode::NotFound, message, Value::Null)
    }
}

type Handler = Arc<dyn Fn(Request) -> BoxFuture<'static, Reply> + Send + Sync>;

/// A service's verbs and their handlers.
#[derive(Default, Clone)]
pub struct Handlers {
    verbs: HashMap<String, Handler>,
    contracts: HashMap<String, Arc<NamedContract>>,
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles `verb` with `f` (an async function of the request).
    pub fn verb<F, Fut>(mut self, verb: &str, f: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self.verbs
            .insert(verb.to_string(), Arc::new(move |r| Box::pin(f(r))));
        self
    }

    /// Checks `verb`'s request data against `contract` before its handler runs:
    /// a value that breaks it is answered `VALIDATION`, with
    /// `spine_core::contract::details` (the schema's name, each offending
    /// value's JSON Pointer and why, never the value).
    pub fn contract(mut self, verb: &str, contract: NamedContract) -> Self {
        self.contracts.insert(verb.to_string(), Arc::new(contract));
        self
    }
}

/// A running service; stops when [`Serving::stop`] is called or it is dropped.
pub struct Serving {
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn start(
    nats: async_nats::Client,
    template: &SubjectTemplate,
    service: &str,
    handlers: Handlers,
) -> Result<Serving, CellError> {
    let subject = template.subject(service, "*");
    let mut requests = nats
        .queue_subscribe(subject, service.to_string())
        .await
        .map_err(|e| CellError::Nats(e.to_string()))?;
    // The server has the subscription before anyone is told it serves.
    nats.flush()
        .await
        .map_err(|e| CellError::Nats(e.to_string()))?;
    let template = template.clone();
    let handlers = Arc::new(handlers);
    let task = tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let Some(reply_to) = message.reply.clone() else {
                continue;
            };
            let (nats, handlers, template) = (nats.clone(), handlers.clone(), template.clone());
            tokio::spawn(async move {
                let envelope = answer(&template, &handlers, &message).await;
                let body = serde_json::to_vec(&envelope).expect("a reply serializes");
                let _ = nats.publish(reply_to, body.into()).await;
            });
        }
    });
    Ok(Serving { task })
}

async fn answer(
    template: &SubjectTemplate,
    handlers: &Handlers,
    message: &async_nats::Message,
) -> Envelope {
    let mut request: Request = match serde_json::from_slice(&message.payload) {
        Ok(r) => r,
        Err(e) => {
            return Envelope::error(
                &Request::new(Value::Null),
                ErrorCode::Validation,
                format!("not a request envelope: {e}"),
                Value::Null,
            )
        }
    };
    let verb = template.split(&message.subject).map(|(_, v)| v);
    let Some((verb, handler)) = verb.and_then(|v| handlers.verbs.get(v).map(|h| (v, h))) else {
        return Envelope::error(&request, ErrorCode::NotFound, "no such verb", Value::Null);
    };
    if let Some(contract) = handlers.contracts.get(verb) {
        if let Err(violations) = contract.check(&request.data) {
            return Envelope::error(
                &request,
                ErrorCode::Validation,
                format!(
                    "data breaks contract {}: {}",
                    contract.name,
                    contract::summary(&violations)
                ),
                contract::details(&contract.name, &violations),
            );
        }
    }
    if request.authorization.is_none() {
        request.authorization = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Authorization"))
            .map(|v| v.as_str().to_string());
    }
    // A panicking handler is this request's INTERNAL error, not the server's end.
    let run = tokio::spawn(handler(request.clone()));
    match run.await {
        Ok(Reply(Ok(data))) => Envelope::ok(&request, data),
        Ok(Reply(Err((code, message, details)))) => {
            Envelope::error(&request, code, message, details)
        }
        Err(_) => Envelope::error(&request, ErrorCode::Internal, "internal error", Value::Null),
    }
}
