//! `spine-worker`: parse configuration once, set up logging, run until told to stop.

use spine_worker::{check, config::Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // TLS for the http handler: rustls on ring (no system OpenSSL needed).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::from_env()?;
    match std::env::args().nth(1).as_deref() {
        None | Some("run") => run(config, shutdown_signal()).await,
        Some("check") => check::run(&config).await,
        Some(cmd @ ("reindex" | "check-index")) => {
            let kind = std::env::args()
                .nth(2)
                .ok_or_else(|| anyhow::anyhow!("usage: spine-worker {cmd} <kind>"))?;
            if cmd == "reindex" {
                spine_worker::search::reindex::reindex(&config, &kind).await
            } else {
                spine_worker::search::reindex::check_index(&config, &kind).await
            }
        }
        Some(other) => anyhow::bail!(
            "unknown command `{other}` (expected run, check, reindex <kind> or check-index <kind>)"
        ),
    }
}

/// Resolves on Ctrl-C or SIGTERM (what `kill` and process supervisors send).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
