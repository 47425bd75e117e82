//! `cargo xtask test`: the full suite, the same on a laptop and in CI.
//!
//! 1. setup (idempotent) so a fresh machine can run the rest;
//! 2. `cargo fmt --check`, the extension's module layers ([`crate::layers`]),
//!    `cargo deny` (licences and bans; advisories with a local RustSec copy) and
//!    `cargo clippy --all-targets -D warnings`;
//! 3. `cargo pgrx test pg15`: `#[pg_test]`s inside a throwaway cluster run as the
//!    `postgres` user (initdb refuses root);
//! 4. `up`, then the workspace's tests (unit and integration) against that stack.

use crate::config::Config;
use crate::proc::{as_root, exec, exec_tests, step, TestCounts};
use crate::{setup, stack};
use anyhow::Result;
use std::process::Command;

/// Licences and bans on every run (`deny.toml`); advisories when a local copy of
/// the RustSec database is at `~/.cargo/advisory-db` (CI has no internet, and
/// cargo-deny would otherwise fetch it).
fn deny(config: &Config) -> Result<()> {
    {
        // cargo deny reads the metadata of every package in Cargo.lock, for every
        // platform, and runs offline: fetch them first (cached after the first run).
        let _s = step("cargo fetch --locked");
        exec(
            Command::new("cargo")
                .args(["fetch", "--locked"])
                .current_dir(&config.root),
        )?;
    }
    {
        let _s = step("cargo deny check licenses bans");
        exec(
            Command::new("cargo")
                .args(["deny", "--offline", "check", "licenses", "bans"])
                .current_dir(&config.root),
        )?;
    }
    let db = std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cargo/advisory-db");
    // A database is a git checkout beside cargo-deny's lock file; an interrupted
    // fetch can leave the directory with the lock only.
    let has_db = std::fs::read_dir(&db)
        .map(|entries| entries.flatten().any(|e| e.path().join(".git").exists()))
        .unwrap_or(false);
    if has_db {
        let _s = step("cargo deny check advisories (local RustSec copy)");
        exec(
            Command::new("cargo")
                .args(["deny", "--offline", "check", "advisories"])
                .current_dir(&config.root),
        )?;
    } else {
        println!(
            "SKIP cargo deny check advisories: no RustSec database at {} (CONTRIBUTING.md, \"Dependency checks\")",
            db.display()
        );
    }
    Ok(())
}

pub fn run(config: &Config) -> Result<()> {
    setup::run(config)?;
    let mut counts = TestCounts::default();
    {
        let _s = step("cargo fmt --check");
        exec(
            Command::new("cargo")
                .args(["fmt", "--all", "--check"])
                .current_dir(&config.root),
        )?;
    }
    {
        let _s = step("layers of the extension's modules");
        crate::layers::run(&config.root)?;
    }
    deny(config)?;
    {
        let _s = step("cargo clippy --all-targets -- -D warnings");
        exec(
            Command::new("cargo")
                .args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ])
                .current_dir(&config.root),
        )?;
    }
    {
        let _s = step("cargo pgrx test pg15");
        // pgrx creates one cluster per run under here, as postgres: start empty
        // (earlier runs' clusters are dead weight) and owned by postgres.
        let pgdata = crate::postgres::pg_root(config).with_file_name("pgrx-test-data");
        if pgdata.exists() {
            exec(as_root("rm").arg("-rf").arg(&pgdata))?;
        }
        exec(as_root("mkdir").arg("-p").arg(&pgdata))?;
        exec(as_root("chown").arg("postgres:postgres").arg(&pgdata))?;
        counts += exec_tests(
            Command::new("cargo")
                .args(["pgrx", "test", "pg15", "--runas", "postgres", "--pgdata"])
                .arg(&pgdata)
                .current_dir(config.root.join("extension")),
        )?;
    }
    let jsonlogic_suites = crate::jsonlogic::suites_dir(config)?;
    {
        // Printed here because the workspace run captures a test's output: the
        // per-suite table, or the SKIP line when the suites are not on the machine.
        // Not counted: the workspace run below runs it again.
        let _s = step("JsonLogic conformance suites (json-logic/compat-tables)");
        let mut cmd = Command::new("cargo");
        if let Some(dir) = &jsonlogic_suites {
            cmd.env("JSONLOGIC_COMPAT_DIR", dir);
        }
        exec(
            cmd.args([
                "test",
                "-p",
                "spine-core",
                "--test",
                "jsonlogic_compat",
                "--",
            ])
            .args(["--nocapture", "--quiet"])
            .current_dir(&config.root),
        )?;
    }
    crate::upgrade::prepare(config)?;
    stack::up(config, None)?;
    {
        let _s = step("cargo test (workspace, against the dev stack)");
        let mut cmd = Command::new("cargo");
        if let Some(dir) = &jsonlogic_suites {
            cmd.env("JSONLOGIC_COMPAT_DIR", dir);
        }
        cmd.args(["test", "--workspace", "--exclude", "spine"])
            .current_dir(&config.root);
        for (k, v) in stack::env_vars(config)? {
            cmd.env(k, v);
        }
        if !stack::env_vars(config)?
            .iter()
            .any(|(k, _)| *k == "MEILI_URL")
        {
            cmd.env_remove("MEILI_URL");
        }
        counts += exec_tests(&mut cmd)?;
    }
    counts += crate::supabase_js::run(config)?;
    counts += crate::studio::run(config)?;
    counts += crate::examples::test(config)?;
    // The plain closing line CI tools read, over every test binary of the run.
    println!(
        "\nsummary: {} passed, {} failed",
        counts.passed, counts.failed
    );
    Ok(())
}
