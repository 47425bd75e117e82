//! Spine's worker: one binary, several restartable loops around the database.
//!
//! - [`config`]: the command line and settings (flags and environment variables), parsed once.
//! - NATS connections: [`spine_nats`] (`NATS_URL`, nkeys, creds, TLS; redacted URLs).
//! - [`db`]: connecting to Postgres (through spine-db: TLS, redacted URLs).
//! - [`sink`]: what every sink shares: holding it, reading after its cursor, moving it.
//! - [`relay`]: outbox → NATS JetStream, effectively once, in commit order.
//! - [`listener`]: LISTEN wake-ups for the relay (it also polls).
//! - [`envelope`]: the CloudEvents JSON an event travels as.
//! - [`streams`]: the stream map (which JetStream stream and subject each event goes to).
//! - [`jobs`]: the job runner and its handlers (`http`, `function`, `webhook`,
//!   `noop`, registry).
//! - [`metrics`], [`http`]: `/metrics` (Prometheus) and `/healthz` (fails on lag).
//! - [`supervise`]: restarting a failed loop with backoff until shutdown.
//! - [`check`]: `spine-worker check`: Postgres with the extension, NATS with
//!   JetStream (account usage, the relay's stream).
//!
//! - [`search`]: entities → Meilisearch (one index per kind), reindex and check.
//! - [`services`]: NATS request/reply into Spine (SQL and function verbs).
//! - [`ingress`]: NATS messages consumed durably and written exactly once.

pub mod check;
pub mod config;
pub mod db;
pub mod envelope;
pub mod http;
pub mod ingress;
pub mod jobs;
pub mod listener;
pub mod metrics;
pub mod relay;
pub mod resume;
pub mod search;
pub mod services;
pub mod sink;
pub mod streams;
pub mod supervise;

use config::Config;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Runs every loop until `shutdown` resolves, then lets them finish their current
/// batch (a broadcast, then a bounded drain).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let (stop_tx, stop_rx) = watch::channel(false);
    // The function host runs function and webhook jobs in-process; only a worker
    // that runs jobs starts one (it holds threads and a database pool).
    let functions = (!config.jobs.queues.is_empty() || config.services.is_some()).then(|| {
        let mut host = spine_functions::host::HostConfig::new(config.database.clone());
        host.embeddings = config.embeddings.clone();
        spine_functions::host::Host::new(host)
    });
    let metrics = Arc::new(metrics::Metrics::new(
        &config.relay.sink,
        functions.as_ref().map(|h| &h.metrics),
    ));

    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding SPINE_HTTP_ADDR={}: {e}", config.http_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz and /metrics");
    let http = tokio::spawn({
        let mut stop = stop_rx.clone();
        http::serve(
            listener,
            Arc::new(http::HttpState {
                metrics: metrics.clone(),
                sink: config.relay.sink.clone(),
                lag_threshold: config.relay.lag_threshold,
                // One session for scrapes: spine.queue_stats() per scrape.
                db: Some(spine_db::Pool::new(
                    &config.database,
                    spine_db::PoolOptions {
                        max_size: 1,
                        ..spine_db::PoolOptions::default()
                    },
                )),
                functions: functions.clone(),
            }),
            async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            },
        )
    });

    let wake = Arc::new(Notify::new());
    let listen = tokio::spawn(listener::run(
        config.database.clone(),
        config.relay.notify_channel.clone(),
        wake.clone(),
        stop_rx.clone(),
    ));
    let relay = tokio::spawn(relay::run(
        config.clone(),
        metrics.relay.clone(),
        wake,
        stop_rx.clone(),
    ));
    // Requests' and ingress messages' tokens are verified with the same keys.
    let keys =
        match config.jwt.configured() && (config.services.is_some() || config.ingress.is_some()) {
            false => None,
            true => Some(Arc::new(
                spine_functions::jwt::Keys::load(config.jwt.0.clone()).await?,
            )),
        };
    let services = match (&config.services, &functions) {
        (Some(_), Some(host)) => Some(tokio::spawn(services::run(
            config.clone(),
            host.clone(),
            keys.clone(),
            stop_rx.clone(),
        ))),
        _ => None,
    };
    let ingress = config
        .ingress
        .is_some()
        .then(|| tokio::spawn(ingress::run(config.clone(), keys, stop_rx.clone())));
    let runner = (!config.jobs.queues.is_empty())
        .then(|| functions.clone())
        .flatten()
        .map(|host| {
            // Its own LISTEN session on the jobs channel, for the queues it serves.
            let jobs_wake = Arc::new(jobs::runner::Wakeups::default());
            let listen = tokio::spawn(listener::run_with(
                config.database.clone(),
                config.jobs.channel.clone(),
                jobs::runner::Wakeups::handlers(jobs_wake.clone(), config.jobs.clone()),
                stop_rx.clone(),
            ));
            let run = tokio::spawn(jobs::runner::run(
                config.database.clone(),
                config.jobs.clone(),
                jobs::handler::Registry::builtin(&config.database, host, config.embeddings.clone()),
                metrics.jobs.clone(),
                jobs_wake,
                stop_rx.clone(),
            ));
            (listen, run)
        });
    let search = match &config.search {
        None => {
            tracing::info!("search sync is off: MEILI_URL is not set");
            None
        }
        Some(sc) => {
            // Its own LISTEN session: the relay's wake-up is consumed by the relay.
            let search_wake = Arc::new(Notify::new());
            let listen = tokio::spawn(listener::run(
                config.database.clone(),
                config.relay.notify_channel.clone(),
                search_wake.clone(),
                stop_rx.clone(),
            ));
            tracing::info!(url = %sc.url, sink = %sc.sink, "search sync is on");
            let sink = tokio::spawn(search::sink::run(
                config.clone(),
                metrics.search.clone(),
                search_wake,
                stop_rx.clone(),
            ));
            Some((listen, sink))
        }
    };

    shutdown.await;
    tracing::info!("shutting down: finishing in-flight batches");
    let _ = stop_tx.send(true);
    // The runner keeps its own drain deadline; this one bounds everything.
    let drained = tokio::time::timeout(config.drain + Duration::from_secs(5), async {
        if let Some((listen, runner)) = runner {
            let _ = runner.await;
            let _ = listen.await;
        }
        let _ = relay.await;
        let _ = listen.await;
        if let Some(services) = services {
            let _ = services.await;
        }
        if let Some(ingress) = ingress {
            let _ = ingress.await;
        }
        if let Some((listen, sink)) = search {
            let _ = sink.await;
            let _ = listen.await;
        }
        let _ = http.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain timed out; exiting with work in flight (it will be redelivered)");
    }
    Ok(())
}
