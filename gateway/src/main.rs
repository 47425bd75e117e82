//! `spine-gateway`: Spine's Supabase-compatible HTTP API on one base URL.
//! `spine-gateway --help` lists the commands and every setting.

use anyhow::Context;
use clap::Parser;
use spine_functions::server::shutdown_signal;
use spine_gateway::config::{Cli, Command};
use spine_gateway::keys::project_keys;
use spine_gateway::server::Gateway;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    spine_log::init("info").map_err(anyhow::Error::msg)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Keys => {
            let (anon, service) = project_keys(config.secret()?);
            println!("SPINE_ANON_KEY={anon}\nSPINE_SERVICE_KEY={service}");
            Ok(())
        }
        Command::Serve => {
            let gateway = Gateway::start(&config).await?;
            let router = gateway.router(&config)?;
            let listener = tokio::net::TcpListener::bind(config.addr)
                .await
                .with_context(|| format!("binding SPINE_GATEWAY_ADDR={}", config.addr))?;
            tracing::info!(addr = %listener.local_addr()?, "serving /auth/v1, /rest/v1, /functions/v1");
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            // The client's address keys /auth/v1's rate limits.
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                shutdown_signal().await;
                tracing::info!(
                    "shutting down: refusing new connections, finishing requests in progress"
                );
            })
            .await?;
            Ok(())
        }
    }
}
