//! The command lines of `spine-worker` and `spine-functions` as a user meets them:
//! `--help`, `--version`, settings from the environment and their errors, and
//! docs/configuration.md listing every variable `--help` shows. None of these
//! needs the dev stack.

use clap::CommandFactory;
use std::collections::BTreeSet;
use std::process::Command;

fn worker(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spine-worker"));
    cmd.args(args);
    cmd
}

fn output(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every environment variable a command (with its subcommands) reads.
fn variables(cmd: &clap::Command) -> BTreeSet<String> {
    let mut vars: BTreeSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for sub in cmd.get_subcommands() {
        vars.extend(variables(sub));
    }
    vars
}

/// The `[env: NAME` markers of a `--help` text.
fn help_variables(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// docs/configuration.md names (in backquotes) every variable that the `--help`
/// of spine-worker and of spine-functions shows: a setting added without its
/// documentation fails here.
#[test]
fn the_configuration_page_lists_every_variable() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .unwrap();
    let (_, help, _) = output(&mut worker(&["--help"]));
    let worker_vars = variables(&spine_worker::config::Cli::command());
    assert_eq!(
        help_variables(&help),
        worker_vars,
        "--help shows what clap reads"
    );
    let functions_vars = variables(&spine_functions::config::Cli::command());
    assert!(worker_vars.len() > 20 && functions_vars.len() > 8);
    let missing: Vec<_> = worker_vars
        .iter()
        .chain(&functions_vars)
        .filter(|v| !docs.contains(&format!("`{v}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not list {missing:?}"
    );
}

/// `--help` lists the commands and every setting with its variable and default,
/// without the values of secrets; `--version` prints the version.
#[test]
fn help_and_version() {
    let (code, help, _) = output(
        worker(&["--help"])
            .env("DATABASE_URL", "postgres://spine:Pw0rd-x1@db/spine")
            .env("NATS_URL", "nats://spine:Pw0rd-x1@nats:4222")
            .env("MEILI_MASTER_KEY", "Pw0rd-x1")
            .env("SPINE_RELAY_STREAM", "EVENTS"),
    );
    assert_eq!(code, Some(0));
    for text in [
        "check",
        "reindex",
        "check-index",
        "--relay-batch <N>",
        "[env: SPINE_RELAY_BATCH=]",
        "[default: 1000]",
        "[env: DATABASE_URL]",
        "[env: SPINE_RELAY_STREAM=EVENTS]",
    ] {
        assert!(help.contains(text), "{text:?} missing from:\n{help}");
    }
    assert!(!help.contains("Pw0rd"), "--help shows a secret:\n{help}");
    let (code, version, _) = output(&mut worker(&["--version"]));
    assert_eq!(code, Some(0));
    assert_eq!(
        version.trim(),
        format!("spine-worker {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Bad values are refused before anything connects (exit 2), naming the flag and,
/// when it came from there, the environment variable; a flag beats the variable.
#[test]
fn bad_settings_are_clear_errors() {
    let (code, _, stderr) = output(worker(&["check"]).env("SPINE_RELAY_BATCH", "lots"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 'lots' for '--relay-batch <N>'")
            && stderr.contains("SPINE_RELAY_BATCH"),
        "{stderr}"
    );
    let (code, _, stderr) = output(worker(&["check"]).env("SPINE_JOB_CONCURRENCY", "0"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SPINE_JOB_CONCURRENCY"), "{stderr}");
    let (code, _, stderr) = output(worker(&["check"]).env("SPINE_RELAY_SINK", "Bad"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("lowercase letters, digits and _") && stderr.contains("SPINE_RELAY_SINK"),
        "{stderr}"
    );
    let (code, _, stderr) = output(&mut worker(&["reindex"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("<KIND>"), "{stderr}");

    // The URLs are checked after clap, without repeating their secrets (exit 1).
    let (code, _, stderr) =
        output(worker(&["check"]).env("NATS_URL", "http://spine:Pw0rd-x1@nats"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("NATS_URL") && !stderr.contains("Pw0rd"),
        "{stderr}"
    );

    // A flag wins over its variable: the bad variable is never read.
    let (_, _, stderr) = output(
        worker(&[
            "--relay-batch",
            "5",
            "--nats-url",
            "nats://127.0.0.1:1",
            "check",
        ])
        .env("SPINE_RELAY_BATCH", "lots")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/spine"),
    );
    assert!(!stderr.contains("SPINE_RELAY_BATCH"), "{stderr}");
    assert!(stderr.contains("nats: FAILED"), "{stderr}");
}
