//! LISTEN on a channel and turn notifications into wake-ups: the outbox channel
//! wakes the relay and the search sync, the jobs channel the job runner.
//!
//! Notifications may be lost while disconnected; every consumer therefore also
//! polls on a timer and reads the table itself, and a reconnect wakes it once.

use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_postgres::{AsyncMessage, NoTls};

/// Which notifications wake the consumer, by payload.
pub type Filter = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Keeps a LISTEN connection open (reconnecting after errors) until shutdown;
/// every notification wakes `wake`.
pub async fn run(
    database_url: String,
    channel: String,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) {
    run_filtered(database_url, channel, Box::new(|_| true), wake, shutdown).await
}

/// [`run`] for the notifications whose payload `filter` accepts (the job runner:
/// the queues it serves).
pub async fn run_filtered(
    database_url: String,
    channel: String,
    filter: Filter,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        let session = listen_once(&database_url, &channel, &filter, &wake);
        tokio::select! {
            result = session => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "LISTEN connection lost; polling until it is back");
                }
            }
            _ = shutdown.changed() => return,
        }
        // A reconnect may have missed notifications: wake the relay to look.
        wake.notify_one();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(
    url: &str,
    channel: &str,
    filter: &Filter,
    wake: &Notify,
) -> anyhow::Result<()> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    // The channel is an identifier chosen by the operator: quote it.
    let quoted = format!("\"{}\"", channel.replace('"', "\"\""));
    client.batch_execute(&format!("LISTEN {quoted}")).await?;
    tracing::debug!(%channel, "listening");
    while let Some(payload) = rx.recv().await {
        if filter(&payload) {
            wake.notify_one();
        }
    }
    match driver.await? {
        Ok(()) => anyhow::bail!("LISTEN connection closed"),
        Err(e) => Err(e.into()),
    }
}
