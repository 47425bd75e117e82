//! The one listener to written events: `_PG_init` registers the rules engine
//! here, so the outbox can run rules in the emitting transaction without
//! depending on them (rules emit events, so events cannot import rules).
//!
//! This is how Postgres wires extensions into its own code paths
//! (`ExecutorStart_hook`, `RegisterXactCallback`); `invalidation::register()`
//! does the same for cache invalidation.

use super::Emitted;
use crate::error::SpineError;
use std::sync::OnceLock;

/// Called once per [`super::emit_events`], after the INSERT, with the events in
/// the order written. An error aborts the emitting transaction.
pub type Listener = fn(&[Emitted<'_>]) -> Result<(), SpineError>;

static LISTENER: OnceLock<Listener> = OnceLock::new();

/// Registers the listener; called by `_PG_init`. A second call is ignored (a
/// backend loads the library once).
pub fn set(listener: Listener) {
    let _ = LISTENER.set(listener);
}

/// Hands written events to the listener, if one is registered.
pub fn notify(events: &[Emitted<'_>]) -> Result<(), SpineError> {
    match LISTENER.get() {
        Some(listener) => listener(events),
        None => Ok(()),
    }
}
