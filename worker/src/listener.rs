//! LISTEN on the outbox channel and turn notifications into wake-ups.
//!
//! Notifications carry no data and may be lost while disconnected; the relay
//! therefore also polls on a timer and always reads the table after its cursor.

use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_postgres::{AsyncMessage, NoTls};

/// Keeps a LISTEN connection open (reconnecting after errors) until shutdown.
pub async fn run(
    database_url: String,
    channel: String,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        let session = listen_once(&database_url, &channel, &wake);
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

async fn listen_once(url: &str, channel: &str, wake: &Notify) -> anyhow::Result<()> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
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
    while rx.recv().await.is_some() {
        wake.notify_one();
    }
    match driver.await? {
        Ok(()) => anyhow::bail!("LISTEN connection closed"),
        Err(e) => Err(e.into()),
    }
}
