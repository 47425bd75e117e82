//! Spine's function host: JavaScript plugins run as Supabase-style edge functions.
//!
//! - [`engine`]: the sandbox contract ([`engine::Engine`], limits, capabilities)
//!   and its QuickJS implementation: a fresh runtime per invocation.
//! - [`host`]: loads deployed functions and runs invocations for a caller;
//!   [`invokers`]: the threads they run on; [`capabilities`]: what a function may
//!   ask of the host (secrets, fetch, emit, [`sql`] `ctx.db`), each checked.
//! - [`server`]: `POST /functions/v1/{name}` with [`jwt`] verification;
//!   [`request_id`]: each request's id, in its logs and its response.
//! - [`health`]: per-plugin outcomes reported to `spine.plugin_health`, and a
//!   plugin that keeps failing disabled.
//! - [`deploy`]: `spine-functions deploy` from a folder; [`config`]: settings.
//!   Database sessions for host calls come from a [`spine_db::Pool`].
//!
//! The engine sits behind [`engine::Engine`] so another one can be added later
//! (DESIGN.md).

pub mod capabilities;
pub mod config;
pub mod contracts;
pub mod deploy;
pub mod embeddings;
pub mod engine;
pub mod health;
pub mod host;
pub mod invokers;
pub mod jwt;
pub mod metrics;
pub mod request_id;
pub mod server;
pub mod sql;
pub mod stream;
