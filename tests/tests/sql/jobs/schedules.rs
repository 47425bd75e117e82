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

/// Runs `f` in a transaction as the `authenticated` user `user`; rolled back
/// when `f` fails, so a refused call can be looked at.
async fn as_user_try<T>(
    db: &mut Client,
    user: Uuid,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    get: impl FnOnce(Vec<tokio_postgres::Row>) -> T,
) -> Result<T, tokio_postgres::Error> {
    let tx = db.transaction().await.unwrap();
    act_as(
        &tx,
        "authenticated",
        json!({"sub": user.to_string(), "role": "authenticated"}),
    )
    .await;
    match tx.query(sql, params).await {
        Ok(rows) => {
            tx.commit().await.unwrap();
            Ok(get(rows))
        }
        Err(e) => Err(e),
    }
}

/// A user schedules for herself: into a queue open to users (or the function
/// queue), every minute at most, up to spine.max_schedules_per_user; each firing
/// enqueues a job she owns. She cannot schedule into a closed queue or for
/// someone else, sees only her own schedules, and a name is hers alone.
#[tokio::test]
async fn users_own_their_schedules() {
    let mut db = connect().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let open = new_queue(&db, None).await;
    let closed = format!("q{}", Uuid::new_v4().simple());
    db.execute("SELECT spine.create_queue($1)", &[&closed])
        .await
        .unwrap();
    let schedule = "SELECT spine.schedule($1, $2, $3, '{\"k\": 1}')";
    as_user_try(
        &mut db,
        alice,
        schedule,
        &[&"daily", &"0 7 * * *", &open],
        |_| (),
    )
    .await
    .unwrap();
    // Bob's "daily" is another schedule.
    as_user_try(
        &mut db,
        bob,
        schedule,
        &[&"daily", &"0 8 * * *", &open],
        |_| (),
    )
    .await
    .unwrap();
    for (who, args, state) in [
        (alice, ("x", "0 7 * * *", closed.as_str()), "42501"),
        (alice, ("x", "1 seconds", open.as_str()), "42501"),
        (alice, ("x", "not cron", open.as_str()), "22023"),
    ] {
        let err = as_user_try(&mut db, who, schedule, &[&args.0, &args.1, &args.2], |_| ())
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some(state), "{args:?}: {err:?}");
    }
    let err = as_user_try(
        &mut db,
        alice,
        "SELECT spine.schedule('x', '0 7 * * *', $1, '{}', owner => $2)",
        &[&open, &bob],
        |_| (),
    )
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"), "{err:?}");
    let err = as_user_try(
        &mut db,
        alice,
        "SELECT spine.schedule('x', '0 7 * * *', 'function', '{\"payload\": {}}')",
        &[],
        |_| (),
    )
    .await
    .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some("22023"),
        "a function job names its function"
    );

    // Each sees their own.
    let seen = as_user_try(
        &mut db,
        alice,
        "SELECT cron FROM spine.schedules",
        &[],
        |rows| {
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        },
    )
    .await
    .unwrap();
    assert_eq!(seen, vec!["0 7 * * *"]);

    // A firing enqueues a job alice owns.
    let command: String = one(
        &db,
        "SELECT command FROM cron.job WHERE jobname = 'spine:' || $1::uuid::text || ':daily'",
        &[&alice],
    )
    .await;
    db.batch_execute(&command).await.unwrap();
    let owner: Option<Uuid> = one(
        &db,
        "SELECT owner_id FROM spine.jobs WHERE queue = $1",
        &[&open],
    )
    .await;
    assert_eq!(owner, Some(alice));

    // The limit, set by the superuser for this session.
    db.batch_execute("SET spine.max_schedules_per_user = 2")
        .await
        .unwrap();
    as_user_try(
        &mut db,
        alice,
        schedule,
        &[&"second", &"0 9 * * *", &open],
        |_| (),
    )
    .await
    .unwrap();
    let err = as_user_try(
        &mut db,
        alice,
        schedule,
        &[&"third", &"0 9 * * *", &open],
        |_| (),
    )
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&err), Some("54000"), "{err:?}");
    // Replacing one of hers is not a new one.
    as_user_try(
        &mut db,
        alice,
        schedule,
        &[&"second", &"0 10 * * *", &open],
        |_| (),
    )
    .await
    .unwrap();
    db.batch_execute("RESET spine.max_schedules_per_user")
        .await
        .unwrap();

    // Bob cannot remove alice's; each removes their own.
    let unschedule = "SELECT spine.unschedule('daily')";
    let removed = as_user_try(&mut db, bob, unschedule, &[], |r| r[0].get::<_, bool>(0))
        .await
        .unwrap();
    assert!(removed, "bob's own daily");
    let left: i64 = one(
        &db,
        "SELECT count(*) FROM spine.schedules WHERE owner_id = $1",
        &[&alice],
    )
    .await;
    assert_eq!(left, 2, "alice's are untouched");
    for name in ["daily", "second"] {
        let removed = as_user_try(
            &mut db,
            alice,
            "SELECT spine.unschedule($1)",
            &[&name],
            |r| r[0].get::<_, bool>(0),
        )
        .await
        .unwrap();
        assert!(removed, "{name}");
    }
    let crons: i64 = one(
        &db,
        "SELECT count(*) FROM cron.job WHERE jobname LIKE 'spine:' || $1::uuid::text || ':%' \
            OR jobname LIKE 'spine:' || $2::uuid::text || ':%'",
        &[&alice, &bob],
    )
    .await;
    assert_eq!(crons, 0);
}
