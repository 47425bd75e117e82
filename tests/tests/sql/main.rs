//! The extension's SQL surface against the real dev stack, one module per domain,
//! in one test binary (one link step instead of one per file; tests of different
//! domains run concurrently, so each makes its own queues, sinks and users).
//!
//! The tests that stop or restart Postgres live in the worker's own binaries
//! (`worker/tests/{jobs_crash,jobs_outage,relay_crash}.rs`): cargo runs test
//! binaries one after another, so nothing else runs while they do.

mod audit;
mod contracts;
mod data;
mod docs;
mod events;
mod foundation;
mod jobs;
mod partitions;
mod policy;
mod rls_matrix;
mod rules;
mod vault;
mod webhooks;
