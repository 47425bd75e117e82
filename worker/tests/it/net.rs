//! pg_net's SQL API on Spine's durable `net` queue, as a real worker runs it:
//! pg_net's documented calls (GET with params, POST with a JSON body, DELETE)
//! land in net._http_response; what pg_net gives up on (a 5xx, a timeout) is
//! retried until it succeeds.

use spine_tests::connect as db;
use spine_tests::daemons::{job_completed as completed, job_runner, Hook};
use spine_tests::proc::wait_until;
use spine_tests::sqlstate;
use std::time::Duration;

async fn response(db: &tokio_postgres::Client, id: i64) -> Option<tokio_postgres::Row> {
    db.query_opt(
        "SELECT status_code, content, content_type, timed_out, error_msg FROM net._http_response WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap()
}

/// The two below, one after the other: each runs a worker on the one `net`
/// queue, and a worker stopped at the end of one must not hold a lease on a
/// request of the other.
#[tokio::test]
async fn pg_net_requests_run_and_are_retried_on_the_durable_queue() {
    pg_nets_documented_calls_run_on_the_durable_queue().await;
    requests_pg_net_would_give_up_are_retried().await;
}

/// `net.http_get(url, params)`, `net.http_post(url, body)` and
/// `net.http_delete(url)` as pg_net's README calls them: each returns a request
/// id, the request goes out with its method, query and JSON body, and its
/// response is in net._http_response under that id.
async fn pg_nets_documented_calls_run_on_the_durable_queue() {
    let db = db().await;
    let hook = Hook::start(|_| (200, Duration::ZERO)).await;
    let get: i64 = spine_tests::one(
        &db,
        "SELECT net.http_get(url := $1, params := '{\"q\": \"a b\", \"n\": \"1\"}')",
        &[&hook.url],
    )
    .await;
    let post: i64 = spine_tests::one(
        &db,
        "SELECT net.http_post(url := $1, body := '{\"hello\": \"world\"}'::jsonb)",
        &[&hook.url],
    )
    .await;
    let delete: i64 = spine_tests::one(
        &db,
        "SELECT net.http_delete($1, headers := '{\"X-Reason\": \"cleanup\"}')",
        &[&hook.url],
    )
    .await;
    let _worker = job_runner("net", &[]);
    for id in [get, post, delete] {
        wait_until("responses recorded", Duration::from_secs(20), || async {
            completed(&db, id).await
        })
        .await;
        let r = response(&db, id).await.expect("a response row");
        assert_eq!(
            (r.get::<_, Option<i32>>(0), r.get::<_, Option<String>>(1)),
            (Some(200), Some("ok".to_string()))
        );
        assert_eq!(r.get::<_, Option<bool>>(3), Some(false));
    }
    let heads = hook.heads.lock().unwrap().clone();
    let bodies: Vec<String> = hook
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    let of = |method: &str| {
        heads
            .iter()
            .position(|h| h.starts_with(method))
            .unwrap_or_else(|| panic!("no {method} in {heads:?}"))
    };
    let g = of("GET ");
    assert!(
        heads[g].starts_with("GET /hook?q=a+b&n=1 ")
            || heads[g].starts_with("GET /hook?n=1&q=a+b "),
        "{}",
        heads[g]
    );
    let p = of("POST ");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&bodies[p]).unwrap(),
        serde_json::json!({"hello": "world"})
    );
    assert!(hook
        .header(p, "content-type")
        .unwrap()
        .contains("application/json"));
    let d = of("DELETE ");
    assert_eq!(hook.header(d, "x-reason").as_deref(), Some("cleanup"));
}

/// What pg_net records once and forgets — a 502, a timeout — is retried here
/// until the endpoint answers, and the response row ends with the answer.
async fn requests_pg_net_would_give_up_are_retried() {
    let db = db().await;
    let flaky = Hook::start(|n| (if n == 0 { 502 } else { 200 }, Duration::ZERO)).await;
    let slow = Hook::start(|n| {
        let delay = if n == 0 { 1500 } else { 0 };
        (200, Duration::from_millis(delay))
    })
    .await;
    let first: i64 = spine_tests::one(&db, "SELECT net.http_get($1)", &[&flaky.url]).await;
    let second: i64 = spine_tests::one(
        &db,
        "SELECT net.http_get($1, timeout_milliseconds := 500)",
        &[&slow.url],
    )
    .await;
    let _worker = job_runner("net", &[]);
    for id in [first, second] {
        wait_until(
            "retried until answered",
            Duration::from_secs(30),
            || async { completed(&db, id).await },
        )
        .await;
        let r = response(&db, id).await.unwrap();
        assert_eq!(r.get::<_, Option<i32>>(0), Some(200));
        assert_eq!(
            r.get::<_, Option<String>>(4),
            None,
            "the last attempt's error is gone"
        );
        let attempts: i32 = spine_tests::one(
            &db,
            "SELECT attempts FROM spine.jobs_archive WHERE id = $1",
            &[&id],
        )
        .await;
        assert_eq!(attempts, 2);
    }
    assert_eq!(flaky.count(), 2);
}

/// Bad requests are refused when made, with pg_net's meaning: a NULL url, a
/// URL that is not http(s), a POST without a body; users cannot call it.
#[tokio::test]
async fn bad_requests_are_refused_up_front() {
    let mut db = db().await;
    for (sql, state) in [
        ("SELECT net.http_get(NULL)", "22004"),
        ("SELECT net.http_get('file:///etc/passwd')", "22023"),
        (
            "SELECT net.http_get('http://h', headers := '{\"a\": 1}')",
            "22023",
        ),
        (
            "SELECT net.http_get('http://h', timeout_milliseconds := 0)",
            "22023",
        ),
        ("SELECT net.http_post('http://h', body := NULL)", "22004"),
    ] {
        let err = db.execute(sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some(state), "{sql}: {err:?}");
    }
    let tx = db.transaction().await.unwrap();
    spine_tests::act_as(
        &tx,
        "authenticated",
        serde_json::json!({"sub": uuid::Uuid::new_v4().to_string(), "role": "authenticated"}),
    )
    .await;
    let err = tx
        .execute("SELECT net.http_get('http://example.com')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"), "{err:?}");
}
