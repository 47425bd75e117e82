//! Spine's contracts and pure logic, shared by every process: the extension, the
//! worker, the function host (and the gateway to come) import them from here
//! instead of keeping their own copies. Nothing here touches Postgres, NATS or an
//! async runtime, so `cargo test -p spine-core` runs in seconds.
//!
//! - [`audit_chain`]: the audit log's hash chain (what a row's hash covers).
//! - [`auth`] (feature `jwt`): bearer tokens, HS256 and JWKS keys, `sb_` API keys.
//! - [`signing`] (feature `jwt`): the key access tokens are signed with (HS256 or ES256).
//! - [`names`]: the identifier rules (entity kinds, plugins, queues, webhooks, domains).
//! - [`json`]: paths into JSON values and JSON text sizes.
//! - [`time`]: civil date arithmetic and RFC 3339 timestamps.
//! - [`event_type`]: `domain.PastTenseName` event type names.
//! - [`envelope`]: the CloudEvents 1.0 envelope every event travels as.
//! - [`manifest`]: plugin manifests and their permission patterns.
//! - [`jobs`]: retry backoff, pg_cron schedules and the payloads of built-in jobs.
//! - [`locks`]: the advisory-lock classes, one purpose each.
//! - [`rules`]: the JsonLogic evaluator and action templates.
//! - [`etl`]: source mappings and value normalizers.
//! - [`contract`] (feature `contracts`): JSON Schema contracts and their violations.
//! - [`service`]: NATS request/reply envelopes, error codes, service subjects.

pub mod audit_chain;
#[cfg(feature = "jwt")]
pub mod auth;
#[cfg(feature = "contracts")]
pub mod contract;
pub mod envelope;
pub mod etl;
pub mod event_type;
pub mod jobs;
pub mod json;
pub mod locks;
pub mod manifest;
pub mod names;
pub mod rules;
pub mod service;
#[cfg(feature = "jwt")]
pub mod signing;
pub mod time;
pub mod trace;
