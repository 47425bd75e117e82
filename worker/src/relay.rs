//! The outbox relay: committed events → NATS JetStream, effectively once.
//!
//! - One relay per sink at a time, reading in commit order ([`crate::sink`]):
//!   publishes each batch as a window of in-flight publishes, and advances the
//!   cursor in the database only over the acknowledged prefix.
//! - `Nats-Msg-Id` = event id, so a batch republished after a crash is dropped by
//!   JetStream's duplicate window.
//! - Up to two batches are in flight: the next is read and sent while JetStream
//!   stores the previous one.
//! - Every publish but the first of a session to a stream carries
//!   `Nats-Expected-Last-Msg-Id` = the previous event's id in that stream: if one
//!   message in flight is lost (NATS restarted mid-batch), the later ones are
//!   refused instead of being stored out of order. The first needs no
//!   expectation: its predecessor was acknowledged before the cursor moved past it.
//!   JetStream answers a duplicate before it checks the expectation, so after a
//!   run of duplicates (a replay onto a stream that already holds them) the next
//!   new event's expectation names a message that is not the stream's last: that
//!   refusal loses nothing, and the relay resends from that event, unexpecting.
//! - Which stream and subject an event goes to is the stream map's
//!   ([`crate::streams`]); every stream of the map is created or updated at start.

use crate::config::{Config, RelayConfig};
use crate::envelope::Event;
use crate::metrics::RelayMetrics;
use crate::sink::{SinkSession, SinkSpec};
use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    context::{Context, PublishAckFuture},
    message::PublishMessage,
    stream,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::Instrument;

pub async fn run(
    config: Arc<Config>,
    metrics: Arc<RelayMetrics>,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) {
    let (config, metrics, wake) = (&config, &metrics, &wake);
    // Every line the relay logs, its restarts' too, names its sink (JSON logs:
    // under `span`).
    let span = tracing::info_span!("relay", sink = %config.relay.sink);
    crate::supervise::restart_with_backoff("relay", shutdown, |mut stop| async move {
        let result = session(config, metrics, wake, &mut stop).await;
        if result.is_err() {
            metrics.errors.inc();
        }
        result
    })
    .instrument(span)
    .await
}

/// One relay session: lock, connect, relay until shutdown (Ok) or an error.
async fn session(
    config: &Config,
    metrics: &RelayMetrics,
    wake: &Notify,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let rc = &config.relay;
    let spec = SinkSpec {
        database: &config.database,
        name: &rc.sink,
        kind: "nats",
        columns: "*",
        poll: rc.poll,
        // A cursor write lost in a Postgres crash only means redelivery, which the
        // duplicate window absorbs: no need to wait for its WAL flush on every batch.
        setup: "SET synchronous_commit = off",
    };
    let Some(sink) = SinkSession::acquire(&spec, shutdown, |held| {
        metrics.mark_ok();
        if !held {
            metrics.set_active(false);
        }
    })
    .await?
    else {
        return Ok(());
    };
    let cursor = sink.cursor;
    tracing::info!(sink = %rc.sink, ?cursor, "relay holds the sink");

    // From here on this instance is the sink's relay, also while it retries.
    metrics.set_active(true);
    // Measure the backlog's age before touching NATS, so that /healthz sees the lag
    // grow even when NATS is down from the start.
    let head = sink.read(cursor, 1).await?;
    metrics.set_oldest_pending(head.first().map(|r| r.get("committed_at")));
    let (js, replicas) = connect_jetstream(&config.nats, rc, config.nats_replicas).await?;
    for stream in rc.streams.streams() {
        ensure_stream(&js, stream, rc.duplicate_window, replicas).await?;
    }

    // Up to PIPELINE batches are in flight: while JetStream stores one, the next is
    // read from Postgres and sent, so neither side waits for the other.
    let mut inflight: VecDeque<Batch> = VecDeque::new();
    // The last event sent (not necessarily acknowledged): where the next read
    // starts; and per stream, what its next publish expects to be its last message.
    // From the cursor, or earlier for a stream that lost what it acknowledged.
    let mut sent_upto = crate::resume::resume(&js, &sink.db, &rc.sink, &rc.streams, cursor).await?;
    let mut last_sent: Vec<Option<String>> = vec![None; rc.streams.streams().len()];
    // Where the committed cursor is, and whether the last acknowledgement was a
    // duplicate (see `Outcome::resend`).
    let mut committed = cursor;
    let mut after_duplicate = false;
    // When a NOTIFY last woke the relay (wall clock, monotonic), until the read
    // it started: that read's stages are split at the wake-up.
    let mut woke: Option<(chrono::DateTime<chrono::Utc>, std::time::Instant)> = None;
    loop {
        let stopping = *shutdown.borrow();
        if stopping && inflight.is_empty() {
            return Ok(());
        }
        let mut read_nothing = true;
        if !stopping && inflight.len() < PIPELINE {
            let rows = sink.read(sent_upto, rc.batch).await?;
            metrics.mark_ok();
            let woken = woke.take();
            if !rows.is_empty() {
                read_nothing = false;
                let read_at = std::time::Instant::now();
                let events = rows
                    .iter()
                    .map(Event::from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                metrics.read(events.iter().map(|e| &e.committed_at));
                if let Some(at) = woken {
                    metrics.woken_read(&events[0].committed_at, at);
                }
                if inflight.is_empty() {
                    metrics.set_oldest_pending(Some(events[0].committed_at));
                }
                let acks = send(&js, &rc.streams, &events, &mut last_sent).await?;
                metrics
                    .read_to_sent
                    .observe(read_at.elapsed().as_secs_f64());
                let last = &events[events.len() - 1];
                sent_upto = (last.commit_seq, last.seq);
                inflight.push_back(Batch {
                    events,
                    acks,
                    sent_at: std::time::Instant::now(),
                });
            }
        }
        // Wait for the oldest batch when the pipeline is full or nothing new came.
        if inflight.len() >= PIPELINE || (read_nothing && !inflight.is_empty()) {
            let mut batch = inflight.pop_front().expect("checked non-empty");
            let outcome = batch.acknowledged(after_duplicate).await;
            after_duplicate = outcome.last_duplicate;
            metrics
                .sent_to_ack
                .observe(batch.sent_at.elapsed().as_secs_f64());
            metrics.acknowledged(
                batch.events[..outcome.acked]
                    .iter()
                    .map(|e| &e.committed_at),
            );
            if outcome.acked > 0 {
                let upto = &batch.events[outcome.acked - 1];
                sink.advance((upto.commit_seq, upto.seq), outcome.acked as i64)
                    .await?;
                committed = (upto.commit_seq, upto.seq);
                metrics.published.inc_by(outcome.acked as u64);
                metrics.duplicates.inc_by(outcome.duplicates);
                metrics.batches.inc();
            }
            if outcome.resend {
                // The batches behind were chained to the refused event: drop
                // them and send again from it, its first publish unexpecting.
                inflight.clear();
                sent_upto = committed;
                last_sent.iter_mut().for_each(|l| *l = None);
                after_duplicate = false;
                continue;
            }
            if let Some(error) = outcome.error {
                // Also logged and counted by the caller.
                sink.record_error(&error).await;
                // Later batches were chained to this one and are refused or
                // duplicates; the next session resumes from the committed cursor.
                return Err(error);
            }
            // Nothing read is pending once the last batch in flight is relayed: the
            // acknowledged batch's age must not linger until the next read (for a
            // backlog of old events it made /healthz report lag after catching up).
            metrics.set_oldest_pending(inflight.front().map(|next| next.events[0].committed_at));
            continue;
        }
        if read_nothing {
            metrics.set_oldest_pending(None);
            tokio::select! {
                _ = wake.notified() => {
                    woke = Some((chrono::Utc::now(), std::time::Instant::now()));
                }
                _ = tokio::time::sleep(rc.poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Batches in flight at once.
const PIPELINE: usize = 2;

/// A batch sent to JetStream whose acknowledgements are pending.
struct Batch {
    events: Vec<Event>,
    acks: Vec<PublishAckFuture>,
    /// When its last publish was handed to the client.
    sent_at: std::time::Instant,
}

/// A JetStream context, and the replicas its streams get on the server (or
/// cluster) it reached.
async fn connect_jetstream(
    url: &spine_nats::NatsConfig,
    rc: &RelayConfig,
    replicas: spine_nats::Replicas,
) -> anyhow::Result<(Context, Replication)> {
    let client = url.connect().await?;
    let wanted = replicas.wanted(&client.server_info());
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .max_ack_inflight(rc.batch as usize * PIPELINE)
        .build(client);
    Ok((js, Replication { replicas, wanted }))
}

/// `SPINE_NATS_REPLICAS` and what it comes to on the server reached.
#[derive(Clone, Copy)]
struct Replication {
    replicas: spine_nats::Replicas,
    wanted: usize,
}

/// Creates the stream, or updates the settings the relay relies on.
async fn ensure_stream(
    js: &Context,
    stream: &crate::streams::Stream,
    duplicate_window: Duration,
    replication: Replication,
) -> anyhow::Result<()> {
    let wanted = stream::Config {
        name: stream.name.clone(),
        subjects: vec![format!("{}.>", stream.prefix)],
        duplicate_window,
        storage: stream::StorageType::File,
        num_replicas: replication.wanted,
        ..Default::default()
    };
    let mut existing = js
        .get_or_create_stream(wanted.clone())
        .await
        .with_context(|| format!("creating JetStream stream {}", stream.name))?;
    let info = existing.info().await?;
    let rescale = replication
        .replicas
        .changes(info.config.num_replicas, wanted.num_replicas);
    if info.config.subjects != wanted.subjects
        || info.config.duplicate_window != wanted.duplicate_window
        || rescale
    {
        let mut updated = info.config.clone();
        updated.subjects = wanted.subjects;
        updated.duplicate_window = wanted.duplicate_window;
        if rescale {
            tracing::info!(
                stream = %stream.name,
                from = info.config.num_replicas,
                to = wanted.num_replicas,
                "changing the stream's replicas"
            );
            updated.num_replicas = wanted.num_replicas;
        }
        js.update_stream(updated)
            .await
            .with_context(|| format!("updating JetStream stream {}", stream.name))?;
    }
    Ok(())
}

/// What happened to a sent batch: how many leading events were acknowledged (the
/// cursor may move over those), how many of them were duplicates, and the first
/// error, after which nothing counts.
struct Outcome {
    acked: usize,
    duplicates: u64,
    /// Whether the last acknowledgement awaited was a duplicate.
    last_duplicate: bool,
    /// The event after the acknowledged prefix was refused only because its
    /// predecessor was a duplicate: resend from it without an expectation.
    resend: bool,
    error: Option<anyhow::Error>,
}

/// Sends every event of a batch without waiting for acknowledgements. Each publish
/// expects the previous event sent to its stream to be the stream's last message
/// (`last_sent`, per stream, carried from batch to batch while one is in flight).
async fn send(
    js: &Context,
    map: &crate::streams::StreamMap,
    events: &[Event],
    last_sent: &mut [Option<String>],
) -> anyhow::Result<Vec<PublishAckFuture>> {
    let mut acks = Vec::with_capacity(events.len());
    for event in events {
        let (stream, subject) = map.subject(&event.event_type, event.owner_id);
        let mut message = PublishMessage::build()
            .payload(event.cloudevent_json()?.into())
            .message_id(event.id.to_string())
            .header("Content-Type", "application/cloudevents+json");
        if let Some(prev) = last_sent[stream].take() {
            message = message.expected_last_message_id(prev);
        }
        let ack = js
            .send_publish(subject, message)
            .await
            .context("publishing to JetStream")?;
        acks.push(ack);
        last_sent[stream] = Some(event.id.to_string());
    }
    Ok(acks)
}

impl Batch {
    /// Awaits the acknowledgements in order (they are taken out of the batch);
    /// `after_duplicate`: the previous batch's last acknowledgement was a duplicate.
    async fn acknowledged(&mut self, after_duplicate: bool) -> Outcome {
        let mut outcome = Outcome {
            acked: 0,
            duplicates: 0,
            last_duplicate: after_duplicate,
            resend: false,
            error: None,
        };
        let acks = std::mem::take(&mut self.acks);
        for (event, ack) in self.events.iter().zip(acks) {
            match ack.await {
                Ok(ack) => {
                    outcome.acked += 1;
                    outcome.duplicates += u64::from(ack.duplicate);
                    outcome.last_duplicate = ack.duplicate;
                }
                Err(e)
                    if outcome.last_duplicate
                        && e.kind() == jetstream::context::PublishErrorKind::WrongLastMessageId =>
                {
                    tracing::debug!(event_id = %event.id, "resending after a run of duplicates");
                    outcome.resend = true;
                    break;
                }
                Err(e) => {
                    // The event in hand and its chain, for whoever follows it in
                    // the logs; the session's error (logged on restart) says why.
                    tracing::warn!(
                        event_id = %event.id,
                        correlation_id = %event.correlation_id,
                        event_type = %event.event_type,
                        "JetStream did not acknowledge an event; the relay resumes from it"
                    );
                    outcome.error = Some(
                        anyhow::Error::new(e)
                            .context(format!("JetStream did not acknowledge event {}", event.id)),
                    );
                    break;
                }
            }
        }
        outcome
    }
}
