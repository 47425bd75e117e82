//! Connecting Spine's processes (the worker, the gateway) to NATS, one way:
//!
//! - `NATS_URL`: `nats://host:port` (port 4222 by default; a cluster's servers
//!   separated by commas), or `tls://…` for TLS, verified against the system's
//!   roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` override them) or `NATS_CA`; a
//!   server that requires TLS gets it with `nats://` too.
//! - `user:password@` in the URL authenticates with user and password, a lone
//!   `token@` with a token (as the Go client reads them; percent-encoded).
//!   async-nats 0.51 ignores credentials in a URL (nats-io/nats.rs#1623), so they
//!   are taken out here and passed as connect options; the address async-nats sees
//!   (and logs at debug level) has none.
//! - [`NatsArgs`], the files the `nats` CLI reads under the same variable names:
//!   `NATS_NKEY` (a file holding an nkey seed: the server knows the public key),
//!   `NATS_CREDS` (a `.creds` file: a user JWT and its seed, for servers in
//!   operator mode), `NATS_CERT` and `NATS_KEY` (a TLS client certificate, for
//!   servers that verify clients), `NATS_CA` (the CA that signed the server's).
//! - Messages show the URL without its password or token ([`NatsUrl`]'s
//!   `Display`); seeds are read from their files when connecting and kept nowhere.

pub mod account;
pub mod replicas;

pub use replicas::Replicas;

use anyhow::Context as _;
use async_nats::{ConnectOptions, ServerAddr};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How long connecting (TCP, TLS, handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed `NATS_URL`: where to connect and with which credentials. A
/// cluster's servers are listed with commas (`nats://a:4222,nats://b:4222`, as
/// the Go client and the `nats` CLI read it); the client connects to one and
/// fails over to the others (and to the servers the cluster announces).
#[derive(Clone)]
pub struct NatsUrl {
    /// The addresses without credentials.
    addrs: Vec<ServerAddr>,
    auth: Auth,
}

#[derive(Clone, PartialEq, Eq)]
enum Auth {
    None,
    Token(String),
    UserPassword(String, String),
}

impl NatsUrl {
    pub fn parse(urls: &str) -> anyhow::Result<Self> {
        let mut addrs = Vec::new();
        let mut auth = Auth::None;
        for (i, url) in urls.split(',').map(str::trim).enumerate() {
            let (addr, this) = Self::parse_one(url).with_context(|| match i {
                0 => "the URL".to_string(),
                i => format!("URL {} of the list", i + 1),
            })?;
            // One identity for the whole cluster: a URL without credentials
            // uses the others'.
            match (&auth, this) {
                (_, Auth::None) => {}
                (Auth::None, this) => auth = this,
                (known, this) => anyhow::ensure!(
                    *known == this,
                    "the URLs carry different credentials: a cluster is one account"
                ),
            }
            addrs.push(addr);
        }
        Ok(Self { addrs, auth })
    }

    fn parse_one(url: &str) -> anyhow::Result<(ServerAddr, Auth)> {
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
        Ok((addr, auth))
    }

    /// The URL's credentials and a connect timeout.
    fn options(&self) -> ConnectOptions {
        let options = ConnectOptions::new().connection_timeout(CONNECT_TIMEOUT);
        match &self.auth {
            Auth::None => options,
            Auth::Token(token) => options.token(token.clone()),
            Auth::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.clone())
            }
        }
    }
}

/// The credential and TLS files a process may be given besides `NATS_URL`
/// (flatten into a clap command).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsArgs {
    /// A file holding an nkey seed (`SU…`): the server authenticates the public key.
    #[arg(long = "nats-nkey", env = "NATS_NKEY", value_name = "FILE")]
    pub nkey: Option<PathBuf>,
    /// A `.creds` file (user JWT and seed) for a server in operator mode.
    #[arg(long = "nats-creds", env = "NATS_CREDS", value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// A TLS client certificate (PEM), for servers that verify clients; with NATS_KEY.
    #[arg(
        long = "nats-cert",
        env = "NATS_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long = "nats-key",
        env = "NATS_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
    /// The CA (PEM) that signed the server's certificate, besides the system's roots.
    #[arg(long = "nats-ca", env = "NATS_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// Where and how to connect: [`NatsUrl`] and [`NatsArgs`].
#[derive(Clone, Debug)]
pub struct NatsConfig {
    pub url: NatsUrl,
    pub files: NatsArgs,
}

impl NatsConfig {
    /// `url` with `files`; refuses an nkey together with a `.creds` file (each is
    /// a whole identity) and files that cannot be read, naming the variable.
    pub fn new(url: &str, files: NatsArgs) -> anyhow::Result<Self> {
        let url = NatsUrl::parse(url).context("NATS_URL")?;
        anyhow::ensure!(
            files.nkey.is_none() || files.creds.is_none(),
            "NATS_NKEY and NATS_CREDS are two identities: set one"
        );
        for (var, path) in [
            ("NATS_NKEY", &files.nkey),
            ("NATS_CREDS", &files.creds),
            ("NATS_CERT", &files.cert),
            ("NATS_KEY", &files.key),
            ("NATS_CA", &files.ca),
        ] {
            if let Some(path) = path {
                std::fs::metadata(path)
                    .with_context(|| format!("{var}={}: cannot read it", path.display()))?;
            }
        }
        Ok(Self { url, files })
    }

    /// The options to connect with: the URL's credentials, the files', the
    /// connect timeout.
    pub async fn options(&self) -> anyhow::Result<ConnectOptions> {
        let mut options = self.url.options();
        let files = &self.files;
        if let Some(path) = &files.nkey {
            let seed = std::fs::read_to_string(path)
                .with_context(|| format!("reading NATS_NKEY={}", path.display()))?;
            options = options.nkey(seed.trim().to_string());
        }
        if let Some(path) = &files.creds {
            options = options
                .credentials_file(path)
                .await
                .with_context(|| format!("reading NATS_CREDS={}", path.display()))?;
        }
        if let Some(ca) = &files.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok(options)
    }

    /// The servers' addresses, without credentials (for `options().connect(…)`).
    pub fn server_addrs(&self) -> Vec<ServerAddr> {
        self.url.addrs.clone()
    }

    /// Connects once (no retry: callers retry with backoff or report).
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        self.options()
            .await?
            .connect(self.url.addrs.clone())
            .await
            .with_context(|| format!("connecting to NATS at {}", self.url))
    }
}

impl fmt::Display for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.url.fmt(f)
    }
}

/// The URLs with the user name but without password or token.
impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.addrs.iter().enumerate() {
            let mut shown = addr.clone().into_inner();
            if let Auth::UserPassword(user, _) = &self.auth {
                let encoded =
                    percent_encoding::utf8_percent_encode(user, percent_encoding::NON_ALPHANUMERIC)
                        .to_string();
                let _ = shown.set_username(&encoded);
            }
            if i > 0 {
                f.write_str(",")?;
            }
            // Url adds a `/` to an empty path; NATS URLs are written without one.
            f.write_str(shown.as_str().trim_end_matches('/'))?;
        }
        Ok(())
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
    fn one_identity_and_readable_files() {
        let both = NatsArgs {
            nkey: Some("/dev/null".into()),
            creds: Some("/dev/null".into()),
            ..Default::default()
        };
        let err = NatsConfig::new("nats://h", both).unwrap_err().to_string();
        assert!(err.contains("set one"), "{err}");
        let missing = NatsArgs {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = format!("{:#}", NatsConfig::new("nats://h", missing).unwrap_err());
        assert!(err.contains("NATS_CA"), "{err}");
    }

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
        let err = format!("{:#}", NatsUrl::parse("http://u:pw@h").unwrap_err());
        assert!(err.contains("scheme") && !err.contains("pw"), "{err}");
        assert!(NatsUrl::parse("nats://").is_err());
    }

    /// A cluster's servers, comma-separated: one identity for all of them.
    #[test]
    fn a_list_of_urls_is_a_cluster() {
        let u = NatsUrl::parse("nats://a:1, nats://b:2,c").unwrap();
        assert_eq!(u.to_string(), "nats://a:1,nats://b:2,nats://c:4222");
        assert_eq!(u.addrs.len(), 3);
        let u = NatsUrl::parse("nats://al:pw@a:1,nats://b:2").unwrap();
        assert!(u.auth == Auth::UserPassword("al".into(), "pw".into()));
        assert_eq!(u.to_string(), "nats://al@a:1,nats://al@b:2");
        let err = format!(
            "{:#}",
            NatsUrl::parse("nats://al:pw@a:1,nats://bo:pw2@b:2").unwrap_err()
        );
        assert!(
            err.contains("different credentials") && !err.contains("pw"),
            "{err}"
        );
        let err = format!("{:#}", NatsUrl::parse("nats://a:1,").unwrap_err());
        assert!(err.contains("URL 2 of the list"), "{err}");
    }
}
