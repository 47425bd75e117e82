//! Spine's gateway: one Supabase-compatible base URL for clients.
//!
//! - [`keys`]: who a request acts as (API keys, bearer tokens → role, claims);
//! - [`request`]: the transaction each request runs in, with PostgREST's
//!   `role`, `request.jwt.claims`, `request.method`, `request.path`,
//!   `request.headers` and `search_path`;
//! - [`rest`]: `/rest/v1`, PostgREST's contract over a schema cache;
//! - [`auth`]: `/auth/v1`, the GoTrue subset supabase-js needs;
//! - [`realtime`]: `/realtime/v1`, Supabase Realtime's protocol on the outbox;
//! - `/functions/v1`: the function host (spine-functions), embedded;
//! - [`studio`]: `/studio`, the web console's embedded files;
//! - [`server`]: the routes, CORS, health and metrics; [`config`]: settings;
//!   [`error`]: PostgREST-shaped errors.

pub mod auth;
pub mod config;
pub mod error;
pub mod keys;
pub mod realtime;
pub mod request;
pub mod rest;
pub mod server;
pub mod sites;
pub mod studio;
