//! `spine doctor`: the settings that matter to Spine, each finding with its fix.
//!
//! Exit 1 when any finding is an error (something is broken or will break);
//! warnings (something costs latency or will need attention) exit 0.

use crate::db::Db;
use crate::output::Out;
use crate::Failed;
use serde_json::{json, Value};
use spine_db::version::{compatibility, Compatibility};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Warn,
    Error,
}

struct Finding {
    level: Level,
    check: &'static str,
    message: String,
    fix: Option<String>,
}

fn ok(check: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        level: Level::Ok,
        check,
        message: message.into(),
        fix: None,
    }
}

fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        level: Level::Warn,
        check,
        message: message.into(),
        fix: Some(fix.into()),
    }
}

fn error(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        level: Level::Error,
        check,
        message: message.into(),
        fix: Some(fix.into()),
    }
}

/// The pg_cron jobs Spine's migrations schedule.
const CRON_JOBS: &[&str] = &[
    "spine-purge-events",
    "spine-jobs-maintenance",
    "spine-audit-seal",
    "spine-audit-anchor",
    "spine-webhook-maintenance",
];

/// Tables every event or job writes and deletes: vacuum must keep up. The
/// outbox's and the job archive's time partitions are dropped whole; DELETE
/// goes on in their default partitions (a partitioned parent holds no rows: its
/// live and dead counts stay 0, so naming it checked nothing).
const HOT_TABLES: &[&str] = &[
    "spine.events_default",
    "spine.event_commits_default",
    "spine.jobs",
    "spine.jobs_archive_default",
];

pub async fn run(
    db: &Db,
    out: &Out,
    nats: Option<&str>,
    nats_files: spine_nats::NatsArgs,
) -> anyhow::Result<()> {
    let mut findings = Vec::new();
    findings.extend(versions(db).await?);
    findings.extend(cron(db).await?);
    findings.push(checkpoints(db).await?);
    findings.extend(vacuum(db).await?);
    findings.push(vault(db).await?);
    findings.push(clock(db).await?);
    findings.extend(backlog(db).await?);
    if let Some(url) = nats {
        findings.push(jetstream(url, nats_files).await);
    }
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    let json: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({"level": format!("{:?}", f.level).to_lowercase(), "check": f.check,
                   "message": f.message, "fix": f.fix})
        })
        .collect();
    out.emit(&Value::Array(json), || {
        findings
            .iter()
            .map(|f| {
                let tag = match f.level {
                    Level::Ok => "ok   ",
                    Level::Warn => "WARN ",
                    Level::Error => "ERROR",
                };
                let mut line = format!("{tag} {}: {}", f.check, f.message);
                if let Some(fix) = &f.fix {
                    line += &format!("\n      fix: {fix}");
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    if worst == Level::Error {
        return Err(Failed("doctor found errors".into()).into());
    }
    Ok(())
}

/// The database's extension against its library, this CLI and every connected
/// Spine process (from `application_name`).
async fn versions(db: &Db) -> anyhow::Result<Vec<Finding>> {
    let version: String = db.value("SELECT spine.version()", &[]).await?;
    let library: String = db.value("SELECT spine.library_version()", &[]).await?;
    let mut out = vec![if library == version {
        ok("version", format!("spine {version}"))
    } else {
        warn(
            "version",
            format!("the database's objects are spine {version}, the installed library {library}"),
            "ALTER EXTENSION spine UPDATE; (then the release's new migrations)",
        )
    }];
    let processes = db
        .rows(
            "SELECT DISTINCT application_name AS name FROM pg_stat_activity \
              WHERE application_name LIKE 'spine-%/%' AND datname = current_database() \
                AND pid <> pg_backend_pid() ORDER BY 1",
            &[],
        )
        .await?;
    for p in processes {
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        let (process, theirs) = name.split_once('/').unwrap_or((name, ""));
        out.push(match compatibility(&version, theirs) {
            Compatibility::Same => ok("version", format!("{process} {theirs} connected")),
            Compatibility::Previous => warn(
                "version",
                format!("{process} {theirs} works with this database ({version}) during the upgrade"),
                "ALTER EXTENSION spine UPDATE; once every process is upgraded",
            ),
            verdict => error(
                "version",
                format!("{process} {theirs} cannot work with spine {version} ({verdict:?})"),
                if verdict == Compatibility::DatabaseNewer {
                    format!("upgrade {process} to {version}")
                } else {
                    format!("install spine {theirs}'s files and ALTER EXTENSION spine UPDATE, or run {process} {version}")
                },
            ),
        });
    }
    Ok(out)
}

async fn cron(db: &Db) -> anyhow::Result<Vec<Finding>> {
    let database: Option<String> = db
        .value("SELECT current_setting('cron.database_name', true)", &[])
        .await?;
    let current: String = db.value("SELECT current_database()", &[]).await?;
    let Some(cron_db) = database.filter(|d| !d.is_empty()) else {
        return Ok(vec![error(
            "pg_cron",
            "pg_cron is not loaded: no purge, job upkeep, audit sealing or anchors run",
            format!("shared_preload_libraries = 'pg_cron' and cron.database_name = '{current}' in postgresql.conf, restart, then CREATE EXTENSION pg_cron"),
        )]);
    };
    if cron_db != current {
        return Ok(vec![error(
            "pg_cron",
            format!("pg_cron runs in database {cron_db}, not {current}: Spine's schedules here never fire"),
            format!("ALTER SYSTEM SET cron.database_name = '{current}'; then restart Postgres"),
        )]);
    }
    let present: bool = db
        .value("SELECT to_regclass('cron.job') IS NOT NULL", &[])
        .await?;
    if !present {
        return Ok(vec![error(
            "pg_cron",
            "pg_cron is loaded but not created here",
            "CREATE EXTENSION pg_cron;",
        )]);
    }
    let names: Vec<String> = db
        .client
        .query("SELECT jobname FROM cron.job WHERE active", &[])
        .await?
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .collect();
    let missing: Vec<&str> = CRON_JOBS
        .iter()
        .copied()
        .filter(|j| !names.iter().any(|n| n == j))
        .collect();
    Ok(vec![if missing.is_empty() {
        ok(
            "pg_cron",
            format!(
                "runs in {current}; Spine's {} jobs are scheduled",
                CRON_JOBS.len()
            ),
        )
    } else {
        warn(
            "pg_cron",
            format!("not scheduled (or inactive): {}", missing.join(", ")),
            "apply Spine's migrations/ (they schedule them; safe to re-run)",
        )
    }])
}

/// Checkpoints forced by WAL volume (not by checkpoint_timeout) stall commits
/// and show up as the relay's p99 (bench/RESULTS.md, #26).
async fn checkpoints(db: &Db) -> anyhow::Result<Finding> {
    let row = db
        .client
        .query_one(
            "SELECT checkpoints_timed, checkpoints_req, current_setting('max_wal_size'), \
                    current_setting('checkpoint_timeout') FROM pg_stat_bgwriter",
            &[],
        )
        .await?;
    let (timed, forced): (i64, i64) = (row.get(0), row.get(1));
    let (max_wal, timeout): (String, String) = (row.get(2), row.get(3));
    Ok(if forced > timed && forced > 10 {
        warn(
            "checkpoints",
            format!("{forced} of {} checkpoints were forced by WAL volume (max_wal_size {max_wal}): each one shows in the relay's p99", forced + timed),
            "ALTER SYSTEM SET max_wal_size = '<twice the current>'; SELECT pg_reload_conf();",
        )
    } else {
        ok("checkpoints", format!("{timed} timed, {forced} forced (max_wal_size {max_wal}, checkpoint_timeout {timeout})"))
    })
}

async fn vacuum(db: &Db) -> anyhow::Result<Vec<Finding>> {
    let on: String = db
        .value("SELECT current_setting('autovacuum')", &[])
        .await?;
    if on != "on" {
        return Ok(vec![error(
            "autovacuum",
            "autovacuum is off: the outbox and job tables bloat without bound",
            "ALTER SYSTEM SET autovacuum = on; SELECT pg_reload_conf();",
        )]);
    }
    let mut out = Vec::new();
    for table in HOT_TABLES {
        let row = db
            .client
            .query_opt(
                "SELECT coalesce(c.reloptions::text, ''), s.n_live_tup, s.n_dead_tup, \
                        extract(epoch FROM now() - greatest(s.last_autovacuum, s.last_vacuum))::bigint \
                   FROM pg_class c JOIN pg_stat_all_tables s ON s.relid = c.oid \
                  WHERE c.oid = to_regclass($1)",
                &[table],
            )
            .await?;
        let Some(row) = row else { continue };
        let (options, live, dead, since): (String, i64, i64, Option<i64>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        out.push(if options.contains("autovacuum_enabled=false") {
            error(
                "autovacuum",
                format!("{table}: autovacuum is disabled on this table"),
                format!("ALTER TABLE {table} RESET (autovacuum_enabled);"),
            )
        } else if dead > 10_000 && dead * 5 > live {
            warn(
                "autovacuum",
                format!(
                    "{table}: {dead} dead rows beside {live} live, last vacuumed {}",
                    since.map_or("never".into(), |s| format!("{s} s ago"))
                ),
                format!("VACUUM (ANALYZE) {table}; and ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.01);"),
            )
        } else {
            ok("autovacuum", format!("{table}: {live} live, {dead} dead rows"))
        });
    }
    Ok(out)
}

async fn vault(db: &Db) -> anyhow::Result<Finding> {
    let rows = db
        .rows("SELECT * FROM spine.vault_key_versions()", &[])
        .await?;
    let lost: Vec<String> = rows
        .iter()
        .filter(|r| r.get("in_keyring") == Some(&Value::Bool(false)))
        .filter(|r| r.get("secrets").and_then(Value::as_i64).unwrap_or(0) > 0)
        .map(|r| r["key_version"].to_string())
        .collect();
    let current = rows
        .iter()
        .any(|r| r.get("current") == Some(&Value::Bool(true)));
    Ok(if !lost.is_empty() {
        error(
            "vault",
            format!("secrets are encrypted under key version(s) {} that this server does not hold", lost.join(", ")),
            "put those versions back into the file spine.vault_key_file names (never drop a version while secrets use it)",
        )
    } else if !current {
        warn(
            "vault",
            "no root key: the vault cannot store secrets",
            "a file with `1:<64 hex digits>` readable by postgres only, and ALTER SYSTEM SET spine.vault_key_file = '<path>'",
        )
    } else {
        ok(
            "vault",
            format!("{} key version(s), every secret decryptable", rows.len()),
        )
    })
}

/// Leases, JWT expiry and lag figures compare this clock with the database's.
async fn clock(db: &Db) -> anyhow::Result<Finding> {
    let before = std::time::SystemTime::now();
    let server: f64 = db
        .value("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .await?;
    let after = std::time::SystemTime::now();
    let mid = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let local = (mid(before) + mid(after)) / 2.0;
    let skew = server - local;
    Ok(if skew.abs() > 1.0 {
        warn(
            "clock",
            format!("the database's clock is {skew:+.2} s from this machine's: leases, token expiry and lag figures drift by as much"),
            "run NTP (chrony or systemd-timesyncd) on both machines",
        )
    } else {
        ok("clock", format!("skew {:+.0} ms", skew * 1000.0))
    })
}

async fn backlog(db: &Db) -> anyhow::Result<Vec<Finding>> {
    let mut out = Vec::new();
    for s in db
        .rows(
            "SELECT name, backlog, lag_seconds, last_error FROM spine.sink_status ORDER BY name",
            &[],
        )
        .await?
    {
        let name = s["name"].as_str().unwrap_or_default().to_string();
        let lag = s["lag_seconds"].as_f64().unwrap_or(0.0);
        out.push(if lag > 60.0 {
            warn(
                "sinks",
                format!("sink {name}: {} events behind, {lag:.0} s ({})", s["backlog"], s["last_error"].as_str().unwrap_or("no error recorded")),
                "is its worker running? `spine status` lists processes; the worker's /healthz says why",
            )
        } else {
            ok("sinks", format!("sink {name}: {} behind, {lag:.1} s", s["backlog"]))
        });
    }
    let dead = db
        .rows("SELECT queue, sum(dead) AS dead FROM spine.queue_stats() GROUP BY queue HAVING sum(dead) > 0", &[])
        .await?;
    for q in dead {
        let queue = q["queue"].as_str().unwrap_or_default();
        out.push(warn(
            "jobs",
            format!("queue {queue}: {} dead job(s)", q["dead"]),
            format!("spine jobs {queue} --state dead (why), then spine redrive {queue}"),
        ));
    }
    Ok(out)
}

async fn jetstream(url: &str, files: spine_nats::NatsArgs) -> Finding {
    use spine_nats::account::{account, bytes, limit};
    let config = match spine_nats::NatsConfig::new(url, files) {
        Ok(c) => c,
        Err(e) => return error("nats", format!("{e:#}"), "fix NATS_URL / --nats"),
    };
    let client = match config.connect().await {
        Ok(c) => c,
        Err(e) => {
            return error(
                "nats",
                format!("{config}: {e:#}"),
                "is nats-server running there?",
            )
        }
    };
    let js = async_nats::jetstream::new(client);
    match account(&js).await {
        Err(_) => error(
            "nats",
            format!("{config}: JetStream is not available to this account"),
            "start nats-server with -js (or a jetstream block), and enable it for the account",
        ),
        Ok(a) => {
            let near = |used: u64, max: Option<i64>| {
                max.is_some_and(|m| m > 0 && used * 10 > m as u64 * 8)
            };
            if near(a.storage, a.limits.max_storage) || near(a.memory, a.limits.max_memory) {
                warn(
                    "nats",
                    format!(
                        "JetStream storage {} of {}, memory {} of {}: over 80 %",
                        bytes(a.storage),
                        limit(a.limits.max_storage, bytes),
                        bytes(a.memory),
                        limit(a.limits.max_memory, bytes)
                    ),
                    "raise the account's limits or the streams' max_age/max_bytes",
                )
            } else {
                ok(
                    "nats",
                    format!(
                        "JetStream storage {} of {}, {} stream(s)",
                        bytes(a.storage),
                        limit(a.limits.max_storage, bytes),
                        a.streams
                    ),
                )
            }
        }
    }
}
