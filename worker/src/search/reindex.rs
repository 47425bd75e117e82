//! `spine-worker reindex <kind>` and `spine-worker check-index <kind>`.
//!
//! Reindex builds `spine_<kind>` anew in a side index from `spine.entities`, swaps
//! the two atomically (searches never see a half-built index) and drops the old
//! one. The sink keeps writing to the live index meanwhile; entities its events
//! touched between the start of the rebuild and the swap are written again
//! afterwards, so nothing the rebuild read too early survives. Documents
//! Meilisearch refuses are recorded in `spine.search_rejections` and skipped, as
//! the sink does.

use super::documents::{document, index_name};
use super::meili::{Meili, TaskFailed};
use crate::config::Config;
use anyhow::Context;
use std::collections::BTreeSet;

/// Entities read and written per page.
const PAGE: i64 = 1000;

fn search(config: &Config) -> anyhow::Result<(&crate::config::SearchConfig, Meili)> {
    let sc = config
        .search
        .as_ref()
        .context("MEILI_URL is not set: there is no index to work on")?;
    Ok((sc, Meili::new(&sc.url, sc.key.as_deref())))
}

/// A kind that cannot name an index (callers report it as bad input).
#[derive(Debug)]
pub struct BadKind(pub String);

impl std::fmt::Display for BadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} is not an entity kind (lowercase letters, digits, _)",
            self.0
        )
    }
}

impl std::error::Error for BadKind {}

fn check_kind(kind: &str) -> anyhow::Result<()> {
    let ok = kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(BadKind(kind.to_string()).into());
    }
    Ok(())
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Documents written into the new index.
    pub documents: usize,
    /// Entities written again for changes made during the rebuild.
    pub again: usize,
    /// Documents Meilisearch refused (recorded in `spine.search_rejections`).
    pub refused: usize,
}

/// `spine-worker reindex <kind>`.
pub async fn reindex(config: &Config, kind: &str) -> anyhow::Result<()> {
    let (sc, _) = search(config)?;
    let done = rebuild(&config.database, sc, kind, &mut |_, _| {}).await?;
    println!(
        "reindexed {}: {} documents, swapped in; {} written again for changes during the rebuild; {} refused by Meilisearch (see spine.search_rejections)",
        index_name(kind),
        done.documents,
        done.again,
        done.refused
    );
    Ok(())
}

/// Rebuilds `spine_<kind>` (see the module's comment); `progress(written, total)`
/// after each page, `total` being the kind's entities when the rebuild started
/// (for `spine reindex`'s progress bar).
pub async fn rebuild(
    database: &spine_db::DbConfig,
    sc: &crate::config::SearchConfig,
    kind: &str,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> anyhow::Result<Rebuilt> {
    check_kind(kind)?;
    let meili = Meili::new(&sc.url, sc.key.as_deref());
    let (db, connection) = crate::db::connect(database).await?;
    let _conn = crate::db::AbortOnDrop(tokio::spawn(connection));
    let total: i64 = db
        .query_one(
            "SELECT count(*) FROM spine.entities WHERE kind = $1",
            &[&kind],
        )
        .await?
        .get(0);
    progress(0, total as u64);
    // Where the sink was when the rebuild started reading.
    let start: (i64, i64) = db
        .query_opt(
            "SELECT cursor_commit_seq, cursor_seq FROM spine.sinks WHERE name = $1",
            &[&sc.sink],
        )
        .await?
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or((0, 0));
    let live = index_name(kind);
    let side = format!("{live}__reindex_{}", std::process::id());
    if meili.index_exists(&side).await? {
        meili.wait(&[meili.delete_index(&side).await?]).await?;
    }
    meili.ensure_index(&side).await?;
    let mut after = uuid::Uuid::nil();
    let mut count = 0usize;
    let mut refused_total = 0usize;
    loop {
        let rows = db
            .query(
                &format!(
                    "SELECT {} FROM spine.entities WHERE kind = $1 AND id > $2 ORDER BY id LIMIT $3",
                    super::ENTITY_COLUMNS
                ),
                &[&kind, &after, &PAGE],
            )
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        let docs: Vec<_> = rows
            .iter()
            .map(|r| document(&super::entity_from_row(r)))
            .collect();
        match meili.wait(&meili.put_documents(&side, &docs).await?).await {
            Ok(()) => count += docs.len(),
            // A document Meilisearch refuses fails the page: write it in parts,
            // recording (and skipping) what is refused, as the sink does.
            Err(e) if TaskFailed::rejection(&e).is_some() => {
                let (written, refused) =
                    super::put_each(&db, &meili, &sc.sink, &side, &docs).await?;
                count += written;
                refused_total += refused.len();
            }
            Err(e) => return Err(e),
        }
        progress(
            (count + refused_total) as u64,
            (total as u64).max((count + refused_total) as u64),
        );
    }
    meili.ensure_index(&live).await?;
    meili.wait(&[meili.swap(&live, &side).await?]).await?;
    meili.wait(&[meili.delete_index(&side).await?]).await?;
    // What the sink wrote to the old index while we were reading: write it again.
    let mut cursor = start;
    let mut again = 0usize;
    loop {
        let rows = db
            .query(
                "SELECT commit_seq, seq, type, data FROM spine.events_after($1, $2, 5000)",
                &[&cursor.0, &cursor.1],
            )
            .await?;
        let Some(last) = rows.last() else { break };
        cursor = (last.get(0), last.get(1));
        again += super::write_touched(&db, &meili, &sc.sink, &super::touched_by(&rows, Some(kind)))
            .await?;
    }
    Ok(Rebuilt {
        documents: count,
        again,
        refused: refused_total,
    })
}

/// Compares the ids of `spine_<kind>` with the entities of that kind. Differences
/// are an error (exit status 1), with the sink's backlog shown: a backlog explains
/// differences that will go away.
pub async fn check_index(config: &Config, kind: &str) -> anyhow::Result<()> {
    check_kind(kind)?;
    let (sc, meili) = search(config)?;
    let (db, connection) = crate::db::connect(&config.database).await?;
    let _conn = crate::db::AbortOnDrop(tokio::spawn(connection));
    let in_db: BTreeSet<String> = db
        .query(
            "SELECT id::text FROM spine.entities WHERE kind = $1",
            &[&kind],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let index = index_name(kind);
    let in_index: BTreeSet<String> = if meili.index_exists(&index).await? {
        meili.ids(&index).await?.into_iter().collect()
    } else {
        BTreeSet::new()
    };
    let missing: Vec<&String> = in_db.difference(&in_index).collect();
    let extra: Vec<&String> = in_index.difference(&in_db).collect();
    let backlog: Option<i64> = db
        .query_opt(
            "SELECT backlog FROM spine.sink_status WHERE name = $1",
            &[&sc.sink],
        )
        .await?
        .map(|r| r.get(0));
    let refused: i64 = db
        .query_one(
            "SELECT count(*) FROM spine.search_rejections WHERE sink = $1 AND kind = $2",
            &[&sc.sink, &kind],
        )
        .await?
        .get(0);
    println!(
        "{index}: postgres {} entities, index {} documents, missing {}, extra {} (sink {} backlog: {}; refused by Meilisearch: {refused}, see spine.search_rejections)",
        in_db.len(),
        in_index.len(),
        missing.len(),
        extra.len(),
        sc.sink,
        backlog.map_or("no sink yet".into(), |b| b.to_string())
    );
    for id in missing.iter().take(10) {
        println!("  missing {id}");
    }
    for id in extra.iter().take(10) {
        println!("  extra   {id}");
    }
    anyhow::ensure!(
        missing.is_empty() && extra.is_empty(),
        "{index} differs from spine.entities"
    );
    Ok(())
}
