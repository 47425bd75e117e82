//! Backend-local copies of small tables (compiled rules, queues) and how they
//! learn that the table changed.
//!
//! A backend is one thread, so a copy is a `thread_local!`. A change of a watched
//! table fires its statement trigger ([`cached_table_changed`]), which queues a
//! relcache invalidation of the table (`CacheInvalidateRelcacheByRelid`).
//! PostgreSQL delivers it to every backend when the change commits (and to this
//! one at its next command), and the callback registered in `_PG_init` marks the
//! copy stale. So a reader never uses a copy older than its transaction's start,
//! and an unchanged table costs one flag check. Spine's own writers run their
//! statements to the end for this (see [`crate::spi_ext`]): a row limit would
//! stop them before the trigger.

use crate::error::{internal, SpineError};
use pgrx::prelude::*;
use std::cell::Cell;

/// The tables backends keep copies of.
#[derive(Clone, Copy)]
pub enum Watched {
    Rules = 0,
    Queues = 1,
    Schemas = 2,
    SchemaBindings = 3,
}

const TABLES: [&str; 4] = [
    "spine.rules",
    "spine.queues",
    "spine.schemas",
    "spine.schema_bindings",
];

thread_local! {
    static OIDS: [Cell<pg_sys::Oid>; 4] = const { [const { Cell::new(pg_sys::InvalidOid) }; 4] };
    static STALE: [Cell<bool>; 4] = const { [const { Cell::new(false) }; 4] };
}

/// Relcache invalidation callback: an invalidation of a watched table (or a full
/// reset, relid 0) makes its copy stale. A table whose oid is not known yet counts
/// as matching anything.
#[pg_guard]
unsafe extern "C-unwind" fn relcache_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    OIDS.with(|oids| {
        STALE.with(|stale| {
            for (oid, stale) in oids.iter().zip(stale) {
                let known = oid.get();
                if relid == pg_sys::InvalidOid || known == pg_sys::InvalidOid || relid == known {
                    stale.set(true);
                    // The table may have been recreated (DROP/CREATE EXTENSION):
                    // look it up again.
                    oid.set(pg_sys::InvalidOid);
                }
            }
        })
    });
}

/// Called from `_PG_init`, once per backend.
pub fn register() {
    // SAFETY: registering a callback is what _PG_init is for; it lives as long as
    // the backend.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_changed), pg_sys::Datum::from(0));
    }
}

// Qualified: callers include spine.enqueue, which runs with the caller's search_path.
fn table_oid(table: Watched) -> Result<pg_sys::Oid, SpineError> {
    let i = table as usize;
    let known = OIDS.with(|o| o[i].get());
    if known != pg_sys::InvalidOid {
        return Ok(known);
    }
    let oid = Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid",
        &[TABLES[i].into()],
    )
    .map_err(internal("invalidation: table oid"))?
    .unwrap_or(pg_sys::InvalidOid);
    OIDS.with(|o| o[i].set(oid));
    Ok(oid)
}

/// True when `table` may have changed since the previous call (the first call
/// after a change); the caller then drops its copy.
pub fn changed_since_last_look(table: Watched) -> Result<bool, SpineError> {
    // Known oid first: until it is, every invalidation counts as this table's.
    table_oid(table)?;
    // A backend takes in other sessions' invalidations when a transaction starts or
    // it acquires a lock anew; inside a long transaction that already holds its
    // locks, a change committed meanwhile would wait. Checking costs a read of a
    // shared counter when nothing is pending.
    // SAFETY: processes pending invalidation messages, as lock acquisition does.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    Ok(STALE.with(|s| s[table as usize].replace(false)))
}

/// Statement trigger on each watched table (`sql/jobs.sql`, `sql/rules.sql`),
/// enabled ALWAYS: changes made with plain SQL reach the backends' copies too.
#[pg_trigger]
fn cached_table_changed<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, SpineError> {
    let relid = trigger.relid().map_err(|e| SpineError::Internal {
        context: "invalidation: trigger",
        message: e.to_string(),
    })?;
    // SAFETY: queues a relcache invalidation for the trigger's own table.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    Ok(None)
}
