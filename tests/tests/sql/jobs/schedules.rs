//! Schedules through pg_cron: cron and one-second schedules, and the scheduler
//! attached to this database.

use super::*;

/// A schedule becomes a pg_cron job whose command enqueues into the queue, once
/// per firing even if the command runs twice in the same second; unschedule removes it.
#[tokio::test]
async fn schedules_enqueue_through_pg_cron() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let name = format!("s{}", Uuid::new_v4().simple());
    db.execute(
        "SELECT spine.schedule($1, '*/5 * * * *', $2, '{\"digest\":true}', 'background')",
        &[&name, &q],
    )
    .await
    .unwrap();
    let command: String = one(
        &db,
        "SELECT command FROM cron.job WHERE jobname = 'spine:' || $1 AND schedule = '*/5 * * * *'",
        &[&name],
    )
    .await;
    // What pg_cron runs at each firing, run here twice within one second.
    db.batch_execute(&format!("BEGIN; {command}; {command}; COMMIT;"))
        .await
        .unwrap();
    let row = db
        .query_one(
            "SELECT count(*), min(priority::text), min(payload->>'digest') FROM spine.jobs WHERE queue = $1",
            &[&q],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, String>(1), "background");
    assert_eq!(row.get::<_, String>(2), "true");
    let removed: bool = one(&db, "SELECT spine.unschedule($1)", &[&name]).await;
    assert!(removed);
    let left: i64 = one(
        &db,
        "SELECT count(*) FROM cron.job WHERE jobname = 'spine:' || $1",
        &[&name],
    )
    .await;
    assert_eq!(left, 0);
}

/// A one-second schedule: with pg_cron 1.5 or later it enqueues a job every second;
/// with an older pg_cron (Debian 12 ships 1.4.2) it is refused up front with 0A000
/// rather than failing inside pg_cron.
#[tokio::test]
async fn one_second_schedule_runs_or_is_refused_clearly() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let name = format!("s{}", Uuid::new_v4().simple());
    let version: String = one(
        &db,
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'",
        &[],
    )
    .await;
    let seconds_supported = !version.starts_with("1.4") && !version.starts_with("1.3");
    let scheduled = db
        .execute(
            "SELECT spine.schedule($1, '1 seconds', $2, '{}')",
            &[&name, &q],
        )
        .await;
    if !seconds_supported {
        let err = scheduled.unwrap_err();
        assert_eq!(sqlstate(&err), Some("0A000"), "{err:?}");
        assert!(err.as_db_error().unwrap().message().contains("pg_cron 1.5"));
        println!(
            "pg_cron {version}: one-second schedules refused with 0A000 (need pg_cron >= 1.5)"
        );
        return;
    }
    scheduled.unwrap();
    let mut count = 0i64;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        count = live_jobs(&db, &q).await;
        if count >= 2 {
            break;
        }
    }
    db.execute("SELECT spine.unschedule($1)", &[&name])
        .await
        .unwrap();
    assert!(count >= 2, "pg_cron {version} enqueued {count} jobs in 5 s");
}

/// pg_cron's scheduler is attached to this database, so schedules and the
/// maintenance job actually run.
#[tokio::test]
async fn pg_cron_scheduler_serves_this_database() {
    let db = connect().await;
    let launchers: i64 = one(
        &db,
        "SELECT count(*) FROM pg_stat_activity \
             WHERE backend_type = 'pg_cron launcher' AND datname = current_database()",
        &[],
    )
    .await;
    assert_eq!(launchers, 1);
    let maintenance: i64 = one(
        &db,
        "SELECT count(*) FROM cron.job WHERE jobname = 'spine-jobs-maintenance' AND active",
        &[],
    )
    .await;
    assert_eq!(maintenance, 1);
}
