//! `spine-gateway`'s command line and settings: every setting is a flag and an
//! environment variable, and `--help` lists both with the default.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;

#[derive(Debug, Parser)]
#[command(
    name = "spine-gateway",
    version,
    about = "Spine's Supabase-compatible HTTP API: /auth/v1, /rest/v1 and /functions/v1"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default command).
    Serve,
    /// Print the anon and service-role keys (JWTs signed with SPINE_JWT_SECRET).
    Keys,
}

#[derive(Debug, Args)]
pub struct Config {
    /// The database (URL or key=value DSN).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:54390/spine",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,

    /// Where the API is served (one base URL, like SUPABASE_URL).
    #[arg(long, env = "SPINE_GATEWAY_ADDR", default_value = "127.0.0.1:54396")]
    pub addr: SocketAddr,

    /// The project's JWT secret (HS256): access tokens and the anon and
    /// service-role keys are signed with it. Required.
    #[arg(long, env = "SPINE_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// An ES256 key /auth/v1 signs access tokens with instead of the secret
    /// (Supabase's JWT signing keys): a PKCS#8 PEM P-256 private key, or @FILE.
    /// Its public half is served at /auth/v1/.well-known/jwks.json. The anon
    /// and service-role keys stay HS256, as Supabase's legacy keys do.
    #[arg(long, env = "SPINE_JWT_SIGNING_KEY", hide_env_values = true)]
    pub jwt_signing_key: Option<String>,

    #[command(flatten)]
    pub tokens: spine_functions::jwt::TokenArgs,

    /// `SPINE_EMBEDDINGS_*`: the embeddings API of functions' `Supabase.ai.Session`.
    #[command(flatten)]
    pub embeddings: spine_functions::embeddings::EmbeddingsArgs,

    /// Schemas `/rest/v1` exposes, comma-separated; the first is the default.
    #[arg(long, env = "SPINE_REST_SCHEMAS", default_value = "public,spine")]
    pub rest_schemas: String,

    /// Most rows one `/rest/v1` response returns (PostgREST's max-rows).
    #[arg(long, env = "SPINE_REST_MAX_ROWS", default_value_t = 1000)]
    pub max_rows: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "SPINE_GATEWAY_MAX_BODY", default_value_t = 1 << 20)]
    pub max_body: usize,

    /// Origins browsers may call from: `*` or a comma-separated list.
    #[arg(long, env = "SPINE_CORS_ORIGINS", default_value = "*")]
    pub cors_origins: String,

    /// NATS server through which several gateways share Realtime broadcasts
    /// and presence; without it each gateway serves its own clients only.
    #[arg(long, env = "NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,

    #[command(flatten)]
    pub nats: spine_nats::NatsArgs,

    /// Most database connections the gateway holds.
    #[arg(long, env = "SPINE_GATEWAY_POOL", default_value_t = 16)]
    pub pool_size: usize,

    /// `on`: serve /auth/v1 from Spine's auth tables. `off` on a Supabase
    /// database, where GoTrue owns auth.*: /auth/v1 answers 404 and the gateway
    /// never reads or writes auth tables.
    #[arg(long, env = "SPINE_AUTH", default_value = "on", value_parser = ["on", "off"])]
    pub auth: String,

    /// Password sign-ins allowed per client address and email: N/SECONDS
    /// (N at once, refilled over SECONDS). 429 with Retry-After beyond.
    #[arg(long, env = "SPINE_AUTH_SIGN_IN_LIMIT", default_value = "30/300")]
    pub sign_in_limit: String,

    /// Sign-ups allowed per client address: N/SECONDS.
    #[arg(long, env = "SPINE_AUTH_SIGN_UP_LIMIT", default_value = "30/300")]
    pub sign_up_limit: String,

    /// The Meilisearch URL clients search (the worker's setting of the same
    /// name): the Studio's search box may connect to it, and nowhere else
    /// outside the gateway (its Content-Security-Policy).
    #[arg(long, env = "SPINE_SEARCH_PUBLIC_URL", value_name = "URL")]
    pub search_public_url: Option<String>,

    /// Static files served beside the API: `/path=directory`, comma-separated
    /// (an app's page and the supabase-js bundle it loads, on the API's origin).
    #[arg(long, env = "SPINE_SITES", default_value = "", value_name = "MOUNTS")]
    pub sites: String,

    /// Lifetime of the access tokens /auth/v1 issues, in seconds.
    #[arg(long, env = "SPINE_AUTH_JWT_EXP", default_value_t = 3600)]
    pub jwt_exp_secs: u64,
}

impl Config {
    /// The exposed schemas, in order.
    pub fn schemas(&self) -> Vec<String> {
        self.rest_schemas
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    pub fn auth_enabled(&self) -> bool {
        self.auth == "on"
    }

    /// The key /auth/v1 signs access tokens with: the ES256 key when one is
    /// configured, else the JWT secret.
    pub fn signer(&self) -> anyhow::Result<spine_core::signing::Signer> {
        use spine_core::signing::Signer;
        let Some(key) = self.jwt_signing_key.as_deref().filter(|k| !k.is_empty()) else {
            return Ok(Signer::hs256(self.secret()?.as_bytes()));
        };
        let pem = match key.strip_prefix('@') {
            Some(path) => std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("SPINE_JWT_SIGNING_KEY: reading {path}: {e}"))?,
            None => key.as_bytes().to_vec(),
        };
        Ok(Signer::es256_from_pem(&pem)?)
    }

    /// Every key tokens are verified with: the secret, the signer's public
    /// key, SPINE_JWKS / SPINE_JWKS_URL and the `sb_` keys.
    pub fn key_settings(
        &self,
        signer: &spine_core::signing::Signer,
    ) -> anyhow::Result<spine_functions::jwt::KeySettings> {
        let mut settings = self.tokens.settings(Some(self.secret()?.to_string()));
        if let spine_core::signing::Signer::Es256 { .. } = signer {
            settings.own_jwks = Some(signer.jwks().to_string());
        }
        Ok(settings)
    }

    /// The JWT secret; an error naming the variable when it is not set.
    pub fn secret(&self) -> anyhow::Result<&str> {
        match self.jwt_secret.as_deref() {
            Some(s) if s.len() >= 32 => Ok(s),
            Some(_) => anyhow::bail!("SPINE_JWT_SECRET must be at least 32 characters"),
            None => anyhow::bail!("SPINE_JWT_SECRET is not set"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["spine-gateway", "--jwt-secret", "short"]).unwrap();
        assert!(cli.config.secret().is_err());
        assert_eq!(cli.config.schemas(), vec!["public", "spine"]);
    }

    /// docs/configuration.md names every variable `spine-gateway --help` shows.
    #[test]
    fn the_configuration_page_lists_every_variable() {
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/configuration.md"
        ))
        .unwrap();
        let missing: Vec<String> = Cli::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .filter(|v| !docs.contains(&format!("`{v}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md does not list {missing:?}"
        );
    }
}
