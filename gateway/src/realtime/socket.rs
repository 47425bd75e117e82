//! One websocket: Phoenix's channel protocol as realtime-js 2.119 speaks it
//! (heartbeat, join, leave, access_token, broadcast, presence), with
//! postgres_changes served by [`super::outbox`].

use super::catalog::Catalog;
use super::filter::Filter;
use super::hub::{Binding, ChangeType, Channel, Out, Position, Socket};
use super::protocol::{self, Frame, Inbound, UserPayload};
use super::{outbox, Realtime};
use crate::keys::Caller;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Channels one socket may join (Supabase's limit per connection).
pub const MAX_CHANNELS: usize = 100;
/// postgres_changes bindings per channel.
const MAX_BINDINGS: usize = 100;
/// Largest broadcast payload (Supabase's free-plan limit).
pub const MAX_BROADCAST_BYTES: usize = 256 * 1024;
/// A socket that sends nothing (not even a heartbeat, every 25 s) this long is closed.
const IDLE: Duration = Duration::from_secs(60);

/// Serves one socket until it closes.
pub async fn serve(rt: Arc<Realtime>, socket: WebSocket, vsn: protocol::Vsn, caller: Caller) {
    let (mut sink, mut stream) = socket.split();
    let (handle, mut rx) = Socket::new(vsn);
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let message = match out {
                Out::Text(text) => Message::Text(text.into()),
                Out::Binary(bytes) => Message::Binary(bytes.into()),
                Out::Close(code, reason) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    break;
                }
            };
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    rt.hub.sockets.fetch_add(1, Ordering::Relaxed);
    let mut session = Session {
        rt: rt.clone(),
        socket: handle.clone(),
        caller,
        channels: HashMap::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            next = tokio::time::timeout(IDLE, stream.next()) => {
                let inbound = match next {
                    Ok(Some(Ok(Message::Text(text)))) => protocol::decode_text(vsn, text.as_str()),
                    Ok(Some(Ok(Message::Binary(bytes)))) => protocol::decode_binary(&bytes),
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                    // Closed, broken, idle, or a frame over the size limit.
                    _ => break,
                };
                match inbound {
                    Ok(inbound) => session.handle(inbound).await,
                    Err(e) => {
                        handle.push_raw(Out::Close(1007, e.to_string()));
                        break;
                    }
                }
            }
            _ = handle.kill.notified() => {
                tracing::info!("closing a realtime socket that fell behind");
                break;
            }
            _ = tick.tick() => session.expire_tokens(),
        }
    }
    session.close_all();
    rt.hub.sockets.fetch_sub(1, Ordering::Relaxed);
    drop(session);
    drop(handle);
    // Flushes what is queued (a close frame, a last reply), then ends.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

struct Session {
    rt: Arc<Realtime>,
    socket: Arc<Socket>,
    /// Who the socket's `apikey` makes the caller.
    caller: Caller,
    /// Joined channels by topic.
    channels: HashMap<String, Arc<Channel>>,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl Session {
    fn reply(&self, frame: &Frame, ok: bool, response: Value) {
        self.socket.push(&protocol::reply(
            frame.join_ref.clone(),
            frame.msg_ref.clone(),
            &frame.topic,
            ok,
            response,
        ));
    }

    fn error(&self, frame: &Frame, reason: String) {
        self.reply(frame, false, json!({"reason": reason}));
    }

    async fn handle(&mut self, inbound: Inbound) {
        let frame = match inbound {
            Inbound::Frame(frame) => frame,
            Inbound::Broadcast {
                join_ref,
                msg_ref,
                topic,
                user_event,
                payload,
            } => {
                let frame = Frame {
                    join_ref,
                    msg_ref,
                    topic,
                    event: "broadcast".into(),
                    payload: Value::Null,
                };
                self.broadcast(&frame, &user_event, payload);
                return;
            }
        };
        if frame.topic == "phoenix" {
            if frame.event == "heartbeat" {
                self.reply(&frame, true, json!({}));
            }
            return;
        }
        if frame.event == "phx_join" {
            self.join(&frame).await;
            return;
        }
        let Some(channel) = self.channels.get(&frame.topic).cloned() else {
            self.error(&frame, "unmatched topic".into());
            return;
        };
        match frame.event.as_str() {
            "phx_leave" => {
                self.reply(&frame, true, json!({}));
                channel.push("phx_close", json!({}));
                self.leave(&frame.topic);
            }
            "access_token" => self.access_token(&channel, &frame.payload).await,
            "broadcast" => {
                let event = frame.payload.get("event").and_then(Value::as_str);
                let payload = frame.payload.get("payload").cloned().unwrap_or(json!({}));
                match event {
                    Some(event) => {
                        let event = event.to_string();
                        self.broadcast(&frame, &event, UserPayload::Json(payload));
                    }
                    None => self.error(&frame, "a broadcast needs an event".into()),
                }
            }
            "presence" => self.presence(&channel, &frame),
            other => self.error(&frame, format!("unknown event {other:?}")),
        }
    }

    /// The caller a join or refresh names: its token, or the socket's key.
    async fn caller_of(&self, token: Option<&str>) -> Result<Caller, String> {
        match token {
            None => Ok(self.caller.clone()),
            Some(t) if t.starts_with("sb_") => Ok(self.caller.clone()),
            Some(t) => {
                let caller = self
                    .rt
                    .keys
                    .caller(None, Some(t))
                    .await
                    .map_err(|e| format!("InvalidJWTToken: {e}"))?;
                if caller.claims.get("exp").and_then(Value::as_f64).is_none() {
                    return Err(
                        "InvalidJWTToken: Fields `role` and `exp` are required in JWT".into(),
                    );
                }
                Ok(caller)
            }
        }
    }

    async fn join(&mut self, frame: &Frame) {
        match self.try_join(frame).await {
            Ok(()) => {}
            Err(reason) => self.error(frame, reason),
        }
    }

    async fn try_join(&mut self, frame: &Frame) -> Result<(), String> {
        let topic = &frame.topic;
        let sub_topic = topic
            .strip_prefix("realtime:")
            .ok_or_else(|| "unmatched topic".to_string())?;
        if sub_topic.is_empty() {
            return Err("TopicNameRequired: You must provide a topic name".into());
        }
        if topic.len() > 255 {
            return Err("TopicNameTooLong: a topic has at most 255 bytes".into());
        }
        if !self.channels.contains_key(topic) && self.channels.len() >= MAX_CHANNELS {
            return Err(format!(
                "ChannelsLimit: at most {MAX_CHANNELS} channels per connection"
            ));
        }
        if !self.rt.reader.wait_ready(Duration::from_secs(10)).await {
            return Err(
                "Unavailable: Realtime cannot read the database yet; the client retries".into(),
            );
        }
        let config = frame.payload.get("config").cloned().unwrap_or(json!({}));
        let private = config.get("private").and_then(Value::as_bool) == Some(true);
        let token = frame
            .payload
            .get("access_token")
            .or_else(|| frame.payload.get("user_token"))
            .and_then(Value::as_str);
        let caller = self.caller_of(token).await?;
        let access = if private {
            let access = self.rt.channel_access(sub_topic, &caller.claims).await?;
            if !access.read_broadcast {
                return Err(format!(
                    "Unauthorized: You do not have permissions to read from this Channel topic: {sub_topic}"
                ));
            }
            access
        } else {
            super::Access::PUBLIC
        };
        let catalog = self.rt.reader.catalog();
        let requested = match config.get("postgres_changes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => {
                return Err("InvalidJoinPayload: config.postgres_changes must be an array".into())
            }
        };
        if requested.len() > MAX_BINDINGS {
            return Err(format!(
                "InvalidJoinPayload: at most {MAX_BINDINGS} postgres_changes bindings per channel"
            ));
        }
        let mut bindings = Vec::new();
        let mut echoed = Vec::new();
        let mut resume = false;
        let mut from: Option<Position> = None;
        for item in &requested {
            let (binding, position) = parse_binding(item, &catalog)?;
            if let Some(p) = position {
                resume = true;
                if let Some(p) = p {
                    from = Some(from.map_or(p, |f| f.min(p)));
                }
            }
            let mut echo = item.clone();
            if let Value::Object(map) = &mut echo {
                map.insert("id".into(), json!(binding.id));
            }
            echoed.push(echo);
            bindings.push(binding);
        }
        if let Some(p) = from {
            let retained = self.retained_from().await?;
            if p.0.saturating_add(1) < retained {
                return Err(format!(
                    "PositionExpired: position {p} is older than the outbox's retention (it starts at commit {retained}); re-fetch and subscribe without a position"
                ));
            }
        }
        let broadcast = config.get("broadcast").cloned().unwrap_or(json!({}));
        let presence = config.get("presence").cloned().unwrap_or(json!({}));
        let presence_key = (presence.get("enabled").and_then(Value::as_bool) == Some(true)).then(
            || match presence.get("key").and_then(Value::as_str) {
                Some(k) if !k.is_empty() => k.to_string(),
                _ => uuid::Uuid::new_v4().to_string(),
            },
        );
        // Rejoining a topic replaces the channel (a new join_ref).
        self.leave(topic);
        let channel = Arc::new(Channel {
            id: self.rt.hub.next_id(),
            socket: self.socket.clone(),
            topic: topic.clone(),
            scope: super::hub::scope(topic, private),
            private,
            can_broadcast: access.write_broadcast,
            can_track: access.write_presence,
            join_ref: frame.join_ref.clone(),
            caller: RwLock::new(Arc::new(super::hub::Subscriber::new(caller))),
            bindings,
            resume,
            broadcast_self: broadcast.get("self").and_then(Value::as_bool) == Some(true),
            broadcast_ack: broadcast.get("ack").and_then(Value::as_bool) == Some(true),
            presence_key,
            delivered: Mutex::new(from.unwrap_or_default()),
            live: AtomicBool::new(false),
        });
        match from {
            Some(_) => self.rt.hub.insert(channel.clone()),
            None => {
                // Live from the reader's position: a change committed after
                // this reply is after it, so it is delivered (no subscribe race).
                let head = self.rt.reader.position.lock().await;
                *channel.delivered.lock().expect("never poisoned") = *head;
                channel.live.store(true, Ordering::Release);
                self.rt.hub.insert(channel.clone());
            }
        }
        self.channels.insert(topic.clone(), channel.clone());
        let response = if requested.is_empty() {
            json!({})
        } else {
            json!({"postgres_changes": echoed})
        };
        self.reply(frame, true, response);
        if !requested.is_empty() {
            channel.push(
                "system",
                json!({"extension": "postgres_changes", "status": "ok", "message": "Subscribed to PostgreSQL", "channel": sub_topic}),
            );
        }
        if channel.presence_key.is_some() {
            channel.push("presence_state", self.rt.hub.presence_state(&channel.scope));
        }
        if from.is_some() {
            let rt = self.rt.clone();
            tokio::spawn(async move {
                if let Err(e) = replay(&rt, &channel).await {
                    tracing::warn!(error = %e, "realtime replay failed");
                    channel.shut_down(&format!("replay from the position failed: {e}"));
                    rt.hub.remove(channel.id);
                }
            });
        }
        Ok(())
    }

    async fn retained_from(&self) -> Result<i64, String> {
        let session = self
            .rt
            .pool
            .get()
            .await
            .map_err(|e| format!("Unavailable: {e}"))?;
        let row = session
            .query_one("SELECT spine.realtime_retained_from()", &[])
            .await
            .map_err(|e| format!("Unavailable: {e}"))?;
        Ok(row.get(0))
    }

    fn leave(&mut self, topic: &str) {
        if let Some(channel) = self.channels.remove(topic) {
            self.rt.hub.remove(channel.id);
        }
    }

    fn close_all(&mut self) {
        for (_, channel) in self.channels.drain() {
            self.rt.hub.remove(channel.id);
        }
    }

    /// `access_token`: no reply on success; a bad token closes the channel.
    async fn access_token(&mut self, channel: &Arc<Channel>, payload: &Value) {
        let Some(token) = payload.get("access_token").and_then(Value::as_str) else {
            return;
        };
        if token.starts_with("sb_") {
            return;
        }
        let checked = match self.caller_of(Some(token)).await {
            Ok(caller) if channel.private => {
                match self.rt.channel_access(channel.sub_topic(), &caller.claims).await {
                    Ok(access) if access.read_broadcast => Ok(caller),
                    Ok(_) => Err(format!(
                        "Unauthorized: You do not have permissions to read from this Channel topic: {}",
                        channel.sub_topic()
                    )),
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        match checked {
            Ok(caller) => channel.set_caller(caller),
            Err(reason) => {
                channel.shut_down(&reason);
                self.leave(&channel.topic);
            }
        }
    }

    /// Closes channels whose token expired.
    fn expire_tokens(&mut self) {
        let now = now_secs();
        let expired: Vec<Arc<Channel>> = self
            .channels
            .values()
            .filter(|c| c.subscriber().exp.is_some_and(|exp| exp < now))
            .cloned()
            .collect();
        for channel in expired {
            channel.shut_down("Token has expired");
            self.leave(&channel.topic);
        }
    }

    fn broadcast(&self, frame: &Frame, event: &str, payload: UserPayload) {
        let Some(channel) = self.channels.get(&frame.topic) else {
            self.error(frame, "unmatched topic".into());
            return;
        };
        let size = match &payload {
            UserPayload::Json(v) => v.to_string().len(),
            UserPayload::Binary(b) => b.len(),
        };
        if !channel.can_broadcast {
            if channel.broadcast_ack {
                self.reply(frame, false, json!({"error": "Unauthorized: no permission to write to this private channel"}));
            }
            return;
        }
        if size > MAX_BROADCAST_BYTES || event.is_empty() || event.len() > 255 {
            if channel.broadcast_ack {
                self.reply(frame, false, json!({"error": "payload_size_exceeded"}));
            }
            return;
        }
        self.rt
            .hub
            .broadcast(&channel.scope, event, &payload, Some(channel.id));
        if channel.broadcast_ack {
            self.reply(frame, true, json!({}));
        }
    }

    fn presence(&self, channel: &Arc<Channel>, frame: &Frame) {
        if channel.presence_key.is_none() {
            self.error(
                frame,
                "presence is not enabled on this channel (config.presence.enabled)".into(),
            );
            return;
        }
        if !channel.can_track {
            self.error(
                frame,
                "Unauthorized: no permission to track presence on this private channel".into(),
            );
            return;
        }
        match frame.payload.get("event").and_then(Value::as_str) {
            Some("track") => match frame.payload.get("payload") {
                Some(Value::Object(meta))
                    if Value::Object(meta.clone()).to_string().len() <= 16 * 1024 =>
                {
                    self.rt.hub.track(channel, meta.clone());
                    self.reply(frame, true, json!({}));
                }
                _ => self.error(
                    frame,
                    "Presence track payload must be a map of at most 16 KiB".into(),
                ),
            },
            Some("untrack") => {
                self.rt.hub.untrack(channel);
                self.reply(frame, true, json!({}));
            }
            _ => self.error(frame, "presence events are track and untrack".into()),
        }
    }
}

/// A binding from the join payload, and its `position` key: absent (None),
/// present but empty or "now" (Some(None)), or a position (Some(Some(p))).
#[allow(clippy::type_complexity)]
fn parse_binding(
    item: &Value,
    catalog: &Catalog,
) -> Result<(Binding, Option<Option<Position>>), String> {
    let bad = |why: &str| format!("InvalidPostgresChanges: {why}");
    let Value::Object(map) = item else {
        return Err(bad("each binding is an object"));
    };
    let text = |k: &str| -> Result<Option<&str>, String> {
        match map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(bad(&format!("{k} must be a string"))),
        }
    };
    let event =
        text("event")?.ok_or_else(|| bad("event is required (*, INSERT, UPDATE or DELETE)"))?;
    let event = match event {
        "*" => None,
        e => Some(
            ChangeType::parse(e)
                .ok_or_else(|| bad(&format!("event {e:?} is not *, INSERT, UPDATE or DELETE")))?,
        ),
    };
    let schema = text("schema")?
        .ok_or_else(|| bad("schema is required"))?
        .to_string();
    let table = text("table")?.unwrap_or("*").to_string();
    if schema != "*" && table != "*" && catalog.table(&schema, &table).is_none() {
        return Err(format!(
            "TableNotPublished: {schema}.{table} is not published to Realtime (SELECT spine.realtime_publish('{schema}.{table}'))"
        ));
    }
    let filter = match text("filter")?.filter(|f| !f.is_empty()) {
        None => None,
        Some(f) => {
            let t = catalog
                .table(&schema, &table)
                .ok_or_else(|| bad("a filter needs one table, not *"))?;
            Some(Filter::parse(f, &t.columns).map_err(|e| bad(&e))?)
        }
    };
    let position = match map.get("position") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.is_empty() || s == "now" => Some(None),
        Some(Value::String(s)) => Some(Some(Position::parse(s).ok_or_else(|| {
            bad(&format!(
                "position {s:?} is not \"<commit_seq>:<seq>\" as sent in spine_position"
            ))
        })?)),
        Some(_) => return Err(bad("position must be a string")),
    };
    let id = binding_id(map);
    Ok((
        Binding {
            id,
            event,
            schema,
            table,
            filter,
        },
        position,
    ))
}

/// A binding's id: a hash of what identifies it (event, schema, table,
/// filter), so the same binding gets the same id on every rejoin.
fn binding_id(map: &Map<String, Value>) -> u32 {
    let key = ["event", "schema", "table", "filter"]
        .iter()
        .map(|k| map.get(*k).map(Value::to_string).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\u{1f}");
    // FNV-1a, 32 bits: stable across processes and releases.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash & 0x7fff_ffff
}

async fn replay(rt: &Realtime, channel: &Arc<Channel>) -> anyhow::Result<()> {
    let session = rt.pool.get().await?;
    outbox::replay(&session, &rt.hub, &rt.reader, channel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_ids_depend_on_the_binding_only() {
        let a = json!({"event": "*", "schema": "public", "table": "t", "position": "1:2"});
        let b = json!({"event": "*", "schema": "public", "table": "t", "position": "9:9"});
        let c = json!({"event": "INSERT", "schema": "public", "table": "t"});
        let id = |v: &Value| binding_id(v.as_object().unwrap());
        assert_eq!(id(&a), id(&b), "the position moves, the id stays");
        assert_ne!(id(&a), id(&c));
    }

    #[test]
    fn bindings_are_checked_at_join() {
        let catalog = Catalog::default();
        for bad in [
            json!("nope"),
            json!({"schema": "public"}),
            json!({"event": "TRUNCATE", "schema": "public"}),
            json!({"event": "*"}),
            json!({"event": "*", "schema": "public", "table": "missing"}),
            json!({"event": "*", "schema": "*", "filter": "id=eq.1"}),
            json!({"event": "*", "schema": "*", "position": "yesterday"}),
            json!({"event": "*", "schema": "*", "position": 5}),
        ] {
            assert!(parse_binding(&bad, &catalog).is_err(), "{bad}");
        }
        let (_, p) = parse_binding(
            &json!({"event": "*", "schema": "*", "position": "3:4"}),
            &catalog,
        )
        .unwrap();
        assert_eq!(p, Some(Some(Position(3, 4))));
        let (_, p) = parse_binding(
            &json!({"event": "*", "schema": "*", "position": null}),
            &catalog,
        )
        .unwrap();
        assert_eq!(p, Some(None));
    }
}
