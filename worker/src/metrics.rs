//! The worker's metrics, shared between its loops and the HTTP endpoints, rendered
//! in the Prometheus text format.

use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Relay state. Counters only grow; gauges are overwritten by the relay loop.
#[derive(Debug)]
pub struct RelayMetrics {
    pub published: AtomicU64,
    pub duplicates: AtomicU64,
    pub errors: AtomicU64,
    pub batches: AtomicU64,
    /// Commit time (µs since the epoch) of the oldest event read but not yet relayed;
    /// 0 when caught up. Lag is measured from it at read time, so it keeps growing
    /// while the relay is stuck (NATS down), which is what /healthz must see.
    oldest_pending_micros: AtomicI64,
    /// Whether this instance holds the sink's lock and relays (others stand by). It
    /// stays true while the relay fails and retries: it is still the one that must relay.
    pub active: AtomicBool,
    /// When the relay last completed a database round (µs since the epoch): a relay
    /// that cannot reach Postgres has no lag to report, but it is not healthy either.
    last_ok_micros: AtomicI64,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self {
            published: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            oldest_pending_micros: AtomicI64::new(0),
            active: AtomicBool::new(false),
            last_ok_micros: AtomicI64::new(Utc::now().timestamp_micros()),
        }
    }
}

impl RelayMetrics {
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

    pub fn render(&self, sink: &str) -> String {
        let l = format!("{{sink=\"{sink}\"}}");
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP spine_relay_published_total Events published to JetStream and acknowledged.\n\
             # TYPE spine_relay_published_total counter\n\
             spine_relay_published_total{l} {}\n\
             # HELP spine_relay_duplicates_total Publishes JetStream acknowledged as duplicates (redelivery after a crash).\n\
             # TYPE spine_relay_duplicates_total counter\n\
             spine_relay_duplicates_total{l} {}\n\
             # HELP spine_relay_errors_total Failed relay rounds (database or NATS errors).\n\
             # TYPE spine_relay_errors_total counter\n\
             spine_relay_errors_total{l} {}\n\
             # HELP spine_relay_batches_total Batches published and committed.\n\
             # TYPE spine_relay_batches_total counter\n\
             spine_relay_batches_total{l} {}\n\
             # HELP spine_relay_lag_seconds Age of the oldest committed event not yet relayed.\n\
             # TYPE spine_relay_lag_seconds gauge\n\
             spine_relay_lag_seconds{l} {}\n\
             # HELP spine_relay_active 1 when this instance holds the sink and relays.\n\
             # TYPE spine_relay_active gauge\n\
             spine_relay_active{l} {}\n\
             # HELP spine_relay_last_ok_age_seconds Seconds since the relay last completed a database round.\n\
             # TYPE spine_relay_last_ok_age_seconds gauge\n\
             spine_relay_last_ok_age_seconds{l} {:.3}\n",
            get(&self.published),
            get(&self.duplicates),
            get(&self.errors),
            get(&self.batches),
            self.lag_seconds(),
            u8::from(self.active.load(Ordering::Relaxed)),
            self.seconds_since_ok(),
        )
    }
}

/// Job runner counters.
#[derive(Debug, Default)]
pub struct JobMetrics {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub running: AtomicI64,
}

impl JobMetrics {
    pub fn render(&self) -> String {
        format!(
            "# HELP spine_jobs_completed_total Jobs this worker completed.\n\
             # TYPE spine_jobs_completed_total counter\n\
             spine_jobs_completed_total {}\n\
             # HELP spine_jobs_failed_total Failed job attempts (retried or dead).\n\
             # TYPE spine_jobs_failed_total counter\n\
             spine_jobs_failed_total {}\n\
             # HELP spine_jobs_running Jobs running on this worker now.\n\
             # TYPE spine_jobs_running gauge\n\
             spine_jobs_running {}\n",
            self.completed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.running.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = RelayMetrics::default();
        m.published.fetch_add(3, Ordering::Relaxed);
        let text = m.render("nats");
        assert!(text.contains("spine_relay_published_total{sink=\"nats\"} 3\n"));
        assert!(text.contains("spine_relay_lag_seconds{sink=\"nats\"} 0\n"));
        assert!(text.contains("# TYPE spine_relay_lag_seconds gauge"));
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
