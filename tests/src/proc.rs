//! Processes a test or benchmark starts: free loopback ports, waiting for a
//! condition, child processes killed with the test (and by `kill -9` on demand).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A server process that belongs to one test, on a loopback port: started from
/// `command` (run again on restart) and waited for until the port answers;
/// SIGKILLed by `kill9` and on drop.
pub struct Daemon {
    pub port: u16,
    what: &'static str,
    startup: Duration,
    command: Box<dyn Fn(u16) -> Command + Send + Sync>,
    child: Option<Child>,
}

impl Daemon {
    pub fn start(
        what: &'static str,
        startup: Duration,
        command: impl Fn(u16) -> Command + Send + Sync + 'static,
    ) -> Self {
        let mut daemon = Daemon {
            port: free_port(),
            what,
            startup,
            command: Box::new(command),
            child: None,
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        let child = (self.command)(self.port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.what));
        self.child = Some(child);
        let deadline = Instant::now() + self.startup;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not start", self.what);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Kills a child process when dropped, however the test or benchmark ends.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory removed on drop (no extra crate for it).
pub mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("spine-test-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Default for TempDir {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A binary of this workspace's target directory, e.g. `spine-worker`: next to
/// the directory the running test executable is in (`target/<profile>/deps/…`),
/// which is where cargo puts the binaries of the package under test (the same
/// rule as assert_cmd's `cargo_bin`; cargo builds them before their tests run).
pub fn cargo_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable is in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(bin.is_file(), "{} not found: build it first", bin.display());
    bin
}
