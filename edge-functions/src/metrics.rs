//! The function host's metrics: invocations by function and outcome, and how long
//! they took. They are registered into the registry of whichever process embeds
//! the host (the worker, or `spine-functions serve`), and served at its `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabel {
    pub function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    pub function: String,
    /// `ok` (a Response below 500), `status_5xx` (a Response of 500 or more),
    /// `threw`, `limit_cpu`, `limit_memory`, `limit_wall`, `bad_module`,
    /// `never_settled`, `not_found`, `disabled`, `database`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug)]
pub struct FunctionMetrics {
    pub invocations: Family<InvocationLabels, Counter>,
    pub seconds: Family<FunctionLabel, Histogram>,
    /// Database sessions of the host's pool: open, idle, callers waiting.
    pub pool_size: Gauge,
    pub pool_available: Gauge,
    pub pool_waiting: Gauge,
}

impl Default for FunctionMetrics {
    fn default() -> Self {
        Self {
            invocations: Family::default(),
            // 0.5 ms to ~16 s, doubling: a warm call is well under a millisecond,
            // the wall limit is up to 150 s (those land in +Inf).
            seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            pool_size: Gauge::default(),
            pool_available: Gauge::default(),
            pool_waiting: Gauge::default(),
        }
    }
}

impl FunctionMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "function_invocations",
            "Function invocations by function and outcome",
            self.invocations.clone(),
        );
        r.register(
            "function_invocation_seconds",
            "How long an invocation took, from its slot to its answer",
            self.seconds.clone(),
        );
        r.register(
            "function_db_pool_size",
            "Database sessions the function host holds open",
            self.pool_size.clone(),
        );
        r.register(
            "function_db_pool_available",
            "Idle database sessions of the function host",
            self.pool_available.clone(),
        );
        r.register(
            "function_db_pool_waiting",
            "Host calls waiting for a database session",
            self.pool_waiting.clone(),
        );
    }

    pub fn record(&self, function: &str, outcome: &'static str, seconds: f64) {
        self.invocations
            .get_or_create(&InvocationLabels {
                function: function.to_string(),
                outcome,
            })
            .inc();
        self.seconds
            .get_or_create(&FunctionLabel {
                function: function.to_string(),
            })
            .observe(seconds);
    }
}
