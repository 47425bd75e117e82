use anyhow::Result;
use clap::{Parser, Subcommand};
use spine_embedder::model::Embedder;
use spine_embedder::server::{router, AppState};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "spine-embedder",
    about = "OpenAI-compatible /v1/embeddings for all-MiniLM-L6-v2, in-process"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves /v1/embeddings and /health until SIGTERM or Ctrl-C.
    Serve {
        /// The model's sentence-transformers directory (config.json,
        /// tokenizer.json, model.safetensors); `cargo xtask setup` fetches it.
        #[arg(long, env = "SPINE_EMBEDDER_MODEL_DIR")]
        model_dir: PathBuf,
        /// The name answers report, and requests may ask for.
        #[arg(
            long,
            env = "SPINE_EMBEDDER_MODEL",
            default_value = "sentence-transformers/all-MiniLM-L6-v2"
        )]
        model: String,
        #[arg(long, env = "SPINE_EMBEDDER_ADDR", default_value = "127.0.0.1:54397")]
        addr: String,
        /// A bearer key callers must send (none: anyone who reaches the port).
        #[arg(long, env = "SPINE_EMBEDDER_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    spine_log::init("info").map_err(anyhow::Error::msg)?;
    let Command::Serve {
        model_dir,
        model,
        addr,
        api_key,
    } = Cli::parse().command;
    let embedder = Embedder::load(&model_dir, &model)?;
    let state = Arc::new(AppState {
        embedder,
        api_key: api_key.filter(|k| !k.is_empty()),
        running: tokio::sync::Semaphore::new(1),
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(%addr, %model, "serving /v1/embeddings");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler cannot fail on Unix");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
    Ok(())
}
