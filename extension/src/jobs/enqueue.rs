//! `spine.enqueue`: one job, on the hot path of every producer. A call is a
//! few checks in Rust and one INSERT whose plan the backend keeps; the queue
//! check rides in that INSERT (it selects from `spine.queues`), so an enqueue
//! into a queue that exists and admits the caller costs one statement. Only a
//! refused enqueue, or one with an idempotency key, takes the slower SQL path
//! (`spine.check_enqueue_allowed`, `spine.enqueue_keyed` in `sql/jobs.sql`).

use crate::error::{internal, SpineError};
use crate::spi_ext::{one_prepared, run_prepared};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::nullable::Nullable;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::BuiltinOid::{BOOLOID, INT4OID, JSONBOID, TEXTOID, TIMESTAMPTZOID, UUIDOID};
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use std::ffi::CStr;

/// A jsonb argument handed on to the INSERT as it came: converting it to a
/// `serde_json::Value` and back would print and parse the whole payload twice.
pub struct JsonbDatum(pg_sys::Datum);

impl FromDatum for JsonbDatum {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then_some(JsonbDatum(datum))
    }
}

impl IntoDatum for JsonbDatum {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

// SAFETY: unboxed with FromDatum above, as pgrx does for its own argument types.
unsafe impl<'fcx> ArgAbi<'fcx> for JsonbDatum {
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
unsafe impl SqlTranslatable for JsonbDatum {
    const TYPE_IDENT: &'static str = "spine::jobs::enqueue::JsonbDatum";
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
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
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'enqueue_wrapper';
COMMENT ON FUNCTION spine.enqueue(text, jsonb, spine.job_priority, timestamptz, text, integer) IS
    'Enqueues a job owned by auth.uid(); with an idempotency key already live or archived for this queue and owner, returns that job''s id and enqueues nothing.';
"#,
    requires = ["jobs"]
)]
fn enqueue(
    queue: Option<&str>,
    payload: Option<JsonbDatum>,
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
    if let Some(key) = idempotency_key {
        check_allowed(queue)?;
        return one_prepared::<i64>(
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
        .map_err(internal("jobs: enqueue with key"))?
        .ok_or_else(|| {
            SpineError::Internal {
                context: "jobs: enqueue with key",
                message: "no job id".into(),
            }
            .into()
        });
    }
    // The common case: no key, so no speculative insertion; the queue's row decides
    // whether the caller may enqueue, in the same statement.
    let insert =
        || {
            one_prepared::<i64>(
            "INSERT INTO spine.jobs (queue, owner_id, priority, payload, run_at, max_attempts) \
             SELECT q.name, $2, $3::spine.job_priority, $4, coalesce($5, now()), $6 \
               FROM spine.queues q \
              WHERE q.name = $1 AND (q.user_enqueue OR $7) \
             RETURNING id",
            &[TEXTOID, UUIDOID, TEXTOID, JSONBOID, TIMESTAMPTZOID, INT4OID, BOOLOID],
            &[
                queue.into(),
                owner.into(),
                priority.as_str().into(),
                JsonbDatum(payload.0).into(),
                run_at.into(),
                max_attempts.into(),
                crate::caller::caller_is_privileged().into(),
            ],
        )
        .map_err(internal("jobs: enqueue"))
        };
    if let Some(id) = insert()? {
        return Ok(id);
    }
    // Refused: say why (42704 unknown queue, 42501 not open to users). A queue
    // created or opened since the INSERT's snapshot passes, and the INSERT runs again.
    check_allowed(queue)?;
    Ok(insert()?.ok_or(SpineError::Conflict(format!(
        "queue \"{}\" changed while enqueueing; retry",
        queue.unwrap_or_default()
    )))?)
}

/// Raises 42704 for an unknown queue and 42501 for a queue closed to the caller.
fn check_allowed(queue: Option<&str>) -> Result<(), SpineError> {
    run_prepared(
        "SELECT spine.check_enqueue_allowed($1)",
        &[TEXTOID],
        &[queue.into()],
    )
    .map_err(internal("jobs: queue check"))
}
