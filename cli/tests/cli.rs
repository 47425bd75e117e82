//! `spine` as an operator runs it: a child process against the dev stack, its
//! output (tables and `--json`) and exit codes (0 done, 1 failed, 2 bad input).

use serde_json::Value;
use spine_tests::daemons::{new_queue, Nats, Worker};
use spine_tests::proc::{cargo_bin, wait_until, ChildGuard};
use spine_tests::{connect, database_url, one};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use uuid::Uuid;

fn spine(args: &[&str]) -> Output {
    Command::new(cargo_bin("spine"))
        .args(args)
        .env("DATABASE_URL", database_url())
        .env_remove("SPINE_JWT_SECRET")
        .output()
        .expect("run spine")
}

/// Runs `spine args… --json`, expecting exit 0; its stdout as JSON.
fn json(args: &[&str]) -> Value {
    let out = spine(&[args, &["--json"]].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stdout)))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A failure: its exit code and its one line on stderr.
fn fails(args: &[&str], code: i32) -> String {
    let out = spine(args);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {stderr}{}",
        text(&out.stdout)
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[tokio::test]
async fn jobs_are_listed_redriven_retried_and_cancelled() {
    let db = connect().await;
    let queue = new_queue(&db).await;
    db.execute(
        "SELECT spine.enqueue($1, jsonb_build_object('n', n), max_attempts => 1) FROM generate_series(1, 2) n",
        &[&queue],
    )
    .await
    .unwrap();
    let id: i64 = one(
        &db,
        "SELECT id FROM spine.fetch_jobs(ARRAY[$1], 'cli-test', 1)",
        &[&queue],
    )
    .await;
    db.execute(
        "SELECT spine.fail_job($1, 'boom', NULL, 'cli-test')",
        &[&id],
    )
    .await
    .unwrap();

    let queues = json(&["queues"]);
    let row = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == queue.as_str())
        .expect("the queue is listed");
    assert_eq!(
        (row["queued"].as_i64(), row["dead"].as_i64()),
        (Some(1), Some(1)),
        "{row}"
    );

    let dead = json(&["jobs", &queue, "--state", "dead"]);
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    assert_eq!(dead[0]["id"], id);
    assert_eq!(dead[0]["last_error"], "boom");
    // The table shows the same job.
    let table = text(&spine(&["jobs", &queue, "--state", "dead"]).stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("boom") && table.contains(&id.to_string()),
        "{table}"
    );

    assert_eq!(json(&["redrive", &queue])["redriven"], 1);
    assert_eq!(
        json(&["jobs", &queue, "--state", "dead"]),
        Value::Array(vec![])
    );
    let queued = json(&["jobs", &queue, "--state", "queued"]);
    assert_eq!(queued.as_array().unwrap().len(), 2, "{queued}");

    let out = spine(&["cancel", &id.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("job {id} cancelled"));
    let cancelled = json(&["jobs", &queue, "--state", "cancelled"]);
    assert_eq!(cancelled[0]["id"], id, "the archive has it");

    assert!(fails(&["cancel", &id.to_string()], 2).contains("no live job"));
    assert!(fails(&["retry", &id.to_string()], 2).contains("no dead or retrying job"));

    // The other job dies too; `spine retry` runs it again with fresh attempts.
    let other: i64 = one(
        &db,
        "SELECT id FROM spine.fetch_jobs(ARRAY[$1], 'cli-test', 1)",
        &[&queue],
    )
    .await;
    db.execute(
        "SELECT spine.fail_job($1, 'boom again', NULL, 'cli-test')",
        &[&other],
    )
    .await
    .unwrap();
    let out = spine(&["retry", &other.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("job {other} retried"));
    let queued = json(&["jobs", &queue, "--state", "queued"]);
    assert_eq!(queued[0]["id"], other, "{queued}");
    assert_eq!(queued[0]["attempts"], 0, "{queued}");
    assert!(fails(&["cancel", "x"], 2).contains("invalid value"));
    assert!(fails(&["jobs", "no_such_queue"], 2).contains("does not exist"));
    assert!(fails(&["redrive", "no_such_queue"], 2).contains("does not exist"));
    assert!(fails(&["jobs", &queue, "--state", "lost"], 2).contains("lost"));
}

#[tokio::test]
async fn tail_shows_events_in_commit_order_and_follows() {
    let db = connect().await;
    let domain = format!("cli{}", &Uuid::new_v4().simple().to_string()[..10]);
    for n in 1..=3 {
        db.execute(
            "SELECT spine.emit($1, jsonb_build_object('n', $2::int), 'tail/' || $2::int)",
            &[&format!("{domain}.Ticked"), &n],
        )
        .await
        .unwrap();
    }
    let pattern = format!("{domain}.*");
    let out = spine(&["tail", "--type", &pattern, "-n", "10", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ns: Vec<i64> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["data"]["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, vec![1, 2, 3], "in commit order, oldest first");
    let two = spine(&["tail", "--type", &pattern, "-n", "2", "--json"]);
    assert_eq!(text(&two.stdout).lines().count(), 2, "the newest two");
    let subject = spine(&["tail", "--type", &pattern, "--subject", "tail/2", "--json"]);
    assert_eq!(text(&subject.stdout).lines().count(), 1);

    let mut follow = ChildGuard(
        Command::new(cargo_bin("spine"))
            .args(["tail", "--type", &pattern, "-n", "0", "--follow", "--json"])
            .env("DATABASE_URL", database_url())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = follow.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Another type first: read past by the cursor, not shown.
    db.execute("SELECT spine.emit('other.Ticked', '{}')", &[])
        .await
        .unwrap();
    db.execute(
        "SELECT spine.emit($1, '{\"n\": 4}')",
        &[&format!("{domain}.Ticked")],
    )
    .await
    .unwrap();
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("tail --follow printed the new event");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], format!("{domain}.Ticked"));
    assert_eq!(event["data"]["n"], 4);
    assert!(
        matches!(
            rx.recv_timeout(Duration::from_millis(500)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        ),
        "nothing else (other.Ticked is not shown)"
    );
    drop(follow);
}

#[tokio::test]
async fn explain_and_replay_name_the_event() {
    let db = connect().await;
    let id: Uuid = one(&db, "SELECT spine.emit('cli.Explained', '{}')", &[]).await;
    assert_eq!(json(&["explain", &id.to_string()]), Value::Array(vec![]));
    assert_eq!(json(&["replay", &id.to_string()])["fired"], 0);
    let unknown = Uuid::new_v4().to_string();
    assert!(fails(&["explain", &unknown], 2).contains("no event"));
    assert!(fails(&["replay", "not-a-uuid"], 2).contains("invalid value"));
}

#[tokio::test]
async fn audit_verify_checks_the_chain_and_an_anchor() {
    let db = connect().await;
    db.execute("SELECT spine.audit('cli.tested', 'cli', '{}')", &[])
        .await
        .unwrap();
    db.execute("SELECT spine.audit_seal()", &[]).await.unwrap();
    let report = json(&["audit", "verify"]);
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["rows"].as_i64().unwrap() > 0);

    let (seq, hash): (i64, String) = {
        let r = db
            .query_one(
                "SELECT seq, encode(hash, 'hex') FROM spine.audit_log ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let anchor = format!("{seq}:{hash}");
    assert_eq!(
        json(&["audit", "verify", "--anchor", &anchor])["anchor_matches"],
        true
    );
    let wrong = format!("{seq}:{}", "00".repeat(32));
    let out = spine(&["audit", "verify", "--anchor", &wrong, "--json"]);
    assert_eq!(out.status.code(), Some(1), "a mismatched anchor fails");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["anchor_matches"], false);
    assert!(fails(&["audit", "verify", "--anchor", "12"], 2).contains("SEQ:HASH"));
}

#[tokio::test]
async fn vault_keys_and_rotation() {
    let keys = json(&["vault", "keys"]);
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["current"] == true),
        "{keys}"
    );
    let rotated = json(&["vault", "rotate"]);
    assert!(rotated["reencrypted"].as_i64().unwrap() >= 0, "{rotated}");
    assert!(rotated["key_version"].as_i64().is_some(), "{rotated}");
}

#[test]
fn token_signs_for_a_role_and_refuses_bad_input() {
    let user = Uuid::new_v4().to_string();
    let out = json(&[
        "token",
        "authenticated",
        &user,
        "--secret",
        "cli-test-secret",
    ]);
    let token = out["token"].as_str().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(b"cli-test-secret"),
        &validation,
    )
    .expect("signed with the secret")
    .claims;
    assert_eq!(claims["role"], "authenticated");
    assert_eq!(claims["sub"], user);
    assert!(fails(&["token", "admin", "--secret", "s"], 2).contains("role must be"));
    assert!(fails(&["token", "authenticated", "--secret", "s"], 2).contains("user's id"));
    assert!(fails(&["token", "anon"], 2).contains("SPINE_JWT_SECRET"));
}

#[tokio::test]
async fn status_lists_processes_and_doctor_reports_each_check() {
    let db = connect().await;
    let version: String = one(&db, "SELECT spine.version()", &[]).await;
    let nats = Nats::start();
    let sink = spine_tests::fresh_sink(&db).await;
    let _worker = Worker::start(&sink, &nats.url(), &[]);
    wait_until("the worker connects", Duration::from_secs(20), || async {
        let status = json(&["status"]);
        status["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["process"] == "spine-worker" && p["version"] == version.as_str())
    })
    .await;
    let status = json(&["status"]);
    assert_eq!(status["database"]["version"], version.as_str());
    let search_sinks: i64 = one(
        &db,
        "SELECT count(*) FROM spine.sinks WHERE kind = 'meilisearch'",
        &[],
    )
    .await;
    assert_eq!(
        status["search"]["sinks"], search_sinks,
        "{}",
        status["search"]
    );
    assert!(status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == sink.as_str()));
    assert!(
        status["cron"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["jobname"] == "spine-jobs-maintenance"),
        "{}",
        status["cron"]
    );

    let out = spine(&["doctor", "--json", "--nats", &nats.url()]);
    let findings: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks: std::collections::BTreeSet<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    for check in [
        "version",
        "pg_cron",
        "checkpoints",
        "autovacuum",
        "vault",
        "clock",
        "nats",
    ] {
        assert!(checks.contains(check), "{check} missing: {findings}");
    }
    let errors: Vec<&Value> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["level"] == "error")
        .collect();
    assert_eq!(
        out.status.code(),
        Some(if errors.is_empty() { 0 } else { 1 }),
        "{findings}"
    );
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "version"
                && f["level"] == "ok"
                && f["message"] == format!("spine-worker {version} connected")),
        "the worker is seen with its version: {findings}"
    );
    // A NATS that is not there is an error finding, with its fix.
    let out = spine(&["doctor", "--json", "--nats", "nats://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let findings: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(findings
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["check"] == "nats" && f["level"] == "error" && f["fix"].is_string()));
    spine_tests::drop_sink(&db, &sink).await;
}

#[test]
fn connection_problems_are_one_line() {
    let out = Command::new(cargo_bin("spine"))
        .args(["--db", "postgres://postgres@127.0.0.1:1/spine", "queues"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("spine: error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let out = Command::new(cargo_bin("spine"))
        .args(["--db", "postgres://h/db?sslmode=sometimes", "queues"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// `spine reindex` rebuilds a kind's index: every entity of the kind is a document
/// of `spine_<kind>` afterwards; a kind that cannot name an index is bad input.
#[tokio::test]
async fn reindex_rebuilds_a_kinds_index() {
    assert!(fails(
        &["reindex", "Not-A-Kind", "--meili-url", "http://127.0.0.1:1"],
        2
    )
    .contains("not an entity kind"));
    let Some(meili) = spine_tests::daemons::Meili::start("reindex_rebuilds_a_kinds_index") else {
        return;
    };
    let db = connect().await;
    let kind = format!("cli{}", &Uuid::new_v4().simple().to_string()[..8]);
    let owner = Uuid::new_v4();
    for n in 0..5 {
        db.execute(
            "SELECT spine.upsert_entity($1, jsonb_build_object('n', $2::int), NULL, $3)",
            &[&kind, &n, &owner],
        )
        .await
        .unwrap();
    }
    // A sink at the end of the outbox: nothing before the rebuild to write again.
    let sink = format!("s_{}", Uuid::new_v4().simple());
    db.execute(
        "SELECT spine.ensure_sink($1, 'meilisearch', false)",
        &[&sink],
    )
    .await
    .unwrap();
    let url = meili.url();
    let done = json(&[
        "reindex",
        &kind,
        "--meili-url",
        &url,
        "--meili-key",
        &meili.key,
        "--search-sink",
        &sink,
    ]);
    assert_eq!(done["documents"], 5, "{done}");
    assert_eq!(done["index"], format!("spine_{kind}"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stats: Value = serde_json::from_str(
        &reqwest::Client::new()
            .get(format!("{url}/indexes/spine_{kind}/stats"))
            .header("Authorization", format!("Bearer {}", meili.key))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stats["numberOfDocuments"], 5, "{stats}");
    spine_tests::drop_sink(&db, &sink).await;
}

/// `audit verify --published` finds the newest audit.HeadAnchored the relay put in
/// NATS and checks it against the log.
#[tokio::test]
async fn audit_verify_checks_the_anchor_published_to_nats() {
    let db = connect().await;
    let nats = Nats::start();
    // A sink at the outbox's end: the relay delivers only what follows.
    let sink = format!("s_{}", Uuid::new_v4().simple());
    db.execute("SELECT spine.ensure_sink($1, 'nats', false)", &[&sink])
        .await
        .unwrap();
    let _relay = Worker::start(&sink, &nats.url(), &[]);
    db.batch_execute("SELECT spine.audit('cli.anchored', 'cli', '{}'); SELECT spine.audit_seal();")
        .await
        .unwrap();
    // pg_cron's spine-audit-anchor may anchor the head first (then this is NULL);
    // either way an anchor at or past our row follows the sink's start.
    let seq: i64 = one(
        &db,
        "SELECT coalesce(spine.audit_anchor(), (SELECT max(seq) FROM spine.audit_log))",
        &[],
    )
    .await;
    wait_until("the anchor is in NATS", Duration::from_secs(90), || async {
        nats.read_all("SPINE").await.iter().any(|(_, _, e)| {
            e["type"] == "audit.HeadAnchored" && e["data"]["seq"].as_i64() >= Some(seq)
        })
    })
    .await;
    let report = json(&["audit", "verify", "--published", "--nats", &nats.url()]);
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["anchor_seq"].as_i64() >= Some(seq), "{report}");
    assert_eq!(report["anchor_matches"], true, "{report}");
    // A NATS without the stream: a one-line failure, exit 1.
    let empty = Nats::start();
    assert!(fails(
        &["audit", "verify", "--published", "--nats", &empty.url()],
        1
    )
    .contains("SPINE"));
    spine_tests::drop_sink(&db, &sink).await;
}

/// A field added to a source's mapping reaches every entity it built, page by
/// page; the owner is found when only one user has a source of that name.
#[tokio::test]
async fn backfill_maps_a_source_again() {
    let db = connect().await;
    let name = format!("bf_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let owner = Uuid::new_v4();
    let mapping = serde_json::json!({
        "kind": "person",
        "fields": {"name": {"path": "name", "required": true}, "email": {"path": "email"}},
        "identity": ["email"]
    });
    db.execute(
        "SELECT spine.save_source($1, $2, $3)",
        &[&name, &mapping, &owner],
    )
    .await
    .unwrap();
    db.execute(
        "SELECT spine.ingest($1, jsonb_agg(jsonb_build_object('id', n::text, 'name', 'P' || n, \
                'email', 'p' || n || '@example.com', 'tier', n % 3)), $2) \
           FROM generate_series(1, 2500) n",
        &[&name, &owner],
    )
    .await
    .unwrap();
    let mut tiered = mapping.clone();
    tiered["fields"]["tier"] = serde_json::json!({"path": "tier", "normalize": ["number"]});
    db.execute(
        "SELECT spine.save_source($1, $2, $3)",
        &[&name, &tiered, &owner],
    )
    .await
    .unwrap();

    let done = json(&["backfill", &name, "--batch", "1000"]);
    assert_eq!(
        (&done["records"], &done["updated"], &done["rejected"]),
        (&Value::from(2500), &Value::from(2500), &Value::from(0)),
        "{done}"
    );
    assert_eq!(done["owner"], owner.to_string());
    let tiers: i64 = one(
        &db,
        "SELECT count(*) FROM spine.entities WHERE owner_id = $1 AND data ? 'tier'",
        &[&owner],
    )
    .await;
    assert_eq!(tiers, 2500);
    // Resumed past the end: nothing to do.
    let last = done["last"].as_i64().unwrap().to_string();
    assert_eq!(json(&["backfill", &name, "--after", &last])["records"], 0);
    // Again from the start, for a person: everything unchanged.
    let out = spine(&["backfill", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.starts_with(&format!(
            "backfilled source {name}: 2500 records, 0 entities updated"
        )),
        "{said}"
    );

    assert!(fails(&["backfill", "no_such_source"], 2).contains("no source named"));
    assert!(fails(&["backfill", &name, "--batch", "0"], 2).contains("--batch"));
    // A second user with a source of that name: which one is meant must be said.
    let other = Uuid::new_v4();
    db.execute(
        "SELECT spine.save_source($1, $2, $3)",
        &[&name, &mapping, &other],
    )
    .await
    .unwrap();
    assert!(fails(&["backfill", &name], 2).contains("--owner"));
    let theirs = json(&["backfill", &name, "--owner", &other.to_string()]);
    assert_eq!(theirs["records"], 0, "{theirs}");
}
