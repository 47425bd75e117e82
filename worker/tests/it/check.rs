//! `spine-worker check` against real servers: the dev stack's Postgres and NATS,
//! and private nats-servers (with and without JetStream, with TLS, with a
//! password; these need no stack); a wrong address or a refused login is a
//! failure, not a pass.

use spine_tests::daemons::{Nats, NatsOptions};
use std::process::Command;

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spine-worker"))
}

/// `spine-worker check` with `NATS_URL` = `nats`, plus `env`, and Postgres at a
/// port nobody listens on: the NATS tests need no stack, and check goes on after
/// Postgres fails. (stdout, stderr, whether NATS passed: exit 1 with only
/// Postgres failed).
fn check_nats(nats: &str, env: &[(&str, &str)]) -> (String, String, bool) {
    let mut cmd = worker();
    cmd.arg("check")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/spine")
        .env("NATS_URL", nats)
        .env_remove("MEILI_URL")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("postgres: FAILED"), "{stderr}");
    let passed = stderr.contains("check failed: postgres\n");
    assert!(
        passed || stderr.contains("check failed: postgres, nats"),
        "{stderr}"
    );
    (stdout, stderr, passed)
}

/// With the stack's settings, check reaches both, reports JetStream's usage and
/// limits and the relay's stream, and exits 0.
#[test]
fn check_passes_against_the_stack() {
    let db = spine_tests::database_url();
    let nats = std::env::var("NATS_URL").expect("NATS_URL: run via `cargo xtask test`");
    let out = worker()
        .arg("check")
        .env("DATABASE_URL", db)
        .env("NATS_URL", nats)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!(
        "postgres: ok (spine {})",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(stdout.contains("jetstream enabled)"), "{stdout}");
    assert!(stdout.contains("nats: jetstream: memory "), "{stdout}");
    assert!(stdout.contains("nats: stream SPINE: "), "{stdout}");
}

/// Against a fresh JetStream server the stream is absent (not a failure: the relay
/// creates it); once it exists, check reports its messages and subjects.
#[tokio::test]
async fn check_reports_jetstream_usage_and_the_stream() {
    let nats = Nats::start();
    let (stdout, stderr, passed) = check_nats(&nats.url(), &[]);
    assert!(passed, "{stdout}{stderr}");
    assert!(
        stdout.contains("nats: ok (server ") && stdout.contains(&nats.url()),
        "{stdout}"
    );
    assert!(
        stdout.contains("nats: jetstream: memory 0 B of "),
        "{stdout}"
    );
    assert!(stdout.contains(", streams 0 of "), "{stdout}");
    assert!(
        stdout.contains("nats: stream SPINE: absent (the relay creates it when it starts)"),
        "{stdout}"
    );

    let js = nats.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "SPINE".into(),
        subjects: vec!["spine.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("spine.test.Checked", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let (stdout, stderr, passed) = check_nats(&nats.url(), &[]);
    assert!(passed, "{stdout}{stderr}");
    assert!(stdout.contains(", streams 1 of "), "{stdout}");
    assert!(
        stdout.contains("nats: stream SPINE: 1 messages, ") && stdout.contains("subjects spine.>"),
        "{stdout}"
    );
    // SPINE_RELAY_STREAM names the stream checked.
    let (stdout, _, _) = check_nats(&nats.url(), &[("SPINE_RELAY_STREAM", "OTHER")]);
    assert!(stdout.contains("nats: stream OTHER: absent"), "{stdout}");
}

/// A nats-server without JetStream fails the check with a message that says so.
#[test]
fn check_fails_without_jetstream() {
    let nats = Nats::start_with(NatsOptions {
        jetstream: false,
        ..Default::default()
    });
    let (stdout, stderr, passed) = check_nats(&nats.url(), &[]);
    assert!(!passed && !stdout.contains("nats: ok"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "nats: FAILED: the server at {} has JetStream disabled",
            nats.url()
        )),
        "{stderr}"
    );
}

/// A NATS address nobody listens on makes check fail (exit 1) with a message
/// naming it.
#[test]
fn check_fails_when_nats_is_unreachable() {
    let (stdout, stderr, passed) = check_nats("nats://127.0.0.1:1", &[]);
    assert!(!passed, "{stdout}{stderr}");
    assert!(
        stderr.contains("nats: FAILED: connecting to NATS at nats://127.0.0.1:1"),
        "{stderr}"
    );
}

/// `tls://` is TLS, verified against the roots in `SSL_CERT_FILE` (or the
/// system's): with the server's CA check passes, without it the certificate is
/// refused. (The raw-TCP check refused `tls://` URLs.)
#[test]
fn check_speaks_tls() {
    let nats = Nats::start_with(NatsOptions {
        tls: true,
        ..Default::default()
    });
    let ca = nats.ca_file();
    let (stdout, stderr, passed) =
        check_nats(&nats.url(), &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    assert!(passed, "{stdout}{stderr}");
    assert!(stdout.contains("jetstream enabled)"), "{stdout}");
    let (stdout, stderr, passed) = check_nats(&nats.url(), &[]);
    assert!(!passed, "{stdout}{stderr}");
    assert!(
        stderr.contains("nats: FAILED: connecting to NATS at tls://"),
        "{stderr}"
    );
}

/// Credentials in `NATS_URL` are sent (async-nats alone ignores them): the right
/// password passes, a wrong or missing one fails, and no output shows it, even at
/// debug level. (The raw-TCP check passed a wrong password: the greeting comes
/// before the login.)
#[test]
fn check_logs_in_with_the_credentials_in_the_url() {
    let nats = Nats::start_with(NatsOptions {
        user: Some(("spine".into(), "Pw0rd-n@ts".into())),
        ..Default::default()
    });
    let port = nats.port;
    let good = format!("nats://spine:Pw0rd-n%40ts@127.0.0.1:{port}");
    let (stdout, stderr, passed) = check_nats(&good, &[("RUST_LOG", "debug")]);
    assert!(passed, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "at nats://spine@127.0.0.1:{port}, jetstream enabled"
        )),
        "{stdout}"
    );
    assert!(
        !format!("{stdout}{stderr}").contains("Pw0rd"),
        "leaked: {stdout}{stderr}"
    );

    for url in [
        format!("nats://spine:Pw0rd-wrong@127.0.0.1:{port}"),
        format!("nats://127.0.0.1:{port}"),
    ] {
        let (stdout, stderr, passed) = check_nats(&url, &[("RUST_LOG", "debug")]);
        assert!(!passed, "{url}: {stdout}{stderr}");
        assert!(
            stderr.contains("nats: FAILED: connecting to NATS at nats://"),
            "{stderr}"
        );
        assert!(stderr.contains("authorization violation"), "{stderr}");
        assert!(
            !format!("{stdout}{stderr}").contains("Pw0rd"),
            "leaked: {stdout}{stderr}"
        );
    }
}

/// Every form of `DATABASE_URL` with a password, against a port nobody listens
/// on: `check` fails naming the database (user, host, port) and neither its
/// output nor a debug-level run of the worker shows the password.
#[test]
fn no_output_shows_the_database_password() {
    let port = spine_tests::proc::free_port();
    let ca = std::env::temp_dir().join("spine-no-such-ca.crt");
    let forms = [
        format!("postgres://spine:Pw0rd-x1@127.0.0.1:{port}/db"),
        format!("postgresql://spine:Pw0rd-x1@127.0.0.1:{port}/db?sslmode=require"),
        format!("postgres://spine@127.0.0.1:{port}/db?password=Pw0rd-x1"),
        format!("postgres://spine:Pw0rd%2Dx1@127.0.0.1:{port}/db?sslmode=disable"),
        format!("host=127.0.0.1 port={port} user=spine password=Pw0rd-x1 dbname=db"),
        format!("host=127.0.0.1 port={port} user=spine password='Pw0rd-x1 x' dbname=db"),
        // Refused before connecting: the root file does not exist.
        format!(
            "postgres://spine:Pw0rd-x1@127.0.0.1:{port}/db?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ),
        // Refused while parsing: an unquoted password with a space.
        format!("host=127.0.0.1 port={port} user=spine password=Pw0rd-x1 x dbname=db"),
    ];
    for url in &forms {
        let out = worker()
            .arg("check")
            .env("DATABASE_URL", url)
            .env("NATS_URL", "nats://127.0.0.1:1")
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "{url}: {stdout}{stderr}");
        for text in [&stdout, &stderr] {
            assert!(!text.contains("Pw0rd"), "{url} leaked: {text}");
        }
        assert!(
            stderr.contains("DATABASE_URL")
                || stderr.contains(&format!("postgres://spine@127.0.0.1:{port}/db")),
            "{url}: the error names neither the setting nor the database: {stderr}"
        );
    }

    // The running worker retries and logs; a few seconds of its logs at debug.
    let (http, url) = (spine_tests::proc::free_port(), &forms[4]);
    let mut child = worker()
        .arg("run")
        .env("DATABASE_URL", url)
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("SPINE_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        logs.contains(&format!("postgres://spine@127.0.0.1:{port}/db")),
        "the worker's logs name the database: {logs}"
    );
    assert!(!logs.contains("Pw0rd"), "leaked: {logs}");
}
