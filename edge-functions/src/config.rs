//! `spine-functions`' command line and settings: every setting is a flag and an
//! environment variable, and `--help` lists both with the default, so the docs
//! and the code cannot drift.

use crate::host::HostConfig;
use crate::jwt::KeySettings;
use crate::server::CorsOrigins;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "spine-functions",
    version,
    about = "Spine's function host: JavaScript plugins as Supabase-style edge functions"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve POST /functions/v1/{name} and GET /healthz (the default command).
    Serve,
    /// Deploy every function of a folder into the database.
    Deploy {
        #[arg(default_value = "edge-functions/functions")]
        dir: PathBuf,
    },
    /// Compile the functions of a folder and check their manifests; write nothing.
    Check {
        #[arg(default_value = "edge-functions/functions")]
        dir: PathBuf,
    },
    /// Print a JWT signed with the JWT secret, valid for an hour.
    Token {
        /// anon, authenticated or service_role.
        role: String,
        /// The user id (`sub`); an authenticated token needs one.
        sub: Option<String>,
    },
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

    /// Where /functions/v1/{name} and /healthz are served.
    #[arg(long, env = "SPINE_FUNCTIONS_ADDR", default_value = "127.0.0.1:54395")]
    pub addr: SocketAddr,

    /// The HS256 secret callers' JWTs are signed with (Supabase: the project's JWT
    /// secret). `serve` needs it, a JWKS, or both.
    #[arg(long, env = "SPINE_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    #[command(flatten)]
    pub tokens: crate::jwt::TokenArgs,

    /// Origins browsers may call from: * or a comma-separated list.
    #[arg(long, env = "SPINE_CORS_ORIGINS", default_value = "*", value_parser = CorsOrigins::parse)]
    pub cors_origins: CorsOrigins,

    /// Invocations at once (each on its own thread); the host opens at most twice
    /// as many database sessions.
    #[arg(long, env = "SPINE_FUNCTIONS_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// The schemas ctx.db reaches (PostgREST's exposed schemas); the first is the default.
    #[arg(
        long,
        env = "SPINE_FUNCTIONS_DB_SCHEMAS",
        default_value = "public,spine",
        value_delimiter = ','
    )]
    pub db_schemas: Vec<String>,

    /// `SPINE_EMBEDDINGS_*`: the embeddings API of `Supabase.ai.Session`.
    #[command(flatten)]
    pub embeddings: crate::embeddings::EmbeddingsArgs,
}

impl Config {
    pub fn host(&self) -> anyhow::Result<HostConfig> {
        let database = spine_db::DbConfig::parse_for_process(
            &self.database_url,
            concat!("spine-functions/", env!("CARGO_PKG_VERSION")),
        )
        .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
        let mut host = HostConfig::new(database);
        host.concurrency = self.concurrency as usize;
        host.embeddings = self.embeddings.api();
        host.db_schemas = self
            .db_schemas
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        anyhow::ensure!(
            !host.db_schemas.is_empty(),
            "SPINE_FUNCTIONS_DB_SCHEMAS must name at least one schema"
        );
        Ok(host)
    }

    pub fn keys(&self) -> KeySettings {
        self.tokens.settings(self.jwt_secret.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "spine-functions",
            "--jwks",
            "@/etc/jwks.json",
            "--db-schemas",
            "api,spine",
            "serve",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Serve)));
        use crate::jwt::JwksSource;
        assert_eq!(
            cli.config.keys().jwks,
            Some(JwksSource::File("/etc/jwks.json".into()))
        );
        assert_eq!(cli.config.host().unwrap().db_schemas, ["api", "spine"]);
        assert!(Cli::try_parse_from(["spine-functions", "--concurrency", "0"]).is_err());
        assert!(Cli::try_parse_from(["spine-functions", "--cors-origins", "nope"]).is_err());
    }
}
