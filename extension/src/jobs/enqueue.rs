//! `spine.enqueue`: one job, on the hot path of every producer. A call is a
//! few checks in Rust and one `INSERT … VALUES` whose plan the backend keeps.
//! Whether the queue exists and admits the caller comes from a per-backend copy
//! of `spine.queues` (refreshed when the table changes, see
//! [`crate::invalidation`]): reading the table in the INSERT cost more than the
//! rest of the call (measured: ~20 µs of ~200 µs). Only a refused enqueue, or one
//! with an idempotency key, takes the SQL path (`spine.check_enqueue_allowed`,
//! `spine.enqueue_keyed` in `sql/jobs.sql`).
//!
//! Unlike Spine's other SECURITY DEFINER functions, `spine.enqueue` has no
//! `SET search_path`: saving and restoring it cost ~16 µs a call (measured with
//! pgbench). Every statement it runs names its schemas and operators
//! (`spine.`, `pg_catalog.`, `OPERATOR(pg_catalog.=)`), and the SQL functions it
//! calls set their own search_path, so a caller's search_path cannot redirect it.

use crate::error::{internal, SpineError};
use crate::invalidation::{self, Watched};
use crate::spi_ext::{one_prepared, run_prepared};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::nullable::Nullable;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::BuiltinOid::{INT4OID, JSONBOID, TEXTOID, TIMESTAMPTZOID, UUIDOID};
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::marker::PhantomData;

/// A jsonb argument handed on to the INSERT as it came: converting it to a
/// `serde_json::Value` and back would print and parse the whole payload twice.
/// Borrowed from the call (`'fcx`), so it cannot outlive the argument it points to.
pub struct JsonbDatum<'fcx>(pg_sys::Datum, PhantomData<&'fcx ()>);

impl FromDatum for JsonbDatum<'_> {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then_some(JsonbDatum(datum, PhantomData))
    }
}

impl IntoDatum for JsonbDatum<'_> {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

// SAFETY: unboxed with FromDatum above, as pgrx does for its own argument types.
unsafe impl<'fcx> ArgAbi<'fcx> for JsonbDatum<'fcx> {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: forwarded from the caller's contract.
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

// SAFETY: the datum is a jsonb, as the SQL declaration says.
unsafe impl SqlTranslatable for JsonbDatum<'_> {
    const TYPE_IDENT: &'static str = "spine::jobs::enqueue::JsonbDatum";
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    // An argument type only: it borrows the call's datum.
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Err(ReturnsError::Datum);
}

/// The label of a `spine.job_priority` value (an enum is passed as its label's oid).
fn priority_label(value: pg_sys::Oid) -> String {
    // SAFETY: enum_out reads the pg_enum row of a value that came in as this enum
    // type, and returns a palloc'd C string.
    unsafe {
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::enum_out,
            &[Some(pg_sys::Datum::from(value))],
        )
        .map(|out| {
            CStr::from_ptr(out.cast_mut_ptr())
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default()
    }
}

/// Enqueues a job owned by `auth.uid()`; with an idempotency key already live or
/// archived for this queue and owner, returns that job's id and enqueues nothing.
#[pg_extern(
    sql = r#"
CREATE FUNCTION spine.enqueue(
    queue text,
    payload jsonb,
    priority spine.job_priority DEFAULT 'interactive',
    run_at timestamptz DEFAULT now(),
    idempotency_key text DEFAULT NULL,
    max_attempts integer DEFAULT 5
) RETURNS bigint
VOLATILE SECURITY DEFINER
LANGUAGE c
AS 'MODULE_PATHNAME', 'enqueue_wrapper';
COMMENT ON FUNCTION spine.enqueue(text, jsonb, spine.job_priority, timestamptz, text, integer) IS
    'Enqueues a job owned by auth.uid(); with an idempotency key already live or archived for this queue and owner, returns that job''s id and enqueues nothing.';
"#,
    requires = ["jobs"]
)]
fn enqueue(
    queue: Option<&str>,
    payload: Option<JsonbDatum<'_>>,
    priority: Option<pg_sys::Oid>,
    run_at: Option<TimestampWithTimeZone>,
    idempotency_key: Option<&str>,
    max_attempts: Option<i32>,
) -> Result<i64, ErrorReport> {
    let payload = payload.ok_or_else(|| {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "payload must not be NULL",
            "spine.enqueue",
        )
        .set_hint("Pass '{}'::jsonb for a job without a payload.")
    })?;
    let priority = priority_label(priority.ok_or(SpineError::NullArgument("priority"))?);
    let max_attempts = match max_attempts {
        Some(n) if n >= 1 => n,
        other => {
            return Err(ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "max_attempts must be at least 1 (got {})",
                    other.map_or("NULL".to_string(), |n| n.to_string())
                ),
                "spine.enqueue",
            ))
        }
    };
    let owner = crate::caller::request_user()?;
    // A job without an owner is a system job, which handlers run with the worker's
    // reach (a function acts for the payload's actor): only privileged callers make
    // those, not a token that names no user.
    if owner.is_none() && !crate::caller::caller_is_privileged() {
        return Err(SpineError::PermissionDenied(
            "jobs belong to a user: request.jwt.claims has no sub".into(),
        )
        .into());
    }
    if let Some(queue) = queue {
        if crate::contracts::queue_has_contract(queue)? {
            // SAFETY: the datum is this call's jsonb argument, not NULL.
            let value = unsafe { JsonB::from_datum(payload.0, false) };
            crate::contracts::check_payload(queue, &value.map_or(Value::Null, |j| j.0))?;
        }
    }
    let id = match idempotency_key {
        Some(key) => {
            check_allowed(queue)?;
            one_prepared::<i64>(
                "SELECT spine.enqueue_keyed($1, $2, $3, $4::spine.job_priority, $5, $6, $7)",
                &[
                    TEXTOID,
                    UUIDOID,
                    JSONBOID,
                    TEXTOID,
                    TIMESTAMPTZOID,
                    TEXTOID,
                    INT4OID,
                ],
                &[
                    queue.into(),
                    owner.into(),
                    payload.into(),
                    priority.as_str().into(),
                    run_at.into(),
                    key.into(),
                    max_attempts.into(),
                ],
            )
        }
        // The common case: no key, so no speculative insertion.
        None => {
            let queue_name = queue.unwrap_or_default();
            let admitted = match open_to_users(queue_name)? {
                Some(open) => open || crate::caller::caller_is_privileged(),
                None => false,
            };
            if !admitted {
                // Says why: 42704 unknown queue, 42501 closed to users.
                check_allowed(queue)?;
            }
            wake_runners(queue_name, run_at)?;
            one_prepared::<i64>(
                "INSERT INTO spine.jobs (queue, owner_id, priority, payload, run_at, max_attempts) \
                 VALUES ($1, $2, $3::spine.job_priority, $4, coalesce($5, pg_catalog.now()), $6) \
                 RETURNING id",
                &[TEXTOID, UUIDOID, TEXTOID, JSONBOID, TIMESTAMPTZOID, INT4OID],
                &[
                    queue_name.into(),
                    owner.into(),
                    priority.as_str().into(),
                    payload.into(),
                    run_at.into(),
                    max_attempts.into(),
                ],
            )
        }
    }
    .map_err(internal("jobs: enqueue"))?;
    Ok(id.ok_or_else(|| SpineError::Internal {
        context: "jobs: enqueue",
        message: "no job id".into(),
    })?)
}

/// Wakes the queue's idle runners when the transaction commits: what
/// `spine.wake_runners` does in SQL, calling `pg_notify` directly instead of
/// through SPI on the producers' hot path. Postgres sends a transaction's
/// identical notifications once, and none on rollback; an error later in this
/// call rolls the notification back too.
fn wake_runners(queue: &str, run_at: Option<TimestampWithTimeZone>) -> Result<(), SpineError> {
    let channel = crate::gucs::jobs_channel()?;
    // SAFETY: reads the transaction's start time (what now() returns).
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let later = run_at.is_some_and(|t| pg_sys::TimestampTz::from(t) > now);
    let payload = spine_core::jobs::wakeup::payload(queue, later);
    // SAFETY: pg_notify takes two text arguments and returns void; the datums are
    // built here from valid strings and live through the call.
    unsafe {
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::pg_notify,
            &[channel.as_str().into_datum(), payload.as_str().into_datum()],
        );
    }
    Ok(())
}

thread_local! {
    /// Queue name → whether users may enqueue into it; only queues seen to exist.
    static QUEUES: RefCell<HashMap<String, bool>> = RefCell::new(HashMap::new());
}

/// Whether users may enqueue into `queue`, or None when it does not exist (as of
/// this transaction: the copy is refreshed whenever `spine.queues` changes).
fn open_to_users(queue: &str) -> Result<Option<bool>, SpineError> {
    // Under REPEATABLE READ or SERIALIZABLE the table is read with the transaction's
    // snapshot, which may predate what the copy holds: read it, and keep nothing.
    let snapshot_bound = crate::spi_ext::snapshot_per_transaction();
    if !snapshot_bound {
        if invalidation::changed_since_last_look(Watched::Queues)? {
            QUEUES.with(|q| q.borrow_mut().clear());
        }
        if let Some(open) = QUEUES.with(|q| q.borrow().get(queue).copied()) {
            return Ok(Some(open));
        }
    }
    let open = one_prepared::<bool>(
        "SELECT user_enqueue FROM spine.queues WHERE name OPERATOR(pg_catalog.=) $1",
        &[TEXTOID],
        &[queue.into()],
    )
    .map_err(internal("jobs: queue lookup"))?;
    if let (Some(open), false) = (open, snapshot_bound) {
        QUEUES.with(|q| {
            let mut q = q.borrow_mut();
            if q.len() >= MAX_CACHED_QUEUES {
                q.clear();
            }
            q.insert(queue.to_string(), open);
        });
    }
    Ok(open)
}

/// Most queues one backend keeps; beyond it the copy starts over.
const MAX_CACHED_QUEUES: usize = 10_000;

/// Raises 42704 for an unknown queue and 42501 for a queue closed to the caller.
fn check_allowed(queue: Option<&str>) -> Result<(), SpineError> {
    run_prepared(
        "SELECT spine.check_enqueue_allowed($1)",
        &[TEXTOID],
        &[queue.into()],
    )
    .map_err(internal("jobs: queue check"))
}
