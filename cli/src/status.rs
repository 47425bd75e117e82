//! `spine status`: one look at a Spine database and what runs around it: its
//! versions, Spine's processes, sinks, queues, pg_cron, search and the gateway.
//!
//! Processes are found by their sessions: every Spine process names itself in
//! `application_name` (`spine-worker/0.2.0`, …; see `spine_db::DbConfig`).

use crate::db::{Db, Row};
use crate::output::{table, Out};
use serde_json::{json, Value};

pub async fn run(db: &Db, out: &Out, gateway: Option<&str>) -> anyhow::Result<()> {
    let database = db
        .rows(
            "SELECT current_database() AS database, spine.version() AS version, \
                    spine.library_version() AS library_version, \
                    split_part(version(), ' ', 2) AS postgres",
            &[],
        )
        .await?;
    let processes = processes(db).await?;
    let sinks = db
        .rows(
            "SELECT name, kind, backlog, round(lag_seconds::numeric, 3) AS lag_s, delivered, \
                    advanced_at, last_error FROM spine.sink_status ORDER BY name",
            &[],
        )
        .await?;
    let queues = db
        .rows(
            "SELECT queue, sum(queued) AS queued, sum(running) AS running, sum(retrying) AS retrying, \
                    sum(dead) AS dead, round(max(oldest_queued_seconds)::numeric, 1) AS oldest_queued_s \
               FROM spine.queue_stats() GROUP BY queue ORDER BY queue",
            &[],
        )
        .await?;
    let cron = cron(db).await?;
    let search = db
        .rows(
            "SELECT (SELECT url FROM spine.search_config) AS url, \
                    (SELECT count(*) FROM spine.search_rejections) AS refused_documents, \
                    (SELECT count(*) FROM spine.sinks WHERE kind = 'meilisearch') AS sinks",
            &[],
        )
        .await?;
    let search = search.into_iter().next().unwrap_or_default();
    let gateway = match gateway {
        Some(url) => Some(gateway_health(url).await),
        None => None,
    };
    let json = json!({
        "database": database.first(), "processes": processes, "sinks": sinks,
        "queues": queues, "cron": cron, "gateway": gateway, "search": search,
    });
    out.emit(&json, || {
        let d = database.first().cloned().unwrap_or_default();
        let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        let mut text = format!(
            "database  {} ({}): spine {} (library {}), PostgreSQL {}\n",
            s("database"),
            db.target,
            s("version"),
            s("library_version"),
            s("postgres")
        );
        text += &match search.get("url").and_then(Value::as_str) {
            Some(url) => format!(
                "search    {url}: {} sync sink(s), {} document(s) refused (spine-worker check-index <kind>)\n",
                search["sinks"], search["refused_documents"]
            ),
            None => "search    not configured (spine.configure_search)\n".to_string(),
        };
        if let Some(g) = &gateway {
            text += &format!(
                "gateway   {}: {}\n",
                g["url"].as_str().unwrap_or(""),
                g["status"].as_str().unwrap_or("")
            );
        }
        for (title, columns, rows) in [
            (
                "processes",
                &["process", "version", "sessions", "since", "client"][..],
                &processes,
            ),
            (
                "sinks",
                &[
                    "name",
                    "kind",
                    "backlog",
                    "lag_s",
                    "delivered",
                    "advanced_at",
                    "last_error",
                ][..],
                &sinks,
            ),
            (
                "queues",
                &[
                    "queue",
                    "queued",
                    "running",
                    "retrying",
                    "dead",
                    "oldest_queued_s",
                ][..],
                &queues,
            ),
            (
                "cron",
                &["jobname", "schedule", "active", "last_status", "last_start"][..],
                &cron,
            ),
        ] {
            text += &format!("\n{title}\n{}\n", table(columns, rows));
        }
        text
    });
    Ok(())
}

async fn processes(db: &Db) -> anyhow::Result<Vec<Row>> {
    db.rows(
        "SELECT process, version, sessions, since, clients AS client FROM spine.processes()",
        &[],
    )
    .await
}

/// pg_cron's jobs in this database with their last run, when pg_cron is there.
async fn cron(db: &Db) -> anyhow::Result<Vec<Row>> {
    let present: bool = db
        .value("SELECT to_regclass('cron.job') IS NOT NULL", &[])
        .await?;
    if !present {
        return Ok(Vec::new());
    }
    db.rows(
        "SELECT j.jobname, j.schedule, j.active, r.status AS last_status, \
                date_trunc('second', r.start_time) AS last_start \
           FROM cron.job j \
           LEFT JOIN LATERAL (SELECT status, start_time FROM cron.job_run_details d \
                               WHERE d.jobid = j.jobid ORDER BY d.runid DESC LIMIT 1) r ON true \
          ORDER BY j.jobname",
        &[],
    )
    .await
}

async fn gateway_health(url: &str) -> Value {
    let target = format!("{}/health/ready", url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build();
    let status = match client {
        Ok(c) => match c.get(&target).send().await {
            Ok(r) if r.status().is_success() => "ready".to_string(),
            Ok(r) => format!("not ready (HTTP {})", r.status().as_u16()),
            Err(e) => format!("unreachable ({e})"),
        },
        Err(e) => format!("no HTTP client ({e})"),
    };
    json!({"url": url, "status": status})
}
