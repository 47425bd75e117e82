//! The sandbox contract: what crosses between a JavaScript function and the host.
//!
//! An [`Engine`] runs one invocation of a module in a fresh, isolated JS context
//! under [`Limits`]. Everything the function can do outside its context goes
//! through [`Capabilities`], which the host implements and checks (manifest,
//! consent, the caller's role). The engine itself knows nothing of Postgres.

mod quickjs;
pub mod subtle;

pub use quickjs::{check_module, QuickJs};

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Every limit of one invocation, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Heap the JS runtime may allocate.
    pub memory_bytes: usize,
    /// CPU time of the invocation's thread before the interrupt handler stops it.
    /// Time spent waiting on host calls (fetch, db) is wall time, not CPU time.
    pub cpu_ms: u64,
    /// Wall-clock time, including host calls and timers.
    pub wall_ms: u64,
}

impl Default for Limits {
    /// Supabase Edge Runtime's defaults for a free project, rounded.
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            cpu_ms: 2_000,
            wall_ms: 150_000,
        }
    }
}

/// An HTTP request as the function receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The response the function produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The whole body; empty when it went to a [`BodySink`] chunk by chunk.
    pub body: Vec<u8>,
    /// The body was a `ReadableStream` and went to the sink as it was produced.
    pub streamed: bool,
}

/// Why a [`BodySink`] took no more chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkClosed {
    /// Nobody reads the body any more (the client went away): the function stops.
    Gone,
    /// The reader did not take the chunk before the invocation's wall deadline.
    Deadline,
}

/// Takes a streamed body (a handler's `Response` over a `ReadableStream`, such
/// as LLM tokens as `text/event-stream`) while the function still runs.
pub trait BodySink {
    /// The status and headers, once, before the first chunk.
    fn head(&mut self, status: u16, headers: &[(String, String)]);
    /// One chunk; waits for the reader (back-pressure), but never past `deadline`.
    fn chunk(&mut self, bytes: Vec<u8>, deadline: Instant) -> Result<(), SinkClosed>;
}

/// Why an invocation produced no response of the function's own.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InvokeError {
    /// `memory`, `cpu` or `wall`. A stream collected whole (no sink) counts
    /// against `memory`.
    #[error("function exceeded its {0} limit")]
    LimitExceeded(&'static str),
    #[error("function threw: {0}")]
    Threw(String),
    #[error("function module is invalid: {0}")]
    BadModule(String),
    #[error("the handler's promise never settled: nothing left that could settle it")]
    NeverSettled,
}

/// Why a host call was refused; thrown into JS as an `Error` whose `name` is `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// `PermissionDenied`, `TypeError`, `NotFound`, `TimeoutError` or `Error`.
    pub kind: &'static str,
    pub message: String,
}

impl OpError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// What a function may ask of the host. Each call blocks the invocation's thread
/// (the JS side still sees promises); `deadline` is the wall-clock limit, which a
/// call must not outlive.
pub trait Capabilities {
    /// `user`, `secret`, `fetch`, `db`, `emit`: the argument and answer are JSON.
    fn call(
        &mut self,
        op: &str,
        arg: serde_json::Value,
        deadline: Instant,
    ) -> Result<serde_json::Value, OpError>;

    /// A `console.*` line.
    fn log(&mut self, level: &str, message: &str);
}

/// A JavaScript engine that runs one invocation in isolation: a fresh context per
/// call, nothing shared between calls, and an error (never a crash of the host)
/// for whatever the function does.
pub trait Engine: Send + Sync {
    /// Runs the handler; a streamed body goes to `sink` chunk by chunk, or without
    /// a sink is collected into [`Response::body`] (what a job needs).
    fn invoke_into(
        &self,
        module_source: &str,
        request: Request,
        limits: Limits,
        capabilities: Box<dyn Capabilities>,
        sink: Option<&mut dyn BodySink>,
    ) -> Result<Response, InvokeError>;

    /// [`Engine::invoke_into`] with the whole body in the response.
    fn invoke(
        &self,
        module_source: &str,
        request: Request,
        limits: Limits,
        capabilities: Box<dyn Capabilities>,
    ) -> Result<Response, InvokeError> {
        self.invoke_into(module_source, request, limits, capabilities, None)
    }

    /// Does, ahead of time and on the calling thread, the part of the next
    /// invocation's setup that does not depend on it (a fresh context with the
    /// Web API prelude). Hosts call it after an answer went out.
    fn prepare(&self) {}
}
