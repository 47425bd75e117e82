//! Search sync: entities → Meilisearch, one index per kind (`spine_<kind>`,
//! primary key the entity id, `owner_id` filterable), so clients search directly
//! with a tenant token from `spine.search_key()` that Meilisearch restricts to their
//! own documents.
//!
//! - [`documents`]: which entities a batch touched and what to write (pure).
//! - [`meili`]: the Meilisearch HTTP calls.
//! - [`sink`]: the loop: a cursor on the outbox like the relay's; a batch's writes
//!   are waited for before the cursor moves, so Meilisearch being down only grows
//!   the backlog.
//! - [`reindex`]: `spine-worker reindex <kind>` (rebuild and swap) and
//!   `spine-worker check-index <kind>` (compare ids with Postgres).

pub mod documents;
pub mod meili;
pub mod reindex;
pub mod sink;

/// The index pattern search keys and tenant tokens cover.
pub const INDEX_PATTERN: &str = "spine_*";

use documents::{Entity, Plan};

/// The columns [`entity_from_row`] reads, for queries on `spine.entities`.
pub const ENTITY_COLUMNS: &str = "id, owner_id, kind, version, data, \
    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

/// Current rows of entities `ids` (any owner: the worker acts as service_role).
pub async fn load_entities(
    db: &tokio_postgres::Client,
    ids: &[uuid::Uuid],
) -> Result<Vec<Entity>, tokio_postgres::Error> {
    let rows = db
        .query(
            &format!("SELECT {ENTITY_COLUMNS} FROM spine.entities WHERE id = ANY($1)"),
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(entity_from_row).collect())
}

/// The entities a batch of events (rows of `commit_seq, seq, type, data` from
/// `spine.events_after`) touched, with their kind; with `kind`, only those of it.
pub fn touched_by(
    rows: &[tokio_postgres::Row],
    kind: Option<&str>,
) -> std::collections::BTreeMap<uuid::Uuid, String> {
    let events: Vec<(String, serde_json::Value)> =
        rows.iter().map(|r| (r.get(2), r.get(3))).collect();
    let mut touched = documents::touched(events.iter().map(|(t, d)| (t.as_str(), d)));
    if let Some(kind) = kind {
        touched.retain(|_, k| k == kind);
    }
    touched
}

/// What to write for `touched` entities: their current documents, or deletes for
/// those that are gone.
pub async fn plan_for(
    db: &tokio_postgres::Client,
    touched: &std::collections::BTreeMap<uuid::Uuid, String>,
) -> Result<Plan, tokio_postgres::Error> {
    if touched.is_empty() {
        return Ok(Plan::default());
    }
    let ids: Vec<uuid::Uuid> = touched.keys().copied().collect();
    let existing = load_entities(db, &ids).await?;
    Ok(documents::plan(touched, &existing))
}

/// What a batch of events asks to write (see [`touched_by`] and [`plan_for`]).
pub async fn plan_events(
    db: &tokio_postgres::Client,
    rows: &[tokio_postgres::Row],
    kind: Option<&str>,
) -> Result<Plan, tokio_postgres::Error> {
    plan_for(db, &touched_by(rows, kind)).await
}

pub fn entity_from_row(r: &tokio_postgres::Row) -> Entity {
    Entity {
        id: r.get(0),
        owner_id: r.get(1),
        kind: r.get(2),
        version: r.get(3),
        data: r.get(4),
        updated_at: r.get(5),
    }
}

/// Writes the current documents of `touched` again after Meilisearch refused a
/// batch of them, in ever smaller parts (see [`put_each`]): documents it takes are
/// written, and each one it refuses (an `invalid_request` failure) is recorded in
/// `spine.search_rejections` and skipped, so one bad document cannot hold the
/// sink. Current rows, so nothing older overwrites what later batches wrote
/// meanwhile. Returns how many documents were written or deleted.
pub async fn write_in_parts(
    db: &tokio_postgres::Client,
    meili: &meili::Meili,
    sink: &str,
    touched: &std::collections::BTreeMap<uuid::Uuid, String>,
) -> anyhow::Result<usize> {
    let plan = plan_for(db, touched).await?;
    let mut written = 0;
    let mut refused = std::collections::HashSet::new();
    for (index, docs) in &plan.put {
        meili.ensure_index(index).await?;
        let (n, r) = put_each(db, meili, sink, index, docs).await?;
        written += n;
        refused.extend(r);
    }
    let deletes = Plan {
        delete: plan.delete,
        ..Plan::default()
    };
    let (tasks, deleted) = enqueue(meili, &deletes).await?;
    meili.wait(&tasks).await?;
    written += deleted;
    let accepted: Vec<uuid::Uuid> = touched
        .keys()
        .filter(|id| !refused.contains(*id))
        .copied()
        .collect();
    clear_rejections(db, sink, &accepted).await?;
    Ok(written)
}

/// Puts `docs` into `index` in ever smaller parts until each document Meilisearch
/// refuses is alone in its task: a part that is taken is done, a refused one is
/// split in two and each half sent again. One bad document among n costs about
/// 2·log2(n) tasks rather than n. Each document refused alone is recorded in
/// `spine.search_rejections` for `sink`. Returns how many were written and the ids
/// refused.
pub async fn put_each(
    db: &tokio_postgres::Client,
    meili: &meili::Meili,
    sink: &str,
    index: &str,
    docs: &[serde_json::Value],
) -> anyhow::Result<(usize, std::collections::HashSet<uuid::Uuid>)> {
    let mut written = 0;
    let mut refused = std::collections::HashSet::new();
    // Parts still to send, the next one last.
    let mut parts: Vec<&[serde_json::Value]> = vec![docs];
    while let Some(part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        let tasks = meili.put_documents(index, part).await?;
        let failure = match meili.wait(&tasks).await {
            Ok(()) => {
                written += part.len();
                continue;
            }
            Err(e) => match meili::TaskFailed::rejection(&e) {
                Some(failure) => failure.clone(),
                None => return Err(e),
            },
        };
        if let [doc] = part {
            let id: uuid::Uuid = doc["id"].as_str().unwrap_or_default().parse()?;
            let kind = doc["kind"].as_str().unwrap_or_default();
            tracing::warn!(%sink, %id, %kind, error = %failure, "meilisearch refused a document; recorded in spine.search_rejections");
            db.execute(
                "SELECT spine.record_search_rejection($1, $2, $3, $4)",
                &[&sink, &id, &kind, &failure.to_string()],
            )
            .await?;
            refused.insert(id);
        } else {
            let (first, second) = part.split_at(part.len() / 2);
            parts.push(second);
            parts.push(first);
        }
    }
    Ok((written, refused))
}

/// Writes the current documents of `touched` and waits for them; a batch
/// Meilisearch refuses is written again in parts (see [`write_in_parts`]).
pub async fn write_touched(
    db: &tokio_postgres::Client,
    meili: &meili::Meili,
    sink: &str,
    touched: &std::collections::BTreeMap<uuid::Uuid, String>,
) -> anyhow::Result<usize> {
    let plan = plan_for(db, touched).await?;
    let (tasks, written) = enqueue(meili, &plan).await?;
    match meili.wait(&tasks).await {
        Ok(()) => {
            let ids: Vec<uuid::Uuid> = touched.keys().copied().collect();
            clear_rejections(db, sink, &ids).await?;
            Ok(written)
        }
        Err(e) if meili::TaskFailed::rejection(&e).is_some() => {
            write_in_parts(db, meili, sink, touched).await
        }
        Err(e) => Err(e),
    }
}

/// Forgets earlier refusals of entities whose documents (or deletes) Meilisearch
/// has now applied.
pub async fn clear_rejections(
    db: &tokio_postgres::Client,
    sink: &str,
    ids: &[uuid::Uuid],
) -> Result<(), tokio_postgres::Error> {
    if !ids.is_empty() {
        db.execute(
            "SELECT spine.clear_search_rejections($1, $2)",
            &[&sink, &ids],
        )
        .await?;
    }
    Ok(())
}

/// Sends `plan` to Meilisearch; returns its tasks (applied in this order, after
/// every task sent before) and how many documents it writes or deletes.
pub async fn enqueue(
    meili: &meili::Meili,
    plan: &documents::Plan,
) -> anyhow::Result<(Vec<u64>, usize)> {
    let mut tasks = Vec::new();
    let mut written = 0;
    for (index, docs) in &plan.put {
        meili.ensure_index(index).await?;
        tasks.extend(meili.put_documents(index, docs).await?);
        written += docs.len();
    }
    for (index, ids) in &plan.delete {
        // Nothing to delete from an index that was never created.
        if meili.index_exists(index).await? {
            tasks.push(meili.delete_documents(index, ids).await?);
        }
        written += ids.len();
    }
    Ok((tasks, written))
}
