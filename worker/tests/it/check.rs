//! `spine-worker check` against the real stack: Postgres with the extension and
//! NATS with JetStream are found; a wrong address is a failure, not a pass.

use std::process::Command;

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spine-worker"))
}

/// With the stack's settings, check reaches both and reports JetStream enabled.
#[test]
fn check_passes_against_the_stack() {
    let db = std::env::var("DATABASE_URL").expect("DATABASE_URL: run via `cargo xtask test`");
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
    assert!(stdout.contains("nats: ok (jetstream enabled)"), "{stdout}");
}

/// A NATS address nobody listens on makes check fail with a message naming it.
#[test]
fn check_fails_when_nats_is_unreachable() {
    let db = std::env::var("DATABASE_URL").expect("DATABASE_URL: run via `cargo xtask test`");
    let out = worker()
        .arg("check")
        .env("DATABASE_URL", db)
        .env("NATS_URL", "nats://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"));
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
