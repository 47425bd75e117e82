//! From the outbox to the channels: one reader per gateway process follows
//! `spine.events` in commit order (woken by the outbox's NOTIFY) and routes
//! each event — a row change of a published table, a database broadcast, and
//! the event itself as an INSERT into `spine.events` — to the channels whose
//! bindings match and whose subscriber may see the row. A channel that joins
//! with a position is first replayed from it, then handed to the live reader
//! with no gap and no duplicate (see [`replay`]).

use super::catalog::{CacheKey, Catalog, Table, Visibility};
use super::hub::{ChangeType, Channel, Hub, Position};
use super::protocol::Frame;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_postgres::Client;

/// Events read per query.
const BATCH: i64 = 1000;
/// The outbox's wake-up channel (`spine.notify_channel`'s default).
const NOTIFY_CHANNEL: &str = "spine_events";
/// A lost NOTIFY only delays: the reader looks anyway this often.
const POLL: Duration = Duration::from_millis(500);

const READ: &str = "SELECT commit_seq, seq, type, data, \
    to_char(committed_at AT TIME ZONE 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
    json_build_object('seq', seq, 'id', id, 'type', type, 'source', source, 'subject', subject, \
      'owner_id', owner_id, 'data', data, 'correlation_id', correlation_id, \
      'causation_id', causation_id, 'occurred_at', occurred_at) \
    FROM spine.events_after($1, $2, $3)";

const HEAD: &str = "SELECT h.commit_seq, coalesce((SELECT max(e.seq) FROM spine.events e \
      JOIN spine.event_commits c ON c.txid = e.txid AND c.tx_started_at = e.tx_started_at \
      WHERE c.commit_seq = h.commit_seq), 0) \
    FROM (SELECT coalesce(max(commit_seq), 0) AS commit_seq FROM spine.event_commits) AS h";

/// One committed event as Realtime uses it.
pub struct OutboxEvent {
    pub position: Position,
    kind: String,
    data: Value,
    committed_at: String,
    /// The event as a row of `spine.events`.
    row: Value,
}

pub async fn read(
    client: &Client,
    after: Position,
    limit: i64,
) -> Result<Vec<OutboxEvent>, tokio_postgres::Error> {
    let rows = client
        .query(READ, &[&after.0, &after.1, &(limit as i32)])
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| OutboxEvent {
            position: Position(r.get(0), r.get(1)),
            kind: r.get(2),
            data: r.get(3),
            committed_at: r.get(4),
            row: r.get(5),
        })
        .collect())
}

/// What an event means to Realtime.
enum Item<'a> {
    Change {
        table: &'a Table,
        kind: ChangeType,
        record: Option<&'a Value>,
        old_record: Option<&'a Value>,
        errors: &'a Value,
    },
    Broadcast {
        scope: String,
        event: &'a str,
        payload: &'a Value,
    },
}

fn items<'a>(event: &'a OutboxEvent, catalog: &'a Catalog) -> Vec<Item<'a>> {
    let mut items = Vec::with_capacity(2);
    let str_of = |k: &str| event.data.get(k).and_then(Value::as_str);
    match event.kind.as_str() {
        "realtime.RowChanged" => {
            if let (Some(schema), Some(name), Some(kind)) = (
                str_of("schema"),
                str_of("table"),
                str_of("type").and_then(ChangeType::parse),
            ) {
                if let Some(table) = catalog.table(schema, name) {
                    let non_null = |k: &str| event.data.get(k).filter(|v| !v.is_null());
                    items.push(Item::Change {
                        table,
                        kind,
                        record: non_null("record"),
                        old_record: non_null("old_record"),
                        errors: event.data.get("errors").unwrap_or(&Value::Null),
                    });
                }
            }
        }
        "realtime.MessageSent" => {
            if let (Some(topic), Some(name)) = (str_of("topic"), str_of("event")) {
                let private = event.data.get("private").and_then(Value::as_bool) == Some(true);
                items.push(Item::Broadcast {
                    scope: super::hub::scope(&format!("realtime:{topic}"), private),
                    event: name,
                    payload: event.data.get("payload").unwrap_or(&Value::Null),
                });
            }
        }
        _ => {}
    }
    if let Some(events) = catalog.table("spine", "events") {
        items.push(Item::Change {
            table: events,
            kind: ChangeType::Insert,
            record: Some(&event.row),
            old_record: None,
            errors: &Value::Null,
        });
    }
    items
}

/// The ids of a channel's bindings a change matches.
fn matching_ids(
    channel: &Channel,
    table: &Table,
    kind: ChangeType,
    record: Option<&Value>,
    old: Option<&Value>,
) -> Vec<u32> {
    let subject = match kind {
        ChangeType::Delete => old,
        _ => record,
    };
    channel
        .bindings
        .iter()
        .filter(|b| {
            (b.schema == "*" || b.schema == table.schema)
                && (b.table == "*" || b.table == table.name)
                && b.event.is_none_or(|e| e == kind)
                && b.filter
                    .as_ref()
                    .is_none_or(|f| subject.is_some_and(|r| f.matches(r, |c| table.column_type(c))))
        })
        .map(|b| b.id)
        .collect()
}

/// Whether a subscriber sees a row without asking the database; None: ask.
/// `owner` gives the row's owner column parsed as a uuid (once per row).
fn decided(
    visibility: &Visibility,
    user: Option<uuid::Uuid>,
    owner: &mut impl FnMut(&str) -> Option<uuid::Uuid>,
) -> Option<bool> {
    match visibility {
        Visibility::All => Some(true),
        Visibility::None => Some(false),
        Visibility::Owner(columns) => {
            let Some(user) = user else {
                return Some(false);
            };
            Some(columns.iter().any(|c| owner(c) == Some(user)))
        }
        Visibility::Check(_) => None,
    }
}

/// Cached `check` decisions per table: (claims, the policy's columns of the
/// row) → visible. A table's entries are forgotten when a table its policies
/// read changes (seen here in commit order) and when the catalog reloads.
#[derive(Default)]
pub struct Decisions {
    tables: Mutex<HashMap<String, HashMap<String, bool>>>,
}

/// Entries kept per table before its cache starts over.
const MAX_DECISIONS: usize = 100_000;

impl Decisions {
    fn key(claims: &Value, row: &Value, key: &CacheKey) -> String {
        let values: Vec<Value> = key
            .columns
            .iter()
            .map(|c| row.get(c).cloned().unwrap_or(Value::Null))
            .collect();
        format!("{claims}\u{1f}{}", Value::from(values))
    }

    fn get(&self, table: &str, key: &str) -> Option<bool> {
        let tables = self.tables.lock().expect("never poisoned");
        tables.get(table).and_then(|m| m.get(key)).copied()
    }

    fn put(&self, table: &str, key: String, visible: bool) {
        let mut tables = self.tables.lock().expect("never poisoned");
        let map = tables.entry(table.to_string()).or_default();
        if map.len() >= MAX_DECISIONS {
            map.clear();
        }
        map.insert(key, visible);
    }

    fn forget(&self, table: &str) {
        self.tables.lock().expect("never poisoned").remove(table);
    }

    pub fn clear(&self) {
        self.tables.lock().expect("never poisoned").clear();
    }
}

/// For each subscriber, whether they may see `row` of `table`: decided from
/// the policy shape where possible, else by one `spine.realtime_visible` call
/// for all who need it.
async fn visible(
    client: &Client,
    decisions: &Decisions,
    table: &Table,
    row: &Value,
    subscribers: &[&Arc<Channel>],
) -> Result<Vec<bool>, tokio_postgres::Error> {
    let mut result = vec![false; subscribers.len()];
    let mut ask = Vec::new();
    // Owner columns of this row, parsed once for all subscribers.
    let mut parsed: Vec<(String, Option<uuid::Uuid>)> = Vec::new();
    let mut owner = |column: &str| {
        if let Some((_, v)) = parsed.iter().find(|(c, _)| c == column) {
            return *v;
        }
        let v = row
            .get(column)
            .and_then(Value::as_str)
            .and_then(|v| uuid::Uuid::parse_str(v).ok());
        parsed.push((column.to_string(), v));
        v
    };
    for (i, channel) in subscribers.iter().enumerate() {
        let subscriber = channel.subscriber();
        let visibility = table.visibility(&subscriber.caller.role);
        if let Some(v) = decided(visibility, subscriber.user, &mut owner) {
            result[i] = v;
            continue;
        }
        let key = match visibility {
            Visibility::Check(Some(k)) => Some(Decisions::key(&subscriber.caller.claims, row, k)),
            _ => None,
        };
        match key
            .as_deref()
            .and_then(|k| decisions.get(&table.qualified, k))
        {
            Some(v) => result[i] = v,
            None => ask.push((i, subscriber.caller.claims.clone(), key)),
        }
    }
    if !ask.is_empty() {
        let claims: Vec<Value> = ask.iter().map(|(_, c, _)| c.clone()).collect();
        let row = client
            .query_one(
                "SELECT spine.realtime_visible($1::text::regclass, $2, $3)",
                &[&table.qualified, row, &claims],
            )
            .await?;
        let answers: Vec<bool> = row.get(0);
        for ((i, _, key), v) in ask.into_iter().zip(answers) {
            result[i] = v;
            if let Some(key) = key {
                decisions.put(&table.qualified, key, v);
            }
        }
    }
    Ok(result)
}

fn with_position(record: &Value, position: Position) -> Value {
    let mut record = record.clone();
    if let Value::Object(map) = &mut record {
        map.insert("spine_position".into(), Value::String(position.to_string()));
    }
    record
}

/// Only the primary key of a row the subscriber could not see before.
fn key_only(record: &Value, table: &Table) -> Value {
    let mut out = Map::new();
    for column in &table.primary_key {
        if let Some(v) = record.get(column) {
            out.insert(column.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// Routes one event to `channels` (those past its position are skipped).
pub async fn route(
    client: &Client,
    catalog: &Catalog,
    decisions: &Decisions,
    hub: &Hub,
    event: &OutboxEvent,
    channels: &[Arc<Channel>],
) -> Result<(), tokio_postgres::Error> {
    let items = items(event, catalog);
    // A change to a (published) table some policies read: their cached
    // decisions go. The event itself as a row of spine.events is not one.
    for item in &items {
        if let Item::Change { table, .. } = item {
            if (table.schema.as_str(), table.name.as_str()) != ("spine", "events") {
                for dependent in catalog.dependents(&table.schema, &table.name) {
                    decisions.forget(&dependent);
                }
            }
        }
    }
    let pending: Vec<&Arc<Channel>> = channels
        .iter()
        .filter(|c| *c.delivered.lock().expect("never poisoned") < event.position)
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    for item in items {
        match item {
            Item::Change {
                table,
                kind,
                record,
                old_record,
                errors,
            } => {
                let mut targets = Vec::new();
                for channel in &pending {
                    let ids = matching_ids(channel, table, kind, record, old_record);
                    if !ids.is_empty() {
                        targets.push((*channel, ids));
                    }
                }
                if targets.is_empty() {
                    continue;
                }
                let subscribers: Vec<&Arc<Channel>> = targets.iter().map(|(c, _)| *c).collect();
                let seen = match kind {
                    ChangeType::Delete => old_record,
                    _ => record,
                };
                let Some(seen) = seen else { continue };
                let sees = visible(client, decisions, table, seen, &subscribers).await?;
                // UPDATE: the old row in full only to those who could see it.
                let saw_old = match (kind, old_record) {
                    (ChangeType::Update, Some(old)) => {
                        Some(visible(client, decisions, table, old, &subscribers).await?)
                    }
                    _ => None,
                };
                let columns = table.columns_json();
                for (i, (channel, ids)) in targets.iter().enumerate() {
                    if !sees[i] {
                        continue;
                    }
                    let mut data = Map::new();
                    data.insert("schema".into(), json!(table.schema));
                    data.insert("table".into(), json!(table.name));
                    data.insert("commit_timestamp".into(), json!(event.committed_at));
                    data.insert("type".into(), json!(kind.as_str()));
                    data.insert("columns".into(), columns.clone());
                    let shown = |r: &Value| {
                        if channel.resume {
                            with_position(r, event.position)
                        } else {
                            r.clone()
                        }
                    };
                    if let Some(r) = record.filter(|_| kind != ChangeType::Delete) {
                        data.insert("record".into(), shown(r));
                    }
                    if let Some(old) = old_record {
                        let old = match &saw_old {
                            Some(saw) if !saw[i] => key_only(old, table),
                            _ => old.clone(),
                        };
                        data.insert("old_record".into(), shown(&old));
                    }
                    data.insert("errors".into(), errors.clone());
                    data.insert("position".into(), json!(event.position.to_string()));
                    let frame = Frame {
                        join_ref: channel.join_ref.clone(),
                        msg_ref: None,
                        topic: channel.topic.clone(),
                        event: "postgres_changes".into(),
                        payload: json!({"ids": ids, "data": Value::Object(data)}),
                    };
                    channel.socket.push(&frame);
                    hub.delivered_messages.fetch_add(1, Ordering::Relaxed);
                }
            }
            Item::Broadcast {
                scope,
                event: name,
                payload,
            } => {
                for channel in pending.iter().filter(|c| c.scope == scope) {
                    channel.socket.push(&Frame {
                        join_ref: None,
                        msg_ref: None,
                        topic: channel.topic.clone(),
                        event: "broadcast".into(),
                        payload: json!({"type": "broadcast", "event": name, "payload": payload,
                                        "meta": {"position": event.position.to_string()}}),
                    });
                    hub.delivered_messages.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    for channel in pending {
        channel.deliver_at(event.position, None);
    }
    Ok(())
}

/// The live reader's state: its position, held while it routes a batch so a
/// replay can hand its channel over between batches.
pub struct Reader {
    pub position: tokio::sync::Mutex<Position>,
    pub catalog: RwLock<Arc<Catalog>>,
    pub wake: tokio::sync::Notify,
    /// True once the reader knows its position: a channel that joined before
    /// would start at a made-up position, and could miss a change.
    pub ready: tokio::sync::watch::Sender<bool>,
    pub decisions: Decisions,
}

impl Default for Reader {
    fn default() -> Reader {
        Reader {
            position: tokio::sync::Mutex::new(Position::default()),
            catalog: RwLock::new(Arc::new(Catalog::default())),
            wake: tokio::sync::Notify::new(),
            ready: tokio::sync::watch::Sender::new(false),
            decisions: Decisions::default(),
        }
    }
}

impl Reader {
    /// Waits (up to `limit`) until the reader follows the outbox.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        let waited = tokio::time::timeout(limit, rx.wait_for(|ready| *ready)).await;
        matches!(waited, Ok(Ok(_)))
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("never poisoned").clone()
    }
}

/// Follows the outbox forever, reconnecting after errors; starts at the head.
pub async fn run(hub: Arc<Hub>, reader: Arc<Reader>, db: spine_db::DbConfig) {
    use futures_util::StreamExt;
    let mut started = false;
    loop {
        let Ok((client, mut connection)) = db.connect().await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let driver = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        let _ = tx.send(n.channel().to_string());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "realtime reader lost its connection");
                        break;
                    }
                }
            }
        });
        let setup = async {
            client
                .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}; LISTEN pgrst"))
                .await?;
            let catalog = Catalog::load(&client).await?;
            *reader.catalog.write().expect("never poisoned") = Arc::new(catalog);
            reader.decisions.clear();
            // The last committed event: a position that exists, so a replay
            // that reaches it hands over (see `replay`).
            let row = client.query_one(HEAD, &[]).await?;
            let head = Position(row.get(0), row.get(1));
            let mut position = reader.position.lock().await;
            if !started {
                *position = head;
            } else if head.0 < position.0 {
                // The outbox is behind where this reader was: a database restored
                // from a backup or recreated. Following from the old position would
                // wait silently until commit_seq caught up.
                tracing::warn!(was = %*position, now = %head, "realtime: the outbox went back; following from its head");
                *position = head;
                hub.rewind(head);
            }
            anyhow::Ok(())
        };
        if let Err(e) = setup.await {
            tracing::warn!(error = %e, "realtime reader could not start");
            driver.abort();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        started = true;
        reader.ready.send_replace(true);
        tracing::info!(
            tables = reader.catalog().len(),
            "realtime reader following the outbox"
        );
        loop {
            if let Err(e) = drain(&client, &hub, &reader).await {
                tracing::warn!(error = %e, "realtime reader failed; reconnecting");
                break;
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(channel) if channel == "pgrst" => {
                        match Catalog::load(&client).await {
                            Ok(c) => {
                                *reader.catalog.write().expect("never poisoned") = Arc::new(c);
                                reader.decisions.clear();
                            }
                            Err(e) => { tracing::warn!(error = %e, "realtime catalog reload failed"); break; }
                        }
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = reader.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        driver.abort();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Routes everything committed after the reader's position to live channels.
async fn drain(client: &Client, hub: &Hub, reader: &Reader) -> anyhow::Result<()> {
    loop {
        let mut position = reader.position.lock().await;
        if hub.channel_count() == 0 {
            // Nobody to route to: move to the head with one index probe instead
            // of reading every event (an idle gateway beside a busy outbox cost
            // its Postgres backend ~15 % of this VM in `bench realtime`). A join
            // takes this lock, so it starts from a position that exists.
            let row = client.query_one(HEAD, &[]).await?;
            let head = Position(row.get(0), row.get(1));
            if head > *position {
                *position = head;
                // Changes that would have invalidated cached decisions were skipped.
                reader.decisions.clear();
            }
            return Ok(());
        }
        let batch = read(client, *position, BATCH).await?;
        if batch.is_empty() {
            return Ok(());
        }
        let catalog = reader.catalog();
        let channels = hub.live_channels();
        for event in &batch {
            route(client, &catalog, &reader.decisions, hub, event, &channels).await?;
            *position = event.position;
        }
        if (batch.len() as i64) < BATCH {
            return Ok(());
        }
    }
}

/// The reader's current position (a new live channel starts there).
pub async fn head(reader: &Reader) -> Position {
    *reader.position.lock().await
}

/// Sends a channel everything after its position, then makes it live: each
/// round reads what is committed; once the channel has caught up with the
/// live reader (checked under the reader's lock, between its batches), the
/// reader takes over, and events both saw are sent once (`deliver_at`).
pub async fn replay(
    client: &Client,
    hub: &Hub,
    reader: &Reader,
    channel: &Arc<Channel>,
) -> anyhow::Result<()> {
    let channels = [channel.clone()];
    loop {
        let from = *channel.delivered.lock().expect("never poisoned");
        let batch = read(client, from, BATCH).await?;
        let catalog = reader.catalog();
        for event in &batch {
            route(client, &catalog, &reader.decisions, hub, event, &channels).await?;
            channel.socket.wait_room().await;
        }
        if (batch.len() as i64) < BATCH {
            let live = reader.position.lock().await;
            let mine = *channel.delivered.lock().expect("never poisoned");
            if *live <= mine {
                channel.live.store(true, Ordering::Release);
                return Ok(());
            }
            // The reader routed events committed after this round's read: the
            // next round reads them (the reader's position is always an event's).
        }
    }
}
