//! `spine-functions`: serve edge functions over HTTP, or deploy them from a folder.
//! `spine-functions --help` lists the commands and every setting.

use anyhow::Context;
use clap::Parser;
use spine_functions::config::{Cli, Command, Config};
use spine_functions::jwt::{Keys, ROLES};
use spine_functions::server::shutdown_signal;
use spine_functions::{deploy, host::Host, server};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    spine_log::init("info").map_err(anyhow::Error::msg)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Deploy { dir } => {
            let bundles = deploy::read_dir(&dir)?;
            for (name, sha) in deploy::deploy(&config.host()?.database, &bundles).await? {
                println!("deployed {name} ({})", &sha[..12]);
            }
            Ok(())
        }
        Command::Check { dir } => {
            for b in deploy::read_dir(&dir)? {
                println!("ok {}", b.name);
            }
            Ok(())
        }
        Command::Token { role, sub } => {
            let secret = config.jwt_secret.context("SPINE_JWT_SECRET is not set")?;
            anyhow::ensure!(
                ROLES.contains(&role.as_str()),
                "ROLE must be anon, authenticated or service_role"
            );
            let exp = now_secs() + 3600;
            let mut claims = serde_json::json!({"role": role, "exp": exp});
            if let Some(sub) = sub {
                claims["sub"] = sub.into();
            }
            println!("{}", spine_functions::jwt::sign(&claims, secret.as_bytes()));
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    spine_db::version::check_at_start(
        &config.host()?.database,
        "spine-functions",
        env!("CARGO_PKG_VERSION"),
    )
    .await?;
    let keys = Keys::load(config.keys())
        .await
        .context("the host cannot verify callers")?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding SPINE_FUNCTIONS_ADDR={}", config.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /functions/v1/{{name}}");
    let state = Arc::new(server::ServerState::new(
        Host::new(config.host()?),
        Arc::new(keys),
    ));
    server::serve(listener, state, &config.cors_origins, async {
        shutdown_signal().await;
        tracing::info!("shutting down: refusing new connections, finishing calls in progress");
    })
    .await?;
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
