//! The function host's tests, in one binary: the sandbox engine on its own, and
//! the HTTP host against the dev stack's Postgres.

mod embeddings;
mod engine;
mod entities;
mod host;
mod http;
mod public;
mod streams;
