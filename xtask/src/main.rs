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
//! - [`bench`]: benchmarks (`cargo xtask bench relay|jobs|audit|rules|ingest|functions|search`).

mod bench;
mod config;
mod daemon;
mod demo;
mod layers;
mod meili;
mod migrate;
mod nats;
mod postgres;
mod proc;
mod setup;
mod stack;
mod suite;
mod tls;

use anyhow::{bail, Result};
use config::Config;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup          install what Spine needs on Debian 12 (apt packages, cargo-pgrx,
                 cargo-deny, pgvector, nats-server); skips what is present
  up             start the dev stack (Postgres + extension + migrations + seed, NATS,
                 Meilisearch when available) under target/spine-dev/
  down [--clean] stop the dev stack; --clean also deletes its data
  status         show what is running and where
  env            print `export …` lines for the running stack
  psql [args…]   open psql on the stack's database
  demo           setup + up, then run the main flow and show what happened
  test           the full test suite: fmt, layers, cargo deny, clippy, pgrx tests,
                 integration tests
  layers [root]  check that the extension's modules depend on each other downward only
  bench <name>   a benchmark against the stack, optimized builds (names: relay, jobs, audit, rules,
                 ingest, functions, search)

configuration (environment variables, defaults in parentheses):
  SPINE_DEV_DIR (target/spine-dev)  SPINE_PG_PORT (54390)  SPINE_NATS_PORT (54391)
  SPINE_NATS_MONITOR_PORT (54392)   SPINE_MEILI_PORT (54393)
  SPINE_PG_CONFIG (/usr/lib/postgresql/15/bin/pg_config)   MEILI_URL, MEILI_MASTER_KEY
";

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let config = Config::from_env()?;
    match command.as_str() {
        "setup" => setup::run(&config),
        "up" => stack::up(&config),
        "down" => stack::down(&config, rest.iter().any(|a| a == "--clean")),
        "status" => stack::status(&config),
        "env" => stack::print_env(&config),
        "psql" => stack::psql(&config, &rest),
        "demo" => demo::run(&config),
        "test" => suite::run(&config),
        "layers" => layers::run(
            rest.first()
                .map_or(config.root.as_path(), std::path::Path::new),
        ),
        "bench" => bench::run(&config, &rest),
        "" | "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}
