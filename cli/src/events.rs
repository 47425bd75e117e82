//! `spine tail`, `replay`, `explain`: the outbox in commit order, and the rules'
//! view of one event.
//!
//! `tail --follow` reads with `spine.events_after` from the newest event's
//! position, as the relay does (so it never skips a transaction that commits
//! late), polling every 200 ms; the filters apply to what it reads.

use crate::db::{Db, Row};
use crate::output::{table, Out};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const COLUMNS: &[&str] = &["committed_at", "type", "subject", "owner_id", "id", "data"];
const POLL: Duration = Duration::from_millis(200);

/// What `tail` shows: LIKE patterns (`*` → `%`, the rest literal) and an owner.
pub struct Filter {
    event_type: Option<String>,
    subject: Option<String>,
    owner: Option<Uuid>,
}

impl Filter {
    pub fn new(event_type: Option<&str>, subject: Option<&str>, owner: Option<Uuid>) -> Self {
        Filter {
            event_type: event_type.map(like_pattern),
            subject: subject.map(like_pattern),
            owner,
        }
    }
}

/// `shop.*` → `shop.%`, with LIKE's own `%`, `_` and `\` taken literally.
fn like_pattern(glob: &str) -> String {
    let mut out = String::new();
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

pub async fn tail(
    db: &Db,
    out: &Out,
    filter: &Filter,
    limit: i64,
    follow: bool,
) -> anyhow::Result<()> {
    if limit < 0 {
        return Err(crate::BadInput("--limit must not be negative".into()).into());
    }
    let mut past = db
        .rows(
            "SELECT c.commit_seq, e.seq, c.committed_at, e.type, e.subject, e.owner_id, e.id, \
                    e.data, e.correlation_id \
               FROM spine.events e JOIN spine.event_commits c \
                 ON c.txid = e.txid AND c.tx_started_at = e.tx_started_at \
              WHERE ($1::text IS NULL OR e.type LIKE $1) \
                AND ($2::text IS NULL OR e.subject LIKE $2) \
                AND ($3::uuid IS NULL OR e.owner_id = $3) \
              ORDER BY c.commit_seq DESC, e.seq DESC LIMIT $4",
            &[&filter.event_type, &filter.subject, &filter.owner, &limit],
        )
        .await?;
    past.reverse();
    print_events(out, &past, true);
    if !follow {
        return Ok(());
    }
    // From the newest committed event, whatever the filter.
    let head = db
        .rows(
            "SELECT c.commit_seq, e.seq FROM spine.events e \
               JOIN spine.event_commits c ON c.txid = e.txid AND c.tx_started_at = e.tx_started_at \
              ORDER BY c.commit_seq DESC, e.seq DESC LIMIT 1",
            &[],
        )
        .await?;
    let mut cursor = head.first().map(position).unwrap_or((0, 0));
    loop {
        // Every event read moves the cursor; the filter (in SQL, so LIKE means
        // what it means above) decides which are shown.
        let batch = db
            .rows(
                "SELECT commit_seq, seq, committed_at, type, subject, owner_id, id, data, correlation_id, \
                        ($3::text IS NULL OR type LIKE $3) AND ($4::text IS NULL OR subject LIKE $4) \
                        AND ($5::uuid IS NULL OR owner_id = $5) AS shown \
                   FROM spine.events_after($1, $2, 500)",
                &[&cursor.0, &cursor.1, &filter.event_type, &filter.subject, &filter.owner],
            )
            .await?;
        if let Some(last) = batch.last() {
            cursor = position(last);
        }
        let shown: Vec<Row> = batch
            .into_iter()
            .filter(|r| r.get("shown") == Some(&Value::Bool(true)))
            .map(|mut r| {
                r.remove("shown");
                r
            })
            .collect();
        print_events(out, &shown, false);
        if shown.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
}

fn position(row: &Row) -> (i64, i64) {
    let n = |k: &str| row.get(k).and_then(Value::as_i64).unwrap_or(0);
    (n("commit_seq"), n("seq"))
}

/// JSON: one event per line. Tables: a header once, then rows as they come.
fn print_events(out: &Out, rows: &[Row], first: bool) {
    if out.json {
        for r in rows {
            println!("{}", Value::Object(r.clone()));
        }
        return;
    }
    if rows.is_empty() {
        if first {
            println!("(no events)");
        }
        return;
    }
    let text = table(COLUMNS, rows);
    let mut lines = text.lines();
    let header = lines.next();
    if first {
        if let Some(h) = header {
            println!("{h}");
        }
    }
    for l in lines {
        println!("{l}");
    }
}

pub async fn replay(db: &Db, out: &Out, event: Uuid) -> anyhow::Result<()> {
    require_event(db, event).await?;
    let fired: i64 = db.value("SELECT spine.replay_event($1)", &[&event]).await?;
    out.emit(&json!({"event": event, "fired": fired}), || {
        format!("event {event}: {fired} rule firing(s) (rules that had fired for it do nothing)")
    });
    Ok(())
}

pub async fn explain(db: &Db, out: &Out, event: Uuid) -> anyhow::Result<()> {
    require_event(db, event).await?;
    let rows = db
        .rows("SELECT * FROM spine.explain($1)", &[&event])
        .await?;
    out.rows(
        &[
            "rule",
            "on_event",
            "considered",
            "matches",
            "fired",
            "reason",
        ],
        &rows,
    );
    Ok(())
}

async fn require_event(db: &Db, event: Uuid) -> anyhow::Result<()> {
    let known: bool = db
        .value(
            "SELECT EXISTS (SELECT 1 FROM spine.events WHERE id = $1)",
            &[&event],
        )
        .await?;
    if !known {
        return Err(
            crate::BadInput(format!("no event {event} (purged, or never committed)")).into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_like_patterns_with_literals_escaped() {
        assert_eq!(like_pattern("shop.*"), "shop.%");
        assert_eq!(like_pattern("a_b%"), "a\\_b\\%");
        assert_eq!(like_pattern("*/42"), "%/42");
        assert_eq!(like_pattern("exact"), "exact");
    }
}
