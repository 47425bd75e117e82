//! Running external programs: echo what runs, fail with its status, time slow steps.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

/// Prints a step header now and its duration when dropped, so slow steps show progress.
pub struct Step {
    name: String,
    started: Instant,
}

pub fn step(name: impl Into<String>) -> Step {
    let name = name.into();
    println!("==> {name}");
    Step {
        name,
        started: Instant::now(),
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            println!(
                "    {} ({:.1}s)",
                self.name,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Prints a one-line "already there" message for a skipped step.
pub fn skip(what: &str) {
    println!("==> {what}: present, skipped");
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with inherited stdio; an exit status other than 0 is an error.
pub fn exec(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    println!("    $ {what}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed with {status}");
    }
    Ok(())
}

/// Runs a command quietly and returns its stdout; on failure the error carries stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{what}`"))?;
    if !out.status.success() {
        bail!(
            "`{what}` failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when the command can be started and exits 0 (used for presence checks).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Finds a program on PATH, plus the sbin directories root's PATH may lack
/// (Debian installs `nats-server` into /usr/sbin).
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(Into::into))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn current_user() -> &'static str {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        output(Command::new("id").arg("-un"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

pub fn is_root() -> bool {
    current_user() == "root"
}

/// A command that runs as root: directly when we are root, through sudo otherwise.
pub fn as_root(program: impl AsRef<OsStr>) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg("--").arg(program);
        c
    }
}

/// A command that runs as the `postgres` OS user: initdb refuses to run as root,
/// and the cluster's files must belong to the user that runs the server.
pub fn as_postgres(program: impl AsRef<OsStr>) -> Command {
    if current_user() == "postgres" {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    }
}
