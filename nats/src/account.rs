//! The JetStream account a connection acts for: usage and limits, for
//! `spine-worker check` and `spine doctor`.

use async_nats::jetstream::{self, response::Response};

/// What `$JS.API.INFO` reports of an account. async-nats 0.51 has
/// `Context::query_account`, but its `Account` requires `reserved_memory` and
/// `reserved_storage`, which nats-server 2.9 (Debian 12's) does not send, so it
/// fails to read that server's answer; this reads the fields every version sends.
#[derive(Debug, serde::Deserialize)]
pub struct Account {
    pub memory: u64,
    pub storage: u64,
    pub streams: u64,
    pub consumers: u64,
    pub limits: Limits,
}

/// An account's limits; -1 means unlimited.
#[derive(Debug, serde::Deserialize)]
pub struct Limits {
    pub max_memory: Option<i64>,
    pub max_storage: Option<i64>,
    pub max_streams: Option<i64>,
}

pub enum AccountError {
    Request(jetstream::context::RequestError),
    JetStream(jetstream::Error),
}

pub async fn account(js: &jetstream::Context) -> Result<Account, AccountError> {
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
pub fn limit(value: Option<i64>, show: impl Fn(u64) -> String) -> String {
    match value {
        Some(n) if n >= 0 => show(n as u64),
        _ => "unlimited".into(),
    }
}

/// Bytes in binary units, one decimal: `0 B`, `512 B`, `1.5 KiB`, `11.0 GiB`.
pub fn bytes(n: u64) -> String {
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
