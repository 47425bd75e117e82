//! `spine-bench <name>`: benchmarks against the running dev stack
//! (`cargo xtask bench <name>` starts it and passes its environment).
//!
//! - [`audit`]: audited writes next to the same writes unaudited.
//! - [`functions`]: edge function invocation cold/warm, engine, HTTP and job queue.
//! - [`ingest`]: records/s through `spine.ingest` next to a plain INSERT.
//! - [`jobs`]: the queue's enqueue and drain rates next to raw Postgres limits and
//!   pg-boss / graphile-worker.
//! - [`search`]: commit → searchable latency through the search sync (needs Meilisearch).
//! - [`rules`]: the cost of 0–1,000 rules per event on event insert.
//! - [`realtime`]: /realtime/v1 delivery with RLS to 1,000 subscribers, next to
//!   the write limit measured in the same run.
//! - [`services`]: NATS request/reply verbs (SQL and edge function) next to a
//!   bare NATS echo.
//! - [`scale`]: the outbox at volume, partitioned and dropped by retention, next
//!   to the unpartitioned table purged by DELETE.
//! - [`relay`]: outbox → JetStream drain rate and commit→delivery latency, next to
//!   the raw JetStream publish rate on the same server.

mod audit;
mod functions;
mod gateway;
mod ingest;
mod jobs;
mod pickup;
mod realtime;
mod relay;
mod rules;
mod scale;
mod search;
mod services;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "spine-bench",
    version,
    about = "Spine's benchmarks against the running dev stack: figures next to a baseline \
             measured in the same run (cargo xtask bench <name> builds and runs them)",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Outbox → JetStream drain rate and commit→delivery latency, next to raw
    /// JetStream publishes.
    Relay(relay::Settings),
    /// The job queue's enqueue and drain rates, next to raw Postgres and the peers.
    Jobs(jobs::Settings),
    /// Audited writes next to the same writes unaudited.
    Audit(audit::Settings),
    /// The cost of 0-1,000 rules per event on event insert.
    Rules(rules::Settings),
    /// Records/s through spine.ingest next to a plain INSERT.
    Ingest(ingest::Settings),
    /// Edge function invocation cold/warm: engine, HTTP and job queue.
    Functions(functions::Settings),
    /// Commit → searchable latency through the search sync (needs Meilisearch).
    Search(search::Settings),
    /// The gateway's RPC, table read and sign-in next to the same SQL sent directly.
    Gateway(gateway::Settings),
    /// /realtime/v1: delivered msgs/s and latency with RLS, 1,000 subscribers.
    Realtime(realtime::Settings),
    /// NATS request/reply verbs (SQL and edge function) next to a bare echo.
    Services(services::Settings),
    /// The outbox at volume: partitions dropped by retention next to an
    /// unpartitioned table purged by DELETE (10M events by default).
    Scale(scale::Settings),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Relay(s) => relay::run(s).await,
        Bench::Jobs(s) => jobs::run(s).await,
        Bench::Audit(s) => audit::run(s).await,
        Bench::Rules(s) => rules::run(s).await,
        Bench::Ingest(s) => ingest::run(s).await,
        Bench::Functions(s) => functions::run(s).await,
        Bench::Search(s) => search::run(s).await,
        Bench::Gateway(s) => gateway::run(s).await,
        Bench::Realtime(s) => realtime::run(s).await,
        Bench::Services(s) => services::run(s).await,
        Bench::Scale(s) => scale::run(s).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap's own consistency checks of the command line pass.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Each benchmark takes its own settings with its own defaults; the required
    /// ones are refused when missing, bad numbers are errors.
    #[test]
    fn benchmarks_and_settings_parse() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("spine-bench").chain(args.iter().copied()))
        };
        let db = ["--database-url", "postgres://x@h/db"];
        let Bench::Rules(s) = parse(&[&["rules"][..], &db].concat()).unwrap().bench else {
            panic!("rules")
        };
        assert_eq!(s.events, 10_000, "rules' own default");
        let args = [
            &["relay"][..],
            &db,
            &["--nats-url", "nats://h", "--worker-bin", "w"],
        ];
        let Bench::Relay(s) = parse(&args.concat()).unwrap().bench else {
            panic!("relay")
        };
        assert_eq!(s.events, 100_000, "relay's own default");
        let args = [&["search"][..], &db, &["--worker-bin", "w", "--rate", "7"]];
        let Bench::Search(s) = parse(&args.concat()).unwrap().bench else {
            panic!("search")
        };
        // MEILI_URL comes from the environment when the suite's stack has one.
        let from_env = std::env::var("MEILI_URL").ok().filter(|v| !v.is_empty());
        assert_eq!((s.per_second, s.meili_url), (7, from_env));
        if std::env::var_os("DATABASE_URL").is_none() {
            assert!(parse(&["audit"]).is_err(), "DATABASE_URL is required");
        }
        assert!(parse(&[&["audit"][..], &db, &["--seconds", "x"]].concat()).is_err());
        assert!(parse(&["nope"]).is_err());
    }
}
