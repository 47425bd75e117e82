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
use async_nats::jetstream::context::{GetStreamErrorKind, RequestErrorKind};
use async_nats::jetstream::{self, response::Response};

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

/// What check reports of `$JS.API.INFO`. async-nats 0.51 has
/// `Context::query_account`, but its `Account` requires `reserved_memory` and
/// `reserved_storage`, which nats-server 2.9 (Debian 12's) does not send, so it
/// fails to read that server's answer; this reads the fields every version sends.
#[derive(Debug, serde::Deserialize)]
struct Account {
    memory: u64,
    storage: u64,
    streams: u64,
    consumers: u64,
    limits: Limits,
}

/// An account's limits; -1 means unlimited.
#[derive(Debug, serde::Deserialize)]
struct Limits {
    max_memory: Option<i64>,
    max_storage: Option<i64>,
    max_streams: Option<i64>,
}

enum AccountError {
    Request(jetstream::context::RequestError),
    JetStream(jetstream::Error),
}

async fn account(js: &jetstream::Context) -> Result<Account, AccountError> {
    match js
        .request("INFO", &())
        .await
        .map_err(AccountError::Request)?
    {
        Response::Ok(account) => Ok(account),
        Response::Err { error } => Err(AccountError::JetStream(error)),
    }
}

/// A JetStream limit: none or negative means unlimited.
fn limit(value: Option<i64>, show: impl Fn(u64) -> String) -> String {
    match value {
        Some(n) if n >= 0 => show(n as u64),
        _ => "unlimited".into(),
    }
}

/// Bytes in binary units, one decimal: `0 B`, `512 B`, `1.5 KiB`, `11.0 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nats-server 2.9's answer (no reserved_memory) reads, limits -1 included.
    #[test]
    fn account_info_of_nats_2_9_reads() {
        let json = r#"{"type":"io.nats.jetstream.api.v1.account_info_response","memory":0,
            "storage":0,"streams":0,"consumers":0,"limits":{"max_memory":-1,"max_storage":-1,
            "max_streams":-1,"max_consumers":-1,"max_ack_pending":-1,"memory_max_stream_bytes":-1,
            "storage_max_stream_bytes":-1,"max_bytes_required":false},"api":{"total":0,"errors":0}}"#;
        let account: Response<Account> = serde_json::from_str(json).unwrap();
        let Response::Ok(account) = account else {
            panic!("an error")
        };
        assert_eq!(limit(account.limits.max_memory, bytes), "unlimited");
        let error = r#"{"type":"io.nats.jetstream.api.v1.account_info_response",
            "error":{"code":503,"err_code":10039,"description":"jetstream not enabled for account"}}"#;
        let error: Response<Account> = serde_json::from_str(error).unwrap();
        assert!(matches!(error, Response::Err { .. }));
    }

    #[test]
    fn sizes_read_as_a_person_would() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(11 << 30), "11.0 GiB");
        assert_eq!(limit(None, bytes), "unlimited");
        assert_eq!(limit(Some(-1), bytes), "unlimited");
        assert_eq!(limit(Some(3), |n| n.to_string()), "3");
    }
}
