//! The job runner as a real process against the real cluster: the http handler
//! with retries, a worker killed with -9 mid-job, and a graceful SIGTERM.

use spine_tests::connect as db;
use spine_tests::daemons::{job_runner, new_queue, Hook, Worker};
use spine_tests::proc::wait_until;
use std::time::Duration;

/// Starts a worker that only runs jobs of `queue` with the `http` handler.
fn runner(queue: &str, extra: &[(&str, &str)]) -> Worker {
    job_runner(&format!("{queue}=http"), extra)
}

/// Enqueues an `http` job for `queue` posting `body` (or the whole payload) to `url`.
async fn enqueue_http(
    db: &tokio_postgres::Client,
    queue: &str,
    url: &str,
    body: Option<serde_json::Value>,
) -> i64 {
    let mut payload = serde_json::json!({ "url": url });
    if let Some(body) = body {
        payload["body"] = body;
    }
    spine_tests::one(db, "SELECT spine.enqueue($1, $2)", &[&queue, &payload]).await
}

async fn archived_state(db: &tokio_postgres::Client, id: i64) -> Option<String> {
    db.query_opt(
        "SELECT state::text FROM spine.jobs_archive WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

/// The endpoint fails once (HTTP 500): the job is retried after its backoff with
/// the same Idempotency-Key and completes; its history keeps the failure.
#[tokio::test]
async fn http_job_is_retried_until_it_succeeds() {
    let db = db().await;
    let q = new_queue(&db).await;
    let hook = Hook::start(|n| (if n == 0 { 500 } else { 200 }, Duration::ZERO)).await;
    let id = enqueue_http(
        &db,
        &q,
        &hook.url,
        Some(serde_json::json!({"hello": "world"})),
    )
    .await;
    let worker = runner(&q, &[]);
    wait_until("job completed", Duration::from_secs(20), || async {
        archived_state(&db, id).await.is_some()
    })
    .await;
    assert_eq!(archived_state(&db, id).await.as_deref(), Some("completed"));
    let received = hook.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "one failure, one success");
    assert!(received.iter().all(|(key, _)| key == &format!("job-{id}")));
    assert_eq!(received[1].1, r#"{"hello":"world"}"#);
    let history: serde_json::Value = db
        .query_one(
            "SELECT errors FROM spine.jobs_archive WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        history[0]["error"].as_str().unwrap().contains("HTTP 500"),
        "{history}"
    );
    let (_, metrics) = worker.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("spine_jobs_completed_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("spine_jobs_failed_total 1"), "{metrics}");
    // Per queue: each attempt's outcome, and how long the handler ran.
    for line in [
        format!("spine_jobs_attempts_total{{queue=\"{q}\",outcome=\"failed\"}} 1\n"),
        format!("spine_jobs_attempts_total{{queue=\"{q}\",outcome=\"completed\"}} 1\n"),
        format!("spine_jobs_run_seconds_count{{queue=\"{q}\"}} 2\n"),
        format!("spine_jobs_running{{queue=\"{q}\"}} 0\n"),
    ] {
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
}

/// `/metrics` carries each queue's figures as the database has them: a job in
/// the dead letter and one scheduled in another priority show under their labels.
#[tokio::test]
async fn metrics_show_each_queues_depth_from_the_database() {
    let db = db().await;
    let q = new_queue(&db).await;
    db.execute(
        "SELECT spine.enqueue($1, '{}', 'background', now() + interval '1 hour')",
        &[&q],
    )
    .await
    .unwrap();
    let dead: i64 = spine_tests::one(
        &db,
        "SELECT spine.enqueue($1, '{\"url\": \"http://127.0.0.1:1/\"}', max_attempts => 1)",
        &[&q],
    )
    .await;
    // Nothing listens on port 1: its one attempt fails and it goes dead.
    let worker = runner(&q, &[]);
    wait_until("job dead", Duration::from_secs(20), || async {
        db.query_opt(
            "SELECT 1 FROM spine.jobs WHERE id = $1 AND state = 'dead'",
            &[&dead],
        )
        .await
        .unwrap()
        .is_some()
    })
    .await;
    let (status, metrics) = worker.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    for line in [
        format!("spine_queue_jobs{{queue=\"{q}\",priority=\"background\",state=\"queued\"}} 1\n"),
        format!("spine_queue_jobs{{queue=\"{q}\",priority=\"interactive\",state=\"dead\"}} 1\n"),
        "spine_queue_stats_up 1\n".to_string(),
    ] {
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
    assert!(metrics.ends_with("# EOF\n"));
}

/// kill -9 of the worker while its job is in flight: the lease (1 s here) passes,
/// another worker runs the job again, and exactly one completion is recorded.
#[tokio::test]
async fn job_survives_worker_kill_9() {
    let db = db().await;
    let q = new_queue(&db).await;
    // The first delivery hangs (the worker dies meanwhile); later ones answer at once.
    let hook = Hook::start(|n| {
        (
            200,
            if n == 0 {
                Duration::from_secs(30)
            } else {
                Duration::ZERO
            },
        )
    })
    .await;
    let id = enqueue_http(&db, &q, &hook.url, None).await;
    let mut first = runner(&q, &[("SPINE_JOB_LEASE_SECS", "1")]);
    wait_until(
        "first delivery under way",
        Duration::from_secs(20),
        || async { hook.count() >= 1 },
    )
    .await;
    first.kill9();
    let _second = runner(&q, &[("SPINE_JOB_LEASE_SECS", "1")]);
    wait_until(
        "job completed by the second worker",
        Duration::from_secs(20),
        || async { archived_state(&db, id).await.is_some() },
    )
    .await;
    let row = db
        .query_one(
            "SELECT count(*), min(attempts), min(errors->0->>'error') FROM spine.jobs_archive WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "exactly one completion");
    assert_eq!(row.get::<_, i32>(1), 2, "ran twice");
    assert!(row.get::<_, String>(2).contains("lease expired"));
    assert_eq!(hook.count(), 2);
    let live: i64 = db
        .query_one("SELECT count(*) FROM spine.jobs WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0);
}

/// SIGTERM while a job runs: the worker stops leasing, lets the job finish, and
/// exits cleanly; the job is completed, not re-run. (Multi-threaded: the wait for
/// the process blocks a thread while the hook must keep answering.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_jobs() {
    let db = db().await;
    let q = new_queue(&db).await;
    let hook = Hook::start(|_| (200, Duration::from_millis(1500))).await;
    let id = enqueue_http(&db, &q, &hook.url, None).await;
    let mut worker = runner(&q, &[]);
    wait_until("delivery under way", Duration::from_secs(20), || async {
        hook.count() >= 1
    })
    .await;
    let status = worker.terminate_and_wait(Duration::from_secs(20));
    assert!(status.success(), "clean exit, got {status}");
    assert_eq!(archived_state(&db, id).await.as_deref(), Some("completed"));
    assert_eq!(hook.count(), 1);
}

/// SIGTERM while a job runs longer than the drain time: the worker releases the
/// job (back to queued, the attempt not counted) and exits soon after the drain
/// time; a second worker then runs the job, once. (That the handler is stopped
/// before the release is not visible from here: the process exits either way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_jobs_that_outlast_the_drain() {
    let db = db().await;
    let q = new_queue(&db).await;
    // The first call hangs for a minute; later ones answer at once.
    let hook = Hook::start(|n| {
        (
            200,
            if n == 0 {
                Duration::from_secs(60)
            } else {
                Duration::ZERO
            },
        )
    })
    .await;
    let id = enqueue_http(&db, &q, &hook.url, None).await;
    let mut worker = runner(&q, &[("SPINE_DRAIN_SECS", "1")]);
    wait_until("delivery under way", Duration::from_secs(20), || async {
        hook.count() >= 1
    })
    .await;
    let started = std::time::Instant::now();
    let status = worker.terminate_and_wait(Duration::from_secs(20));
    assert!(status.success(), "clean exit, got {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exited after {:?}, not within the drain time",
        started.elapsed()
    );
    let (state, attempts): (String, i32) = {
        let r = db
            .query_one(
                "SELECT state::text, attempts FROM spine.jobs WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((state.as_str(), attempts), ("queued", 0), "released");
    let _second = runner(&q, &[]);
    wait_until(
        "completed by the second worker",
        Duration::from_secs(20),
        || async { archived_state(&db, id).await.as_deref() == Some("completed") },
    )
    .await;
    assert_eq!(hook.count(), 2, "the released run and the second worker's");
}

/// Waits until the worker serves HTTP, then a second more: its runner has made its
/// first fetch, found nothing, and sleeps (its LISTEN session is open by then).
async fn settle(worker: &Worker) {
    wait_until("the worker is up", Duration::from_secs(20), || async {
        worker.get("/metrics").await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// With the poll at 60 s, an idle runner starts a job within a second of its
/// commit: the enqueue's notification wakes it (before, it waited for the poll).
#[tokio::test]
async fn an_idle_runner_is_woken_by_the_enqueue() {
    let db = db().await;
    let q = new_queue(&db).await;
    let hook = Hook::start(|_| (200, Duration::ZERO)).await;
    let worker = runner(&q, &[("SPINE_JOB_POLL_MS", "60000")]);
    settle(&worker).await;
    let enqueued = std::time::Instant::now();
    enqueue_http(&db, &q, &hook.url, None).await;
    wait_until("the job started", Duration::from_secs(10), || async {
        hook.count() == 1
    })
    .await;
    let took = enqueued.elapsed();
    assert!(took < Duration::from_secs(1), "started after {took:?}");
}

/// A job due in 2 s, with the poll at 60 s: the runner wakes when it is due,
/// not at the next poll, and not before.
#[tokio::test]
async fn a_delayed_job_starts_when_it_is_due() {
    let db = db().await;
    let q = new_queue(&db).await;
    let hook = Hook::start(|_| (200, Duration::ZERO)).await;
    let worker = runner(&q, &[("SPINE_JOB_POLL_MS", "60000")]);
    settle(&worker).await;
    let payload = serde_json::json!({ "url": hook.url });
    let enqueued = std::time::Instant::now();
    db.execute(
        "SELECT spine.enqueue($1, $2, run_at => now() + interval '2 seconds')",
        &[&q, &payload],
    )
    .await
    .unwrap();
    wait_until("the job started", Duration::from_secs(10), || async {
        hook.count() == 1
    })
    .await;
    let took = enqueued.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "started after {took:?}"
    );
}

/// The endpoint answers 429 with `Retry-After: 1` twice, then 200: the job is
/// snoozed each time — back in a second, its attempt given back, no error
/// recorded — and completes on its first counted attempt. (Before, each 429
/// spent an attempt and wrote an error.)
#[tokio::test]
async fn a_job_told_to_come_back_later_is_snoozed_not_failed() {
    let db = db().await;
    let q = new_queue(&db).await;
    let hook = Hook::start(|n| (if n < 2 { 429 } else { 200 }, Duration::ZERO)).await;
    let id = enqueue_http(&db, &q, &hook.url, None).await;
    let _worker = runner(&q, &[]);
    wait_until("job completed", Duration::from_secs(20), || async {
        archived_state(&db, id).await.is_some()
    })
    .await;
    let row = db
        .query_one(
            "SELECT state::text, attempts, errors FROM spine.jobs_archive WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i32>(1),
            row.get::<_, serde_json::Value>(2)
        ),
        ("completed".to_string(), 1, serde_json::json!([]))
    );
    let arrivals = hook.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 3);
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_millis(900),
        "waited the Retry-After: {:?}",
        arrivals[1] - arrivals[0]
    );
}

/// With SPINE_LOG_FORMAT=json every line a job's run logs is one JSON object
/// carrying the job and the chain of events it belongs to.
#[tokio::test]
async fn json_logs_carry_the_jobs_correlation_id() {
    let db = db().await;
    let q = new_queue(&db).await;
    let correlation = uuid::Uuid::new_v4();
    let payload = serde_json::json!({
        "url": "http://127.0.0.1:1/closed", "correlation_id": correlation.to_string()
    });
    let id: i64 = spine_tests::one(
        &db,
        "SELECT spine.enqueue($1, $2, max_attempts => 1)",
        &[&q, &payload],
    )
    .await;
    let dir = spine_tests::proc::tempdir::TempDir::new();
    let log = dir.path().join("worker.log");
    let env = [
        ("SPINE_JOB_QUEUES", format!("{q}=http")),
        ("SPINE_JOB_POLL_MS", "100".into()),
        ("SPINE_LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sink = format!("t_{}", uuid::Uuid::new_v4().simple());
    let worker = Worker::start_logging(&sink, "nats://127.0.0.1:1", &env, &log);
    wait_until("the job is dead", Duration::from_secs(20), || async {
        db.query_opt(
            "SELECT 1 FROM spine.jobs WHERE id = $1 AND state = 'dead'",
            &[&id],
        )
        .await
        .unwrap()
        .is_some()
    })
    .await;
    drop(worker);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = spine_tests::json_log_lines(&text);
    let failed = lines
        .iter()
        .find(|l| l["message"] == "job failed")
        .unwrap_or_else(|| panic!("no \"job failed\" line: {text}"));
    assert_eq!(failed["span"]["id"], id, "{failed}");
    assert_eq!(failed["span"]["queue"], q.as_str(), "{failed}");
    assert_eq!(
        failed["span"]["correlation_id"],
        correlation.to_string(),
        "{failed}"
    );
    assert!(failed["error"].as_str().is_some(), "{failed}");
}

/// A function run by a job logs (console.log) with the job's chain of events on
/// the line itself: the function runs on an invoker thread, outside the job's span.
#[tokio::test]
async fn a_function_jobs_console_lines_carry_its_correlation_id() {
    let db = db().await;
    let q = new_queue(&db).await;
    let name = format!("f{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    db.execute(
        "SELECT spine.deploy_function($1, $2)",
        &[
            &serde_json::json!({"name": name, "version": "1.0.0"}),
            &"Deno.serve(() => { console.log('hello from the job'); return new Response('ok'); })",
        ],
    )
    .await
    .unwrap();
    let correlation = uuid::Uuid::new_v4();
    let payload = serde_json::json!({
        "function": name, "payload": {}, "correlation_id": correlation.to_string()
    });
    let id: i64 = spine_tests::one(&db, "SELECT spine.enqueue($1, $2)", &[&q, &payload]).await;
    let dir = spine_tests::proc::tempdir::TempDir::new();
    let log = dir.path().join("worker.log");
    let queues = format!("{q}=function");
    let env = [
        ("SPINE_JOB_QUEUES", queues.as_str()),
        ("SPINE_JOB_POLL_MS", "100"),
        ("SPINE_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ];
    let sink = format!("t_{}", uuid::Uuid::new_v4().simple());
    let worker = Worker::start_logging(&sink, "nats://127.0.0.1:1", &env, &log);
    wait_until("the job completed", Duration::from_secs(30), || async {
        spine_tests::daemons::job_completed(&db, id).await
    })
    .await;
    drop(worker);
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &serde_json::Value| l["message"] == "hello from the job")
        .unwrap_or_else(|| panic!("no console line: {text}"));
    assert_eq!(line["function"], name.as_str(), "{line}");
    assert_eq!(line["correlation_id"], correlation.to_string(), "{line}");
}

/// Three worker processes serve the same queues: every job runs once, all three
/// take part, and a queue's cap (two at once) holds across them (#23: caps hold
/// across processes; `fetch_jobs` counts the queue's running jobs under a lock).
#[tokio::test]
async fn three_workers_share_queues_and_a_cap_holds_across_them() {
    let db = db().await;
    let spread = new_queue(&db).await;
    let capped = format!("q{}", uuid::Uuid::new_v4().simple());
    db.execute(
        "SELECT spine.create_queue($1, max_concurrency => 2)",
        &[&capped],
    )
    .await
    .unwrap();
    let slow = Hook::start(|_| (200, Duration::from_millis(200))).await;
    const HELD: Duration = Duration::from_millis(150);
    let held = Hook::start(|_| (200, HELD)).await;
    let queues = format!("{spread}=http,{capped}=http");
    let workers: Vec<Worker> = (0..3)
        .map(|_| job_runner(&queues, &[("SPINE_JOB_CONCURRENCY", "4")]))
        .collect();
    for w in &workers {
        wait_until("the worker is up", Duration::from_secs(20), || async {
            w.get("/health/live").await.is_some_and(|(s, _)| s == 200)
        })
        .await;
    }
    for _ in 0..24 {
        enqueue_http(&db, &spread, &slow.url, None).await;
    }
    for _ in 0..12 {
        enqueue_http(&db, &capped, &held.url, None).await;
    }
    wait_until("all 36 jobs completed", Duration::from_secs(60), || async {
        spine_tests::one::<i64>(
            &db,
            "SELECT count(*) FROM spine.jobs_archive WHERE queue IN ($1, $2) AND state = 'completed'",
            &[&spread, &capped],
        )
        .await
            == 36
    })
    .await;
    // Once each: the Idempotency-Key is the job's id.
    for (hook, n) in [(&slow, 24), (&held, 12)] {
        let keys: std::collections::BTreeSet<String> = hook
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.0.clone())
            .collect();
        assert_eq!(
            (hook.count(), keys.len()),
            (n, n),
            "each job's request once"
        );
    }
    let mut completed = Vec::new();
    for w in &workers {
        let (_, text) = w.get("/metrics").await.expect("metrics");
        let n: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("spine_jobs_completed_total ")?.parse().ok())
            .unwrap_or(0.0);
        completed.push(n as i64);
    }
    assert_eq!(completed.iter().sum::<i64>(), 36, "{completed:?}");
    assert!(
        completed.iter().all(|n| *n > 0),
        "all three took part: {completed:?}"
    );
    // The cap: no three of the capped queue's requests were held at once. Each is
    // held HELD; a third may only arrive after one of two ended (a little slack
    // for the timer).
    let arrivals = held.arrivals.lock().unwrap().clone();
    let window = HELD - Duration::from_millis(20);
    let most = arrivals
        .iter()
        .map(|t| {
            arrivals
                .iter()
                .filter(|u| **u <= *t && *t - **u < window)
                .count()
        })
        .max()
        .unwrap();
    assert!(most <= 2, "{most} requests of the capped queue at once");
    drop(workers);
}
