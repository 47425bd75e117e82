//! Several gateways on one database. Row changes and database broadcasts need
//! nothing here: every gateway follows the outbox itself (one reader per
//! process, no per-connection work in Postgres). What exists only in a
//! process — client broadcasts and presence — travels over NATS core subjects:
//!
//! - `spine.realtime.notes`: a gateway's broadcasts and presence changes
//!   ([`Note`]s, tagged with its origin id), applied by every other gateway;
//! - `spine.realtime.alive`: each gateway's origin every [`ALIVE_EVERY`]; one
//!   not heard from for [`GONE_AFTER`] is gone, and its presences leave;
//! - `spine.realtime.sync`: a gateway that starts asks, and the others send
//!   their presences again, so its `presence_state` is complete.
//!
//! Core NATS is at-most-once, as Supabase's broadcast and presence are; the
//! liveness messages repair presence after a lost note.

use super::hub::{Hub, Note, Owner};
use super::protocol::UserPayload;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NOTES: &str = "spine.realtime.notes";
const ALIVE: &str = "spine.realtime.alive";
const SYNC: &str = "spine.realtime.sync";
pub const ALIVE_EVERY: Duration = Duration::from_secs(2);
pub const GONE_AFTER: Duration = Duration::from_secs(6);

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    #[serde(flatten)]
    note: Note,
}

/// Joins the cluster on `nats`; runs until the process ends, reconnecting
/// as the NATS client does.
pub async fn join(hub: Arc<Hub>, nats: spine_nats::NatsConfig) -> anyhow::Result<()> {
    let client = nats
        .options()
        .await?
        .retry_on_initial_connect()
        .connect(nats.server_addrs())
        .await?;
    let origin = uuid::Uuid::new_v4().to_string();
    let mut notes = client.subscribe(NOTES).await?;
    let mut alive = client.subscribe(ALIVE).await?;
    let mut sync = client.subscribe(SYNC).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Note>();
    hub.share_with(tx);
    // Ask the others for their presences.
    client.publish(SYNC, origin.clone().into()).await?;
    let publish = |note: Note| {
        let client = client.clone();
        let body = serde_json::to_vec(&Envelope {
            origin: origin.clone(),
            note,
        });
        async move {
            if let Ok(body) = body {
                if let Err(e) = client.publish(NOTES, body.into()).await {
                    tracing::warn!(error = %e, "realtime: a note to the other gateways was lost");
                }
            }
        }
    };
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut beat = tokio::time::interval(ALIVE_EVERY);
    tracing::info!(%origin, "realtime: sharing broadcasts and presence over NATS");
    loop {
        tokio::select! {
            Some(note) = rx.recv() => publish(note).await,
            Some(message) = notes.next() => {
                let Ok(envelope) = serde_json::from_slice::<Envelope>(&message.payload) else {
                    tracing::warn!("realtime: an unreadable note on {NOTES}");
                    continue;
                };
                if envelope.origin == origin {
                    continue;
                }
                seen.insert(envelope.origin.clone(), Instant::now());
                apply(&hub, &envelope.origin, envelope.note);
            }
            Some(message) = alive.next() => {
                let from = String::from_utf8_lossy(&message.payload).to_string();
                if from != origin {
                    seen.insert(from, Instant::now());
                }
            }
            Some(message) = sync.next() => {
                if message.payload.as_ref() != origin.as_bytes() {
                    for note in hub.local_presences() {
                        publish(note).await;
                    }
                }
            }
            _ = beat.tick() => {
                let _ = client.publish(ALIVE, origin.clone().into()).await;
                let gone: Vec<String> = seen
                    .iter()
                    .filter(|(_, at)| at.elapsed() > GONE_AFTER)
                    .map(|(o, _)| o.clone())
                    .collect();
                for o in gone {
                    tracing::info!(origin = %o, "realtime: a gateway went away; its presences leave");
                    seen.remove(&o);
                    hub.drop_origin(&o);
                }
            }
        }
    }
}

/// A note of another gateway, applied to this process's channels.
fn apply(hub: &Hub, origin: &str, note: Note) {
    match note {
        Note::Broadcast {
            topic,
            event,
            payload,
        } => {
            hub.deliver_broadcast(&topic, &event, &UserPayload::Json(payload), None);
        }
        Note::Track {
            topic,
            key,
            channel,
            meta,
        } => hub.put_presence(&topic, &key, Owner::Remote(origin.into(), channel), meta),
        Note::Untrack {
            topic,
            key,
            channel,
        } => {
            hub.drop_presence(&topic, &key, &Owner::Remote(origin.into(), channel));
        }
    }
}
