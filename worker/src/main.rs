//! `spine-worker`: parse the command line and configuration once, set up logging,
//! run until told to stop. `spine-worker --help` lists the commands and every
//! setting with its environment variable and default.

use spine_functions::server::shutdown_signal;
use spine_worker::config::{Cli, Command, Config};
use spine_worker::{check, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_or_exit();
    let command = cli.command.clone().unwrap_or(Command::Run);
    // `check` prints its findings for a person: logs only when something is wrong.
    let default_filter = if command == Command::Check {
        "warn"
    } else {
        "info"
    };
    spine_log::init(default_filter).map_err(anyhow::Error::msg)?;
    // TLS for the http handler and NATS: rustls on ring (no system OpenSSL needed).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::from_settings(&cli.settings)?;
    match command {
        Command::Run => {
            spine_db::version::check_at_start(
                &config.database,
                "spine-worker",
                env!("CARGO_PKG_VERSION"),
            )
            .await?;
            run(config, shutdown_signal()).await
        }
        Command::Check => check::run(&config).await,
        Command::Reindex { kind } => spine_worker::search::reindex::reindex(&config, &kind).await,
        Command::CheckIndex { kind } => {
            spine_worker::search::reindex::check_index(&config, &kind).await
        }
    }
}
