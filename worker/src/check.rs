//! `spine-worker check`: is every dependency reachable and what it should be?
//! Prints one line per component and fails when a required one is not.

use crate::config::{nats_address, Config};
use crate::db;
use anyhow::{bail, Context};
use tokio::io::AsyncBufReadExt;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let version = postgres(config).await?;
    println!("postgres: ok (spine {version})");
    let info = nats_info(&config.nats_url).await?;
    if !info.contains("\"jetstream\":true") {
        bail!("nats: server at {} has JetStream disabled", config.nats_url);
    }
    println!("nats: ok (jetstream enabled)");
    match &config.meili_url {
        Some(url) => println!("meilisearch: configured at {url}"),
        None => println!("meilisearch: off (MEILI_URL unset; search sync disabled)"),
    }
    Ok(())
}

async fn postgres(config: &Config) -> anyhow::Result<String> {
    let (client, connection) = db::connect(&config.database).await?;
    let task = tokio::spawn(connection);
    let version: String = client
        .query_one("SELECT spine.version()", &[])
        .await
        .context("spine.version() failed: is the extension installed?")?
        .get(0);
    drop(client);
    task.abort();
    Ok(version)
}

/// The INFO line a NATS server sends first on every connection.
async fn nats_info(url: &str) -> anyhow::Result<String> {
    let addr = nats_address(url)?;
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .with_context(|| format!("nats: timed out connecting to {addr}"))?
    .with_context(|| format!("nats: cannot connect to {addr}"))?;
    let mut line = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut line)
        .await?;
    match line.strip_prefix("INFO ") {
        Some(info) => Ok(info.to_string()),
        None => bail!("nats: {addr} did not greet with INFO (got {line:?})"),
    }
}
