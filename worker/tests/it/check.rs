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
