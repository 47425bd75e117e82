//! Worker configuration from environment variables, with defaults that match the
//! dev stack (`cargo xtask up`).

use anyhow::Context;

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: the Postgres database with the spine extension.
    pub database_url: String,
    /// `NATS_URL`: NATS server with JetStream enabled.
    pub nats_url: String,
    /// `MEILI_URL`: Meilisearch; `None` turns search sync off.
    pub meili_url: Option<String>,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let database_url = lookup("DATABASE_URL")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:54390/spine".into());
        let nats_url = lookup("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:54391".into());
        nats_address(&nats_url).with_context(|| format!("NATS_URL={nats_url:?}"))?;
        Ok(Self {
            database_url,
            nats_url,
            meili_url: lookup("MEILI_URL").filter(|s| !s.is_empty()),
        })
    }
}

/// `host:port` of a `nats://host:port` URL (the port defaults to 4222).
pub fn nats_address(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("nats://")
        .context("must start with nats://")?;
    let hostport = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .trim_end_matches('/');
    anyhow::ensure!(!hostport.is_empty(), "has no host");
    Ok(if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:4222")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_address_defaults_port_and_drops_credentials() {
        assert_eq!(nats_address("nats://h").unwrap(), "h:4222");
        assert_eq!(nats_address("nats://u:p@h:1/").unwrap(), "h:1");
        assert!(nats_address("http://h").is_err());
        assert!(nats_address("nats://").is_err());
    }

    #[test]
    fn empty_meili_url_means_search_off() {
        let c = Config::from_lookup(|k| (k == "MEILI_URL").then(String::new)).unwrap();
        assert!(c.meili_url.is_none());
    }
}
