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
/// `cargo build --quiet -p …` of the workspace at `root`, as one step: the
/// binaries a command then starts from target/debug.
pub fn cargo_build(root: &std::path::Path, packages: &[&str]) -> Result<()> {
    let _s = step(format!("cargo build -p {}", packages.join(" -p ")));
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--quiet"]).current_dir(root);
    for p in packages {
        cmd.args(["-p", p]);
    }
    exec(&mut cmd)
}

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

/// Totals of the `test result:` lines a test runner printed.
#[derive(Debug, Default, Clone, Copy)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
}

impl std::ops::AddAssign for TestCounts {
    fn add_assign(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Parses libtest's summary, `test result: ok. 7 passed; 0 failed; …`, and the
/// totals of node's TAP reporter, `# pass 9` and `# fail 0`.
pub fn parse_test_result(line: &str) -> Option<TestCounts> {
    if let Some(n) = line.strip_prefix("# pass ") {
        return Some(TestCounts {
            passed: n.trim().parse().ok()?,
            failed: 0,
        });
    }
    if let Some(n) = line.strip_prefix("# fail ") {
        return Some(TestCounts {
            passed: 0,
            failed: n.trim().parse().ok()?,
        });
    }
    let rest = line.trim().strip_prefix("test result: ")?;
    let number_before = |word: &str| -> Option<u64> {
        rest.split(';').find_map(|part| {
            part.trim()
                .strip_suffix(word)?
                .split_whitespace()
                .last()?
                .parse()
                .ok()
        })
    };
    Some(TestCounts {
        passed: number_before(" passed")?,
        failed: number_before(" failed")?,
    })
}

/// Runs a test command, echoing its output line by line and adding up the
/// `test result:` lines on stdout and stderr (cargo pgrx test reports on stderr);
/// a failing exit status is still an error.
pub fn exec_tests(cmd: &mut Command) -> Result<TestCounts> {
    use std::io::{BufRead, BufReader, Read};
    let what = describe(cmd);
    println!("    $ {what}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{what}`"))?;
    fn forward(stream: impl Read, to_stderr: bool) -> TestCounts {
        let mut counts = TestCounts::default();
        for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
            if to_stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
            if let Some(c) = parse_test_result(&line) {
                counts += c;
            }
        }
        counts
    }
    let stderr = child.stderr.take().context("no stderr")?;
    let from_stderr = std::thread::spawn(move || forward(stderr, true));
    let mut counts = forward(child.stdout.take().context("no stdout")?, false);
    counts += from_stderr.join().unwrap_or_default();
    let status = child.wait()?;
    if !status.success() {
        bail!("`{what}` failed with {status}");
    }
    println!(
        "    {} passed, {} failed in `{what}`",
        counts.passed, counts.failed
    );
    Ok(counts)
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

#[cfg(test)]
mod tests {
    use super::parse_test_result;

    #[test]
    fn parses_libtest_summary() {
        let c = parse_test_result(
            "test result: FAILED. 2 passed; 5 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.27s",
        )
        .unwrap();
        assert_eq!((c.passed, c.failed), (2, 5));
        assert!(parse_test_result("test foo ... ok").is_none());
        let tap = parse_test_result("# pass 9").unwrap();
        assert_eq!((tap.passed, tap.failed), (9, 0));
        let tap = parse_test_result("# fail 2").unwrap();
        assert_eq!((tap.passed, tap.failed), (0, 2));
        assert!(parse_test_result("# Subtest: x").is_none());
    }
}
