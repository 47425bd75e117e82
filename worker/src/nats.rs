//! Connecting to NATS, one way for every part of the worker (the relay and
//! `spine-worker check`), from `NATS_URL`:
//!
//! - `nats://host:port` (port 4222 by default), or `tls://…` for TLS, verified
//!   against the system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` override them);
//!   a server that requires TLS gets it with `nats://` too.
//! - `user:password@` in the URL authenticates with user and password, a lone
//!   `token@` with a token (as the Go client reads them; percent-encoded).
//!   async-nats 0.51 ignores credentials in a URL (nats-io/nats.rs#1623), so they
//!   are taken out here and passed as connect options; the address async-nats sees
//!   (and logs at debug level) has none.
//! - Messages show the URL without its password or token ([`NatsUrl`]'s `Display`).

use anyhow::Context as _;
use async_nats::{ConnectOptions, ServerAddr};
use std::fmt;
use std::time::Duration;

/// How long connecting (TCP, TLS, handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed `NATS_URL`: where to connect and with which credentials.
#[derive(Clone)]
pub struct NatsUrl {
    /// The address without credentials.
    addr: ServerAddr,
    auth: Auth,
}

#[derive(Clone, PartialEq, Eq)]
enum Auth {
    None,
    Token(String),
    UserPassword(String, String),
}

impl NatsUrl {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        // async-nats's own parser (the schemes it accepts, port 4222 by default);
        // its messages never repeat the URL.
        let addr: ServerAddr = url
            .parse()
            .map_err(|e: std::io::Error| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(!addr.host().is_empty(), "has no host");
        let mut plain = addr.into_inner();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let auth = match (plain.username(), plain.password()) {
            ("", None) => Auth::None,
            (token, None) => Auth::Token(decode(token)),
            (user, Some(password)) => Auth::UserPassword(decode(user), decode(password)),
        };
        if plain.port_or_known_default().is_none() {
            let _ = plain.set_port(Some(4222));
        }
        // Cannot fail: the URL has a host (checked above).
        let _ = plain.set_password(None);
        let _ = plain.set_username("");
        let addr = ServerAddr::from_url(plain).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { addr, auth })
    }

    /// The options the worker connects with: the credentials and a connect timeout.
    pub fn options(&self) -> ConnectOptions {
        let options = ConnectOptions::new().connection_timeout(CONNECT_TIMEOUT);
        match &self.auth {
            Auth::None => options,
            Auth::Token(token) => options.token(token.clone()),
            Auth::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.clone())
            }
        }
    }

    /// Connects once (no retry: callers retry with backoff or report).
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        self.options()
            .connect(self.addr.clone())
            .await
            .with_context(|| format!("connecting to NATS at {self}"))
    }
}

/// The URL with the user name but without password or token.
impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.addr.clone().into_inner();
        if let Auth::UserPassword(user, _) = &self.auth {
            let encoded =
                percent_encoding::utf8_percent_encode(user, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            let _ = shown.set_username(&encoded);
        }
        // Url adds a `/` to an empty path; NATS URLs are written without one.
        f.write_str(shown.as_str().trim_end_matches('/'))
    }
}

impl fmt::Debug for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schemes, the default port and credentials are read; the shown URL has no secret.
    #[test]
    fn urls_parse_and_show_no_secret() {
        let u = NatsUrl::parse("nats://h").unwrap();
        assert_eq!(u.to_string(), "nats://h:4222");
        assert!(u.auth == Auth::None);

        let u = NatsUrl::parse("tls://alice:s3cr%40t@h:1/").unwrap();
        assert_eq!(u.to_string(), "tls://alice@h:1");
        assert!(u.auth == Auth::UserPassword("alice".into(), "s3cr@t".into()));
        assert!(!format!("{u:?}").contains("s3cr"));

        let u = NatsUrl::parse("nats://tok3n@127.0.0.1:5").unwrap();
        assert_eq!(u.to_string(), "nats://127.0.0.1:5");
        assert!(u.auth == Auth::Token("tok3n".into()));

        // Without a scheme, nats:// (as async-nats reads it).
        assert_eq!(NatsUrl::parse("h:7").unwrap().to_string(), "nats://h:7");
        let err = NatsUrl::parse("http://u:pw@h").unwrap_err().to_string();
        assert!(err.contains("scheme") && !err.contains("pw"), "{err}");
        assert!(NatsUrl::parse("nats://").is_err());
    }
}
