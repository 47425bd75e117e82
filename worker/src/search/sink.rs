//! The search sink: committed entity events → Meilisearch, at least once.
//!
//! One instance holds the sink at a time (an advisory lock on its session, like the
//! relay). Each round reads the next batch of events after the cursor, writes the
//! touched entities' current documents (or deletes), waits until Meilisearch has
//! applied them, and only then advances the cursor. When Meilisearch is down the
//! round fails, the error is recorded on the sink (`spine.sink_status.last_error`)
//! and the session restarts with backoff: events wait as backlog and are written
//! when it is back. Writes are idempotent (put by id, delete by id), so a batch
//! written again after a crash changes nothing.

use super::documents::{plan, touched};
use super::meili::Meili;
use crate::config::{Config, SearchConfig};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Advisory-lock class for search sinks (the key is `hashtext(sink)`).
const SINK_LOCK_CLASS: i32 = 1397770575;

pub async fn run(config: Arc<Config>, wake: Arc<Notify>, shutdown: watch::Receiver<bool>) {
    let (config, wake) = (&config, &wake);
    crate::supervise::restart_with_backoff("search sink", shutdown, |mut stop| async move {
        session(config, wake, &mut stop).await
    })
    .await
}

async fn session(
    config: &Config,
    wake: &Notify,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let sc: &SearchConfig = config
        .search
        .as_ref()
        .expect("the sink runs only when search is configured");
    let (db, connection) = crate::db::connect(&config.database_url).await?;
    let _conn = crate::db::AbortOnDrop(tokio::spawn(connection));
    loop {
        let locked: bool = db
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&SINK_LOCK_CLASS, &sc.sink],
            )
            .await?
            .get(0);
        if locked {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(sc.poll) => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
    let row = db
        .query_one(
            "SELECT cursor_commit_seq, cursor_seq FROM spine.ensure_sink($1, 'meilisearch')",
            &[&sc.sink],
        )
        .await?;
    let mut cursor: (i64, i64) = (row.get(0), row.get(1));
    let meili = Meili::new(&sc.url, sc.key.as_deref());
    let result = rounds(&db, sc, &meili, &mut cursor, wake, shutdown).await;
    if let Err(e) = &result {
        // Visible in spine.sink_status; best effort (the database may be the cause).
        let _ = db
            .execute(
                "SELECT spine.record_sink_error($1, $2)",
                &[&sc.sink, &format!("{e:#}")],
            )
            .await;
    }
    result
}

async fn rounds(
    db: &tokio_postgres::Client,
    sc: &SearchConfig,
    meili: &Meili,
    cursor: &mut (i64, i64),
    wake: &Notify,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Clients need the search key's uid and key to get tenant tokens.
    let (key_uid, key) = meili.ensure_search_key().await?;
    let key_uid: uuid::Uuid = key_uid.parse()?;
    db.execute(
        "SELECT spine.configure_search($1, $2, $3)",
        &[&sc.public_url, &key_uid, &key],
    )
    .await?;
    tracing::info!(sink = %sc.sink, ?cursor, "search sink holds the sink");
    let read = db
        .prepare("SELECT commit_seq, seq, type, data FROM spine.events_after($1, $2, $3)")
        .await?;
    let advance = db
        .prepare("SELECT spine.advance_sink($1, $2, $3, $4)")
        .await?;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let rows = db.query(&read, &[&cursor.0, &cursor.1, &sc.batch]).await?;
        let Some(last) = rows.last() else {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(sc.poll) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        };
        let upto: (i64, i64) = (last.get(0), last.get(1));
        let events: Vec<(String, serde_json::Value)> =
            rows.iter().map(|r| (r.get(2), r.get(3))).collect();
        let touched = touched(events.iter().map(|(t, d)| (t.as_str(), d)));
        let mut written = 0i64;
        if !touched.is_empty() {
            let ids: Vec<uuid::Uuid> = touched.keys().copied().collect();
            let existing = super::load_entities(db, &ids).await?;
            written = super::apply(meili, &plan(&touched, &existing)).await? as i64;
        }
        db.execute(&advance, &[&sc.sink, &upto.0, &upto.1, &written])
            .await?;
        *cursor = upto;
    }
}
