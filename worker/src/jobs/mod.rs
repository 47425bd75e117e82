//! The job runner's parts: [`handler`] (what a job is and the registry of
//! handlers by queue), the built-in handlers [`http`], [`function`] (edge
//! functions), [`embed`] (entities' embeddings), [`net`] (pg_net's requests), [`webhook`] (database webhooks) and
//! `noop`, and the [`runner`] loop that leases, runs, heartbeats and completes
//! jobs.

pub mod embed;
pub mod function;
pub mod handler;
pub mod http;
pub mod net;
pub mod runner;
pub mod signing;
pub mod webhook;
