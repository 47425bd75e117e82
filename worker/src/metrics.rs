//! The worker's metrics in one `prometheus-client` registry, shared by its loops
//! and served at `/metrics` (OpenMetrics text). The loops count and time what they
//! do; what only the database knows (each queue's depth, age and dead letters) is
//! read from `spine.queue_stats()` when Prometheus scrapes.

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// 0.5 ms to ~16 s, doubling: relay latency is sub-millisecond when caught up and
/// seconds behind an outage; job and function run times span the same range.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 16)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub queue: String,
    /// `completed` or `failed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueStateLabels {
    pub queue: String,
    pub priority: String,
    /// `queued`, `running`, `retrying` or `dead`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueuePriorityLabels {
    pub queue: String,
    pub priority: String,
}

/// Everything `/metrics` serves.
pub struct Metrics {
    registry: Registry,
    pub relay: Arc<RelayMetrics>,
    pub jobs: Arc<JobMetrics>,
    pub search: Arc<SearchMetrics>,
    pub queues: QueueGauges,
}

impl Metrics {
    /// Registers every metric; `sink` labels the relay's, `functions` (the
    /// in-process function host's) are registered beside them.
    pub fn new(sink: &str, functions: Option<&spine_functions::metrics::FunctionMetrics>) -> Self {
        let mut registry = Registry::with_prefix("spine");
        let relay = Arc::new(RelayMetrics::default());
        relay.register(registry.sub_registry_with_label(("sink".into(), sink.to_string().into())));
        let jobs = Arc::new(JobMetrics::default());
        jobs.register(&mut registry);
        let search = Arc::new(SearchMetrics::default());
        search.register(&mut registry);
        let queues = QueueGauges::default();
        queues.register(&mut registry);
        if let Some(functions) = functions {
            functions.register(&mut registry);
        }
        Metrics {
            registry,
            relay,
            jobs,
            search,
            queues,
        }
    }

    /// The OpenMetrics text of every metric, gauges brought up to date first.
    pub fn render(&self) -> String {
        self.relay.refresh();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Relay state. Counters only grow; the lag is measured from the oldest pending
/// commit when scraped.
#[derive(Debug)]
pub struct RelayMetrics {
    pub published: Counter,
    pub duplicates: Counter,
    pub errors: Counter,
    pub batches: Counter,
    /// Commit of an event to JetStream's acknowledgement of it.
    pub commit_to_ack: Histogram,
    /// Where that time goes, so a regression points at its stage: an event's
    /// commit to the relay having read it (the NOTIFY wake-up and the read),
    pub commit_to_read: Histogram,
    /// split, for reads that follow a NOTIFY wake-up, into the first event's
    /// commit to the wake-up (NOTIFY delivery, the listener, the hand-over)
    pub commit_to_wake: Histogram,
    /// and the wake-up to the read's rows (the query),
    pub wake_to_read: Histogram,
    /// a batch's read to its last publish handed to the client,
    pub read_to_sent: Histogram,
    /// and its last publish to its acknowledgements (including any wait in the
    /// pipeline behind the batch before it).
    pub sent_to_ack: Histogram,
    /// Commit time (µs since the epoch) of the oldest event read but not yet relayed;
    /// 0 when caught up. Lag is measured from it at read time, so it keeps growing
    /// while the relay is stuck (NATS down), which is what /healthz must see.
    oldest_pending_micros: AtomicI64,
    /// 1 while this instance holds the sink's lock and relays (others stand by). It
    /// stays 1 while the relay fails and retries: it is still the one that must relay.
    active: Gauge,
    /// When the relay last completed a database round (µs since the epoch): a relay
    /// that cannot reach Postgres has no lag to report, but it is not healthy either.
    last_ok_micros: AtomicI64,
    lag_gauge: Gauge<f64, AtomicU64>,
    last_ok_gauge: Gauge<f64, AtomicU64>,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self {
            published: Counter::default(),
            duplicates: Counter::default(),
            errors: Counter::default(),
            batches: Counter::default(),
            commit_to_ack: latency_histogram(),
            commit_to_read: latency_histogram(),
            commit_to_wake: latency_histogram(),
            wake_to_read: latency_histogram(),
            read_to_sent: latency_histogram(),
            sent_to_ack: latency_histogram(),
            oldest_pending_micros: AtomicI64::new(0),
            active: Gauge::default(),
            last_ok_micros: AtomicI64::new(Utc::now().timestamp_micros()),
            lag_gauge: Gauge::default(),
            last_ok_gauge: Gauge::default(),
        }
    }
}

impl RelayMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "relay_published",
            "Events published to JetStream and acknowledged",
            self.published.clone(),
        );
        r.register(
            "relay_duplicates",
            "Publishes JetStream acknowledged as duplicates (redelivery after a crash)",
            self.duplicates.clone(),
        );
        r.register(
            "relay_errors",
            "Failed relay rounds (database or NATS errors)",
            self.errors.clone(),
        );
        r.register(
            "relay_batches",
            "Batches published and committed",
            self.batches.clone(),
        );
        r.register(
            "relay_commit_to_ack_seconds",
            "From an event's commit to JetStream's acknowledgement of its publish",
            self.commit_to_ack.clone(),
        );
        r.register(
            "relay_commit_to_read_seconds",
            "From an event's commit to the relay's read of it (wake-up and read)",
            self.commit_to_read.clone(),
        );
        r.register(
            "relay_commit_to_wake_seconds",
            "From the first event's commit to the NOTIFY wake-up that led to its read",
            self.commit_to_wake.clone(),
        );
        r.register(
            "relay_wake_to_read_seconds",
            "From a NOTIFY wake-up to the rows of the read it started",
            self.wake_to_read.clone(),
        );
        r.register(
            "relay_read_to_sent_seconds",
            "From a batch's read to its last publish handed to the NATS client",
            self.read_to_sent.clone(),
        );
        r.register(
            "relay_sent_to_ack_seconds",
            "From a batch's last publish to JetStream's acknowledgements of it",
            self.sent_to_ack.clone(),
        );
        r.register(
            "relay_lag_seconds",
            "Age of the oldest committed event not yet relayed",
            self.lag_gauge.clone(),
        );
        r.register(
            "relay_active",
            "1 when this instance holds the sink and relays",
            self.active.clone(),
        );
        r.register(
            "relay_last_ok_age_seconds",
            "Seconds since the relay last completed a database round",
            self.last_ok_gauge.clone(),
        );
    }

    fn refresh(&self) {
        self.lag_gauge.set(self.lag_seconds());
        self.last_ok_gauge.set(self.seconds_since_ok());
    }

    pub fn set_active(&self, active: bool) {
        self.active.set(i64::from(active));
    }

    pub fn is_active(&self) -> bool {
        self.active.get() == 1
    }

    /// Records a successful round trip to the database.
    pub fn mark_ok(&self) {
        self.last_ok_micros
            .store(Utc::now().timestamp_micros(), Ordering::Relaxed);
    }

    pub fn seconds_since_ok(&self) -> f64 {
        let then = self.last_ok_micros.load(Ordering::Relaxed);
        ((Utc::now().timestamp_micros() - then).max(0) as f64) / 1e6
    }

    pub fn set_oldest_pending(&self, committed_at: Option<DateTime<Utc>>) {
        let micros = committed_at.map_or(0, |t| t.timestamp_micros().max(1));
        self.oldest_pending_micros.store(micros, Ordering::Relaxed);
    }

    pub fn lag_seconds(&self) -> f64 {
        match self.oldest_pending_micros.load(Ordering::Relaxed) {
            0 => 0.0,
            micros => ((Utc::now().timestamp_micros() - micros).max(0) as f64) / 1e6,
        }
    }

    /// Records the commit→read time of events read now.
    pub fn read<'a>(&self, committed: impl IntoIterator<Item = &'a DateTime<Utc>>) {
        let now = Utc::now();
        for at in committed {
            self.commit_to_read.observe(seconds_between(at, &now));
        }
    }

    /// Records, for a read started by a NOTIFY wake-up at `woke` (wall clock, and
    /// monotonic), the first event's commit→wake-up and the wake-up→rows time.
    pub fn woken_read(
        &self,
        first_committed: &DateTime<Utc>,
        woke: (DateTime<Utc>, std::time::Instant),
    ) {
        self.commit_to_wake
            .observe(seconds_between(first_committed, &woke.0));
        self.wake_to_read.observe(woke.1.elapsed().as_secs_f64());
    }

    /// Records the commit→acknowledgement time of events acknowledged now.
    pub fn acknowledged<'a>(&self, committed: impl IntoIterator<Item = &'a DateTime<Utc>>) {
        let now = Utc::now();
        for at in committed {
            self.commit_to_ack.observe(seconds_between(at, &now));
        }
    }
}

/// Seconds from `earlier` to `later` by the wall clock, never negative (the
/// database's and this host's clocks may disagree by a little).
fn seconds_between(earlier: &DateTime<Utc>, later: &DateTime<Utc>) -> f64 {
    (*later - *earlier).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6
}

/// The job runner: what this worker ran, per queue.
#[derive(Debug)]
pub struct JobMetrics {
    /// Outcomes the database recorded (all queues), as before per-queue labels.
    pub completed: Counter,
    pub failed: Counter,
    /// Handler runs that ended, by queue and outcome.
    pub attempts: Family<AttemptLabels, Counter>,
    /// Handlers running now, by queue.
    pub running: Family<QueueLabel, Gauge>,
    /// How long a handler ran, by queue.
    pub run_seconds: Family<QueueLabel, Histogram>,
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self {
            completed: Counter::default(),
            failed: Counter::default(),
            attempts: Family::default(),
            running: Family::default(),
            run_seconds: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl JobMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "jobs_completed",
            "Jobs this worker completed (recorded in the database)",
            self.completed.clone(),
        );
        r.register(
            "jobs_failed",
            "Failed job attempts this worker recorded (retried or dead)",
            self.failed.clone(),
        );
        r.register(
            "jobs_attempts",
            "Handler runs that ended on this worker, by queue and outcome",
            self.attempts.clone(),
        );
        r.register(
            "jobs_running",
            "Handlers running on this worker now, by queue",
            self.running.clone(),
        );
        r.register(
            "jobs_run_seconds",
            "How long a job's handler ran, by queue",
            self.run_seconds.clone(),
        );
    }

    /// A handler of `queue` started; the returned guard records its end.
    pub fn started(&self, queue: &str) -> RunGuard {
        let label = QueueLabel {
            queue: queue.to_string(),
        };
        self.running.get_or_create(&label).inc();
        RunGuard {
            attempts: self.attempts.clone(),
            running: self.running.clone(),
            run_seconds: self.run_seconds.clone(),
            label,
            started: std::time::Instant::now(),
        }
    }
}

/// One handler run: [`RunGuard::finished`] records its outcome and time; dropped
/// without it (released at shutdown), it only stops counting as running.
pub struct RunGuard {
    attempts: Family<AttemptLabels, Counter>,
    running: Family<QueueLabel, Gauge>,
    run_seconds: Family<QueueLabel, Histogram>,
    label: QueueLabel,
    started: std::time::Instant,
}

impl RunGuard {
    /// `outcome`: `completed`, `failed` or `snoozed`.
    pub fn finished(self, outcome: &'static str) {
        self.run_seconds
            .get_or_create(&self.label)
            .observe(self.started.elapsed().as_secs_f64());
        self.attempts
            .get_or_create(&AttemptLabels {
                queue: self.label.queue.clone(),
                outcome,
            })
            .inc();
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.running.get_or_create(&self.label).dec();
    }
}

/// The search sync.
#[derive(Debug, Default)]
pub struct SearchMetrics {
    /// Documents Meilisearch applied (written or deleted).
    pub documents: Counter,
    /// Rounds Meilisearch refused whole and that were written again in parts.
    pub split_rounds: Counter,
    /// Failed sessions (Meilisearch or database errors), each retried.
    pub errors: Counter,
    /// 1 when this instance holds the search sink.
    pub active: Gauge,
}

impl SearchMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "search_documents",
            "Documents Meilisearch applied (written or deleted)",
            self.documents.clone(),
        );
        r.register(
            "search_split_rounds",
            "Rounds Meilisearch refused whole, written again in parts",
            self.split_rounds.clone(),
        );
        r.register(
            "search_errors",
            "Failed search sync sessions (each is retried)",
            self.errors.clone(),
        );
        r.register(
            "search_active",
            "1 when this instance holds the search sink",
            self.active.clone(),
        );
    }
}

/// Each queue's state as the database has it, refreshed on every scrape.
#[derive(Debug, Default)]
pub struct QueueGauges {
    pub jobs: Family<QueueStateLabels, Gauge>,
    pub oldest_queued: Family<QueuePriorityLabels, Gauge<f64, AtomicU64>>,
    /// 1 when the last scrape read `spine.queue_stats()`, 0 when it failed.
    pub up: Gauge,
}

/// One row of `spine.queue_stats()`.
pub struct QueueStat {
    pub queue: String,
    pub priority: String,
    pub queued: i64,
    pub running: i64,
    pub retrying: i64,
    pub dead: i64,
    pub oldest_queued_seconds: Option<f64>,
}

impl QueueGauges {
    fn register(&self, r: &mut Registry) {
        r.register(
            "queue_jobs",
            "Jobs in each queue by priority and state (spine.queue_stats)",
            self.jobs.clone(),
        );
        r.register(
            "queue_oldest_queued_seconds",
            "Age of the oldest job waiting in each queue and priority",
            self.oldest_queued.clone(),
        );
        r.register(
            "queue_stats_up",
            "1 when the last scrape read spine.queue_stats()",
            self.up.clone(),
        );
    }

    /// Replaces every queue's figures (a dropped queue disappears).
    pub fn set(&self, stats: Option<&[QueueStat]>) {
        self.jobs.clear();
        self.oldest_queued.clear();
        let Some(stats) = stats else {
            self.up.set(0);
            return;
        };
        self.up.set(1);
        for s in stats {
            for (state, n) in [
                ("queued", s.queued),
                ("running", s.running),
                ("retrying", s.retrying),
                ("dead", s.dead),
            ] {
                self.jobs
                    .get_or_create(&QueueStateLabels {
                        queue: s.queue.clone(),
                        priority: s.priority.clone(),
                        state,
                    })
                    .set(n);
            }
            self.oldest_queued
                .get_or_create(&QueuePriorityLabels {
                    queue: s.queue.clone(),
                    priority: s.priority.clone(),
                })
                .set(s.oldest_queued_seconds.unwrap_or(0.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_text() {
        let m = Metrics::new("nats", None);
        m.relay.published.inc_by(3);
        m.relay.set_active(true);
        let run = m.jobs.started("mail");
        let text = m.render();
        assert!(
            text.contains("spine_relay_published_total{sink=\"nats\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("spine_relay_active{sink=\"nats\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("spine_relay_lag_seconds{sink=\"nats\"} 0.0\n"),
            "{text}"
        );
        assert!(
            text.contains("spine_jobs_running{queue=\"mail\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE spine_relay_lag_seconds gauge"),
            "{text}"
        );
        run.finished("failed");
        let text = m.render();
        assert!(
            text.contains("spine_jobs_running{queue=\"mail\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("spine_jobs_attempts_total{queue=\"mail\",outcome=\"failed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("spine_jobs_run_seconds_count{queue=\"mail\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn queue_gauges_follow_the_database() {
        let m = Metrics::new("nats", None);
        let stat = |queue: &str, dead| QueueStat {
            queue: queue.into(),
            priority: "interactive".into(),
            queued: 4,
            running: 1,
            retrying: 0,
            dead,
            oldest_queued_seconds: Some(2.5),
        };
        m.queues.set(Some(&[stat("a", 2), stat("b", 0)]));
        let text = m.render();
        assert!(
            text.contains(
                "spine_queue_jobs{queue=\"a\",priority=\"interactive\",state=\"dead\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "spine_queue_oldest_queued_seconds{queue=\"b\",priority=\"interactive\"} 2.5\n"
            ),
            "{text}"
        );
        m.queues.set(Some(&[stat("a", 0)]));
        assert!(
            !m.render().contains("queue=\"b\""),
            "a dropped queue disappears"
        );
        m.queues.set(None);
        assert!(m.render().contains("spine_queue_stats_up 0\n"));
    }

    #[test]
    fn lag_grows_from_the_oldest_pending_commit() {
        let m = RelayMetrics::default();
        m.set_oldest_pending(Some(Utc::now() - chrono::Duration::seconds(40)));
        assert!(
            (40.0..41.0).contains(&m.lag_seconds()),
            "{}",
            m.lag_seconds()
        );
        m.set_oldest_pending(None);
        assert_eq!(m.lag_seconds(), 0.0);
    }
}
