//! Job-queue logic that is not SQL: retry backoff, pg_cron schedule validation,
//! the payloads of the jobs Spine itself enqueues, and runners' wake-ups.

pub mod backoff;
pub mod cron;
pub mod payloads;
pub mod wakeup;
