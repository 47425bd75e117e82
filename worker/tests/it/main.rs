//! The worker's integration tests against real processes (spine-worker, a private
//! nats-server per test, Meilisearch when present, the dev stack's Postgres), in
//! one binary; `cli` needs none of them. The tests that stop or restart Postgres have binaries of their own
//! (`jobs_crash`, `jobs_outage`, `relay_crash`): cargo runs test binaries one
//! after another, so nothing else runs while they do.

mod check;
mod cli;
mod embeddings;
mod ingress;
mod jobs;
mod net;
mod plugins;
mod relay;
mod search;
mod services;
mod webhooks;
