//! Developer tasks for Spine, run as `cargo xtask <command>`.
//!
//! Every command is idempotent: it checks what is already present and skips it,
//! so running one twice is harmless and a warm rerun is fast.
//!
//! - [`setup`]: system packages, cargo-pgrx, cargo-deny, pgvector and NATS on Debian 12.
//! - [`stack`]: the throwaway dev stack under `target/spine-dev/` (`up`, `down`,
//!   `status`, `env`, `psql`), built from [`postgres`] (with TLS from [`tls`]),
//!   [`nats`] and [`meili`].
//! - [`migrate`]: applies `migrations/` and `seed.sql` the way the Supabase CLI does.
//! - [`demo`]: setup + up, then the main flow, printed for a person to read.
//! - [`layers`]: the extension's module layering check.
//! - [`suite`]: the full test suite that `.ci/run` calls.
//! - [`bench`]: benchmarks (`cargo xtask bench relay|jobs|audit|rules|ingest|functions|search|gateway|realtime|services|scale`).

mod bench;
mod config;
mod daemon;
mod demo;
mod embedder;
mod examples;
mod gateway;
mod jsonlogic;
mod layers;
mod meili;
mod migrate;
mod nats;
mod postgres;
mod proc;
mod setup;
mod stack;
mod studio;
mod suite;
mod supabase_js;
mod tls;
mod upgrade;

use anyhow::Result;
use clap::{Parser, Subcommand};
use config::{Config, Settings};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    version,
    about = "Developer tasks for Spine. Every command is idempotent: it skips what is already there.",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
enum Task {
    /// Install what Spine needs on Debian 12 (apt packages, cargo-pgrx, cargo-deny,
    /// pgvector, nats-server); skips what is present.
    Setup,
    /// Start the dev stack (Postgres + extension + migrations + seed, NATS,
    /// Meilisearch when available) under target/spine-dev/.
    Up {
        /// NATS as a JetStream cluster of N nodes on loopback (1: one server);
        /// remembered for later runs.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=5))]
        nats_cluster: Option<u16>,
    },
    /// Stop the dev stack.
    Down {
        /// Also delete its data.
        #[arg(long)]
        clean: bool,
    },
    /// Show what is running and where.
    Status,
    /// Print `export …` lines for the running stack.
    Env,
    /// Open psql on the stack's database.
    Psql {
        /// Arguments for psql.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup + up, then run the main flow and show what happened.
    Demo,
    /// Up, then walk through one of `examples/` on the stack, step by step.
    Example {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(examples::EXAMPLES))]
        name: String,
    },
    /// The full test suite: fmt, layers, cargo deny, clippy, pgrx tests,
    /// integration tests.
    Test,
    /// Check that the extension's modules depend on each other downward only.
    Layers {
        /// The workspace to check (default: this one).
        root: Option<PathBuf>,
    },
    /// A benchmark against the stack, optimized builds.
    Bench {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(bench::BENCHES))]
        name: String,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = Config::new(cli.settings)?;
    match cli.command {
        Task::Setup => setup::run(&config),
        Task::Up { nats_cluster } => stack::up(&config, nats_cluster),
        Task::Down { clean } => stack::down(&config, clean),
        Task::Status => stack::status(&config),
        Task::Env => stack::print_env(&config),
        Task::Psql { args } => stack::psql(&config, &args),
        Task::Demo => demo::run(&config),
        Task::Example { name } => examples::walk(&config, &name),
        Task::Test => suite::run(&config),
        Task::Layers { root } => layers::run(root.as_deref().unwrap_or(&config.root)),
        Task::Bench { name } => bench::run(&config, &name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
    }

    /// clap's own consistency checks of the command line pass.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Commands with their arguments, and settings as flags.
    #[test]
    fn commands_and_flags_parse() {
        assert_eq!(
            parse(&["up"]).unwrap().command,
            Task::Up { nats_cluster: None }
        );
        assert_eq!(
            parse(&["up", "--nats-cluster", "3"]).unwrap().command,
            Task::Up {
                nats_cluster: Some(3)
            }
        );
        assert!(parse(&["up", "--nats-cluster", "9"]).is_err());
        assert_eq!(
            parse(&["down", "--clean"]).unwrap().command,
            Task::Down { clean: true }
        );
        assert_eq!(
            parse(&["psql", "-c", "select 1"]).unwrap().command,
            Task::Psql {
                args: vec!["-c".into(), "select 1".into()]
            }
        );
        assert_eq!(
            parse(&["bench", "relay"]).unwrap().command,
            Task::Bench {
                name: "relay".into()
            }
        );
        assert!(parse(&["bench", "nope"]).is_err(), "unknown benchmark");
        assert!(parse(&["bench"]).is_err(), "bench needs a name");
        assert!(parse(&["frobnicate"]).is_err());
        assert!(parse(&[]).is_err(), "no command prints the help");

        let cli = parse(&["--pg-port", "6000", "--dev-dir", "/tmp/d", "status"]).unwrap();
        let config = Config::new(cli.settings).unwrap();
        assert_eq!(config.pg_port, 6000);
        assert_eq!(config.dev_dir, PathBuf::from("/tmp/d"));
        assert_eq!(
            config.database_url(),
            "postgres://postgres@127.0.0.1:6000/spine"
        );
        let cli = parse(&["--dev-dir", "elsewhere", "--meili-url=", "status"]).unwrap();
        let config = Config::new(cli.settings).unwrap();
        assert_eq!(
            config.dev_dir,
            config.root.join("elsewhere"),
            "relative to the root"
        );
        assert_eq!(config.external_meili_url, None, "empty is unset");
        let err = parse(&["--nats-port", "lots", "up"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--nats-port"), "{err}");
    }

    /// docs/configuration.md names (in backquotes) every variable `cargo xtask
    /// --help` shows.
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
