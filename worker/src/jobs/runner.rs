//! The job runner: leases jobs from `spine.fetch_jobs` as slots free up, runs each
//! with its queue's handler, heartbeats the leases of running jobs, completes
//! successes in batches and records failures (the database decides retry or dead).
//!
//! An idle runner sleeps until a job may be there: a notification on the jobs
//! channel for one of its queues (an enqueue, a release, a redrive or a failed
//! attempt committed), the earliest `run_at` among its queues' waiting jobs, or
//! the poll, whichever comes first. The poll is the fallback for a lost
//! notification; a LISTEN reconnect wakes it too.
//!
//! Crash safety comes from the lease: a runner that dies stops heartbeating, and
//! its jobs return to the queue when their leases pass. On SIGTERM the runner stops
//! leasing, lets running jobs finish within the drain time, and releases the rest
//! without counting the attempt.

use super::handler::{Job, JobError, Registry};
use crate::config::JobsConfig;
use crate::metrics::JobMetrics;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch, Notify, Semaphore};

pub async fn run(
    database: spine_db::DbConfig,
    config: JobsConfig,
    registry: Registry,
    metrics: Arc<JobMetrics>,
    wake: Arc<Wakeups>,
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
        unrecorded: Vec::new(),
        tasks: HashMap::new(),
        done_tx,
        done_rx,
    }));
    let (url, config, registry, metrics, wake) = (&database, &config, &registry, &metrics, &wake);
    crate::supervise::restart_with_backoff("job runner", shutdown, |mut stop| {
        let state = state.clone();
        async move {
            let mut state = state.lock().await;
            session(url, config, registry, metrics, wake, &mut state, &mut stop).await
        }
    })
    .await;
    // A shutdown that came while the database was unreachable (or while a drain
    // failed) ended the loop above without a drain: one more try, so finished jobs
    // are recorded and unfinished ones released instead of waiting for their leases.
    let mut state = state.lock().await;
    if !state.running.is_empty() {
        if let Err(e) = last_drain(url, config, metrics, &mut state).await {
            tracing::warn!(
                error = format!("{e:#}"),
                jobs = state.running.len(),
                "job runner stopped without recording its jobs: their leases will expire"
            );
        }
    }
}

async fn last_drain(
    database: &spine_db::DbConfig,
    config: &JobsConfig,
    metrics: &JobMetrics,
    state: &mut InFlight,
) -> anyhow::Result<()> {
    let (db, connection) = crate::db::connect(database).await?;
    let _conn = crate::db::AbortOnDrop(tokio::spawn(connection));
    let statements = Statements::prepare(&db).await?;
    drain(&db, config, metrics, state, &statements).await
}

/// What the runner has in flight, kept across database sessions.
struct InFlight {
    slots: Arc<Semaphore>,
    /// Leased jobs this runner holds: running, or finished with the outcome not
    /// yet recorded (their leases are kept alive until it is).
    running: HashSet<i64>,
    /// Finished jobs whose outcome the database does not have yet: a session that
    /// fails while recording leaves them here for the next one.
    unrecorded: Vec<Outcome>,
    /// Each running job's handler task, and the task that reports its outcome: to
    /// stop the ones released at shutdown, and to wait until they have.
    tasks: HashMap<i64, (tokio::task::AbortHandle, tokio::task::JoinHandle<()>)>,
    done_tx: mpsc::UnboundedSender<Outcome>,
    done_rx: mpsc::UnboundedReceiver<Outcome>,
}

impl InFlight {
    /// Moves the outcomes that arrived meanwhile to `unrecorded`.
    fn take_finished(&mut self) {
        while let Ok(outcome) = self.done_rx.try_recv() {
            self.unrecorded.push(outcome);
        }
    }
}

/// The runner's prepared statements, for one database session.
struct Statements {
    complete: tokio_postgres::Statement,
    fail: tokio_postgres::Statement,
    snooze: tokio_postgres::Statement,
    heartbeat: tokio_postgres::Statement,
}

impl Statements {
    async fn prepare(db: &tokio_postgres::Client) -> anyhow::Result<Self> {
        Ok(Self {
            complete: db.prepare("SELECT spine.complete_jobs($1, $2)").await?,
            fail: db
                .prepare("SELECT spine.fail_job($1, $2, NULL, $3)")
                .await?,
            // snooze_job answers false (rather than an error) for a job that is not
            // this worker's any more: nothing to do then.
            snooze: db
                .prepare(
                    "SELECT spine.snooze_job($1, now() + make_interval(secs => $2::float8), $3)",
                )
                .await?,
            heartbeat: db
                .prepare("SELECT spine.heartbeat($1, make_interval(secs => $2::float8), $3)")
                .await?,
        })
    }

    /// Renews the leases of every job the runner holds (nothing when it holds none).
    async fn heartbeat(
        &self,
        db: &tokio_postgres::Client,
        config: &JobsConfig,
        state: &InFlight,
    ) -> anyhow::Result<()> {
        if !state.running.is_empty() {
            let ids: Vec<i64> = state.running.iter().copied().collect();
            db.execute(
                &self.heartbeat,
                &[&ids, &config.lease.as_secs_f64(), &config.worker_id],
            )
            .await?;
        }
        Ok(())
    }
}

/// A last-heartbeat time that makes the next heartbeat due at once (leases
/// inherited from a failed session are renewed straight away).
fn heartbeat_overdue(every: std::time::Duration) -> Instant {
    Instant::now()
        .checked_sub(every)
        .unwrap_or_else(Instant::now)
}

type Outcome = (i64, Result<(), JobError>);

async fn session(
    database: &spine_db::DbConfig,
    config: &JobsConfig,
    registry: &Registry,
    metrics: &JobMetrics,
    wake: &Wakeups,
    state: &mut InFlight,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (db, connection) = crate::db::connect(database).await?;
    let _conn = crate::db::AbortOnDrop(tokio::spawn(connection));

    let mut routes = Routes::new(config, registry)?;
    routes.refresh(&db).await?;
    let lease_secs = config.lease.as_secs_f64();
    let fetch = db
        .prepare(
            "SELECT * FROM spine.fetch_jobs($1::text[], $2, $3, make_interval(secs => $4::float8))",
        )
        .await?;
    let statements = Statements::prepare(&db).await?;
    // The earliest run_at still ahead among the queues' waiting jobs: three probes
    // of the ready index per queue (one per priority), so a large backlog of
    // scheduled jobs costs no scan.
    let next_due = db
        .prepare(
            "SELECT extract(epoch FROM min(n.run_at) - now())::float8 \
               FROM unnest($1::text[]) AS q(name), \
                    unnest(enum_range(NULL::spine.job_priority)) AS p(priority), \
                    LATERAL (SELECT j.run_at FROM spine.jobs j \
                              WHERE j.queue = q.name AND j.priority = p.priority \
                                AND j.state < 'running' AND j.run_at > now() \
                              ORDER BY j.run_at LIMIT 1) AS n",
        )
        .await?;
    tracing::info!(queues = ?routes.queues, worker = %config.worker_id, "job runner started");

    let heartbeat_every = config.lease / 3;
    let mut last_heartbeat = heartbeat_overdue(heartbeat_every);
    // When the queues' next waiting job is due, as last looked up, and whether it
    // must be looked up again (at start, after a timer, or when a job due later
    // arrived): a wake-up for a job due now only fetches.
    let mut next_due_at: Option<Instant> = None;
    let mut look_up_due = true;

    loop {
        // Record what finished since the last round (and what a failed session
        // left unrecorded).
        state.take_finished();
        record(&db, &statements, &config.worker_id, metrics, state).await?;

        if state.running.is_empty() || last_heartbeat.elapsed() >= heartbeat_every {
            statements.heartbeat(&db, config, state).await?;
            last_heartbeat = Instant::now();
        }

        let stopping = *shutdown.borrow();
        if stopping {
            return drain(&db, config, metrics, state, &statements).await;
        }

        if routes.refreshed.elapsed() >= ROUTES_REFRESH {
            routes.refresh(&db).await?;
        }
        let free = state.slots.available_permits().min(config.batch as usize);
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
                // Still running here: its lease passed while the database was out of
                // reach, and this worker leased it again. One run, not two.
                if state.running.contains(&job.id) {
                    tracing::info!(job = job.id, "job leased again while still running here");
                    continue;
                }
                let permit = state.slots.clone().acquire_owned().await?;
                state.running.insert(job.id);
                let run = metrics.started(&job.queue);
                let done = state.done_tx.clone();
                let id = job.id;
                // Every line the handler logs carries the job and the chain of
                // events it belongs to (SPINE_LOG_FORMAT=json: under "span").
                let span = tracing::info_span!(
                    "job",
                    id = job.id,
                    queue = %job.queue,
                    correlation_id = tracing::field::Empty
                );
                if let Some(c) = job.payload.get("correlation_id").and_then(|c| c.as_str()) {
                    span.record("correlation_id", c);
                }
                let task = tokio::spawn(tracing::Instrument::instrument(
                    handler.handle(job),
                    span.clone(),
                ));
                let handler_task = task.abort_handle();
                let reporter = tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        // A panicking handler fails its job instead of losing it; an
                        // aborted one (released at shutdown) reports nothing.
                        let result = match task.await {
                            Ok(result) => result,
                            Err(e) if e.is_cancelled() => return,
                            Err(e) => Err(JobError::Failed(format!("handler panicked: {e}"))),
                        };
                        run.finished(match &result {
                            Ok(()) => "completed",
                            Err(JobError::Snooze(_)) => "snoozed",
                            Err(JobError::Failed(_)) => "failed",
                        });
                        match &result {
                            Ok(()) => tracing::debug!("job completed"),
                            Err(JobError::Snooze(wait)) => tracing::info!(?wait, "job snoozed"),
                            Err(JobError::Failed(error)) => tracing::info!(%error, "job failed"),
                        }
                        drop(permit);
                        let _ = done.send((id, result));
                    },
                    span,
                ));
                state.tasks.insert(id, (handler_task, reporter));
            }
        }
        if fetched == 0 || state.slots.available_permits() == 0 {
            // Nothing to lease, or no slot to run it in: wait for a job to finish,
            // a wake-up (with a free slot), the next due job, the poll, a
            // heartbeat, or shutdown.
            let idle = fetched == 0;
            let wait = if idle {
                if look_up_due && !routes.queues.is_empty() {
                    let due: Option<f64> = db.query_one(&next_due, &[&routes.queues]).await?.get(0);
                    // Due in the past (the clock moved on since the fetch): at once.
                    next_due_at = due
                        .map(|s| Instant::now() + std::time::Duration::from_secs_f64(s.max(0.0)));
                    look_up_due = false;
                }
                next_due_at
                    .map_or(config.poll, |at| {
                        at.saturating_duration_since(Instant::now())
                    })
                    .min(config.poll)
            } else {
                heartbeat_every
            };
            tokio::select! {
                outcome = state.done_rx.recv() => {
                    if let Some(outcome) = outcome {
                        state.unrecorded.push(outcome);
                        record(&db, &statements, &config.worker_id, metrics, state).await?;
                    }
                }
                _ = wake.ready.notified(), if idle => {}
                _ = wake.later.notified(), if idle => look_up_due = true,
                _ = tokio::time::sleep(wait.min(heartbeat_every)) => look_up_due = true,
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// What wakes an idle runner, fed by its LISTEN session on the jobs channel.
#[derive(Default)]
pub struct Wakeups {
    /// A job of one of its queues is due now: fetch.
    ready: Notify,
    /// A job is due later (or notifications may have been missed): fetch, and
    /// look up when the next one is due.
    later: Notify,
}

impl Wakeups {
    /// The listener's handlers for a runner serving `config`'s queues.
    pub fn handlers(wake: Arc<Wakeups>, config: JobsConfig) -> crate::listener::Handlers {
        let on_reconnect = wake.clone();
        crate::listener::Handlers {
            on_notification: Box::new(move |payload| {
                let w = spine_core::jobs::wakeup::parse(payload);
                if config.serves(w.queue) {
                    if w.later {
                        wake.later.notify_one();
                    } else {
                        wake.ready.notify_one();
                    }
                }
            }),
            on_reconnect: Box::new(move || on_reconnect.later.notify_one()),
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

/// Records `state.unrecorded`: fails each failure, completes the successes in one
/// statement. An outcome leaves `unrecorded` (and `running`, whose lease the
/// heartbeat keeps alive) only once the database has it, so a call that fails
/// leaves the rest for the next session: no finished job runs again because the
/// connection dropped while it was being recorded.
async fn record(
    db: &tokio_postgres::Client,
    statements: &Statements,
    worker: &str,
    metrics: &JobMetrics,
    state: &mut InFlight,
) -> anyhow::Result<()> {
    let mut i = 0;
    while i < state.unrecorded.len() {
        let (id, Err(outcome)) = &state.unrecorded[i] else {
            i += 1;
            continue;
        };
        let id = *id;
        let recorded = match outcome {
            // Logged where the handler finished, in the job's span.
            JobError::Snooze(wait) => db
                .query_one(&statements.snooze, &[&id, &wait.as_secs_f64(), &worker])
                .await
                .map(|_| ()),
            JobError::Failed(error) => db
                .query_one(&statements.fail, &[&id, error, &worker])
                .await
                .map(|_| {
                    metrics.failed.inc();
                }),
        };
        match recorded {
            Ok(()) => {}
            // Cancelled, or its lease passed and another worker has it: the job is
            // no longer ours to fail.
            Err(e) if no_longer_ours(&e) => {
                tracing::info!(job = id, "job was cancelled or re-leased meanwhile")
            }
            Err(e) => return Err(e.into()),
        }
        let _recorded = state.unrecorded.remove(i);
        forget(state, &[id]);
    }
    if !state.unrecorded.is_empty() {
        let ok: Vec<i64> = state.unrecorded.iter().map(|(id, _)| *id).collect();
        db.query_one(&statements.complete, &[&ok, &worker]).await?;
        state.unrecorded.clear();
        forget(state, &ok);
        metrics.completed.inc_by(ok.len() as u64);
    }
    Ok(())
}

/// Jobs whose outcome is recorded (or that were released): no longer this
/// runner's to heartbeat.
fn forget(state: &mut InFlight, ids: &[i64]) {
    for id in ids {
        state.tasks.remove(id);
        state.running.remove(id);
    }
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
    state: &mut InFlight,
    statements: &Statements,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + config.drain;
    let heartbeat_every = config.lease / 3;
    tracing::info!(jobs = state.running.len(), "job runner draining");
    // Leases renewed at once (the runner may come from a failed session), and
    // outcomes a failed session left unrecorded recorded first.
    let mut last_heartbeat = heartbeat_overdue(heartbeat_every);
    state.take_finished();
    record(db, statements, &config.worker_id, metrics, state).await?;
    // Jobs without a handler any more (stopped by an earlier drain whose release
    // failed) will report nothing: released now, not waited for.
    let orphans: Vec<i64> = state
        .running
        .iter()
        .filter(|id| !state.tasks.contains_key(id))
        .copied()
        .collect();
    release(db, config, state, orphans).await?;
    while !state.running.is_empty() && Instant::now() < deadline {
        // Keep the leases of jobs still running, however often others finish.
        if last_heartbeat.elapsed() >= heartbeat_every {
            statements.heartbeat(db, config, state).await?;
            last_heartbeat = Instant::now();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(heartbeat_every), state.done_rx.recv()).await {
            Ok(Some(outcome)) => {
                state.unrecorded.push(outcome);
                record(db, statements, &config.worker_id, metrics, state).await?
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    if !state.running.is_empty() {
        let ids: Vec<i64> = state.running.iter().copied().collect();
        tracing::warn!(jobs = ?ids, "drain time over: stopping and releasing unfinished jobs");
        // Stopped first: a released job may be leased by another worker at once,
        // and must not run here at the same time. A handler that finished just
        // now still reports: its outcome is recorded, not released.
        let mut reporters = Vec::new();
        for id in &ids {
            if let Some((handler, reporter)) = state.tasks.remove(id) {
                handler.abort();
                reporters.push(reporter);
            }
        }
        for reporter in reporters {
            let _ = tokio::time::timeout(STOP_WAIT, reporter).await;
        }
        state.take_finished();
        record(db, statements, &config.worker_id, metrics, state).await?;
        let unfinished: Vec<i64> = state.running.iter().copied().collect();
        release(db, config, state, unfinished).await?;
    }
    Ok(())
}

/// How long a stopped handler's reporter may take to finish.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Hands `ids` back to the queue without counting the attempt. Only jobs this
/// worker still holds: one whose lease passed belongs to another.
async fn release(
    db: &tokio_postgres::Client,
    config: &JobsConfig,
    state: &mut InFlight,
    ids: Vec<i64>,
) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    db.execute(
        "SELECT spine.release_jobs($1, $2)",
        &[&ids, &config.worker_id],
    )
    .await?;
    forget(state, &ids);
    Ok(())
}
