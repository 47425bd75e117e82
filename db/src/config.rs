//! Reading a connection string once: libpq's URL (`postgres://…`) and `key=value`
//! forms, the TLS parameters tokio-postgres does not know, and the redacted form
//! every message uses.
//!
//! tokio-postgres's `Config` knows `sslmode=disable|prefer|require` only and
//! refuses any parameter it does not know, so `sslmode=verify-ca|verify-full` and
//! `sslrootcert` would make it fail. A first pass here takes `sslmode` and
//! `sslrootcert` out of the string (in either form, with tokio-postgres's own
//! splitting rules), and the rest is handed to `Config` unchanged in meaning.

use crate::Error;
use std::fmt;
use tokio_postgres::config::Host;

const ACCEPTED_SSLMODES: &str = "disable, prefer, require, verify-ca, verify-full";

/// When TLS is used and what is verified, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not checked
    /// (libpq's default).
    Prefer,
    /// TLS or no connection; the certificate is not checked (as libpq, unless
    /// `sslrootcert` names a file: then as `VerifyCa`).
    Require,
    /// TLS with a certificate chain to a trusted root; any host name.
    VerifyCa,
    /// `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<Self, Error> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(Error::Config(
                    "sslmode=allow is not supported: use disable or prefer".into(),
                ))
            }
            other => {
                return Err(Error::Config(format!(
                    "sslmode={other:?} is not one of {ACCEPTED_SSLMODES}"
                )))
            }
        })
    }

    /// Whether the server's certificate must chain to a trusted root.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The roots a verifying mode trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// `sslrootcert=<file>`: PEM certificates.
    File(String),
    /// `sslrootcert=system`, or no `sslrootcert`: the system's store.
    System,
}

/// A connection string taken apart: what tokio-postgres understands, and the rest.
pub(crate) struct Parsed {
    pub pg: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    pub roots: RootCerts,
}

/// Parses `s` without touching the file system (the root file is read later).
pub(crate) fn parse(s: &str) -> Result<Parsed, Error> {
    let s = s.trim();
    let split = match url_parts(s) {
        Some((base, query)) => split_url(base, query)?,
        None => split_dsn(s)?,
    };
    let mut pg: tokio_postgres::Config =
        split.rest.parse().map_err(|e: tokio_postgres::Error| {
            // Its messages name options, not values; a value can still slip in (an
            // unquoted password with a space reads as a second option), so scrub.
            Error::Config(scrub(&crate::chain(&e), &split.secrets))
        })?;
    if pg.get_hosts().is_empty() && pg.get_hostaddrs().is_empty() {
        return Err(Error::Config(
            "no host: use postgres://user@host:port/db or host=… port=… dbname=…".into(),
        ));
    }
    // Only `hostaddr`: tokio-postgres would give TLS an empty server name, which
    // rustls refuses even when nothing is verified. The address is the name (as
    // in libpq, verify-full then checks the certificate's IP addresses).
    if pg.get_hosts().is_empty() {
        for addr in pg.get_hostaddrs().to_vec() {
            pg.host(addr.to_string());
        }
    }
    // tokio-postgres reads the user info up to the first `@`: a password with an
    // unencoded `@` ends up in the host name, which messages would then show.
    if pg
        .get_hosts()
        .iter()
        .any(|h| matches!(h, Host::Tcp(name) if name.contains('@')))
    {
        return Err(Error::Config(
            "a host name contains `@`: percent-encode `@` in the password as %40".into(),
        ));
    }
    let roots = match split.sslrootcert.as_deref() {
        None | Some("") | Some("system") => RootCerts::System,
        Some(file) => RootCerts::File(file.to_string()),
    };
    let mut ssl_mode = match split.sslmode.as_deref() {
        None => SslMode::Prefer,
        Some(mode) => SslMode::parse(mode)?,
    };
    // libpq: "if a root CA file exists, the behavior of sslmode=require will be
    // the same as that of verify-ca".
    if ssl_mode == SslMode::Require && matches!(roots, RootCerts::File(_)) {
        ssl_mode = SslMode::VerifyCa;
    }
    pg.ssl_mode(match ssl_mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        // The verifying modes are `require` to tokio-postgres; the TLS connector
        // (crate::tls) does the verification.
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    Ok(Parsed {
        pg,
        ssl_mode,
        roots,
    })
}

/// The connection string of `parsed` without its password: built from the parsed
/// settings (never by cutting the input), so no form of the input can leak one.
pub(crate) fn redacted(parsed: &Parsed) -> String {
    let pg = &parsed.pg;
    let ports = pg.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    // `parse` gave every connection string a host (an address stands in).
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", port(i)),
            Host::Tcp(name) => format!("{}:{}", encode(name, b""), port(i)),
            #[cfg(unix)]
            Host::Unix(path) => format!("{}:{}", encode(&path.to_string_lossy(), b""), port(i)),
        })
        .collect();
    let mut out = String::from("postgres://");
    if let Some(user) = pg.get_user() {
        out.push_str(&encode(user, b""));
        out.push('@');
    }
    out.push_str(&hosts.join(","));
    out.push('/');
    if let Some(db) = pg.get_dbname() {
        out.push_str(&encode(db, b""));
    }
    out.push_str("?sslmode=");
    out.push_str(parsed.ssl_mode.as_str());
    if let RootCerts::File(file) = &parsed.roots {
        if parsed.ssl_mode.verifies() {
            out.push_str("&sslrootcert=");
            out.push_str(&encode(file, b"/:"));
        }
    }
    out
}

/// `s` with the parts taken out, and the password(s) seen, to scrub messages with.
struct Split {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    secrets: Vec<String>,
}

/// `(everything before the query, the query)` of a `postgres://` or
/// `postgresql://` URL, split where tokio-postgres splits it: the user info runs
/// to the first `@`, the query starts at the first `?` after that.
fn url_parts(s: &str) -> Option<(&str, Option<&str>)> {
    let rest = s
        .strip_prefix("postgres://")
        .or_else(|| s.strip_prefix("postgresql://"))?;
    let start = s.len() - rest.len();
    let after_userinfo = start + rest.find('@').map_or(0, |at| at + 1);
    Some(match s[after_userinfo..].find('?') {
        Some(q) => (&s[..after_userinfo + q], Some(&s[after_userinfo + q + 1..])),
        None => (s, None),
    })
}

fn split_url(base: &str, query: Option<&str>) -> Result<Split, Error> {
    let mut split = Split {
        rest: base.to_string(),
        sslmode: None,
        sslrootcert: None,
        secrets: Vec::new(),
    };
    // The password of the user info, as written and decoded.
    let rest = base.split_once("://").map_or("", |(_, r)| r);
    if let Some((userinfo, _)) = rest.split_once('@') {
        if let Some((_, password)) = userinfo.split_once(':') {
            split.secrets.push(password.to_string());
            split.secrets.push(decode(password));
        }
    }
    let mut kept = Vec::new();
    for param in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = param.split_once('=') else {
            kept.push(param); // tokio-postgres reports it
            continue;
        };
        match decode(key).as_str() {
            "sslmode" => split.sslmode = Some(decode(value)),
            "sslrootcert" => split.sslrootcert = Some(decode(value)),
            k => {
                if k == "password" {
                    split.secrets.push(value.to_string());
                    split.secrets.push(decode(value));
                }
                kept.push(param);
            }
        }
    }
    if !kept.is_empty() {
        split.rest.push('?');
        split.rest.push_str(&kept.join("&"));
    }
    Ok(split)
}

/// The `key=value` form, read by tokio-postgres's rules (values may be quoted
/// with `'`; `\` escapes the next character) and written back all quoted.
fn split_dsn(s: &str) -> Result<Split, Error> {
    let mut split = Split {
        rest: String::new(),
        sslmode: None,
        sslrootcert: None,
        secrets: Vec::new(),
    };
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            if chars.peek().is_some() {
                return Err(Error::Config("a `=` without a parameter name".into()));
            }
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        // No names in these messages: a word of a password could be taken for one.
        if chars.next() != Some('=') {
            return Err(Error::Config(
                "a parameter without `=value` (quote values that contain spaces: key='a b')".into(),
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(Error::Config("an unterminated quoted value".into())),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return Err(Error::Config("a parameter with an empty value".into()));
            }
        }
        match key.as_str() {
            "sslmode" => split.sslmode = Some(value),
            "sslrootcert" => split.sslrootcert = Some(value),
            _ => {
                if key == "password" {
                    split.secrets.push(value.clone());
                }
                let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
                split.rest.push_str(&format!("{key}='{quoted}' "));
            }
        }
    }
    Ok(split)
}

/// `message` with every non-empty secret replaced.
fn scrub(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_string();
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len())); // longest first
    for s in secrets {
        out = out.replace(s.as_str(), "****");
    }
    out
}

/// Percent-decoding as tokio-postgres does it (invalid sequences stay as they are).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes what would change the meaning of a URL part, except `keep`.
fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(s: &str) -> String {
        crate::redact(s)
    }

    /// Every form of a connection string with a password: the redacted text
    /// has user, host, port and database and never the password.
    #[test]
    fn redact_never_shows_a_password() {
        let cases = [
            (
                "postgres://u:pw@h/db",
                "postgres://u@h:5432/db?sslmode=prefer",
            ),
            (
                "postgresql://u:pw@h/db?sslmode=require",
                "postgres://u@h:5432/db?sslmode=require",
            ),
            (
                "postgres://u@h/db?password=pw",
                "postgres://u@h:5432/db?sslmode=prefer",
            ),
            (
                "host=h user=u password=pw dbname=d",
                "postgres://u@h:5432/d?sslmode=prefer",
            ),
            (
                "host=h port=6543 user=u password='p w' dbname=d",
                "postgres://u@h:6543/d?sslmode=prefer",
            ),
            (
                "postgres://u:p%40w%3Fx@h:7/db",
                "postgres://u@h:7/db?sslmode=prefer",
            ),
            (
                "postgres://u:pw@h1:1,h2:2/db?sslmode=verify-full&sslrootcert=/c/ca.crt",
                "postgres://u@h1:1,h2:2/db?sslmode=verify-full&sslrootcert=/c/ca.crt",
            ),
            (
                "hostaddr=10.0.0.1 port=6 user=u password=pw",
                "postgres://u@10.0.0.1:6/?sslmode=prefer",
            ),
            (
                "host=h user=u password=pw\\ x dbname=d sslmode=disable",
                "postgres://u@h:5432/d?sslmode=disable",
            ),
        ];
        for (input, want) in cases {
            let got = redact(input);
            assert_eq!(got, want, "{input}");
            for secret in ["pw", "p w", "p@w?x", "p%40w", "pw x"] {
                assert!(!got.contains(secret), "{input} -> {got}");
            }
        }
    }

    /// A string that does not parse is never echoed back, not even in part.
    #[test]
    fn unparseable_strings_are_not_echoed() {
        for input in [
            "host=h user=u password=secret wurd dbname=d",
            "host=h password='secret",
            "postgres://u:secret@h:notaport/db",
            "postgres://u:sec@ret@h/db",
            "host=h password=secret bogus=1",
        ] {
            assert_eq!(redact(input), "<invalid connection string>", "{input}");
            let err = parse(input).err().expect(input).to_string();
            for secret in ["secret", "sec@ret", "ret@h", "wurd"] {
                assert!(!err.contains(secret), "{input} -> {err}");
            }
        }
    }

    /// sslmode and sslrootcert are taken out before tokio-postgres parses the
    /// rest (it refuses verify-* and sslrootcert), in both forms.
    #[test]
    fn tls_parameters_in_both_forms() {
        let p = parse(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fx%2Fca.pem&application_name=a",
        )
        .unwrap();
        assert_eq!(p.ssl_mode, SslMode::VerifyFull);
        assert_eq!(p.roots, RootCerts::File("/x/ca.pem".into()));
        assert_eq!(p.pg.get_application_name(), Some("a"));
        assert_eq!(
            p.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );

        let p = parse("host=h sslrootcert='/a b/ca.pem' sslmode=verify-ca dbname=d").unwrap();
        assert_eq!(p.ssl_mode, SslMode::VerifyCa);
        assert_eq!(p.roots, RootCerts::File("/a b/ca.pem".into()));
        assert_eq!(p.pg.get_dbname(), Some("d"));

        let p = parse("postgres://h/db").unwrap();
        assert_eq!(p.ssl_mode, SslMode::Prefer);
        assert_eq!(p.roots, RootCerts::System);

        let p = parse("host=h sslmode=disable").unwrap();
        assert_eq!(
            p.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );

        // libpq: require with a root file verifies the chain.
        let p = parse("postgres://h/db?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(p.ssl_mode, SslMode::VerifyCa);
        let p = parse("postgres://h/db?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(p.roots, RootCerts::System);
    }

    /// Quoting and escapes survive the first pass: tokio-postgres sees the same
    /// values.
    #[test]
    fn dsn_values_round_trip() {
        let p = parse(r"host=h user='o\'brien' password='a \\ b' options=-csearch_path=x").unwrap();
        assert_eq!(p.pg.get_user(), Some("o'brien"));
        assert_eq!(p.pg.get_password(), Some(&b"a \\ b"[..]));
        assert_eq!(p.pg.get_options(), Some("-csearch_path=x"));
        let p = parse("postgres://u:p%20w@h/db?password=q").unwrap();
        assert_eq!(p.pg.get_password(), Some(&b"q"[..]));
    }

    /// Bad values are refused with a message that says what is accepted.
    #[test]
    fn bad_settings_are_clear() {
        let e = parse("postgres://h/db?sslmode=verify")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("disable, prefer, require, verify-ca, verify-full"),
            "{e}"
        );
        let e = parse("postgres://h/db?sslmode=allow")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
        let e = parse("dbname=x").err().unwrap().to_string();
        assert!(e.contains("no host"), "{e}");
        let e = parse("postgres://h/db?nonsense=1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nonsense"), "{e}");
    }
}
