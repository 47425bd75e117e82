//! The joined channels of every socket of this process, and what travels
//! between them without the database: client broadcasts and presence.

use super::filter::Filter;
use super::protocol::{self, Frame, UserPayload, Vsn};
use crate::keys::Caller;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, Notify};

/// A place in the outbox: (commit_seq, seq), in commit order. On the wire
/// `"<commit_seq>:<seq>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position(pub i64, pub i64);

impl Position {
    pub fn parse(text: &str) -> Option<Position> {
        let (c, s) = text.split_once(':')?;
        Some(Position(c.parse().ok()?, s.parse().ok()?))
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0, self.1)
    }
}

/// The meeting place of a topic's channels (see [`Channel::scope`]).
pub fn scope(topic: &str, private: bool) -> String {
    if private {
        format!("private|{topic}")
    } else {
        topic.to_string()
    }
}

/// What goes to a socket's writer.
pub enum Out {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame (code, reason), after which the writer stops.
    Close(u16, String),
}

/// A socket as the rest of the process sees it.
pub struct Socket {
    pub vsn: Vsn,
    tx: mpsc::Sender<Out>,
    /// Set when the socket fell too far behind; its task closes it.
    pub overloaded: AtomicBool,
    pub kill: Notify,
}

/// Frames waiting for a socket before it counts as too slow and is closed
/// (the client reconnects, and a client with a position resumes).
pub const SOCKET_QUEUE: usize = 4096;

impl Socket {
    pub fn new(vsn: Vsn) -> (Arc<Socket>, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        (
            Arc::new(Socket {
                vsn,
                tx,
                overloaded: AtomicBool::new(false),
                kill: Notify::new(),
            }),
            rx,
        )
    }

    /// Queues a frame without waiting; a socket whose queue is full is closed.
    pub fn push(&self, frame: &Frame) -> bool {
        self.push_raw(Out::Text(protocol::encode(self.vsn, frame)))
    }

    pub fn push_raw(&self, out: Out) -> bool {
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.overloaded.swap(true, Ordering::SeqCst) {
                    self.kill.notify_one();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Waits until the queue is at most half full: a replay paces itself by
    /// the client instead of overflowing its queue.
    pub async fn wait_room(&self) {
        while self.tx.capacity() < SOCKET_QUEUE / 2 && !self.tx.is_closed() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// INSERT, UPDATE or DELETE; a binding's `*` is None.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Insert,
    Update,
    Delete,
}

impl ChangeType {
    pub fn parse(text: &str) -> Option<ChangeType> {
        match text.to_ascii_uppercase().as_str() {
            "INSERT" => Some(ChangeType::Insert),
            "UPDATE" => Some(ChangeType::Update),
            "DELETE" => Some(ChangeType::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Insert => "INSERT",
            ChangeType::Update => "UPDATE",
            ChangeType::Delete => "DELETE",
        }
    }
}

/// One postgres_changes binding of a channel.
#[derive(Debug, Clone)]
pub struct Binding {
    pub id: u32,
    pub event: Option<ChangeType>,
    pub schema: String,
    pub table: String,
    pub filter: Option<Filter>,
}

/// A channel's caller, with what routing needs of it worked out once: the
/// user id (`sub`) as a uuid and the token's expiry.
#[derive(Debug)]
pub struct Subscriber {
    pub caller: Caller,
    pub user: Option<uuid::Uuid>,
    pub exp: Option<f64>,
}

impl Subscriber {
    pub fn new(caller: Caller) -> Subscriber {
        let user = caller
            .claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|s| uuid::Uuid::parse_str(s).ok());
        let exp = caller.claims.get("exp").and_then(Value::as_f64);
        Subscriber { caller, user, exp }
    }
}

/// A joined channel.
pub struct Channel {
    pub id: u64,
    pub socket: Arc<Socket>,
    pub topic: String,
    /// Where broadcasts and presence meet: the topic, set apart for private
    /// channels (a public and a private channel of one name never mix).
    pub scope: String,
    pub private: bool,
    /// May send broadcasts / track presence (always, on public channels).
    pub can_broadcast: bool,
    pub can_track: bool,
    pub join_ref: Option<String>,
    pub caller: RwLock<Arc<Subscriber>>,
    pub bindings: Vec<Binding>,
    /// Some binding carried a `position`: records carry `spine_position`.
    pub resume: bool,
    pub broadcast_self: bool,
    pub broadcast_ack: bool,
    pub presence_key: Option<String>,
    /// Everything up to here was sent (or is not for this channel).
    pub delivered: Mutex<Position>,
    /// Fed by the live dispatcher (false while a replay catches up).
    pub live: AtomicBool,
}

impl Channel {
    /// Who the channel acts as (cheap: routing asks for every change).
    pub fn subscriber(&self) -> Arc<Subscriber> {
        self.caller.read().expect("never poisoned").clone()
    }

    pub fn set_caller(&self, caller: Caller) {
        *self.caller.write().expect("never poisoned") = Arc::new(Subscriber::new(caller));
    }

    pub fn sub_topic(&self) -> &str {
        self.topic.strip_prefix("realtime:").unwrap_or(&self.topic)
    }

    /// Sends a frame for position `at` unless this channel already has it;
    /// records the position either way.
    pub fn deliver_at(&self, at: Position, frame: Option<&Frame>) {
        let mut delivered = self.delivered.lock().expect("never poisoned");
        if at <= *delivered {
            return;
        }
        *delivered = at;
        if let Some(frame) = frame {
            self.socket.push(frame);
        }
    }

    pub fn push(&self, event: &str, payload: Value) -> bool {
        self.socket.push(&Frame {
            join_ref: self.join_ref.clone(),
            msg_ref: None,
            topic: self.topic.clone(),
            event: event.into(),
            payload,
        })
    }

    /// A `system` error, then `phx_close`: the client does not rejoin.
    pub fn shut_down(&self, message: &str) {
        self.push(
            "system",
            json!({"extension": "system", "status": "error", "message": message, "channel": self.sub_topic()}),
        );
        self.push("phx_close", json!({}));
    }
}

/// Whose a tracked presence is: a channel of this process, or of another
/// gateway (by its origin id), learned over NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Local(u64),
    Remote(String, u64),
}

/// A topic's tracked presences: key → (owner, meta).
type Presences = HashMap<String, Vec<(Owner, Value)>>;

/// What this process tells the other gateways (see [`super::cluster`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Note {
    Broadcast {
        topic: String,
        event: String,
        payload: Value,
    },
    Track {
        topic: String,
        key: String,
        channel: u64,
        meta: Value,
    },
    Untrack {
        topic: String,
        key: String,
        channel: u64,
    },
}

#[derive(Default)]
pub struct Hub {
    channels: RwLock<HashMap<u64, Arc<Channel>>>,
    /// topic → key → (channel, meta) of tracked presences.
    presence: Mutex<HashMap<String, Presences>>,
    next_id: AtomicU64,
    pub delivered_messages: AtomicU64,
    pub sockets: AtomicU64,
    /// Notes for the other gateways, when there is a cluster.
    notes: std::sync::OnceLock<mpsc::UnboundedSender<Note>>,
}

impl Hub {
    /// From now on, local broadcasts and presence changes are also sent here.
    pub fn share_with(&self, notes: mpsc::UnboundedSender<Note>) {
        let _ = self.notes.set(notes);
    }

    fn tell(&self, note: Note) {
        if let Some(tx) = self.notes.get() {
            let _ = tx.send(note);
        }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn insert(&self, channel: Arc<Channel>) {
        self.channels
            .write()
            .expect("never poisoned")
            .insert(channel.id, channel);
    }

    /// Removes a channel and its presences (announced as leaves).
    pub fn remove(&self, id: u64) {
        let channel = self.channels.write().expect("never poisoned").remove(&id);
        if let Some(channel) = channel {
            self.untrack(&channel);
        }
    }

    /// After the outbox went back (a restored database): channels past its
    /// head follow from the head, or they would wait for commit_seq to catch up.
    pub fn rewind(&self, head: Position) {
        for channel in self.channels.read().expect("never poisoned").values() {
            let mut delivered = channel.delivered.lock().expect("never poisoned");
            if *delivered > head {
                *delivered = head;
            }
        }
    }

    pub fn channel_count(&self) -> usize {
        self.channels.read().expect("never poisoned").len()
    }

    /// Channels the live dispatcher feeds.
    pub fn live_channels(&self) -> Vec<Arc<Channel>> {
        self.channels
            .read()
            .expect("never poisoned")
            .values()
            .filter(|c| c.live.load(Ordering::Acquire))
            .cloned()
            .collect()
    }

    fn on_topic(&self, scope: &str) -> Vec<Arc<Channel>> {
        self.channels
            .read()
            .expect("never poisoned")
            .values()
            .filter(|c| c.scope == scope)
            .cloned()
            .collect()
    }

    /// A broadcast to every channel of `scope` ([`scope`]), except `from`
    /// unless it asked for its own messages. Returns how many received it.
    pub fn broadcast(
        &self,
        topic: &str,
        event: &str,
        payload: &UserPayload,
        from: Option<u64>,
    ) -> usize {
        if let UserPayload::Json(p) = payload {
            self.tell(Note::Broadcast {
                topic: topic.to_string(),
                event: event.to_string(),
                payload: p.clone(),
            });
        }
        self.deliver_broadcast(topic, event, payload, from)
    }

    /// A broadcast to this process's channels only (one from another gateway).
    pub fn deliver_broadcast(
        &self,
        topic: &str,
        event: &str,
        payload: &UserPayload,
        from: Option<u64>,
    ) -> usize {
        let mut sent = 0;
        for channel in self.on_topic(topic) {
            if from == Some(channel.id) && !channel.broadcast_self {
                continue;
            }
            let ok = match payload {
                UserPayload::Json(p) => channel.socket.push(&Frame {
                    join_ref: None,
                    msg_ref: None,
                    topic: channel.topic.clone(),
                    event: "broadcast".into(),
                    payload: json!({"type": "broadcast", "event": event, "payload": p}),
                }),
                UserPayload::Binary(bytes) => match (
                    channel.socket.vsn,
                    protocol::encode_binary_broadcast(&channel.topic, event, bytes),
                ) {
                    (Vsn::V2, Some(frame)) => channel.socket.push_raw(Out::Binary(frame)),
                    _ => false,
                },
            };
            sent += usize::from(ok);
        }
        self.delivered_messages
            .fetch_add(sent as u64, Ordering::Relaxed);
        sent
    }

    /// `presence_state` for a channel that just joined.
    pub fn presence_state(&self, topic: &str) -> Value {
        let presence = self.presence.lock().expect("never poisoned");
        let mut state = Map::new();
        if let Some(keys) = presence.get(topic) {
            for (key, metas) in keys {
                let metas: Vec<Value> = metas.iter().map(|(_, m)| m.clone()).collect();
                state.insert(key.clone(), json!({"metas": metas}));
            }
        }
        Value::Object(state)
    }

    /// Tracks (or updates) a channel's presence under its key.
    pub fn track(&self, channel: &Channel, mut meta: Map<String, Value>) {
        let key = channel.presence_key.clone().unwrap_or_default();
        meta.insert(
            "phx_ref".into(),
            Value::String(format!("{}", self.next_id())),
        );
        let meta = Value::Object(meta);
        self.tell(Note::Track {
            topic: channel.scope.clone(),
            key: key.clone(),
            channel: channel.id,
            meta: meta.clone(),
        });
        self.put_presence(&channel.scope, &key, Owner::Local(channel.id), meta);
    }

    /// Records a presence (replacing the owner's earlier one) and announces it.
    pub fn put_presence(&self, topic: &str, key: &str, owner: Owner, meta: Value) {
        let left = {
            let mut presence = self.presence.lock().expect("never poisoned");
            let metas = presence
                .entry(topic.to_string())
                .or_default()
                .entry(key.to_string())
                .or_default();
            if metas.iter().any(|(o, m)| *o == owner && *m == meta) {
                return;
            }
            let left: Vec<Value> = metas
                .iter()
                .filter(|(o, _)| *o == owner)
                .map(|(_, m)| m.clone())
                .collect();
            metas.retain(|(o, _)| *o != owner);
            metas.push((owner, meta.clone()));
            left
        };
        let mut leaves = Map::new();
        if !left.is_empty() {
            leaves.insert(key.to_string(), json!({"metas": left}));
        }
        self.presence_diff(
            topic,
            json!({"joins": {key: {"metas": [meta]}}, "leaves": leaves}),
        );
    }

    /// Removes a channel's presence, if any, and announces the leave.
    pub fn untrack(&self, channel: &Channel) {
        let Some(key) = channel.presence_key.clone() else {
            return;
        };
        if self.drop_presence(&channel.scope, &key, &Owner::Local(channel.id)) {
            self.tell(Note::Untrack {
                topic: channel.scope.clone(),
                key,
                channel: channel.id,
            });
        }
    }

    /// Removes an owner's presence under a key; true if there was one.
    pub fn drop_presence(&self, topic: &str, key: &str, owner: &Owner) -> bool {
        let left: Vec<Value> = {
            let mut presence = self.presence.lock().expect("never poisoned");
            let Some(keys) = presence.get_mut(topic) else {
                return false;
            };
            let Some(metas) = keys.get_mut(key) else {
                return false;
            };
            let left = metas
                .iter()
                .filter(|(o, _)| o == owner)
                .map(|(_, m)| m.clone())
                .collect();
            metas.retain(|(o, _)| o != owner);
            if metas.is_empty() {
                keys.remove(key);
            }
            if keys.is_empty() {
                presence.remove(topic);
            }
            left
        };
        if left.is_empty() {
            return false;
        }
        self.presence_diff(
            topic,
            json!({"joins": {}, "leaves": {key: {"metas": left}}}),
        );
        true
    }

    /// This process's own presences, as notes (for a gateway that just started).
    pub fn local_presences(&self) -> Vec<Note> {
        let presence = self.presence.lock().expect("never poisoned");
        let mut notes = Vec::new();
        for (topic, keys) in presence.iter() {
            for (key, metas) in keys {
                for (owner, meta) in metas {
                    if let Owner::Local(channel) = owner {
                        notes.push(Note::Track {
                            topic: topic.clone(),
                            key: key.clone(),
                            channel: *channel,
                            meta: meta.clone(),
                        });
                    }
                }
            }
        }
        notes
    }

    /// Removes every presence of a gateway that went away, announcing leaves.
    pub fn drop_origin(&self, origin: &str) {
        let gone: Vec<(String, String, Owner)> = {
            let presence = self.presence.lock().expect("never poisoned");
            let mut gone = Vec::new();
            for (topic, keys) in presence.iter() {
                for (key, metas) in keys {
                    for (owner, _) in metas {
                        if matches!(owner, Owner::Remote(from, _) if from == origin) {
                            gone.push((topic.clone(), key.clone(), owner.clone()));
                        }
                    }
                }
            }
            gone
        };
        for (topic, key, owner) in gone {
            self.drop_presence(&topic, &key, &owner);
        }
    }

    fn presence_diff(&self, topic: &str, diff: Value) {
        for channel in self.on_topic(topic) {
            if channel.presence_key.is_some() {
                channel.socket.push(&Frame {
                    join_ref: None,
                    msg_ref: None,
                    topic: channel.topic.clone(),
                    event: "presence_diff".into(),
                    payload: diff.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_commit_then_seq_and_round_trip() {
        assert!(Position(2, 1) > Position(1, 99));
        assert!(Position(2, 5) > Position(2, 4));
        assert_eq!(Position::parse("12:34"), Some(Position(12, 34)));
        assert_eq!(Position(12, 34).to_string(), "12:34");
        for bad in ["", "12", "a:b", "1:2:3"] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
    }
}
