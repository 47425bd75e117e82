//! Worker configuration from environment variables, parsed once, with defaults that
//! match the dev stack (`cargo xtask up`).

use anyhow::Context;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: the Postgres database with the spine extension (URL or
    /// `key=value`; `sslmode` and `sslrootcert` as libpq reads them). Its
    /// `Display` and `Debug` never show the password.
    pub database: spine_db::DbConfig,
    /// `NATS_URL`: NATS server with JetStream enabled.
    pub nats_url: String,
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
}

#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// `SPINE_JOB_QUEUES`: `queue[=handler]` comma list (handler defaults to the
    /// queue's name); `prefix.*` serves every queue whose name starts with
    /// `prefix.` (handler defaults to `prefix`); empty turns the runner off.
    /// Default `http,function,webhook.*`.
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
    /// `SPINE_RELAY_STREAM`: JetStream stream receiving `spine.>`.
    pub stream: String,
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

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |k: &str, default: &str| lookup(k).unwrap_or_else(|| default.to_string());
        let num = |k: &str, default: u64| -> anyhow::Result<u64> {
            match lookup(k) {
                Some(v) => v
                    .parse()
                    .with_context(|| format!("{k}={v:?} is not a number")),
                None => Ok(default),
            }
        };
        let nats_url = get("NATS_URL", "nats://127.0.0.1:54391");
        nats_address(&nats_url).with_context(|| format!("NATS_URL={nats_url:?}"))?;
        let http_addr = get("SPINE_HTTP_ADDR", "127.0.0.1:54394");
        let sink = get("SPINE_RELAY_SINK", "nats");
        anyhow::ensure!(
            is_sink_name(&sink),
            "SPINE_RELAY_SINK={sink:?}: lowercase letters, digits and _, starting with a letter"
        );
        let batch = num("SPINE_RELAY_BATCH", 1000)?;
        anyhow::ensure!(
            (1..=10_000).contains(&batch),
            "SPINE_RELAY_BATCH must be 1..=10000"
        );
        let concurrency = num("SPINE_JOB_CONCURRENCY", 16)?;
        anyhow::ensure!(
            (1..=10_000).contains(&concurrency),
            "SPINE_JOB_CONCURRENCY must be 1..=10000"
        );
        let lease = num("SPINE_JOB_LEASE_SECS", 30)?;
        anyhow::ensure!(lease >= 1, "SPINE_JOB_LEASE_SECS must be at least 1");
        let drain = Duration::from_secs(num("SPINE_DRAIN_SECS", 30)?);
        let jobs = JobsConfig {
            queues: parse_queues(&get("SPINE_JOB_QUEUES", "http,function,webhook.*"))?,
            concurrency: concurrency as usize,
            batch: num("SPINE_JOB_BATCH", concurrency)?.clamp(1, 10_000) as i32,
            lease: Duration::from_secs(lease),
            poll: Duration::from_millis(num("SPINE_JOB_POLL_MS", 500)?),
            channel: get("SPINE_JOBS_CHANNEL", "spine_jobs"),
            worker_id: lookup("SPINE_WORKER_ID").unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            }),
            drain,
        };
        let meili_url = lookup("MEILI_URL").filter(|s| !s.is_empty());
        let search = match &meili_url {
            None => None,
            Some(url) => {
                let sink = get("SPINE_SEARCH_SINK", "meilisearch");
                anyhow::ensure!(
                    is_sink_name(&sink),
                    "SPINE_SEARCH_SINK={sink:?}: lowercase letters, digits and _, starting with a letter"
                );
                let batch = num("SPINE_SEARCH_BATCH", 500)?;
                anyhow::ensure!(
                    (1..=10_000).contains(&batch),
                    "SPINE_SEARCH_BATCH must be 1..=10000"
                );
                Some(SearchConfig {
                    url: url.clone(),
                    key: lookup("MEILI_MASTER_KEY").filter(|s| !s.is_empty()),
                    public_url: lookup("SPINE_SEARCH_PUBLIC_URL")
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| url.clone()),
                    sink,
                    batch: batch as i32,
                    poll: Duration::from_millis(num("SPINE_SEARCH_POLL_MS", 1000)?),
                })
            }
        };
        Ok(Self {
            jobs,
            drain,
            search,
            database: spine_db::DbConfig::parse(&get(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:54390/spine",
            ))
            .context("DATABASE_URL")?,
            nats_url,
            meili_url,
            http_addr: http_addr
                .parse()
                .with_context(|| format!("SPINE_HTTP_ADDR={http_addr:?}"))?,
            relay: RelayConfig {
                sink,
                stream: get("SPINE_RELAY_STREAM", "SPINE"),
                batch: batch as i32,
                poll: Duration::from_millis(num("SPINE_RELAY_POLL_MS", 1000)?),
                duplicate_window: Duration::from_secs(num("SPINE_RELAY_DEDUP_WINDOW_SECS", 600)?),
                lag_threshold: Duration::from_secs(num("SPINE_RELAY_LAG_THRESHOLD_SECS", 30)?),
                notify_channel: get("SPINE_NOTIFY_CHANNEL", "spine_events"),
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

/// `host:port` of a `nats://host:port` URL (the port defaults to 4222).
pub fn nats_address(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("nats://")
        .context("must start with nats://")?;
    let hostport = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .trim_end_matches('/');
    anyhow::ensure!(!hostport.is_empty(), "has no host");
    Ok(if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:4222")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_address_defaults_port_and_drops_credentials() {
        assert_eq!(nats_address("nats://h").unwrap(), "h:4222");
        assert_eq!(nats_address("nats://u:p@h:1/").unwrap(), "h:1");
        assert!(nats_address("http://h").is_err());
        assert!(nats_address("nats://").is_err());
    }

    #[test]
    fn empty_meili_url_means_search_off() {
        let c = Config::from_lookup(|k| (k == "MEILI_URL").then(String::new)).unwrap();
        assert!(c.meili_url.is_none());
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

    #[test]
    fn bad_values_are_named_in_the_error() {
        let err =
            Config::from_lookup(|k| (k == "SPINE_RELAY_BATCH").then(|| "lots".into())).unwrap_err();
        assert!(err.to_string().contains("SPINE_RELAY_BATCH"), "{err}");
        let err =
            Config::from_lookup(|k| (k == "SPINE_RELAY_SINK").then(|| "Bad".into())).unwrap_err();
        assert!(err.to_string().contains("SPINE_RELAY_SINK"), "{err}");
    }
}
