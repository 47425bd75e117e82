//! Background processes of the dev stack: started detached with a pid file, checked
//! by pid *and* program name (a stale pid file after a reboot may name another
//! process), stopped with SIGTERM and, if they linger, SIGKILL.

use anyhow::{bail, Context, Result};
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Pid from `pid_file` when that process is alive and its command line mentions `program`.
pub fn running_pid(pid_file: &Path, program: &str) -> Option<u32> {
    let pid: u32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains(program)
        .then_some(pid)
}

/// Starts `cmd` detached (own process group, so Ctrl-C on xtask does not reach it),
/// output appended to `log`, pid written to `pid_file`.
pub fn spawn(mut cmd: Command, log: &Path, pid_file: &Path) -> Result<u32> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log {}", log.display()))?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let pid = child.id();
    fs::write(pid_file, pid.to_string())?;
    Ok(pid)
}

/// Waits until something accepts TCP connections on `port` of loopback.
pub fn wait_for_port(port: u16, what: &str, timeout: Duration) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not listen on 127.0.0.1:{port} within {timeout:?}")
}

/// True when something already listens on the port (someone else's server, or ours).
pub fn port_in_use(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Stops the process named by `pid_file`; returns whether one was running.
pub fn stop(pid_file: &Path, program: &str) -> Result<bool> {
    let Some(pid) = running_pid(pid_file, program) else {
        let _ = fs::remove_file(pid_file);
        return Ok(false);
    };
    signal(pid, "TERM")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if Path::new(&format!("/proc/{pid}")).exists() {
        signal(pid, "KILL")?;
    }
    fs::remove_file(pid_file).ok();
    Ok(true)
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    // The process may have exited between the check and the signal: not an error.
    if !status.success() && Path::new(&format!("/proc/{pid}")).exists() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}
