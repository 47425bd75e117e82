//! Spine's worker: one binary, several restartable loops around the database.
//!
//! - [`config`]: settings from environment variables, parsed once.
//! - [`db`]: connecting to Postgres.
//! - [`check`]: `spine-worker check`, which verifies every dependency is reachable.
//!
//! The outbox relay to NATS JetStream, search sync, job runner and webhook
//! delivery arrive with their issues; `run` is where their loops are started.

pub mod check;
pub mod config;
pub mod db;

use config::Config;
use std::future::Future;

/// Runs the worker until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (client, connection) = db::connect(&config.database_url).await?;
    let conn_task = tokio::spawn(connection);
    let version: String = client
        .query_one("SELECT spine.version()", &[])
        .await?
        .get(0);
    tracing::info!(%version, "connected to Postgres; no loops are enabled yet");
    shutdown.await;
    tracing::info!("shutting down");
    drop(client);
    conn_task.abort();
    Ok(())
}
