//! What every sink shares: a session that holds the sink, reads committed events
//! after its cursor and moves the cursor. The relay (NATS) and the search sync
//! (Meilisearch) keep only what is specific to their destination.
//!
//! - One holder per sink at a time: the session's connection holds a
//!   session-level advisory lock ([`spine_core::locks::SINK`], key
//!   `hashtext(sink name)`); other instances poll for it and take over when that
//!   connection dies. Sink names are unique across kinds, so one lock class
//!   serves every kind.
//! - The cursor is created by `spine.ensure_sink`, read with `spine.events_after`
//!   (commit order, never skips a late commit) and moved by `spine.advance_sink`,
//!   which never moves it backwards.

use anyhow::Context as _;
use spine_core::locks;
use tokio::sync::watch;
use tokio_postgres::{Client, Row, Statement};

/// Where a sink has delivered up to: `(commit_seq, seq)` of the last event.
pub type Cursor = (i64, i64);

/// A held sink: its connection (the lock lives as long as it does), cursor and
/// prepared statements.
pub struct SinkSession {
    pub db: Client,
    _connection: crate::db::AbortOnDrop<()>,
    pub name: String,
    /// The cursor as recorded when the session took the sink.
    pub cursor: Cursor,
    read: Statement,
    advance: Statement,
}

/// How a session takes its sink.
pub struct SinkSpec<'a> {
    pub database: &'a spine_db::DbConfig,
    pub name: &'a str,
    /// `spine.sinks.kind`: `nats`, `meilisearch`, …
    pub kind: &'a str,
    /// The columns of `spine.events_after` the sink reads.
    pub columns: &'a str,
    /// How often a standby tries the lock again.
    pub poll: std::time::Duration,
    /// Session settings run once on the connection, before the lock is taken.
    pub setup: &'a str,
}

impl SinkSession {
    /// Connects and waits until this instance holds the sink; `None` when shutdown
    /// came first. `on_try` sees the outcome of every lock attempt (true: held),
    /// for the health a standby reports.
    pub async fn acquire(
        spec: &SinkSpec<'_>,
        shutdown: &mut watch::Receiver<bool>,
        mut on_try: impl FnMut(bool),
    ) -> anyhow::Result<Option<SinkSession>> {
        let (db, connection) = crate::db::connect(spec.database).await?;
        let connection = crate::db::AbortOnDrop(tokio::spawn(async move {
            // Errors surface on the next query; the driver just ends.
            let _ = connection.await;
        }));
        if !spec.setup.is_empty() {
            db.batch_execute(spec.setup).await?;
        }
        loop {
            let held: bool = db
                .query_one(
                    "SELECT pg_try_advisory_lock($1, hashtext($2))",
                    &[&locks::SINK.class, &spec.name],
                )
                .await?
                .get(0);
            on_try(held);
            if held {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(spec.poll) => {}
                _ = shutdown.changed() => return Ok(None),
            }
        }
        let row = db
            .query_one(
                "SELECT cursor_commit_seq, cursor_seq FROM spine.ensure_sink($1, $2)",
                &[&spec.name, &spec.kind],
            )
            .await
            .with_context(|| format!("ensure_sink({})", spec.name))?;
        let read = db
            .prepare(&format!(
                "SELECT {} FROM spine.events_after($1, $2, $3)",
                spec.columns
            ))
            .await?;
        let advance = db
            .prepare("SELECT spine.advance_sink($1, $2, $3, $4)")
            .await?;
        Ok(Some(SinkSession {
            db,
            _connection: connection,
            name: spec.name.to_string(),
            cursor: (row.get(0), row.get(1)),
            read,
            advance,
        }))
    }

    /// Up to `limit` committed events after `after`, in commit order.
    pub async fn read(&self, after: Cursor, limit: i32) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.db
            .query(&self.read, &[&after.0, &after.1, &limit])
            .await
    }

    /// Moves the recorded cursor to `upto`, counting `delivered` events.
    pub async fn advance(&self, upto: Cursor, delivered: i64) -> Result<(), tokio_postgres::Error> {
        self.db
            .execute(&self.advance, &[&self.name, &upto.0, &upto.1, &delivered])
            .await
            .map(drop)
    }

    /// Records why the session failed on the sink (`spine.sink_status.last_error`).
    /// Best effort: the database may be what failed.
    pub async fn record_error(&self, error: &anyhow::Error) {
        let _ = self
            .db
            .execute(
                "SELECT spine.record_sink_error($1, $2)",
                &[&self.name, &format!("{error:#}")],
            )
            .await;
    }
}
