//! Flow control: snoozing a running job without spending its attempt, and
//! debounced enqueues under concurrency.

use super::*;

/// A snoozed job goes back to its queue until the given time with its attempt
/// given back and no error recorded; only the worker holding it may snooze it.
#[tokio::test]
async fn a_snoozed_job_keeps_its_attempts_and_records_no_error() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let id = enqueue(&db, &q, json!({"k": 1}), "interactive").await;
    let leased = fetch(&db, &q, "w1", 1, "30 s").await;
    assert_eq!(leased, vec![(id, 1)]);
    let other: bool = one(
        &db,
        "SELECT spine.snooze_job($1, now() + interval '1 hour', 'w2')",
        &[&id],
    )
    .await;
    assert!(!other, "another worker's job");
    let snoozed: bool = one(
        &db,
        "SELECT spine.snooze_job($1, now() + interval '1 hour', 'w1')",
        &[&id],
    )
    .await;
    assert!(snoozed);
    let row = db
        .query_one(
            "SELECT state::text, attempts, errors, run_at > now() + interval '59 minutes', worker FROM spine.jobs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i32>(1),
            row.get::<_, serde_json::Value>(2),
            row.get::<_, bool>(3),
            row.get::<_, Option<String>>(4)
        ),
        ("queued".into(), 0, json!([]), true, None)
    );
    assert!(fetch(&db, &q, "w1", 1, "30 s").await.is_empty(), "not due");
    let again: bool = one(&db, "SELECT spine.snooze_job($1, now(), 'w1')", &[&id]).await;
    assert!(!again, "not running");
    let err = db
        .execute("SELECT spine.snooze_job(NULL, now())", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22004"));
}

/// Twenty concurrent debounced enqueues of one key (a burst of triggers) leave one
/// waiting job with the last payload written, due debounce after the last one but
/// never later than max_delay after the first; once it runs, the key starts a new
/// job. Another key, or another user, has its own job.
#[tokio::test]
async fn debounced_enqueues_coalesce_under_concurrency() {
    let db = connect().await;
    let q = new_queue(&db, None).await;
    let debounced =
        "SELECT spine.enqueue_debounced($1, $2, $3, interval '10 minutes', interval '15 minutes')";
    let mut tasks = Vec::new();
    for i in 0..20 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let db = connect().await;
            one::<i64>(&db, debounced, &[&q, &json!({"n": i}), &"inbox"]).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one job for the burst: {ids:?}");
    let row = db
        .query_one(
            "SELECT count(*), min(run_at - created_at) FROM spine.jobs WHERE queue = $1",
            &[&q],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    // Each enqueue moved it; a later one at most to created_at + max_delay.
    db.execute(
        "UPDATE spine.jobs SET created_at = now() - interval '10 minutes' WHERE queue = $1",
        &[&q],
    )
    .await
    .unwrap();
    let last: i64 = one(&db, debounced, &[&q, &json!({"n": "last"}), &"inbox"]).await;
    assert_eq!(last, ids[0]);
    let capped: bool = one(
        &db,
        "SELECT run_at <= created_at + interval '15 minutes' + interval '1 second' \
            AND run_at < now() + interval '6 minutes' AND payload = '{\"n\": \"last\"}' \
           FROM spine.jobs WHERE id = $1",
        &[&last],
    )
    .await;
    assert!(capped, "capped by max_delay, with the last payload");
    let other: i64 = one(&db, debounced, &[&q, &json!({}), &"outbox"]).await;
    assert_ne!(other, last);
    // Once it runs, the key is free for the next burst.
    db.execute(
        "UPDATE spine.jobs SET run_at = now() WHERE id = $1",
        &[&last],
    )
    .await
    .unwrap();
    let leased = fetch(&db, &q, "w", 1, "30 s").await;
    assert_eq!(leased[0].0, last);
    let next: i64 = one(&db, debounced, &[&q, &json!({}), &"inbox"]).await;
    assert_ne!(next, last);
    for (args, state) in [
        (("", "1 minute", None::<&str>), "22023"),
        (("k", "-1 minute", None), "22023"),
        (("k", "10 minutes", Some("1 minute")), "22023"),
    ] {
        let err = db
            .execute(
                "SELECT spine.enqueue_debounced($1, '{}', $2, $3::text::interval, $4::text::interval)",
                &[&q, &args.0, &args.1, &args.2],
            )
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some(state), "{args:?}: {err:?}");
    }
}

/// Three concurrent fetchers drain `queues` for about 3 s, completing what they
/// lease; each start as (queue, the one-second window the database's clock
/// bins it in).
async fn drain_for_3s(queues: &[String]) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + Duration::from_millis(3_000);
    let mut fetchers = Vec::new();
    for w in 0..3 {
        let queues = queues.to_vec();
        fetchers.push(tokio::spawn(async move {
            let db = connect().await;
            let mut starts: Vec<(String, String)> = Vec::new();
            while std::time::Instant::now() < deadline {
                let rows = db
                    .query(
                        "SELECT f.id, f.queue, date_bin('1 second', now(), timestamptz '2001-01-01')::text \
                           FROM spine.fetch_jobs($1, $2, 10) f",
                        &[&queues, &format!("w{w}")],
                    )
                    .await
                    .unwrap();
                let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
                starts.extend(rows.iter().map(|r| (r.get(1), r.get(2))));
                if !ids.is_empty() {
                    db.execute("SELECT spine.complete_jobs($1)", &[&ids])
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            starts
        }));
    }
    let mut all = Vec::new();
    for f in fetchers {
        all.extend(f.await.unwrap());
    }
    all
}

/// Limits per key are limits per queue under a prefix (`sms.<tenant>`, served
/// by a runner as `sms.*`): each key gets its own N per window, and one busy
/// key neither uses up nor waits for another's. Two keys limited to 3 starts per
/// second, drained together by three concurrent fetchers for about 3 s: no key
/// exceeds 3 in any window, and in some window both keys started jobs.
#[tokio::test]
async fn rate_limits_per_key_are_per_queue_under_a_prefix() {
    let db = connect().await;
    let prefix = format!("k{}", &Uuid::new_v4().simple().to_string()[..12]);
    let keys = [format!("{prefix}.tenant_a"), format!("{prefix}.tenant_b")];
    for key in &keys {
        db.execute(
            "SELECT spine.create_queue($1, rate_limit => 3, rate_interval => '1 second')",
            &[key],
        )
        .await
        .unwrap();
        enqueue_numbered(&db, key, 20).await;
    }
    let mut per_key_window: std::collections::BTreeMap<(String, String), usize> =
        Default::default();
    for start in drain_for_3s(&keys).await {
        *per_key_window.entry(start).or_default() += 1;
    }
    assert!(
        per_key_window.values().all(|&n| n <= 3),
        "a key started more than 3 in a second: {per_key_window:?}"
    );
    let windows_of = |key: &str| -> std::collections::BTreeSet<String> {
        per_key_window
            .keys()
            .filter(|(k, _)| k == key)
            .map(|(_, w)| w.clone())
            .collect()
    };
    let (a, b) = (windows_of(&keys[0]), windows_of(&keys[1]));
    assert!(
        a.intersection(&b).next().is_some(),
        "the keys never ran in the same second: {per_key_window:?}"
    );
}

/// A queue limited to 5 starts per second, drained by three concurrent fetchers
/// for about three seconds: no one-second window (as the database's clock bins
/// it) sees more than 5 starts, and the work still gets done at about that rate.
#[tokio::test]
async fn a_rate_limit_holds_across_concurrent_fetchers() {
    let db = connect().await;
    let q = format!("q{}", Uuid::new_v4().simple());
    db.execute(
        "SELECT spine.create_queue($1, rate_limit => 5, rate_interval => '1 second')",
        &[&q],
    )
    .await
    .unwrap();
    enqueue_numbered(&db, &q, 40).await;
    let mut per_window: std::collections::BTreeMap<String, usize> = Default::default();
    let mut total = 0;
    for (_, window) in drain_for_3s(std::slice::from_ref(&q)).await {
        *per_window.entry(window).or_default() += 1;
        total += 1;
    }
    assert!(
        per_window.values().all(|&n| n <= 5),
        "more than 5 starts in a second: {per_window:?}"
    );
    assert!(
        total >= 10,
        "only {total} jobs started in 3 s: {per_window:?}"
    );
    // A limit can be lifted again; bad limits are refused.
    let err = db
        .execute("SELECT spine.create_queue($1, rate_limit => 0)", &[&q])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22023"));
    let err = db
        .execute(
            "SELECT spine.create_queue($1, rate_limit => 5, rate_interval => '1 month')",
            &[&q],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22023"));
}
