//! Jobs: the queue itself is SQL (`sql/jobs.sql`: tables, leases, fetch with
//! SKIP LOCKED); the decisions that are logic rather than data movement live here —
//! retry delays, and validation of queue names and cron schedules — and so does
//! the single-job enqueue ([`enqueue`]), the call producers make most.

pub mod enqueue;
mod keys;

use crate::error::SpineError;
use pgrx::datum::Interval;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use spine_core::jobs::{backoff, cron};
use spine_core::names;

/// Longest queue or schedule name.
const MAX_NAME_LEN: usize = names::QUEUE.max_len;

/// Queue and schedule names: lowercase letters, digits, `_`, `-` and `.`, starting
/// with a letter (they appear in logs, metrics labels and pg_cron job names).
pub fn check_name(name: Option<&str>) -> Result<(), SpineError> {
    let invalid = |reason: String| SpineError::InvalidParameter {
        name: "queue name",
        reason,
    };
    let name = name.ok_or_else(|| invalid("must not be NULL".into()))?;
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "\"{name}\" must be 1 to {MAX_NAME_LEN} bytes"
        )));
    }
    if !names::QUEUE.accepts(name) {
        return Err(invalid(format!(
            "\"{name}\" may hold lowercase letters, digits, _ - . and must start with a letter"
        )));
    }
    Ok(())
}

/// Raises 22023 unless `name` is a valid queue or schedule name.
#[pg_extern(immutable, parallel_safe)]
pub fn check_queue_name(name: Option<&str>) -> Result<bool, ErrorReport> {
    check_name(name)?;
    Ok(true)
}

/// Raises 22023 with the offending field unless `schedule` is a valid pg_cron schedule.
#[pg_extern(immutable, parallel_safe)]
pub fn check_cron(schedule: Option<&str>) -> Result<bool, ErrorReport> {
    let schedule = schedule.ok_or_else(|| SpineError::InvalidParameter {
        name: "cron",
        reason: "must not be NULL".into(),
    })?;
    cron::validate(schedule).map_err(|reason| SpineError::InvalidParameter {
        name: "cron",
        reason: format!("\"{schedule}\" {reason}"),
    })?;
    Ok(true)
}

/// The delay before the next attempt of `job_id` after its failed attempt `attempt`.
#[pg_extern(immutable, parallel_safe)]
pub fn retry_backoff(job_id: i64, attempt: i32) -> Interval {
    let delay = backoff::retry_delay(job_id, attempt);
    Interval::from_micros(delay.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn queue_names() {
        for ok in ["emails", "http", "function", "a.b-c_d9"] {
            assert!(check_name(Some(ok)).is_ok(), "{ok}");
        }
        for bad in ["", "Emails", "9lives", "a b", "a;drop", &"x".repeat(64)] {
            assert!(check_name(Some(bad)).is_err(), "{bad}");
        }
        assert!(check_name(None).is_err());
    }
}
