//! `spine-worker`'s command line and configuration. Every setting is a flag and an
//! environment variable with a default that matches the dev stack (`cargo xtask
//! up`); `--help` lists them all, and a test checks that docs/configuration.md
//! does too. [`Cli`] is what clap parses; [`Config`] is what the worker runs with,
//! built once from it by [`Config::from_settings`], which checks what clap cannot.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use spine_nats::{NatsArgs, NatsConfig};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "spine-worker",
    version,
    about = "Spine's worker: outbox relay to NATS JetStream, search sync to Meilisearch, \
             job runner, /healthz and /metrics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Relay, search sync, job runner, /healthz and /metrics until SIGTERM (the
    /// default command).
    Run,
    /// Check that Postgres has the extension and NATS has JetStream (memory,
    /// storage, streams, the relay's stream); exit 1 when either is not so.
    Check,
    /// Rebuild the search index of an entity kind from Postgres and swap it in.
    Reindex {
        /// The entity kind (lowercase letters, digits, _).
        kind: String,
    },
    /// Compare the search index of an entity kind with Postgres; exit 1 on a
    /// difference.
    CheckIndex {
        /// The entity kind (lowercase letters, digits, _).
        kind: String,
    },
}

/// Every setting, as clap reads it (flag, else environment variable, else
/// default). Secrets and URLs that may hold one are plain strings here, checked in
/// [`Config::from_settings`]: clap's own messages would repeat a bad value.
#[derive(Debug, Args)]
pub struct Settings {
    /// The Postgres database with the spine extension: URL or key=value, sslmode
    /// and sslrootcert as libpq reads them (docs/configuration.md).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:54390/spine",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: String,

    /// NATS with JetStream: nats://host:port or tls://host:port, with user:password@
    /// or token@ when the server asks for them; a cluster's servers separated by commas.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:54391",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub nats_url: String,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// Copies JetStream keeps of the streams the worker creates (relay, ingress):
    /// auto (1 on a single server, up to 3 in a cluster; auto only grows an
    /// existing stream) or 1-5 (applied to existing streams too).
    #[arg(
        long,
        env = "SPINE_NATS_REPLICAS",
        default_value = "auto",
        value_name = "N"
    )]
    pub nats_replicas: spine_nats::Replicas,

    /// Meilisearch; unset or empty turns the search sync off.
    #[arg(long, env = "MEILI_URL", value_name = "URL")]
    pub meili_url: Option<String>,

    /// Meilisearch's master key (or an admin API key): indexes, documents, keys.
    #[arg(
        long,
        env = "MEILI_MASTER_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub meili_master_key: Option<String>,

    /// `SPINE_EMBEDDINGS_*`: the embeddings API of `embed` jobs and of the
    /// embedded function host (one configuration for every process).
    #[command(flatten)]
    pub embeddings: spine_functions::embeddings::EmbeddingsArgs,

    /// NATS subjects the worker answers requests on: fixed tokens, then
    /// `{service}.{verb}` (e.g. `cbs.{service}.{verb}`); empty turns services off.
    /// Not under `spine.`: the relay's stream captures `spine.>`.
    #[arg(
        long,
        env = "SPINE_SERVICES_SUBJECT",
        default_value = "svc.{service}.{verb}",
        value_name = "TEMPLATE"
    )]
    pub services_subject: String,

    /// The queue group the workers answering requests share.
    #[arg(
        long,
        env = "SPINE_SERVICES_QUEUE_GROUP",
        default_value = "spine-services",
        value_name = "NAME"
    )]
    pub services_queue_group: String,

    /// Requests served at once by this worker; more are answered UNAVAILABLE.
    #[arg(long, env = "SPINE_SERVICES_MAX_IN_FLIGHT", default_value_t = 64,
          value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub services_max_in_flight: u32,

    /// Time a request may take before it is answered TIMEOUT, in milliseconds.
    #[arg(long, env = "SPINE_SERVICES_TIMEOUT_MS", default_value_t = 5_000,
          value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub services_timeout_ms: u64,

    /// Largest request payload, in bytes; larger ones are answered LIMIT.
    #[arg(long, env = "SPINE_SERVICES_MAX_PAYLOAD", default_value_t = 1 << 20,
          value_name = "BYTES")]
    pub services_max_payload: usize,

    /// The project's JWT secret (HS256), to verify requests' tokens.
    #[arg(
        long,
        env = "SPINE_JWT_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub jwt_secret: Option<String>,

    /// A JWKS URL (Supabase's signing keys), to verify requests' tokens.
    #[arg(long, env = "SPINE_JWKS_URL", value_name = "URL")]
    pub jwks_url: Option<String>,

    /// Where /healthz and /metrics are served.
    #[arg(
        long,
        env = "SPINE_HTTP_ADDR",
        default_value = "127.0.0.1:54394",
        value_name = "ADDR"
    )]
    pub http_addr: SocketAddr,

    /// The sink (cursor) the relay advances; one relay holds it at a time.
    #[arg(long, env = "SPINE_RELAY_SINK", default_value = "nats",
          value_name = "NAME", value_parser = sink_name)]
    pub relay_sink: String,

    /// The JetStream stream receiving spine.>, created or updated at start.
    #[arg(
        long,
        env = "SPINE_RELAY_STREAM",
        default_value = "SPINE",
        value_name = "NAME"
    )]
    pub relay_stream: String,

    /// NATS subjects consumed durably and written into Spine exactly once
    /// (comma-separated, wildcards allowed: `ingest.>,devices.>`); empty: no ingress.
    #[arg(
        long,
        env = "SPINE_INGRESS_SUBJECTS",
        default_value = "",
        value_name = "SUBJECTS"
    )]
    pub ingress_subjects: String,

    /// Testing only: abort the process after an ingress batch commits, before
    /// its acks (the crash window the exactly-once design covers).
    #[arg(
        long,
        env = "SPINE_INGRESS_CRASH_AFTER_COMMIT",
        default_value_t = false
    )]
    pub ingress_crash_after_commit: bool,

    /// How long a fetched ingress message may stay unacknowledged before another
    /// worker gets it (what a crashed worker held waits this long).
    #[arg(long, env = "SPINE_INGRESS_ACK_WAIT_SECS", default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ingress_ack_wait_secs: u64,

    /// The JetStream stream that keeps ingress messages until they are written.
    #[arg(
        long,
        env = "SPINE_INGRESS_STREAM",
        default_value = "SPINE_INGRESS",
        value_name = "NAME"
    )]
    pub ingress_stream: String,

    /// Streams by event type, first match wins: `connector.*=connector-data,
    /// audit.*=audit-log, *=platform-events` (`stream:prefix` sets the subject
    /// prefix, the stream's name in lower case by default). Unmatched events go
    /// to SPINE_RELAY_STREAM as spine.<type>.
    #[arg(
        long,
        env = "SPINE_RELAY_STREAMS",
        default_value = "",
        value_name = "MAP"
    )]
    pub relay_streams: String,

    /// `on`: every subject ends with the event's owner (`<prefix>.<type>.<owner
    /// id>`, `system` for events without one), so a consumer can be limited to
    /// one user's events on the server (filter `platform-events.*.*.<id>`, NATS
    /// permissions per user). Changes the subjects consumers filter on.
    #[arg(long, env = "SPINE_RELAY_OWNER_SUBJECTS", default_value = "off",
          value_parser = ["on", "off"])]
    pub relay_owner_subjects: String,

    /// Events read and published per round, the publishes in flight (1-10000).
    #[arg(long, env = "SPINE_RELAY_BATCH", default_value_t = 1000,
          value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub relay_batch: u32,

    /// The relay's poll interval when no notification arrives, in milliseconds.
    #[arg(
        long,
        env = "SPINE_RELAY_POLL_MS",
        default_value_t = 1000,
        value_name = "MS"
    )]
    pub relay_poll_ms: u64,

    /// The stream's duplicate window, in seconds: longer than any crash and restart
    /// of the relay.
    #[arg(
        long,
        env = "SPINE_RELAY_DEDUP_WINDOW_SECS",
        default_value_t = 600,
        value_name = "SECS"
    )]
    pub relay_dedup_window_secs: u64,

    /// /healthz answers 503 when the relay lags more than this, in seconds.
    #[arg(
        long,
        env = "SPINE_RELAY_LAG_THRESHOLD_SECS",
        default_value_t = 30,
        value_name = "SECS"
    )]
    pub relay_lag_threshold_secs: u64,

    /// Must match the database's spine.notify_channel.
    #[arg(
        long,
        env = "SPINE_NOTIFY_CHANNEL",
        default_value = "spine_events",
        value_name = "CHANNEL"
    )]
    pub notify_channel: String,

    /// Queues to run, a comma list of queue[=handler] (the handler defaults to the
    /// queue's name); prefix.* serves every queue named prefix.…; empty turns the
    /// job runner off.
    #[arg(long, env = "SPINE_JOB_QUEUES", default_value = "http,function,net,embed,webhook.*",
          value_name = "LIST", value_parser = queue_list)]
    pub job_queues: Queues,

    /// Jobs run at once by this worker (1-10000).
    #[arg(long, env = "SPINE_JOB_CONCURRENCY", default_value_t = 16,
          value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub job_concurrency: u32,

    /// Most jobs leased per fetch (1-10000; default: the concurrency).
    #[arg(long, env = "SPINE_JOB_BATCH", value_name = "N")]
    pub job_batch: Option<u64>,

    /// The lease per job, renewed every third of it while the job runs, in seconds.
    #[arg(long, env = "SPINE_JOB_LEASE_SECS", default_value_t = 30,
          value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub job_lease_secs: u64,

    /// How often an idle runner looks for work when no notification woke it, in
    /// milliseconds.
    #[arg(
        long,
        env = "SPINE_JOB_POLL_MS",
        default_value_t = 500,
        value_name = "MS"
    )]
    pub job_poll_ms: u64,

    /// Must match the database's spine.jobs_channel.
    #[arg(
        long,
        env = "SPINE_JOBS_CHANNEL",
        default_value = "spine_jobs",
        value_name = "CHANNEL"
    )]
    pub jobs_channel: String,

    /// Recorded on leased jobs (default: host-pid).
    #[arg(long, env = "SPINE_WORKER_ID", value_name = "ID")]
    pub worker_id: Option<String>,

    /// The sink (cursor) of the search sync.
    #[arg(long, env = "SPINE_SEARCH_SINK", default_value = "meilisearch",
          value_name = "NAME", value_parser = sink_name)]
    pub search_sink: String,

    /// Events per search-sync round (1-10000).
    #[arg(long, env = "SPINE_SEARCH_BATCH", default_value_t = 500,
          value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub search_batch: u32,

    /// The search sync's poll interval when no notification arrives, in milliseconds.
    #[arg(
        long,
        env = "SPINE_SEARCH_POLL_MS",
        default_value_t = 1000,
        value_name = "MS"
    )]
    pub search_poll_ms: u64,

    /// The Meilisearch URL spine.search_key() gives clients (default: MEILI_URL).
    #[arg(long, env = "SPINE_SEARCH_PUBLIC_URL", value_name = "URL")]
    pub search_public_url: Option<String>,

    /// After SIGTERM, how long running jobs may finish before they are released, in
    /// seconds.
    #[arg(
        long,
        env = "SPINE_DRAIN_SECS",
        default_value_t = 30,
        value_name = "SECS"
    )]
    pub drain_secs: u64,
}

/// `SPINE_JOB_QUEUES`, parsed: (queue, handler) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queues(pub Vec<(String, String)>);

fn queue_list(spec: &str) -> Result<Queues, String> {
    parse_queues(spec).map(Queues).map_err(|e| e.to_string())
}

fn sink_name(name: &str) -> Result<String, String> {
    if is_sink_name(name) {
        Ok(name.to_string())
    } else {
        Err("lowercase letters, digits and _, starting with a letter".into())
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: the Postgres database with the spine extension (URL or
    /// `key=value`; `sslmode` and `sslrootcert` as libpq reads them). Its
    /// `Display` and `Debug` never show the password.
    pub database: spine_db::DbConfig,
    /// `NATS_URL`: NATS server with JetStream enabled (credentials kept apart).
    pub nats: NatsConfig,
    /// `SPINE_NATS_REPLICAS`: replicas of the streams the worker creates.
    pub nats_replicas: spine_nats::Replicas,
    /// `MEILI_URL`: Meilisearch; `None` turns search sync off.
    pub meili_url: Option<String>,
    /// Search sync settings; present when `MEILI_URL` is.
    pub search: Option<SearchConfig>,
    /// `SPINE_HTTP_ADDR`: where `/healthz` and `/metrics` are served.
    pub http_addr: SocketAddr,
    pub relay: RelayConfig,
    pub jobs: JobsConfig,
    /// `SPINE_DRAIN_SECS`: how long in-flight work may take after SIGTERM.
    pub drain: Duration,
    /// `SPINE_EMBEDDINGS_*`: where `embed` jobs get vectors; None: not configured.
    pub embeddings: Option<EmbeddingsConfig>,
    /// `SPINE_SERVICES_*`: NATS request/reply; None: off.
    pub services: Option<ServicesConfig>,
    /// `SPINE_INGRESS_*`: NATS ingress; None: off.
    pub ingress: Option<IngressConfig>,
    /// `SPINE_JWT_SECRET`, `SPINE_JWKS_URL`: keys for requests' tokens.
    pub jwt: JwtKeys,
}

/// The keys requests' tokens are verified with; `Debug` shows no secret.
#[derive(Clone)]
pub struct JwtKeys(pub spine_functions::jwt::KeySettings);

impl JwtKeys {
    pub fn configured(&self) -> bool {
        self.0.secret.is_some() || self.0.jwks.is_some()
    }
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("secret", &self.0.secret.as_ref().map(|_| "…"))
            .field("jwks", &self.0.jwks)
            .finish()
    }
}

/// NATS ingress ([`crate::ingress`]).
#[derive(Debug, Clone)]
pub struct IngressConfig {
    pub subjects: Vec<String>,
    pub stream: String,
    /// `SPINE_INGRESS_CRASH_AFTER_COMMIT` (tests): abort between commit and acks.
    pub crash_after_commit: bool,
    /// `SPINE_INGRESS_ACK_WAIT_SECS`: redelivery after this without an ack.
    pub ack_wait: Duration,
}

/// NATS request/reply into Spine ([`crate::services`]).
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    pub subject: spine_core::service::SubjectTemplate,
    pub queue_group: String,
    pub max_in_flight: usize,
    pub timeout: Duration,
    pub max_payload: usize,
}

/// The embeddings API the `embed` handler calls (OpenAI's `/embeddings` shape).
pub type EmbeddingsConfig = spine_functions::embeddings::EmbeddingsApi;

#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// `SPINE_JOB_QUEUES`: `queue[=handler]` comma list (handler defaults to the
    /// queue's name); `prefix.*` serves every queue whose name starts with
    /// `prefix.` (handler defaults to `prefix`); empty turns the runner off.
    /// Default `http,function,net,embed,webhook.*`.
    pub queues: Vec<(String, String)>,
    /// `SPINE_JOB_CONCURRENCY`: jobs run at once by this worker.
    pub concurrency: usize,
    /// `SPINE_JOB_BATCH`: most jobs leased per fetch.
    pub batch: i32,
    /// `SPINE_JOB_LEASE_SECS`: lease per fetch, renewed every third of it.
    pub lease: Duration,
    /// `SPINE_JOB_POLL_MS`: how often an idle runner looks for work when no
    /// notification woke it (the fallback for lost notifications).
    pub poll: Duration,
    /// `SPINE_JOBS_CHANNEL`: must match the database's `spine.jobs_channel`
    /// (default `spine_jobs`); enqueues notify it with the queue's name.
    pub channel: String,
    /// `SPINE_WORKER_ID`: recorded on leased jobs (default host-pid).
    pub worker_id: String,
    /// Copy of `SPINE_DRAIN_SECS`.
    pub drain: Duration,
}

impl JobsConfig {
    /// Whether this runner serves `queue`: a configured name, or under a
    /// configured `prefix.*`.
    pub fn serves(&self, queue: &str) -> bool {
        self.queues.iter().any(|(q, _)| match q.strip_suffix('*') {
            Some(prefix) => queue.starts_with(prefix),
            None => q == queue,
        })
    }
}

#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// `MEILI_URL`.
    pub url: String,
    /// `MEILI_MASTER_KEY` (or an admin API key): indexes, documents, keys.
    pub key: Option<String>,
    /// `SPINE_SEARCH_PUBLIC_URL`: the Meilisearch URL clients are given with their
    /// tenant tokens (default `MEILI_URL`).
    pub public_url: String,
    /// `SPINE_SEARCH_SINK`: the sink (cursor) of the search sync (default `meilisearch`).
    pub sink: String,
    /// `SPINE_SEARCH_BATCH`: events per round (default 500).
    pub batch: i32,
    /// `SPINE_SEARCH_POLL_MS`: poll interval when no NOTIFY arrives (default 1000).
    pub poll: Duration,
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `SPINE_RELAY_SINK`: the sink (cursor) this relay advances; one relay holds it.
    pub sink: String,
    /// `SPINE_RELAY_STREAMS` over `SPINE_RELAY_STREAM`: where each event goes.
    pub streams: crate::streams::StreamMap,
    /// `SPINE_RELAY_BATCH`: events read and published per round (the ack window).
    pub batch: i32,
    /// `SPINE_RELAY_POLL_MS`: poll interval when no notification arrives.
    pub poll: Duration,
    /// `SPINE_RELAY_DEDUP_WINDOW_SECS`: JetStream duplicate window; must exceed the
    /// longest time between a publish and its cursor commit (crash + restart).
    pub duplicate_window: Duration,
    /// `SPINE_RELAY_LAG_THRESHOLD_SECS`: `/healthz` fails when lag exceeds it.
    pub lag_threshold: Duration,
    /// `SPINE_NOTIFY_CHANNEL`: must match the database's `spine.notify_channel`.
    pub notify_channel: String,
}

impl Cli {
    /// Parses the process's arguments and environment, or exits with clap's message
    /// (status 2), which names the variable when a bad value came from one.
    pub fn parse_or_exit() -> Self {
        Self::try_parse().unwrap_or_else(|err| name_the_variable(err, std::env::args_os()).exit())
    }
}

/// Clap's message for a bad value names the flag (`--relay-batch <N>`); when the
/// value came from the environment instead, add which variable it was.
pub fn name_the_variable(
    mut err: clap::Error,
    args: impl IntoIterator<Item = OsString>,
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    if !matches!(
        err.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return err;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let Some(long) = arg
        .split_whitespace()
        .next()
        .and_then(|a| a.strip_prefix("--"))
    else {
        return err;
    };
    let flag = format!("--{long}");
    let given = args.into_iter().any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    let command = Cli::command();
    let env = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env());
    if let (false, Some(env)) = (given, env) {
        let tip = format!(
            "the value comes from the environment variable {}",
            env.to_string_lossy()
        );
        err.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![tip.into()]),
        );
    }
    err
}

impl Config {
    /// The configuration the worker runs with; checks what clap does not (the
    /// URLs), with messages that name the variable and never show a secret.
    pub fn from_settings(s: &Settings) -> anyhow::Result<Self> {
        let drain = Duration::from_secs(s.drain_secs);
        let jobs = JobsConfig {
            queues: s.job_queues.0.clone(),
            concurrency: s.job_concurrency as usize,
            batch: s
                .job_batch
                .unwrap_or(u64::from(s.job_concurrency))
                .clamp(1, 10_000) as i32,
            lease: Duration::from_secs(s.job_lease_secs),
            poll: Duration::from_millis(s.job_poll_ms),
            channel: s.jobs_channel.clone(),
            worker_id: s.worker_id.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            }),
            drain,
        };
        let meili_url = s.meili_url.clone().filter(|u| !u.is_empty());
        let search = meili_url.as_ref().map(|url| SearchConfig {
            url: url.clone(),
            key: s.meili_master_key.clone().filter(|k| !k.is_empty()),
            public_url: s
                .search_public_url
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| url.clone()),
            sink: s.search_sink.clone(),
            batch: s.search_batch as i32,
            poll: Duration::from_millis(s.search_poll_ms),
        });
        let embeddings = s.embeddings.api();
        let services = match s.services_subject.trim() {
            "" => None,
            template => Some(ServicesConfig {
                subject: spine_core::service::SubjectTemplate::parse(template)
                    .map_err(|e| anyhow::anyhow!("SPINE_SERVICES_SUBJECT: {e}"))?,
                queue_group: s.services_queue_group.clone(),
                max_in_flight: s.services_max_in_flight as usize,
                timeout: Duration::from_millis(s.services_timeout_ms),
                max_payload: s.services_max_payload,
            }),
        };
        let subjects: Vec<String> = s
            .ingress_subjects
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        let ingress = (!subjects.is_empty()).then(|| IngressConfig {
            subjects,
            stream: s.ingress_stream.clone(),
            crash_after_commit: s.ingress_crash_after_commit,
            ack_wait: Duration::from_secs(s.ingress_ack_wait_secs),
        });
        let jwt = JwtKeys(spine_functions::jwt::KeySettings {
            secret: s.jwt_secret.clone().filter(|k| !k.is_empty()),
            jwks: s
                .jwks_url
                .clone()
                .filter(|u| !u.is_empty())
                .map(spine_functions::jwt::JwksSource::Url),
            leeway_secs: None,
            refetch_every: None,
            ..Default::default()
        });
        Ok(Self {
            jobs,
            drain,
            search,
            embeddings,
            services,
            ingress,
            jwt,
            database: spine_db::DbConfig::parse_for_process(
                &s.database_url,
                concat!("spine-worker/", env!("CARGO_PKG_VERSION")),
            )
            .context("DATABASE_URL")?,
            nats: NatsConfig::new(&s.nats_url, s.nats.clone())?,
            nats_replicas: s.nats_replicas,
            meili_url,
            http_addr: s.http_addr,
            relay: RelayConfig {
                sink: s.relay_sink.clone(),
                streams: crate::streams::StreamMap::parse(&s.relay_streams, &s.relay_stream)
                    .map_err(anyhow::Error::msg)
                    .context("SPINE_RELAY_STREAMS")?
                    .with_owner_subjects(s.relay_owner_subjects == "on"),
                batch: s.relay_batch as i32,
                poll: Duration::from_millis(s.relay_poll_ms),
                duplicate_window: Duration::from_secs(s.relay_dedup_window_secs),
                lag_threshold: Duration::from_secs(s.relay_lag_threshold_secs),
                notify_channel: s.notify_channel.clone(),
            },
        })
    }
}

/// `emails,http,bench=noop,webhook.*` → [(emails, emails), (http, http),
/// (bench, noop), (webhook.*, webhook)].
pub fn parse_queues(spec: &str) -> anyhow::Result<Vec<(String, String)>> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let default_handler = item.strip_suffix(".*").unwrap_or(item);
            let (queue, handler) = item.split_once('=').unwrap_or((item, default_handler));
            anyhow::ensure!(
                !queue.is_empty() && !handler.is_empty(),
                "SPINE_JOB_QUEUES item {item:?} must be queue or queue=handler"
            );
            Ok((queue.to_string(), handler.to_string()))
        })
        .collect()
}

/// Sink names as `spine.ensure_sink` accepts them.
fn is_sink_name(sink: &str) -> bool {
    !sink.is_empty()
        && sink.len() < 64
        && sink.starts_with(|c: char| c.is_ascii_lowercase())
        && sink
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("spine-worker").chain(args.iter().copied()))
    }

    fn config(args: &[&str]) -> anyhow::Result<Config> {
        Config::from_settings(&parse(args)?.settings)
    }

    /// clap's own consistency checks of the command line pass.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every setting has a variable, and the flag is the variable's name without
    /// `SPINE_`, in lowercase with dashes (`SPINE_RELAY_BATCH` is `--relay-batch`).
    #[test]
    fn every_flag_is_named_after_its_variable() {
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{long} has no variable"));
            let env = env.to_string_lossy();
            let expected = env
                .strip_prefix("SPINE_")
                .unwrap_or(&env)
                .to_lowercase()
                .replace('_', "-");
            assert_eq!(long, expected, "--{long} is set by {env}");
        }
    }

    /// Flags (before the subcommand), subcommands and their defaults.
    #[test]
    fn flags_and_subcommands_parse() {
        // Whatever the environment of the test run says, flags win over it.
        let cli = parse(&[
            "--relay-batch",
            "5",
            "--job-queues",
            "emails,bench=noop",
            "check",
        ])
        .unwrap();
        assert_eq!(cli.command, Some(Command::Check));
        let c = Config::from_settings(&cli.settings).unwrap();
        assert_eq!(c.relay.batch, 5);
        assert_eq!(
            c.jobs.queues,
            [
                ("emails".into(), "emails".into()),
                ("bench".into(), "noop".into())
            ]
        );
        let cli = parse(&["--drain-secs=7", "check-index", "person"]).unwrap();
        assert_eq!(
            cli.command,
            Some(Command::CheckIndex {
                kind: "person".into()
            })
        );
        assert_eq!(cli.settings.drain_secs, 7);
        assert_eq!(parse(&["run"]).unwrap().command, Some(Command::Run));
        assert_eq!(
            parse(&["reindex", "person"]).unwrap().command,
            Some(Command::Reindex {
                kind: "person".into()
            })
        );
        assert!(parse(&["reindex"]).is_err(), "reindex needs a kind");
        assert!(parse(&["frobnicate"]).is_err());

        let c = config(&["--job-concurrency", "3", "--job-lease-secs", "9"]).unwrap();
        assert_eq!(
            (c.jobs.concurrency, c.jobs.batch),
            (3, 3),
            "the batch follows the concurrency"
        );
        assert_eq!(c.jobs.lease, Duration::from_secs(9));
        assert_eq!(
            config(&["--job-batch", "0"]).unwrap().jobs.batch,
            1,
            "clamped"
        );
    }

    /// An empty MEILI_URL means search off; an empty SPINE_JOB_QUEUES means no runner.
    #[test]
    fn empty_values_turn_things_off() {
        let c = config(&["--meili-url=", "--job-queues="]).unwrap();
        assert!(c.meili_url.is_none() && c.search.is_none());
        assert!(c.jobs.queues.is_empty());
        let c = config(&["--meili-url", "http://m:7700", "--search-public-url="]).unwrap();
        assert_eq!(c.search.unwrap().public_url, "http://m:7700");
    }

    #[test]
    fn job_queues_bind_handlers() {
        assert_eq!(
            parse_queues("http, bench=noop,").unwrap(),
            vec![
                ("http".into(), "http".into()),
                ("bench".into(), "noop".into())
            ]
        );
        assert!(parse_queues("").unwrap().is_empty());
        assert_eq!(
            parse_queues("webhook.*").unwrap(),
            vec![("webhook.*".into(), "webhook".into())]
        );
        assert!(parse_queues("a=").is_err());
    }

    /// A bad value is an error naming the flag, or the variable when it came from
    /// one; a bad URL's message never repeats its secret.
    #[test]
    fn bad_values_are_named_in_the_error() {
        for (args, names) in [
            (&["--relay-batch", "lots"][..], "--relay-batch"),
            (&["--relay-batch", "0"][..], "--relay-batch"),
            (&["--relay-sink", "Bad"][..], "lowercase letters"),
            (&["--job-lease-secs", "0"][..], "--job-lease-secs"),
            (&["--job-queues", "a="][..], "queue or queue=handler"),
            (&["--http-addr", "nowhere"][..], "--http-addr"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(names), "{args:?}: {err}");
        }
        let err = config(&["--nats-url", "http://u:Pw0rd@h"]).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("NATS_URL") && !err.contains("Pw0rd"), "{err}");

        // The same error, had the value come from the environment: the tip names it.
        let err = parse(&["--relay-batch", "lots"]).unwrap_err();
        let from_env = name_the_variable(err, ["spine-worker".into()]).to_string();
        assert!(from_env.contains("SPINE_RELAY_BATCH"), "{from_env}");
        let err = parse(&["--relay-batch", "lots"]).unwrap_err();
        let from_flag = name_the_variable(err, ["spine-worker".into(), "--relay-batch".into()]);
        assert!(!from_flag.to_string().contains("SPINE_RELAY_BATCH"));
    }
}
