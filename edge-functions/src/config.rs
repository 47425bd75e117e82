//! `spine-functions` settings from environment variables.

use crate::host::HostConfig;
use anyhow::Context;
use std::net::SocketAddr;

pub struct Config {
    /// `SPINE_FUNCTIONS_ADDR` (default 127.0.0.1:54395).
    pub addr: SocketAddr,
    /// `SPINE_JWT_SECRET`: the project's JWT secret (Supabase: JWT_SECRET). Required
    /// to serve: without it no token could be verified.
    pub jwt_secret: Option<String>,
    pub host: HostConfig,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let database_url = get("DATABASE_URL")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:54390/spine".into());
        let addr = get("SPINE_FUNCTIONS_ADDR").unwrap_or_else(|| "127.0.0.1:54395".into());
        let mut host = HostConfig::new(&database_url);
        if let Some(n) = get("SPINE_FUNCTIONS_CONCURRENCY") {
            host.concurrency = n.parse().ok().filter(|n| *n > 0).with_context(|| {
                format!("SPINE_FUNCTIONS_CONCURRENCY={n:?} is not a positive number")
            })?;
        }
        if let Some(schemas) = get("SPINE_FUNCTIONS_DB_SCHEMAS") {
            host.db_schemas = schemas
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            anyhow::ensure!(
                !host.db_schemas.is_empty(),
                "SPINE_FUNCTIONS_DB_SCHEMAS must name at least one schema"
            );
        }
        Ok(Self {
            addr: addr
                .parse()
                .with_context(|| format!("SPINE_FUNCTIONS_ADDR={addr:?}"))?,
            jwt_secret: get("SPINE_JWT_SECRET"),
            host,
        })
    }
}
