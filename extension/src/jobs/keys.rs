//! Keyed enqueue under REPEATABLE READ or SERIALIZABLE.
//!
//! `spine.enqueue_keyed` looks for the key, live or archived, with the
//! transaction's snapshot. A job with the key that was enqueued *and* completed
//! after that snapshot is invisible there: its live row is gone, and its archive
//! row is too new. The check below reads the archive with the latest snapshot
//! instead (as PostgreSQL's foreign-key checks do), so the enqueue fails with a
//! serialization error (40001, which clients retry) rather than enqueue the key a
//! second time.

use crate::error::SpineError;
use pgrx::pg_sys;
use pgrx::prelude::*;

const ARCHIVED: &std::ffi::CStr = c"SELECT 1 FROM spine.jobs_archive a \
    WHERE a.queue OPERATOR(pg_catalog.=) $1 \
      AND spine.job_owner_key(a.owner_id) OPERATOR(pg_catalog.=) spine.job_owner_key($2) \
      AND a.idempotency_key OPERATOR(pg_catalog.=) $3";

/// True when, under REPEATABLE READ or SERIALIZABLE, the archive holds a job with
/// this key as of the latest commits (the caller has already looked with its own
/// snapshot and found none). Always false under READ COMMITTED, where every
/// statement reads the latest commits anyway.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn key_archived_since_snapshot(
    queue: &str,
    owner: Option<pgrx::Uuid>,
    key: &str,
) -> Result<bool, SpineError> {
    if !crate::spi_ext::snapshot_per_transaction() {
        return Ok(false);
    }
    latest_snapshot_finds(queue, owner, key)
}

fn spi_failed(call: &str) -> SpineError {
    SpineError::Internal {
        context: "jobs: key check",
        message: format!("{call} failed"),
    }
}

fn latest_snapshot_finds(
    queue: &str,
    owner: Option<pgrx::Uuid>,
    key: &str,
) -> Result<bool, SpineError> {
    let text = |s: &str| s.into_datum().unwrap_or(pg_sys::Datum::from(0));
    let mut values = [
        text(queue),
        owner
            .and_then(|o| o.into_datum())
            .unwrap_or(pg_sys::Datum::from(0)),
        text(key),
    ];
    let not_null = b' ' as std::ffi::c_char;
    let nulls = [
        not_null,
        if owner.is_some() {
            not_null
        } else {
            b'n' as std::ffi::c_char
        },
        not_null,
    ];
    let mut types = [pg_sys::TEXTOID, pg_sys::UUIDOID, pg_sys::TEXTOID];
    // SAFETY: a plain SPI session (connect, prepare, execute, finish) inside this
    // SQL-callable function; the values and nulls arrays match the plan's three
    // parameters and outlive the call. Errors raised by PostgreSQL unwind through
    // pgrx's guarded bindings.
    unsafe {
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            return Err(spi_failed("SPI_connect"));
        }
        let plan = pg_sys::SPI_prepare(ARCHIVED.as_ptr(), 3, types.as_mut_ptr());
        if plan.is_null() {
            pg_sys::SPI_finish();
            return Err(spi_failed("SPI_prepare"));
        }
        let rc = pg_sys::SPI_execute_snapshot(
            plan,
            values.as_mut_ptr(),
            nulls.as_ptr(),
            pg_sys::GetLatestSnapshot(),
            std::ptr::null_mut(),
            true,
            false,
            1,
        );
        let found = rc == pg_sys::SPI_OK_SELECT as i32 && pg_sys::SPI_processed > 0;
        pg_sys::SPI_finish();
        Ok(found)
    }
}
