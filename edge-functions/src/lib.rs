//! Spine's function host: JavaScript plugins run as Supabase-style edge functions.
//!
//! - [`engine`]: the sandbox contract ([`engine::Engine`], limits, capabilities)
//!   and its QuickJS implementation: a fresh runtime per invocation.
//!
//! The engine sits behind [`engine::Engine`] so another one can be added later
//! (DESIGN.md).

pub mod capabilities;
pub mod config;
pub mod deploy;
pub mod engine;
pub mod host;
pub mod jwt;
pub mod pool;
pub mod server;
pub mod sql;
