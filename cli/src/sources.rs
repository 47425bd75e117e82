//! `spine backfill <source>`: a connector source's records mapped again with its
//! current mapping, a page per transaction (`spine.backfill`), with a progress
//! bar and its ETA on stderr. Interrupted, it resumes with `--after` the last raw
//! id it printed.

use crate::db::Db;
use crate::output::Out;
use crate::BadInput;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use uuid::Uuid;

/// How a backfill runs.
pub struct Backfill {
    pub source: String,
    pub owner: Option<Uuid>,
    pub batch: i32,
    pub after: i64,
}

/// Errors listed in the result; the counts cover all of them.
const ERRORS_SHOWN: usize = 20;

pub async fn backfill(db: &Db, out: &Out, job: Backfill) -> anyhow::Result<()> {
    let owner = match job.owner {
        Some(owner) => owner,
        None => only_owner(db, &job.source).await?,
    };
    // What is left to do, counted once: the bar's length (records written
    // meanwhile make it finish a little past 100 %).
    let total: i64 = db
        .value(
            "SELECT count(*) FROM spine.raw_records r \
              WHERE r.owner_id = $1 AND r.source = $2 AND r.status = 'processed' AND r.id > $3 \
                AND NOT EXISTS (SELECT 1 FROM spine.raw_records n \
                                 WHERE n.owner_id = r.owner_id AND n.source = r.source \
                                   AND n.external_id = r.external_id AND n.id > r.id \
                                   AND n.status = 'processed')",
            &[&owner, &job.source, &job.after],
        )
        .await?;
    let bar = if out.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total.max(0) as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} records, {per_sec}, ETA {eta}")?
            .progress_chars("=> "),
    );
    bar.set_message(job.source.clone());
    let mut sum = Totals::default();
    let mut after = job.after;
    loop {
        // One statement, one transaction: the owner's ingest lock is held for a
        // page, and everything before `after` is committed.
        let text: String = db
            .value(
                "SELECT spine.backfill($1, $2, $3, $4)::text",
                &[&job.source, &after, &job.batch, &owner],
            )
            .await
            .map_err(|e| e.context(format!("after raw id {after}")))?;
        let page: Value = serde_json::from_str(&text)?;
        sum.add(&page);
        bar.inc(page["received"].as_u64().unwrap_or(0));
        if let Some(last) = page["last"].as_i64() {
            after = last;
        }
        if page["done"] == json!(true) {
            break;
        }
    }
    bar.finish_and_clear();
    let result = json!({
        "source": job.source, "owner": owner, "records": sum.received,
        "created": sum.created, "updated": sum.updated, "unchanged": sum.unchanged,
        "rejected": sum.rejected, "errors": sum.errors, "last": after,
    });
    out.emit(&result, || {
        let mut text = format!(
            "backfilled source {}: {} records, {} entities updated, {} created, {} unchanged, \
             {} refused by the current mapping (last raw id {after})",
            job.source, sum.received, sum.updated, sum.created, sum.unchanged, sum.rejected
        );
        for e in &sum.errors {
            text.push_str(&format!(
                "\n  {}: {}",
                e["external_id"].as_str().unwrap_or("?"),
                e["reason"].as_str().unwrap_or("?")
            ));
        }
        text
    });
    Ok(())
}

/// The owner of the only source called `source`; several owners need `--owner`.
async fn only_owner(db: &Db, source: &str) -> anyhow::Result<Uuid> {
    let owners: Vec<Uuid> = db
        .client
        .query(
            "SELECT owner_id FROM spine.sources WHERE name = $1 ORDER BY owner_id LIMIT 2",
            &[&source],
        )
        .await
        .map_err(crate::db::sql_error)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    match owners.as_slice() {
        [one] => Ok(*one),
        [] => Err(BadInput(format!("no source named {source}")).into()),
        _ => Err(BadInput(format!(
            "more than one user has a source named {source}: pass --owner"
        ))
        .into()),
    }
}

/// The pages' counts added up.
#[derive(Default)]
struct Totals {
    received: i64,
    created: i64,
    updated: i64,
    unchanged: i64,
    rejected: i64,
    errors: Vec<Value>,
}

impl Totals {
    fn add(&mut self, page: &Value) {
        let n = |k: &str| page[k].as_i64().unwrap_or(0);
        self.received += n("received");
        self.created += n("created");
        self.updated += n("updated");
        self.unchanged += n("unchanged");
        self.rejected += n("rejected");
        let room = ERRORS_SHOWN.saturating_sub(self.errors.len());
        if let Some(errors) = page["errors"].as_array() {
            self.errors.extend(errors.iter().take(room).cloned());
        }
    }
}
