//! Spine's function host: JavaScript plugins run as Supabase-style edge functions.
//!
//! Status: only the contract exists so far. The QuickJS engine (rquickjs), the HTTP
//! server at `/functions/v1/{name}` and the capabilities (secrets, fetch, db, emit)
//! arrive with the "Edge functions and database webhooks" issue.
//!
//! The engine sits behind [`Engine`] so another one can be added later (DESIGN.md).

use serde::{Deserialize, Serialize};

/// Every limit of one invocation, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Heap the JS runtime may allocate.
    pub memory_bytes: usize,
    /// CPU time before the interrupt handler stops the script.
    pub cpu_ms: u64,
    /// Wall-clock time, including awaited I/O.
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

/// An HTTP request or response as the host passes it across the sandbox boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpMessage {
    pub method: Option<String>,
    pub url: Option<String>,
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why an invocation produced no response of the function's own.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("function exceeded its {0} limit")]
    LimitExceeded(&'static str),
    #[error("function threw: {0}")]
    Threw(String),
    #[error("function module is invalid: {0}")]
    BadModule(String),
}

/// A JavaScript engine that can run one function invocation in isolation.
pub trait Engine {
    fn invoke(
        &self,
        module_source: &str,
        request: HttpMessage,
        limits: Limits,
    ) -> Result<HttpMessage, InvokeError>;
}
