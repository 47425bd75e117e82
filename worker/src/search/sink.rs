//! The search sink: committed entity events → Meilisearch, at least once.
//!
//! One instance holds the sink at a time (an advisory lock on its session, like the
//! relay). Each round reads the next batch of events, sends the touched entities'
//! current documents (or deletes) to Meilisearch, and the cursor moves over a round
//! only once Meilisearch has applied its tasks. While a backlog drains (full
//! rounds) up to [`WINDOW`] rounds are in flight: Meilisearch applies tasks in the
//! order they were sent, so the next round is read while it indexes the last.
//! Otherwise one round is in flight and new events gather meanwhile: a Meilisearch
//! batch costs about the same for one document as for hundreds, so sending each
//! trickle on its own would only queue small batches behind each other. When Meilisearch is down the
//! round fails, the error is recorded on the sink (`spine.sink_status.last_error`)
//! and the session restarts with backoff: events wait as backlog and are written
//! when it is back. Writes are idempotent (put by id, delete by id), so a batch
//! written again after a crash changes nothing. A batch Meilisearch refuses (a
//! document it will not take fails the whole task) is written again in halving
//! parts until the refused documents stand alone; they are recorded in
//! `spine.search_rejections` and skipped (see [`super::write_in_parts`]).

use super::meili::{Meili, TaskFailed};
use crate::config::{Config, SearchConfig};
use crate::metrics::SearchMetrics;
use crate::sink::{SinkSession, SinkSpec};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Rounds sent to Meilisearch and not yet applied.
const WINDOW: usize = 4;
/// How often the cursor is recorded while applied rounds write no documents.
const RECORD_IDLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often tasks in flight are checked.
const TASK_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// A round sent to Meilisearch: where the cursor goes once its tasks succeeded,
/// and the entities it wrote (to write again in parts if Meilisearch refuses it).
struct Round {
    upto: (i64, i64),
    tasks: Vec<u64>,
    written: i64,
    touched: BTreeMap<uuid::Uuid, String>,
}

pub async fn run(
    config: Arc<Config>,
    metrics: Arc<SearchMetrics>,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) {
    let (config, wake, metrics) = (&config, &wake, &metrics);
    crate::supervise::restart_with_backoff("search sink", shutdown, |mut stop| async move {
        let result = session(config, metrics, wake, &mut stop).await;
        metrics.active.set(0);
        if result.is_err() {
            metrics.errors.inc();
        }
        result
    })
    .await
}

async fn session(
    config: &Config,
    metrics: &SearchMetrics,
    wake: &Notify,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let sc: &SearchConfig = config
        .search
        .as_ref()
        .expect("the sink runs only when search is configured");
    let spec = SinkSpec {
        database: &config.database,
        name: &sc.sink,
        kind: "meilisearch",
        columns: "commit_seq, seq, type, data",
        poll: sc.poll,
        setup: "",
    };
    let Some(sink) = SinkSession::acquire(&spec, shutdown, |_| {}).await? else {
        return Ok(());
    };
    let meili = Meili::new(&sc.url, sc.key.as_deref());
    metrics.active.set(1);
    let result = rounds(&sink, sc, &meili, metrics, wake, shutdown).await;
    if let Err(e) = &result {
        // Visible in spine.sink_status.
        sink.record_error(e).await;
    }
    result
}

async fn rounds(
    sink: &SinkSession,
    sc: &SearchConfig,
    meili: &Meili,
    metrics: &SearchMetrics,
    wake: &Notify,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Clients need the search key's uid and key to get tenant tokens.
    let (key_uid, key) = meili.ensure_search_key().await?;
    let key_uid: uuid::Uuid = key_uid.parse()?;
    let db = &sink.db;
    db.execute(
        "SELECT spine.configure_search($1, $2, $3)",
        &[&sc.public_url, &key_uid, &key],
    )
    .await?;
    let cursor = sink.cursor;
    tracing::info!(sink = %sc.sink, ?cursor, "search sink holds the sink");
    let mut inflight: std::collections::VecDeque<Round> = Default::default();
    // Where the next read starts: past what was sent, applied or not.
    let mut sent_upto = cursor;
    // Whether the last round was a full batch, i.e. more is probably waiting.
    let mut backlog = true;
    // Applied rounds whose cursor is not recorded yet: where it goes, documents.
    let mut unrecorded: Option<((i64, i64), i64)> = None;
    let mut recorded_at = std::time::Instant::now();
    loop {
        // Move the cursor over the rounds Meilisearch has applied, in order.
        while let Some(front) = inflight.front() {
            let written = match meili.done(&front.tasks).await {
                Ok(false) => break,
                Ok(true) => {
                    let ids: Vec<uuid::Uuid> = front.touched.keys().copied().collect();
                    super::clear_rejections(db, &sc.sink, &ids).await?;
                    front.written
                }
                // A document Meilisearch will not take fails its whole task, and
                // would again on every retry: write the round in parts instead.
                Err(e) if TaskFailed::rejection(&e).is_some() => {
                    tracing::warn!(sink = %sc.sink, error = %e, "meilisearch refused a batch; writing it again in parts");
                    metrics.split_rounds.inc();
                    super::write_in_parts(db, meili, &sc.sink, &front.touched).await? as i64
                }
                Err(e) => return Err(e),
            };
            metrics.documents.inc_by(written.max(0) as u64);
            let (_, before) = unrecorded.unwrap_or(((0, 0), 0));
            unrecorded = Some((front.upto, before + written));
            inflight.pop_front();
        }
        let stopping = *shutdown.borrow();
        // Record the cursor: at once after rounds that wrote documents; over rounds
        // that wrote nothing (the outbox's other events) at most once a second.
        // Each record is a commit, and one per wake-up of a busy outbox competed
        // with the relay's commits (its commit→delivery p50 went from 0.6 ms to
        // 20 ms at 1,000 events/s). Re-reading a second of events after a crash
        // writes nothing twice.
        if let Some((upto, written)) = unrecorded {
            if written > 0 || stopping || recorded_at.elapsed() >= RECORD_IDLE_EVERY {
                sink.advance(upto, written).await?;
                unrecorded = None;
                recorded_at = std::time::Instant::now();
            }
        }
        if stopping && inflight.is_empty() {
            return Ok(());
        }
        let mut sent = false;
        if !stopping && inflight.len() < WINDOW && (inflight.is_empty() || backlog) {
            let rows = sink.read(sent_upto, sc.batch).await?;
            backlog = rows.len() == sc.batch as usize;
            if let Some(last) = rows.last() {
                let upto: (i64, i64) = (last.get(0), last.get(1));
                let touched = super::touched_by(&rows, None);
                let plan = super::plan_for(db, &touched).await?;
                let (tasks, written) = super::enqueue(meili, &plan).await?;
                inflight.push_back(Round {
                    upto,
                    tasks,
                    written: written as i64,
                    touched,
                });
                sent_upto = upto;
                sent = true;
            }
        }
        if sent {
            continue;
        }
        if inflight.is_empty() {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(sc.poll) => {}
                _ = shutdown.changed() => {}
            }
        } else {
            // Tasks in flight: check them again soon, or read what just arrived.
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(TASK_POLL) => {}
            }
        }
    }
}
