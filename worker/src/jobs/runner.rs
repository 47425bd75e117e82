//! The job runner: leases jobs from `spine.fetch_jobs` as slots free up, runs each
//! with its queue's handler, heartbeats the leases of running jobs, completes
//! successes in batches and records failures (the database decides retry or dead).
//!
//! Crash safety comes from the lease: a runner that dies stops heartbeating, and
//! its jobs return to the queue when their leases pass. On SIGTERM the runner stops
//! leasing, lets running jobs finish within the drain time, and releases the rest
//! without counting the attempt.

use super::handler::{Job, Registry};
use crate::config::JobsConfig;
use crate::metrics::JobMetrics;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch, Semaphore};

pub async fn run(
    database_url: String,
    config: JobsConfig,
    registry: Registry,
    metrics: Arc<JobMetrics>,
    shutdown: watch::Receiver<bool>,
) {
    // Jobs in flight outlive a failed database session: their slots, their ids and
    // the channel their outcomes arrive on belong to the runner, so the next session
    // keeps heartbeating them and records their outcomes (nothing runs twice because
    // a connection dropped, and the concurrency limit holds across sessions).
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Outcome>();
    let state = Arc::new(tokio::sync::Mutex::new(InFlight {
        slots: Arc::new(Semaphore::new(config.concurrency)),
        running: HashSet::new(),
        done_tx,
        done_rx,
    }));
    let (url, config, registry, metrics) = (&database_url, &config, &registry, &metrics);
    crate::supervise::restart_with_backoff("job runner", shutdown, |mut stop| {
        let state = state.clone();
        async move {
            let mut state = state.lock().await;
            session(url, config, registry, metrics, &mut state, &mut stop).await
        }
    })
    .await
}

/// What the runner has in flight, kept across database sessions.
struct InFlight {
    slots: Arc<Semaphore>,
    running: HashSet<i64>,
    done_tx: mpsc::UnboundedSender<Outcome>,
    done_rx: mpsc::UnboundedReceiver<Outcome>,
}

type Outcome = (i64, Result<(), String>);

async fn session(
    database_url: &str,
    config: &JobsConfig,
    registry: &Registry,
    metrics: &JobMetrics,
    state: &mut InFlight,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (db, connection) = crate::db::connect(database_url).await?;
    let _conn = crate::db::AbortOnDrop(tokio::spawn(connection));

    let mut routes = Routes::new(config, registry)?;
    routes.refresh(&db).await?;
    let lease_secs = config.lease.as_secs_f64();
    let fetch = db
        .prepare(
            "SELECT * FROM spine.fetch_jobs($1::text[], $2, $3, make_interval(secs => $4::float8))",
        )
        .await?;
    let complete = db.prepare("SELECT spine.complete_jobs($1, $2)").await?;
    let fail = db
        .prepare("SELECT spine.fail_job($1, $2, NULL, $3)")
        .await?;
    let heartbeat = db
        .prepare("SELECT spine.heartbeat($1, make_interval(secs => $2::float8), $3)")
        .await?;
    tracing::info!(queues = ?routes.queues, worker = %config.worker_id, "job runner started");

    let InFlight {
        slots,
        running,
        done_tx,
        done_rx,
    } = state;
    let running: &mut HashSet<i64> = running;
    let heartbeat_every = config.lease / 3;
    // Jobs inherited from a failed session get their leases renewed straight away.
    let mut last_heartbeat = Instant::now()
        .checked_sub(heartbeat_every)
        .unwrap_or_else(Instant::now);

    loop {
        // Record what finished since the last round.
        let mut finished = Vec::new();
        while let Ok(outcome) = done_rx.try_recv() {
            finished.push(outcome);
        }
        record(
            &db,
            &complete,
            &fail,
            &config.worker_id,
            metrics,
            running,
            finished,
        )
        .await?;

        if running.is_empty() || last_heartbeat.elapsed() >= heartbeat_every {
            if !running.is_empty() {
                let ids: Vec<i64> = running.iter().copied().collect();
                db.execute(&heartbeat, &[&ids, &lease_secs, &config.worker_id])
                    .await?;
            }
            last_heartbeat = Instant::now();
        }

        let stopping = *shutdown.borrow();
        if stopping {
            return drain(&db, config, metrics, running, done_rx, &complete, &fail).await;
        }

        if routes.refreshed.elapsed() >= ROUTES_REFRESH {
            routes.refresh(&db).await?;
        }
        let free = slots.available_permits().min(config.batch as usize);
        let mut fetched = 0;
        if free > 0 && !routes.queues.is_empty() {
            let rows = db
                .query(
                    &fetch,
                    &[
                        &routes.queues,
                        &config.worker_id,
                        &(free as i32),
                        &lease_secs,
                    ],
                )
                .await?;
            fetched = rows.len();
            for row in rows {
                let job = Job::from_row(&row)?;
                let Some(handler) = routes.handlers.get(job.queue.as_str()).cloned() else {
                    continue; // fetch_jobs only returns the queues we asked for
                };
                let permit = slots.clone().acquire_owned().await?;
                running.insert(job.id);
                metrics.running.fetch_add(1, Ordering::Relaxed);
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let id = job.id;
                    // A panicking handler fails its job instead of losing it.
                    let result = tokio::spawn(handler.handle(job))
                        .await
                        .unwrap_or_else(|e| Err(format!("handler panicked: {e}")));
                    drop(permit);
                    let _ = done.send((id, result));
                });
            }
        }
        if fetched == 0 || slots.available_permits() == 0 {
            // Nothing to lease, or no slot to run it in: wait for a job to finish,
            // the next poll, a heartbeat, or shutdown.
            let wait = if fetched == 0 {
                config.poll
            } else {
                heartbeat_every
            };
            tokio::select! {
                outcome = done_rx.recv() => {
                    if let Some(outcome) = outcome {
                        record(&db, &complete, &fail, &config.worker_id, metrics, running, vec![outcome]).await?;
                    }
                }
                _ = tokio::time::sleep(wait.min(heartbeat_every)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// How often queues matching a `prefix.*` entry are looked up again (a new
/// webhook's queue is served within this time).
const ROUTES_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Which handler runs each queue: the configured names, plus every existing queue
/// under a configured `prefix.*`.
struct Routes<'a> {
    fixed: Vec<(&'a str, Arc<dyn super::handler::Handler>)>,
    prefixes: Vec<(String, Arc<dyn super::handler::Handler>)>,
    handlers: HashMap<String, Arc<dyn super::handler::Handler>>,
    queues: Vec<String>,
    refreshed: Instant,
}

impl<'a> Routes<'a> {
    fn new(config: &'a JobsConfig, registry: &Registry) -> anyhow::Result<Self> {
        let mut fixed = Vec::new();
        let mut prefixes = Vec::new();
        for (queue, handler) in &config.queues {
            let h = registry
                .get(handler)
                .ok_or_else(|| anyhow::anyhow!("no handler named {handler} for queue {queue}"))?;
            match queue.strip_suffix('*') {
                Some(prefix) => prefixes.push((prefix.to_string(), h)),
                None => fixed.push((queue.as_str(), h)),
            }
        }
        Ok(Self {
            fixed,
            prefixes,
            handlers: HashMap::new(),
            queues: Vec::new(),
            refreshed: Instant::now(),
        })
    }

    async fn refresh(&mut self, db: &tokio_postgres::Client) -> anyhow::Result<()> {
        let mut handlers: HashMap<String, _> = self
            .fixed
            .iter()
            .map(|(q, h)| (q.to_string(), h.clone()))
            .collect();
        for (prefix, handler) in &self.prefixes {
            let rows = db
                .query(
                    "SELECT name FROM spine.queues WHERE starts_with(name, $1)",
                    &[prefix],
                )
                .await?;
            for row in rows {
                handlers
                    .entry(row.get::<_, String>(0))
                    .or_insert_with(|| handler.clone());
            }
        }
        let mut queues: Vec<String> = handlers.keys().cloned().collect();
        queues.sort_unstable();
        if queues != self.queues && !self.prefixes.is_empty() {
            tracing::info!(?queues, "job runner serves these queues");
        }
        self.handlers = handlers;
        self.queues = queues;
        self.refreshed = Instant::now();
        Ok(())
    }
}

/// Completes successes in one statement and fails each failure.
async fn record(
    db: &tokio_postgres::Client,
    complete: &tokio_postgres::Statement,
    fail: &tokio_postgres::Statement,
    worker: &str,
    metrics: &JobMetrics,
    running: &mut HashSet<i64>,
    finished: Vec<Outcome>,
) -> anyhow::Result<()> {
    let mut ok = Vec::new();
    for (id, result) in finished {
        running.remove(&id);
        metrics.running.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(()) => ok.push(id),
            Err(error) => {
                tracing::info!(job = id, %error, "job failed");
                match db.query_one(fail, &[&id, &error, &worker]).await {
                    Ok(_) => {}
                    // Cancelled, or its lease passed and another worker has it:
                    // the job is no longer ours to fail.
                    Err(e) if no_longer_ours(&e) => {
                        tracing::info!(job = id, "job was cancelled or re-leased meanwhile")
                    }
                    Err(e) => return Err(e.into()),
                }
                metrics.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if !ok.is_empty() {
        db.query_one(complete, &[&ok, &worker]).await?;
        metrics
            .completed
            .fetch_add(ok.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// fail_job's answer for a job that no longer exists (42704) or is not running
/// (55000).
fn no_longer_ours(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(
        e.code(),
        Some(c) if *c == SqlState::UNDEFINED_OBJECT || *c == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
    )
}

/// Shutdown: no new leases; running jobs get `drain` time to finish (their leases
/// kept alive), and whatever is still running then is released to the queue.
async fn drain(
    db: &tokio_postgres::Client,
    config: &JobsConfig,
    metrics: &JobMetrics,
    running: &mut HashSet<i64>,
    done_rx: &mut mpsc::UnboundedReceiver<Outcome>,
    complete: &tokio_postgres::Statement,
    fail: &tokio_postgres::Statement,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + config.drain;
    let heartbeat_every = config.lease / 3;
    let mut last_heartbeat = Instant::now();
    tracing::info!(jobs = running.len(), "job runner draining");
    while !running.is_empty() && Instant::now() < deadline {
        // Keep the leases of jobs still running, however often others finish.
        if last_heartbeat.elapsed() >= heartbeat_every {
            let ids: Vec<i64> = running.iter().copied().collect();
            db.execute(
                "SELECT spine.heartbeat($1, make_interval(secs => $2::float8), $3)",
                &[&ids, &config.lease.as_secs_f64(), &config.worker_id],
            )
            .await?;
            last_heartbeat = Instant::now();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(heartbeat_every), done_rx.recv()).await {
            Ok(Some(outcome)) => {
                let outcome = vec![outcome];
                record(
                    db,
                    complete,
                    fail,
                    &config.worker_id,
                    metrics,
                    running,
                    outcome,
                )
                .await?
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    if !running.is_empty() {
        let ids: Vec<i64> = running.drain().collect();
        tracing::warn!(jobs = ?ids, "drain time over: releasing unfinished jobs");
        // Only jobs this worker still holds: one whose lease passed belongs to another.
        db.execute(
            "SELECT spine.release_jobs($1, $2)",
            &[&ids, &config.worker_id],
        )
        .await?;
    }
    Ok(())
}
