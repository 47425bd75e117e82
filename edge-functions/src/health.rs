//! Per-plugin health: every invocation's outcome is counted here and reported to
//! `spine.plugin_health` about once a second (deltas, one statement per plugin),
//! so a busy function costs no extra database round trip per call. A plugin that
//! fails `disable_after` times in a row in this process is reported at once, and
//! the database disables it (audited); not-found, disabled and database outages
//! are not the plugin's failures and leave its run as it is.

use spine_db::Pool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How often counts are written to the database.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The longest error kept (the table keeps 500 characters).
const MAX_ERROR_CHARS: usize = 500;

/// What one invocation means for its plugin's health.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// It answered (below 500).
    Ok,
    /// It failed: threw, a bad module, never settled, or answered 5xx.
    Failed(String),
    /// A limit stopped it (a failure too).
    LimitHit(String),
    /// Not the plugin's doing (not deployed, disabled, database down).
    NotCounted,
}

/// Counts since the last report.
#[derive(Debug, Default, Clone, PartialEq)]
struct Pending {
    invocations: i32,
    failures: i32,
    limit_hits: i32,
    total_ms: f64,
    last_error: Option<String>,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Pending>,
    /// Failures in a row per plugin, in this process (not reset by a report).
    streaks: HashMap<String, i32>,
}

pub struct Health {
    state: Mutex<State>,
    /// Failures in a row that disable a plugin; 0: never.
    disable_after: u32,
    started: AtomicBool,
    urgent: Notify,
}

impl Health {
    pub fn new(disable_after: u32) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            disable_after,
            started: AtomicBool::new(false),
            urgent: Notify::new(),
        })
    }

    /// Counts one invocation of `plugin` that took `ms`. `from_anyone`: an
    /// anonymous call of a public function, whose failures are counted but do not
    /// extend the plugin's run (anyone on the internet could otherwise disable a
    /// public webhook by sending it input that makes it throw).
    pub fn record(&self, plugin: &str, verdict: Verdict, ms: f64, from_anyone: bool) {
        if verdict == Verdict::NotCounted {
            return;
        }
        let mut state = self.state.lock().expect("health lock");
        let p = state.pending.entry(plugin.to_string()).or_default();
        p.invocations += 1;
        p.total_ms += ms;
        let failed = match verdict {
            Verdict::Ok => None,
            Verdict::Failed(e) => Some(e),
            Verdict::LimitHit(e) => {
                p.limit_hits += 1;
                Some(e)
            }
            Verdict::NotCounted => unreachable!("returned above"),
        };
        if let Some(e) = &failed {
            p.failures += 1;
            p.last_error = Some(e.chars().take(MAX_ERROR_CHARS).collect());
        }
        let streak = state.streaks.entry(plugin.to_string()).or_default();
        *streak = match (&failed, from_anyone) {
            (None, _) => 0,
            (Some(_), true) => *streak,
            (Some(_), false) => *streak + 1,
        };
        if self.disable_after > 0 && *streak == self.disable_after as i32 {
            self.urgent.notify_one();
        }
    }

    /// Starts the reporting task once (on the first invocation, inside the runtime).
    pub fn start(self: &Arc<Self>, db: Pool, on_disabled: impl Fn(&str) + Send + 'static) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let health = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(FLUSH_EVERY) => {}
                    _ = health.urgent.notified() => {}
                }
                for plugin in health.report(&db).await {
                    tracing::warn!(
                        %plugin,
                        failures_in_a_row = health.disable_after,
                        "disabled the plugin: it failed too often in a row (SPINE_FUNCTIONS_DISABLE_AFTER)"
                    );
                    on_disabled(&plugin);
                }
            }
        });
    }

    /// Writes the counts since the last report; the plugins this disabled.
    async fn report(&self, db: &Pool) -> Vec<String> {
        let (pending, streaks) = {
            let mut state = self.state.lock().expect("health lock");
            (std::mem::take(&mut state.pending), state.streaks.clone())
        };
        if pending.is_empty() {
            return Vec::new();
        }
        let mut disabled = Vec::new();
        let mut unsent = HashMap::new();
        for (plugin, p) in pending {
            let streak = streaks.get(&plugin).copied().unwrap_or(0);
            match self.send(db, &plugin, &p, streak).await {
                Ok(true) => disabled.push(plugin),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(%plugin, error = %e, "plugin health not reported; kept for the next report");
                    unsent.insert(plugin, p);
                }
            }
        }
        if !unsent.is_empty() {
            let mut state = self.state.lock().expect("health lock");
            for (plugin, p) in unsent {
                let now = state.pending.entry(plugin).or_default();
                now.invocations += p.invocations;
                now.failures += p.failures;
                now.limit_hits += p.limit_hits;
                now.total_ms += p.total_ms;
                if now.last_error.is_none() {
                    now.last_error = p.last_error;
                }
            }
        }
        disabled
    }

    async fn send(
        &self,
        db: &Pool,
        plugin: &str,
        p: &Pending,
        streak: i32,
    ) -> Result<bool, String> {
        let mut session = db.get().await.map_err(|e| e.to_string())?;
        let tx = session.transaction().await.map_err(crate::sql::describe)?;
        tx.execute("SELECT set_config('role', 'spine_functions', true)", &[])
            .await
            .map_err(crate::sql::describe)?;
        let row = tx
            .query_one(
                "SELECT spine.record_plugin_health($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &plugin,
                    &p.invocations,
                    &p.failures,
                    &p.limit_hits,
                    &p.total_ms,
                    &streak,
                    &p.last_error,
                    &(self.disable_after as i32),
                ],
            )
            .await
            .map_err(crate::sql::describe)?;
        tx.commit().await.map_err(crate::sql::describe)?;
        Ok(row.get(0))
    }
}

/// Failures in a row that disable a plugin, from `SPINE_FUNCTIONS_DISABLE_AFTER`
/// (every process that embeds the host reads it): 25 when unset, 0 for never.
pub fn disable_after_from_env() -> u32 {
    match std::env::var("SPINE_FUNCTIONS_DISABLE_AFTER") {
        Err(_) => 25,
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(value = %v, "SPINE_FUNCTIONS_DISABLE_AFTER is not a number; using 25");
            25
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_failures_in_a_row_and_limit_hits() {
        let h = Health::new(3);
        h.record("p", Verdict::Failed("boom".into()), 2.0, false);
        h.record("p", Verdict::LimitHit("cpu".into()), 3.0, false);
        h.record("p", Verdict::NotCounted, 1.0, false);
        h.record("p", Verdict::Failed("anyone".into()), 1.0, true);
        {
            let s = h.state.lock().unwrap();
            assert_eq!(
                s.streaks["p"], 2,
                "neither not-found nor an anonymous caller's failure extends a run"
            );
            assert_eq!(
                s.pending["p"],
                Pending {
                    invocations: 3,
                    failures: 3,
                    limit_hits: 1,
                    total_ms: 6.0,
                    last_error: Some("anyone".into())
                }
            );
        }
        h.record("p", Verdict::Ok, 1.0, true);
        assert_eq!(h.state.lock().unwrap().streaks["p"], 0);
    }
}
