//! Bad input is refused with the right SQLSTATE, every kind of it.

use super::*;

/// Every kind of bad input has its own SQLSTATE and a message naming the problem.
#[tokio::test]
async fn bad_job_input_is_refused() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    db.execute("SELECT spine.enqueue($1, '{}')", &[&q])
        .await
        .unwrap();
    let running: i64 = one(&db, "SELECT spine.enqueue($1, '{}')", &[&q]).await;
    let queued: i64 = one(
        &db,
        "SELECT spine.enqueue($1, '{}', run_at => now() + interval '1 hour')",
        &[&q],
    )
    .await;
    fetch(&db, &q, "w", 2, "30 s").await;
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "SELECT spine.enqueue('no_such_queue', '{}')".to_string(),
            "42704",
            "does not exist",
        ),
        (
            format!("SELECT spine.enqueue('{q}', NULL)"),
            "22004",
            "payload must not be NULL",
        ),
        (
            format!("SELECT spine.enqueue('{q}', '{{}}', max_attempts => -1)"),
            "22023",
            "max_attempts",
        ),
        (
            format!("SELECT spine.enqueue('{q}', '{{}}', 'urgent')"),
            "22P02",
            "job_priority",
        ),
        (
            "SELECT spine.create_queue('Bad Name')".to_string(),
            "22023",
            "queue name",
        ),
        (
            format!("SELECT spine.create_queue('{q}', 0)"),
            "22023",
            "max_concurrency",
        ),
        (
            format!("SELECT spine.schedule('s', '61 * * * *', '{q}', '{{}}')"),
            "22023",
            "minute field",
        ),
        (
            format!("SELECT spine.schedule('s', 'every day', '{q}', '{{}}')"),
            "22023",
            "fields",
        ),
        (
            format!("SELECT spine.fetch_jobs(ARRAY['{q}'], 'w', 0)"),
            "22023",
            "n must be",
        ),
        (
            "SELECT spine.fetch_jobs('{}', 'w')".to_string(),
            "22023",
            "at least one queue",
        ),
        (
            format!("SELECT spine.fail_job({queued}, 'x')"),
            "55000",
            "not running",
        ),
        (
            "SELECT spine.fail_job(-1, 'x')".to_string(),
            "42704",
            "does not exist",
        ),
        (
            format!("SELECT spine.fail_job({running}, 'x', '-1 s')"),
            "22023",
            "retry_in",
        ),
        (
            format!("SELECT spine.heartbeat(ARRAY[{running}::bigint], '0 s')"),
            "22023",
            "lease",
        ),
        (
            "SELECT spine.redrive('no_such_queue')".to_string(),
            "42704",
            "does not exist",
        ),
        // The live table holds live states only, whoever writes it.
        (
            format!("INSERT INTO spine.jobs (queue, payload, state) VALUES ('{q}', '{{}}', 'completed')"),
            "23514",
            "jobs_state_check",
        ),
        (
            format!("INSERT INTO spine.jobs (queue, payload, state) VALUES ('{q}', '{{}}', 'cancelled')"),
            "23514",
            "jobs_state_check",
        ),
    ];
    for (sql, code, needle) in cases {
        let err = db.query(sql.as_str(), &[]).await.unwrap_err();
        let db_err = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{sql}: {err:?}"));
        assert_eq!(db_err.code().code(), code, "{sql}: {}", db_err.message());
        assert!(
            db_err.message().contains(needle),
            "{sql}: {}",
            db_err.message()
        );
    }
}
