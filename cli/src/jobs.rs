//! `spine queues`, `jobs`, `redrive`, `cancel`: the job queue through Spine's
//! own functions (`spine.queue_stats`, `spine.redrive`, `spine.cancel_job`), so
//! the CLI does what the SQL API does, audited and checked the same way.

use crate::db::Db;
use crate::output::Out;
use crate::BadInput;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum State {
    Queued,
    Retrying,
    Running,
    Dead,
    Completed,
    Cancelled,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Retrying => "retrying",
            State::Running => "running",
            State::Dead => "dead",
            State::Completed => "completed",
            State::Cancelled => "cancelled",
        }
    }

    /// Finished jobs live in the archive.
    fn archived(self) -> bool {
        matches!(self, State::Completed | State::Cancelled)
    }
}

pub async fn queues(db: &Db, out: &Out) -> anyhow::Result<()> {
    let rows = db
        .rows(
            "SELECT q.name AS queue, s.priority, coalesce(s.queued, 0) AS queued, \
                    coalesce(s.running, 0) AS running, coalesce(s.retrying, 0) AS retrying, \
                    coalesce(s.dead, 0) AS dead, round(s.oldest_queued_seconds::numeric, 1) AS oldest_queued_s, \
                    q.max_concurrency, q.rate_limit \
               FROM spine.queues q LEFT JOIN spine.queue_stats() s ON s.queue = q.name \
              ORDER BY q.name, s.priority",
            &[],
        )
        .await?;
    out.rows(
        &[
            "queue",
            "priority",
            "queued",
            "running",
            "retrying",
            "dead",
            "oldest_queued_s",
            "max_concurrency",
            "rate_limit",
        ],
        &rows,
    );
    Ok(())
}

async fn require_queue(db: &Db, queue: &str) -> anyhow::Result<()> {
    let known: bool = db
        .value(
            "SELECT EXISTS (SELECT 1 FROM spine.queues WHERE name = $1)",
            &[&queue],
        )
        .await?;
    if !known {
        return Err(BadInput(format!(
            "queue \"{queue}\" does not exist (spine queues lists them)"
        ))
        .into());
    }
    Ok(())
}

pub async fn list(
    db: &Db,
    out: &Out,
    queue: &str,
    state: Option<State>,
    limit: i64,
) -> anyhow::Result<()> {
    require_queue(db, queue).await?;
    let state_name = state.map(State::name);
    let rows = if state.is_some_and(State::archived) {
        db.rows(
            "SELECT id, state, priority, attempts, max_attempts, finished_at AS at, \
                    errors->-1->>'error' AS last_error, payload \
               FROM spine.jobs_archive \
              WHERE queue = $1 AND state::text = $2 ORDER BY finished_at DESC LIMIT $3",
            &[&queue, &state_name, &limit],
        )
        .await?
    } else {
        db.rows(
            "SELECT id, state, priority, attempts, max_attempts, run_at AS at, \
                    errors->-1->>'error' AS last_error, payload \
               FROM spine.jobs \
              WHERE queue = $1 AND ($2::text IS NULL OR state::text = $2) ORDER BY id LIMIT $3",
            &[&queue, &state_name, &limit],
        )
        .await?
    };
    out.rows(
        &[
            "id",
            "state",
            "priority",
            "attempts",
            "max_attempts",
            "at",
            "last_error",
            "payload",
        ],
        &rows,
    );
    Ok(())
}

pub async fn redrive(db: &Db, out: &Out, queue: &str) -> anyhow::Result<()> {
    require_queue(db, queue).await?;
    let n: i64 = db.value("SELECT spine.redrive($1)", &[&queue]).await?;
    out.emit(&json!({"queue": queue, "redriven": n}), || {
        format!("{n} dead job(s) of queue {queue} queued again")
    });
    Ok(())
}

pub async fn cancel(db: &Db, out: &Out, ids: &[i64]) -> anyhow::Result<()> {
    each_job(
        db,
        out,
        ids,
        "SELECT spine.cancel_job($1)",
        (
            "cancelled",
            "no live job with id {} (finished jobs cannot be cancelled)",
        ),
    )
    .await
}

pub async fn retry(db: &Db, out: &Out, ids: &[i64]) -> anyhow::Result<()> {
    each_job(
        db,
        out,
        ids,
        "SELECT spine.retry_job($1)",
        ("retried", "no dead or retrying job with id {}"),
    )
    .await
}

/// Runs `sql` (true when it acted) for each job; `verb` names the outcome in
/// the output, `missing` the error for ids it did not act on (exit 2).
async fn each_job(
    db: &Db,
    out: &Out,
    ids: &[i64],
    sql: &str,
    (verb, missing_text): (&str, &str),
) -> anyhow::Result<()> {
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        let acted: bool = db.value(sql, &[id]).await?;
        if !acted {
            missing.push(id.to_string());
        }
        results.push(json!({"id": id, verb: acted}));
    }
    out.emit(&json!(results), || {
        results
            .iter()
            .filter(|r| r[verb] == true)
            .map(|r| format!("job {} {verb}", r["id"]))
            .collect::<Vec<_>>()
            .join("\n")
    });
    if !missing.is_empty() {
        return Err(BadInput(missing_text.replace("{}", &missing.join(", "))).into());
    }
    Ok(())
}
