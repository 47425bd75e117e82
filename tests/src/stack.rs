//! The dev stack's Postgres, stopped and started under a test (the tests that do
//! this have test binaries of their own: nothing else may run meanwhile).

/// Restarts the stack's Postgres (`pg_ctl restart -m fast`) as the postgres user.
pub fn restart_postgres() {
    pg_ctl(&["restart", "-m", "fast"]);
}

/// Stops the stack's Postgres (fast: sessions are cut off) until [`start_postgres`].
pub fn stop_postgres() {
    pg_ctl(&["stop", "-m", "fast"]);
}

pub fn start_postgres() {
    pg_ctl(&["start"]);
}

/// pg_ctl on the stack's cluster (its settings are in postgresql.conf; the server
/// log goes where `cargo xtask up` keeps it).
fn pg_ctl(action: &[&str]) {
    let data = std::env::var("SPINE_PG_DATA").expect("SPINE_PG_DATA: run via `cargo xtask test`");
    let bindir =
        std::env::var("SPINE_PG_BINDIR").expect("SPINE_PG_BINDIR: run via `cargo xtask test`");
    let log = std::path::Path::new(&data).with_file_name("postgres.log");
    let status = std::process::Command::new("sudo")
        .args(["-u", "postgres", "--"])
        .arg(format!("{bindir}/pg_ctl"))
        .args(action)
        .args(["-w", "-D", &data, "-l"])
        .arg(log)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("pg_ctl");
    assert!(status.success(), "pg_ctl {action:?} failed");
}

/// Held for the whole of a test that stops or restarts Postgres: the tests of one
/// binary run concurrently, and a restart would cut another such test's sessions
/// in the middle of what it checks.
pub static POSTGRES_RESTARTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
