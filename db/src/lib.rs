//! How every Spine process connects to Postgres.
//!
//! - [`config`]: `DATABASE_URL` read once (URL or `key=value`), `sslmode` as libpq
//!   reads it, and the redacted form every message uses ([`DbConfig`], [`redact`]).
//! - [`tls`]: the rustls (ring) connector for each `sslmode`.
//! - [`version`]: which extension versions a process works with, checked at start.
//! - [`pool`]: sessions for short transactions (deadpool), with timeouts and a
//!   status for metrics ([`Pool`], [`Session`], [`PoolStatus`]).
//!
//! A process parses its URL into a [`DbConfig`] at start-up, then connects with
//! [`DbConfig::connect`] (a dedicated connection, e.g. for LISTEN) or borrows from
//! a [`Pool`]. No message from this crate contains a password: they name the
//! database by [`DbConfig::redacted`].

pub mod config;
pub mod pool;
pub mod tls;
pub mod version;

pub use config::{RootCerts, SslMode};
pub use pool::{Pool, PoolOptions, PoolStatus, Session};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The stream of a connection: TLS or plain, as the server and `sslmode` agreed.
pub type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// A connection's driver: await it (or poll its messages, for LISTEN) while the
/// [`Client`] is in use.
pub type Connection = tokio_postgres::Connection<Socket, TlsStream>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection string does not parse; the message never contains a value
    /// that could be a password.
    #[error("invalid connection string: {0}")]
    Config(String),
    /// The root certificates could not be loaded, or TLS could not be set up.
    #[error("{0}")]
    Tls(String),
    /// Connecting failed; `hint` says in words why a certificate was refused.
    #[error("connecting to {target}: {}{hint}", chain(cause))]
    Connect {
        target: String,
        cause: tokio_postgres::Error,
        hint: String,
    },
    #[error("connecting to {target}: no connection within {after:?}")]
    ConnectTimeout { target: String, after: Duration },
    #[error("no free database session for {target} within {after:?} ({max} in use)")]
    PoolTimeout {
        target: String,
        after: Duration,
        max: usize,
    },
    #[error("the database pool for {target} is closed")]
    PoolClosed { target: String },
}

impl Error {
    /// The database's error when that is what failed (for its SQLSTATE).
    pub fn as_postgres(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Error::Connect { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

/// A parsed connection string with its TLS connector: cheap to clone, shared by
/// every connection and pool of a process.
#[derive(Clone)]
pub struct DbConfig(Arc<Inner>);

struct Inner {
    pg: tokio_postgres::Config,
    ssl_mode: SslMode,
    roots: RootCerts,
    tls: MakeRustlsConnect,
    redacted: String,
}

impl DbConfig {
    /// Parses `url` (`postgres://…`, `postgresql://…` or `key=value …`) and sets
    /// up TLS for its `sslmode` (reading `sslrootcert` when the mode verifies).
    pub fn parse(url: &str) -> Result<Self, Error> {
        Self::parse_as(url, None)
    }

    /// [`DbConfig::parse`] for a Spine process: its sessions carry
    /// `application_name` = `process` (e.g. `spine-worker/0.2.0`) unless the URL
    /// sets one, so `pg_stat_activity` (and `spine status`, `spine doctor`) can
    /// tell which processes, of which versions, use the database.
    pub fn parse_for_process(url: &str, process: &str) -> Result<Self, Error> {
        Self::parse_as(url, Some(process))
    }

    fn parse_as(url: &str, application_name: Option<&str>) -> Result<Self, Error> {
        let mut parsed = config::parse(url)?;
        if let (Some(name), None) = (application_name, parsed.pg.get_application_name()) {
            parsed.pg.application_name(name);
        }
        let redacted = config::redacted(&parsed);
        let tls = tls::connector(parsed.ssl_mode, &parsed.roots)
            .map_err(|e| Error::Tls(format!("{redacted}: {e}")))?;
        Ok(DbConfig(Arc::new(Inner {
            pg: parsed.pg,
            ssl_mode: parsed.ssl_mode,
            roots: parsed.roots,
            tls,
            redacted,
        })))
    }

    /// `postgres://user@host:port/db?sslmode=…`: what messages and logs show.
    pub fn redacted(&self) -> &str {
        &self.0.redacted
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.0.ssl_mode
    }

    /// The settings as tokio-postgres holds them (its `Debug` hides the password).
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.0.pg
    }

    /// A dedicated connection; the caller drives the [`Connection`] (spawn it, or
    /// poll its messages for LISTEN) for as long as it uses the [`Client`].
    pub async fn connect(&self) -> Result<(Client, Connection), Error> {
        let (client, connection) = self
            .0
            .pg
            .connect(self.0.tls.clone())
            .await
            .map_err(|e| self.connect_error(e))?;
        tracing::debug!(database = %self.0.redacted, "connected");
        Ok((client, connection))
    }

    pub(crate) fn connect_error(&self, cause: tokio_postgres::Error) -> Error {
        Error::Connect {
            target: self.0.redacted.clone(),
            hint: tls::hint(&cause, self.0.ssl_mode, &self.0.roots),
            cause,
        }
    }

    pub(crate) fn tls(&self) -> MakeRustlsConnect {
        self.0.tls.clone()
    }
}

impl fmt::Display for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.redacted)
    }
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbConfig({})", self.0.redacted)
    }
}

/// `e` and its causes, `: `-separated (tokio-postgres's own `Display` leaves the
/// cause out: "error connecting to server", without "Connection refused").
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// `url` without its password, for a message about a string that may not parse:
/// built from the parsed settings, or `<invalid connection string>`.
pub fn redact(url: &str) -> String {
    match config::parse(url) {
        Ok(parsed) => config::redacted(&parsed),
        Err(_) => "<invalid connection string>".into(),
    }
}
