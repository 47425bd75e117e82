//! Keeping a loop alive: a session runs until it returns (a requested stop) or
//! fails; after a failure it starts again with exponential backoff, until shutdown.

use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

pub async fn restart_with_backoff<F, Fut>(
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut session: F,
) where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut delay = FIRST_RETRY;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match session(shutdown.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), retry_in = ?delay, "{what} session failed")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(LONGEST_RETRY);
    }
}
