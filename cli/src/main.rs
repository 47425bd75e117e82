//! `spine`: the operator's command line for any Spine database. Every command
//! prints a table for a person or, with `--json`, JSON for a program (one object
//! per line where it streams). Exit codes: 0 done, 1 something failed or a check
//! found a problem, 2 bad input (a one-line error).

mod db;
mod doctor;
mod events;
mod jobs;
mod output;
mod search;
mod sources;
mod status;
mod trust;

use clap::{Parser, Subcommand};
use output::Out;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "spine",
    version,
    about = "Operate a Spine database: status, events, jobs, audit, vault, doctor"
)]
struct Cli {
    /// The database (`postgres://…` or `key=value …`, sslmode as libpq reads it).
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:54390/spine",
        hide_env_values = true
    )]
    db: String,
    /// JSON instead of tables (one object per line for `tail --follow`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The database, Spine's processes, sinks with lag, queues, pg_cron jobs and the gateway.
    Status {
        /// The gateway's base URL, to ask for /health/ready.
        #[arg(long, env = "SPINE_URL")]
        gateway: Option<String>,
    },
    /// Events in commit order, newest last; `--follow` keeps printing new ones.
    Tail {
        /// Event type, exact or with `*` (e.g. `shop.*`).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Subject, exact or with `*`.
        #[arg(long)]
        subject: Option<String>,
        /// Only this owner's events.
        #[arg(long)]
        owner: Option<uuid::Uuid>,
        /// How many past events to show first.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: i64,
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Each queue's jobs by state.
    Queues,
    /// A queue's jobs, oldest first.
    Jobs {
        queue: String,
        /// queued, retrying, running or dead (live jobs); completed or cancelled (the archive).
        #[arg(long)]
        state: Option<jobs::State>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Dead jobs of a queue back to queued, with fresh attempts.
    Redrive { queue: String },
    /// Cancels jobs (a running one is released).
    Cancel {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Runs dead or retrying jobs again now (a dead one with fresh attempts).
    Retry {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Evaluates the owner's rules again for a stored event.
    Replay { event: uuid::Uuid },
    /// Which rules considered an event, which matched, which fired, and why.
    Explain { event: uuid::Uuid },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: trust::AuditCommand,
    },
    /// The vault's root keys.
    Vault {
        #[command(subcommand)]
        command: trust::VaultCommand,
    },
    /// A JWT for a role, signed with SPINE_JWT_SECRET (for development).
    Token {
        /// anon, authenticated or service_role.
        role: String,
        /// The user's id (`sub`), for authenticated.
        sub: Option<uuid::Uuid>,
        #[arg(long, env = "SPINE_JWT_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Rebuilds a kind's search index (swapped in atomically), with progress.
    Reindex {
        kind: String,
        /// Meilisearch, as the worker reaches it.
        #[arg(long, env = "MEILI_URL")]
        meili_url: String,
        /// Its master key (or an admin API key).
        #[arg(long, env = "MEILI_MASTER_KEY", hide_env_values = true)]
        meili_key: Option<String>,
        /// The search sync's sink (its cursor marks what to write again).
        #[arg(long, env = "SPINE_SEARCH_SINK", default_value = "meilisearch")]
        search_sink: String,
    },
    /// Maps a connector source's records again with its current mapping, with progress.
    Backfill {
        source: String,
        /// The source's user (needed when several users have a source of that name).
        #[arg(long)]
        owner: Option<uuid::Uuid>,
        /// Records per page; each page is one transaction.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i32).range(1..=10_000))]
        batch: i32,
        /// Resume after this raw record id (the `last` a stopped run printed).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Checks the settings that matter and says how to fix each finding.
    Doctor {
        /// NATS to check JetStream's limits on (the relay's NATS_URL).
        #[arg(long, env = "NATS_URL")]
        nats: Option<String>,
        #[command(flatten)]
        nats_files: spine_nats::NatsArgs,
    },
}

/// Bad input: a one-line message and exit code 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// A check that ran and found a problem (exit 1), already reported on stdout.
#[derive(Debug)]
pub struct Failed(pub String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print as clap prints them.
        Err(e) if !e.use_stderr() => e.exit(),
        // Bad usage: clap's message, on one line like every other error.
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            eprintln!(
                "spine: error: {}",
                first.trim_start_matches("error: ").trim()
            );
            return ExitCode::from(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = if err.downcast_ref::<BadInput>().is_some() {
                2
            } else {
                1
            };
            // One line: the chain joined, newlines folded.
            let message = format!("{err:#}").replace('\n', " ");
            eprintln!("spine: error: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Out::new(cli.json);
    if let Command::Token {
        role,
        sub,
        secret,
        ttl,
    } = &cli.command
    {
        return trust::token(&out, role, *sub, secret.as_deref(), *ttl);
    }
    let db = db::Db::connect(&cli.db).await?;
    match cli.command {
        Command::Status { gateway } => status::run(&db, &out, gateway.as_deref()).await,
        Command::Tail {
            event_type,
            subject,
            owner,
            limit,
            follow,
        } => {
            let filter = events::Filter::new(event_type.as_deref(), subject.as_deref(), owner);
            events::tail(&db, &out, &filter, limit, follow).await
        }
        Command::Queues => jobs::queues(&db, &out).await,
        Command::Jobs {
            queue,
            state,
            limit,
        } => jobs::list(&db, &out, &queue, state, limit).await,
        Command::Redrive { queue } => jobs::redrive(&db, &out, &queue).await,
        Command::Cancel { ids } => jobs::cancel(&db, &out, &ids).await,
        Command::Retry { ids } => jobs::retry(&db, &out, &ids).await,
        Command::Replay { event } => events::replay(&db, &out, event).await,
        Command::Explain { event } => events::explain(&db, &out, event).await,
        Command::Audit { command } => trust::audit(&db, &out, command).await,
        Command::Vault { command } => trust::vault(&db, &out, command).await,
        Command::Reindex {
            kind,
            meili_url,
            meili_key,
            search_sink,
        } => {
            let meili = search::Meili {
                url: meili_url,
                key: meili_key,
                sink: search_sink,
            };
            search::reindex(&db, &out, meili, &kind).await
        }
        Command::Backfill {
            source,
            owner,
            batch,
            after,
        } => {
            let job = sources::Backfill {
                source,
                owner,
                batch,
                after,
            };
            sources::backfill(&db, &out, job).await
        }
        Command::Doctor { nats, nats_files } => {
            doctor::run(&db, &out, nats.as_deref(), nats_files).await
        }
        Command::Token { .. } => unreachable!("handled before connecting"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
