//! `spine-functions`: serve edge functions over HTTP, or deploy them from a folder.
//!
//! ```text
//! spine-functions serve                 # POST /functions/v1/{name}
//! spine-functions deploy [DIR]          # DIR defaults to edge-functions/functions
//! spine-functions check [DIR]           # compile and check manifests, write nothing
//! spine-functions token ROLE [SUB]      # a JWT signed with SPINE_JWT_SECRET, valid 1 h
//! ```

use anyhow::Context;
use spine_functions::{config::Config, deploy, host::Host, server};
use std::path::PathBuf;
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::from_env()?;
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let mut dir = || {
        args.next()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("edge-functions/functions"))
    };
    match command.as_deref() {
        None | Some("serve") => serve(config).await,
        Some("deploy") => {
            let bundles = deploy::read_dir(&dir())?;
            for (name, sha) in deploy::deploy(&config.host.database_url, &bundles).await? {
                println!("deployed {name} ({})", &sha[..12]);
            }
            Ok(())
        }
        Some("check") => {
            for b in deploy::read_dir(&dir())? {
                println!("ok {}", b.name);
            }
            Ok(())
        }
        Some("token") => {
            let secret = config.jwt_secret.context("SPINE_JWT_SECRET is not set")?;
            let role = args
                .next()
                .context("usage: spine-functions token ROLE [SUB]")?;
            anyhow::ensure!(
                spine_functions::jwt::ROLES.contains(&role.as_str()),
                "ROLE must be anon, authenticated or service_role"
            );
            let mut claims = serde_json::json!({"role": role, "exp": now_secs() + 3600});
            if let Some(sub) = args.next() {
                claims["sub"] = sub.into();
            }
            println!("{}", spine_functions::jwt::sign(&claims, secret.as_bytes()));
            Ok(())
        }
        Some(other) => {
            anyhow::bail!("unknown command `{other}` (expected serve, deploy, check or token)")
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let secret = config
        .jwt_secret
        .clone()
        .context("SPINE_JWT_SECRET is not set: the host cannot verify callers without it")?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding SPINE_FUNCTIONS_ADDR={}", config.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /functions/v1/{{name}}");
    let state = Arc::new(server::ServerState {
        host: Host::new(config.host),
        jwt_secret: secret.into_bytes(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(server::serve(listener, state, stop_rx));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
