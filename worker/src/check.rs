//! `spine-worker check`: is every dependency reachable and what it should be?
//! Prints what it found on stdout, one line per finding, and each failure on
//! stderr; it goes on after a failure, so that one run shows every problem, and
//! fails (exit 1) when a required component did.
//!
//! NATS is reached the way the relay reaches it ([`spine_nats`]: TLS,
//! credentials), and asked for its JetStream account: usage and limits, and
//! whether the relay's stream exists. A server without JetStream fails.

use crate::config::Config;
use crate::db;
use anyhow::Context;
use async_nats::jetstream;
use async_nats::jetstream::context::{GetStreamErrorKind, RequestErrorKind};
use spine_nats::account::{account, bytes, limit, AccountError};

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    match postgres(config).await {
        Ok(version) => println!("postgres: ok (spine {version})"),
        Err(e) => {
            eprintln!("postgres: FAILED: {e:#}");
            failed.push("postgres");
        }
    }
    match nats(config).await {
        Ok(lines) => lines.iter().for_each(|l| println!("nats: {l}")),
        Err(e) => {
            eprintln!("nats: FAILED: {e:#}");
            failed.push("nats");
        }
    }
    match &config.meili_url {
        Some(url) => println!("meilisearch: configured at {url}"),
        None => println!("meilisearch: off (MEILI_URL unset; search sync disabled)"),
    }
    anyhow::ensure!(failed.is_empty(), "check failed: {}", failed.join(", "));
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
    use spine_db::version::{compatibility, Compatibility};
    match compatibility(&version, env!("CARGO_PKG_VERSION")) {
        Compatibility::Same => Ok(version),
        Compatibility::Previous => Ok(format!(
            "{version}, one minor version behind this worker: run ALTER EXTENSION spine UPDATE"
        )),
        verdict => Err(spine_db::version::VersionError::Incompatible {
            process: "spine-worker",
            ours: env!("CARGO_PKG_VERSION").into(),
            database: version,
            verdict,
        }
        .into()),
    }
}

/// What the NATS server says, as lines to print; an error when it cannot be
/// reached, refuses the credentials, or has no JetStream for this account.
async fn nats(config: &Config) -> anyhow::Result<Vec<String>> {
    let url = &config.nats;
    let client = url.connect().await?;
    let server = client.server_info();
    let js = jetstream::new(client);
    let account = account(&js).await.map_err(|e| match e {
        AccountError::Request(e) if e.kind() == RequestErrorKind::NoResponders => anyhow::anyhow!(
            "the server at {url} has JetStream disabled (start nats-server with -js, or a \
             jetstream block in its configuration)"
        ),
        AccountError::Request(e) => {
            anyhow::Error::new(e).context(format!("asking {url} for its JetStream account"))
        }
        AccountError::JetStream(e) => {
            anyhow::anyhow!("JetStream at {url} refuses this account: {e}")
        }
    })?;
    let limits = &account.limits;
    let mut lines = vec![
        format!("ok (server {} at {url}, jetstream enabled)", server.version),
        format!(
            "jetstream: memory {} of {}, storage {} of {}, streams {} of {}, consumers {}",
            bytes(account.memory),
            limit(limits.max_memory, bytes),
            bytes(account.storage),
            limit(limits.max_storage, bytes),
            account.streams,
            limit(limits.max_streams, |n| n.to_string()),
            account.consumers,
        ),
    ];
    for stream in config.relay.streams.streams() {
        lines.push(stream_line(&js, &stream.name).await?);
    }
    Ok(lines)
}

/// One of the relay's streams: its messages, size and subjects, or its absence.
async fn stream_line(js: &jetstream::Context, name: &str) -> anyhow::Result<String> {
    Ok(match js.get_stream(name).await {
        Ok(stream) => {
            let info = stream.cached_info();
            format!(
                "stream {name}: {} messages, {}, subjects {}",
                info.state.messages,
                bytes(info.state.bytes),
                info.config.subjects.join(" ")
            )
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(err)
                if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                format!("stream {name}: absent (the relay creates it when it starts)")
            }
            _ => return Err(anyhow::Error::new(e).context(format!("asking for stream {name}"))),
        },
    })
}
