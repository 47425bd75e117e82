//! Job-queue logic that is not SQL: retry backoff, pg_cron schedule validation,
//! and the payloads of the jobs Spine itself enqueues.

pub mod backoff;
pub mod cron;
pub mod payloads;
