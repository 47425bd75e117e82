//! LISTEN on a channel and turn notifications into wake-ups: the outbox channel
//! wakes the relay and the search sync, the jobs channel the job runner.
//!
//! Notifications may be lost while disconnected; every consumer therefore also
//! polls on a timer and reads the table itself, and a reconnect wakes it once.

use futures_util::StreamExt;
use spine_db::DbConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_postgres::AsyncMessage;

/// What a consumer does with a notification's payload, and after a reconnect
/// (which may have missed notifications).
pub struct Handlers {
    pub on_notification: Box<dyn Fn(&str) + Send + Sync>,
    pub on_reconnect: Box<dyn Fn() + Send + Sync>,
}

/// Keeps a LISTEN connection open (reconnecting after errors) until shutdown;
/// every notification, and every reconnect, wakes `wake`.
pub async fn run(
    db: DbConfig,
    channel: String,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) {
    let (on_note, on_reconnect) = (wake.clone(), wake);
    let handlers = Handlers {
        on_notification: Box::new(move |_| on_note.notify_one()),
        on_reconnect: Box::new(move || on_reconnect.notify_one()),
    };
    run_with(db, channel, handlers, shutdown).await
}

/// [`run`] with the consumer's own handlers (the job runner reads the payload).
pub async fn run_with(
    db: DbConfig,
    channel: String,
    handlers: Handlers,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        let session = listen_once(&db, &channel, &handlers);
        tokio::select! {
            result = session => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "LISTEN connection lost; polling until it is back");
                }
            }
            _ = shutdown.changed() => return,
        }
        // A reconnect may have missed notifications: wake the consumer to look.
        (handlers.on_reconnect)();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(db: &DbConfig, channel: &str, handlers: &Handlers) -> anyhow::Result<()> {
    let (client, mut connection) = db.connect().await?;
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
        (handlers.on_notification)(&payload);
    }
    match driver.await? {
        Ok(()) => anyhow::bail!("LISTEN connection closed"),
        Err(e) => Err(e.into()),
    }
}
