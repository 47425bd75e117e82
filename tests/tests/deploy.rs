//! `deploy/`'s systemd units and environment file are what the processes accept:
//! `systemd-analyze verify` passes each unit (with its binary pointed at this
//! build's), each `ExecStart` command line parses (`--help` after it exits 0), and
//! every variable of `spine.env.example` is documented in docs/configuration.md.

use spine_tests::proc::cargo_bin;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("deploy")
}

fn units() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "service"))
        .collect();
    units.sort();
    assert!(units.len() >= 3, "{units:?}");
    units
}

/// The program (a name under /usr/local/bin) and the arguments of `ExecStart=`.
fn exec_start(unit: &str) -> (String, Vec<String>) {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut words = line.split_whitespace();
    let program = words.next().unwrap();
    let name = program
        .strip_prefix("/usr/local/bin/")
        .unwrap_or_else(|| panic!("{program}: install the binaries into /usr/local/bin"));
    (name.to_string(), words.map(String::from).collect())
}

#[test]
fn units_verify_and_start_commands_parse() {
    let tmp = spine_tests::proc::tempdir::TempDir::new();
    for path in units() {
        let unit = std::fs::read_to_string(&path).unwrap();
        let (name, args) = exec_start(&unit);
        let binary = cargo_bin(&name);
        let help = Command::new(&binary)
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            help.status.success(),
            "{} {args:?} --help: {}",
            binary.display(),
            String::from_utf8_lossy(&help.stderr)
        );
        // What verify needs on this machine: the binary where it is, a user that
        // exists, the environment file optional.
        let local = unit
            .replace(&format!("/usr/local/bin/{name}"), binary.to_str().unwrap())
            .replace("User=spine", "User=postgres")
            .replace("Group=spine", "Group=postgres")
            .replace("EnvironmentFile=/", "EnvironmentFile=-/");
        let copy = tmp.path().join(path.file_name().unwrap());
        std::fs::write(&copy, local).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("systemd-analyze (cargo xtask setup installs systemd)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", path.display());
        assert!(
            !stderr.contains("Unknown") && !stderr.contains("ignoring"),
            "{}: {stderr}",
            path.display()
        );
    }
}

#[test]
fn the_example_environment_is_documented() {
    let example = std::fs::read_to_string(deploy_dir().join("spine.env.example")).unwrap();
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("docs/configuration.md"),
    )
    .unwrap();
    let names: Vec<&str> = example
        .lines()
        .map(|l| l.trim_start_matches("# ").trim())
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        assert!(
            docs.contains(&format!("`{name}`")),
            "{name} (deploy/spine.env.example) is not in docs/configuration.md"
        );
    }
}
