//! Processes of Spine and of what it depends on, started for one test: a private
//! nats-server with JetStream (so a test may kill and restart it; or without
//! JetStream, with TLS, with a user and password), Meilisearch
//! when its binary is present, `spine-worker` processes, and an HTTP endpoint that
//! records what a worker delivers to it; and the job helpers the worker's tests
//! share.

use crate::database_url;
use crate::proc::{cargo_bin, free_port, tempdir, wait_until, Daemon};
use futures_util::StreamExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn nats_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .expect("nats-server not found: run `cargo xtask setup`")
}

/// A nats-server that belongs to one test: with JetStream, on plain TCP, without
/// authentication, unless [`NatsOptions`] say otherwise.
pub struct Nats {
    // Field order is drop order: the server stops before its store is removed.
    server: Daemon,
    tls: bool,
    user: Option<(String, String)>,
    /// The seed of the nkey the server accepts, when it takes only that.
    nkey_seed: Option<String>,
    verify_clients: bool,
    store: tempdir::TempDir,
}

/// How [`Nats::start_with`] starts its server.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `-js` (the default); without it the server answers no JetStream request.
    pub jetstream: bool,
    /// TLS required, with a certificate for 127.0.0.1 and localhost signed by a CA
    /// made for this server ([`Nats::ca_file`]); [`Nats::url`] is then `tls://`.
    pub tls: bool,
    /// `--user`/`--pass`: clients must send these.
    pub user: Option<(String, String)>,
    /// Only clients holding a user nkey made for this server get in
    /// ([`Nats::nkey_seed_file`]).
    pub nkey: bool,
    /// With `tls`: clients must show a certificate signed by the server's CA
    /// ([`Nats::client_cert_files`]).
    pub verify_clients: bool,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            jetstream: true,
            tls: false,
            user: None,
            nkey: false,
            verify_clients: false,
        }
    }
}

impl std::ops::Deref for Nats {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.server
    }
}

impl std::ops::DerefMut for Nats {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.server
    }
}

impl Nats {
    pub fn start() -> Self {
        Self::start_with(NatsOptions::default())
    }

    pub fn start_with(options: NatsOptions) -> Self {
        let store = tempdir::TempDir::new();
        let dir = store.path().to_path_buf();
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if options.jetstream {
            args.extend(["-js".into(), "-sd".into(), dir.clone().into()]);
        }
        if options.tls {
            write_tls_files(&dir);
            args.extend([
                "--tls".into(),
                "--tlscert".into(),
                dir.join("server.crt").into(),
            ]);
            args.extend(["--tlskey".into(), dir.join("server.key").into()]);
        }
        if let Some((user, pass)) = &options.user {
            args.extend(["--user".into(), user.into(), "--pass".into(), pass.into()]);
        }
        if options.verify_clients {
            assert!(options.tls, "verify_clients needs tls");
            args.extend([
                "--tlsverify".into(),
                "--tlscacert".into(),
                dir.join("ca.crt").into(),
            ]);
        }
        let nkey_seed = options.nkey.then(|| {
            let user = nkeys::KeyPair::new_user();
            let conf = dir.join("nkey.conf");
            let line = format!(
                "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
                user.public_key()
            );
            std::fs::write(&conf, line).unwrap();
            std::fs::write(dir.join("user.nk"), user.seed().unwrap()).unwrap();
            args.extend(["-c".into(), conf.into()]);
            user.seed().unwrap()
        });
        let server = Daemon::start("nats-server", Duration::from_secs(10), move |port| {
            let mut cmd = Command::new(nats_binary());
            cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .args(&args);
            cmd
        });
        Nats {
            server,
            tls: options.tls,
            user: options.user,
            nkey_seed,
            verify_clients: options.verify_clients,
            store,
        }
    }

    /// `nats://127.0.0.1:<port>`, or `tls://…` for a server started with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA of a TLS server's certificate (PEM), for `SSL_CERT_FILE`.
    pub fn ca_file(&self) -> PathBuf {
        assert!(self.tls, "this nats-server was started without TLS");
        self.store.path().join("ca.crt")
    }

    /// The file holding the seed of the nkey a server started with `nkey` takes.
    pub fn nkey_seed_file(&self) -> PathBuf {
        assert!(self.nkey_seed.is_some(), "this nats-server takes no nkey");
        self.store.path().join("user.nk")
    }

    /// A client certificate and key (PEM files) signed by the server's CA.
    pub fn client_cert_files(&self) -> (PathBuf, PathBuf) {
        assert!(self.tls, "this nats-server was started without TLS");
        let dir = self.store.path();
        (dir.join("client.crt"), dir.join("client.key"))
    }

    /// A JetStream context on this server, with its user, nkey, CA and client
    /// certificate when it has them.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let mut options = async_nats::ConnectOptions::new();
        if let Some((user, pass)) = &self.user {
            options = options.user_and_password(user.clone(), pass.clone());
        }
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.clone());
        }
        if self.tls {
            let _ = rustls::crypto::ring::default_provider().install_default();
            options = options.add_root_certificates(self.ca_file());
        }
        if self.verify_clients {
            let (cert, key) = self.client_cert_files();
            options = options.add_client_certificate(cert, key);
        }
        let client = options.connect(self.url()).await.expect("connect to nats");
        async_nats::jetstream::new(client)
    }

    /// Every message in `stream`, in stream order, as (subject, Nats-Msg-Id, envelope);
    /// empty while the relay has not created the stream yet.
    pub async fn read_all(&self, stream: &str) -> Vec<(String, String, serde_json::Value)> {
        read_stream(&self.jetstream().await, stream).await
    }
}

/// Every message in `stream`, in stream order, as (subject, Nats-Msg-Id,
/// envelope); empty while the stream does not exist.
pub async fn read_stream(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<(String, String, serde_json::Value)> {
    match js.get_stream(stream).await {
        Ok(_) => try_read_stream(js, stream).await.expect("read the stream"),
        Err(_) => Vec::new(),
    }
}

/// A message as the tests read it: (subject, Nats-Msg-Id, envelope).
pub type Message = (String, String, serde_json::Value);

/// [`read_stream`], failing instead of panicking (a cluster electing a leader
/// answers with errors for a while).
pub async fn try_read_stream(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> anyhow::Result<Vec<Message>> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    let mut stream = js.get_stream(stream).await?;
    let total = stream.info().await?.state.messages as usize;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the consumer closed"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let envelope = serde_json::from_slice(&msg.payload)?;
        out.push((msg.subject.to_string(), id, envelope));
    }
    Ok(out)
}

/// A CA (`ca.crt`), a certificate it signed for 127.0.0.1 and localhost
/// (`server.crt`, `server.key`) and one for a client (`client.crt`,
/// `client.key`) in `dir`; the CA's key is dropped.
fn write_tls_files(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["spine-worker".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    std::fs::write(dir.join("client.crt"), client.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
}

/// The `meilisearch` binary: `MEILI_BIN`, or on PATH. None means search tests
/// print a SKIP line (no registry ships Meilisearch; see docs/operations.md).
pub fn meili_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("MEILI_BIN") {
        return Some(bin.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("meilisearch"))
        .find(|p| p.is_file())
}

/// A Meilisearch server that belongs to one test (so it may kill and restart it).
pub struct Meili {
    pub key: String,
    server: Daemon,
    _store: tempdir::TempDir,
}

impl std::ops::Deref for Meili {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.server
    }
}

impl std::ops::DerefMut for Meili {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.server
    }
}

impl Meili {
    /// Starts one, or None (after printing a SKIP line) without a binary.
    pub fn start(test: &str) -> Option<Self> {
        let Some(bin) = meili_binary() else {
            // Straight to the process's stderr: libtest captures println!, and this
            // line must be seen in every run that skips.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIP {test}: no meilisearch binary (set MEILI_BIN or put it on PATH)"
            );
            return None;
        };
        let key = format!("test-master-key-{}", uuid::Uuid::new_v4().simple());
        let store = tempdir::TempDir::new();
        let (dir, master) = (store.path().to_path_buf(), key.clone());
        let server = Daemon::start("meilisearch", Duration::from_secs(30), move |port| {
            let mut cmd = Command::new(&bin);
            cmd.args(["--http-addr", &format!("127.0.0.1:{port}")])
                .args([
                    "--master-key",
                    &master,
                    "--no-analytics",
                    "--env",
                    "development",
                ])
                .arg("--db-path")
                .arg(dir.join("data.ms"))
                .arg("--dump-dir")
                .arg(dir.join("dumps"))
                .current_dir(&dir);
            cmd
        });
        Some(Meili {
            key,
            server,
            _store: store,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A spine-worker process relaying `sink` into `nats`.
pub struct Worker {
    child: Child,
    pub http_port: u16,
    /// Stopped with SIGTERM when dropped (see [`job_runner`]); kill -9 otherwise.
    graceful_drop: bool,
}

impl Worker {
    pub fn start(sink: &str, nats_url: &str, extra_env: &[(&str, &str)]) -> Self {
        Self::start_to(sink, nats_url, extra_env, Stdio::null())
    }

    /// [`Worker::start`] with its log (stdout) written to `log`.
    pub fn start_logging(
        sink: &str,
        nats_url: &str,
        extra_env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Self {
        let file = std::fs::File::create(log).expect("create the worker's log file");
        Self::start_to(sink, nats_url, extra_env, Stdio::from(file))
    }

    fn start_to(sink: &str, nats_url: &str, extra_env: &[(&str, &str)], stdout: Stdio) -> Self {
        let http_port = free_port();
        let mut cmd = Command::new(cargo_bin("spine-worker"));
        cmd.env("DATABASE_URL", database_url())
            .env("NATS_URL", nats_url)
            .env("SPINE_RELAY_SINK", sink)
            .env("SPINE_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env("SPINE_RELAY_POLL_MS", "200")
            // No job runner unless a test asks (job_runner): a relay worker a test
            // kills would otherwise hold leases on other tests' jobs.
            .env("SPINE_JOB_QUEUES", "")
            // No NATS services unless a test asks: its requests go to the
            // workers it started, not to every worker another test runs.
            .env("SPINE_SERVICES_SUBJECT", "")
            .env("RUST_LOG", "warn")
            // Search sync only where a test asks for it (the stack may have one).
            .env_remove("MEILI_URL")
            .env_remove("MEILI_MASTER_KEY")
            .stdout(stdout);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Worker {
            child: cmd.spawn().expect("start spine-worker"),
            http_port,
            graceful_drop: false,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (up to `timeout`) for the process to exit by itself; its status, or
    /// a panic when it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "spine-worker did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait (up to `timeout`, then SIGKILL) for the exit status.
    pub fn terminate_and_wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A handle for HTTP probes of a worker by port (no process attached).
    pub fn probe(http_port: u16) -> Probe {
        Probe { http_port }
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        Self::probe(self.http_port).get(path).await
    }
}

pub struct Probe {
    http_port: u16,
}

impl Probe {
    /// Status code and body of GET `path` on the worker's HTTP port.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.http_port))
            .await
            .ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.ok()?;
        let status = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Some((status, body))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.graceful_drop {
            self.terminate_and_wait(Duration::from_secs(5));
        } else {
            self.kill9();
        }
    }
}

/// A request a [`Hook`] received: (Idempotency-Key header, body).
pub type Received = (String, String);

/// A webhook receiver on loopback: answers the n-th request (0-based) with the
/// status and delay `respond(n)` gives, and records every request and when it
/// arrived. HTTP/1.1 with keep-alive, as a real endpoint: a client that reuses
/// its connections (the worker's does) pays no connect per request.
pub struct Hook {
    pub url: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    /// The header block of each request, in the order of `received`.
    pub heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// When each request had arrived whole, in the order of `received`.
    pub arrivals: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The value of header `name` (any case) in a header block.
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Reads one request (head and Content-Length bytes of body) from `stream`,
/// keeping what follows it in `buf`; None when the connection ends first.
async fn read_request(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, String)> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_string();
            let len: usize = header_value(&head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= pos + 4 + len {
                let body = String::from_utf8_lossy(&buf[pos + 4..pos + 4 + len]).to_string();
                buf.drain(..pos + 4 + len);
                return Some((head, body));
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

impl Hook {
    pub async fn start(respond: fn(usize) -> (u16, Duration)) -> Self {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = Default::default();
        let heads: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let arrivals: std::sync::Arc<std::sync::Mutex<Vec<Instant>>> = Default::default();
        let (log, head_log, arrival_log) = (received.clone(), heads.clone(), arrivals.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let (log, head_log, arrival_log) =
                    (log.clone(), head_log.clone(), arrival_log.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some((head, body)) = read_request(&mut stream, &mut buf).await {
                        let at = Instant::now();
                        let key = header_value(&head, "idempotency-key").unwrap_or_default();
                        let n = {
                            let mut log = log.lock().unwrap();
                            head_log.lock().unwrap().push(head);
                            arrival_log.lock().unwrap().push(at);
                            log.push((key, body));
                            log.len() - 1
                        };
                        let (status, delay) = respond(n);
                        tokio::time::sleep(delay).await;
                        // "Come back later" says when: a second.
                        let retry = if status == 429 {
                            "retry-after: 1\r\n"
                        } else {
                            ""
                        };
                        let reply =
                            format!("HTTP/1.1 {status} X\r\n{retry}content-length: 2\r\n\r\nok");
                        if stream.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Hook {
            url,
            received,
            heads,
            arrivals,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Header `name` (any case) of the n-th request.
    pub fn header(&self, n: usize, name: &str) -> Option<String> {
        header_value(self.heads.lock().unwrap().get(n)?, name)
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A worker that runs only the job queues `queues` (a `SPINE_JOB_QUEUES` list),
/// polling every 100 ms; `extra` settings come last, so they override these. The
/// relay is not under test: it points at a NATS address nobody answers. Dropped,
/// it stops gracefully (SIGTERM), releasing its leases.
pub fn job_runner(queues: &str, extra: &[(&str, &str)]) -> Worker {
    let mut env = vec![("SPINE_JOB_QUEUES", queues), ("SPINE_JOB_POLL_MS", "100")];
    env.extend_from_slice(extra);
    let mut worker = Worker::start(
        &format!("t_{}", uuid::Uuid::new_v4().simple()),
        "nats://127.0.0.1:1",
        &env,
    );
    // Tests share queues (the built-in `function` queue): a runner killed with -9
    // at its test's end would keep the leases of jobs it had just taken for
    // another test, which then waits out the lease (30 s, its whole timeout).
    // SIGTERM lets it finish or release them; crash tests call kill9() themselves.
    worker.graceful_drop = true;
    worker
}

/// Whether job `id` is in the archive as completed.
pub async fn job_completed(db: &tokio_postgres::Client, id: i64) -> bool {
    db.query_opt(
        "SELECT 1 FROM spine.jobs_archive WHERE id = $1 AND state = 'completed'",
        &[&id],
    )
    .await
    .unwrap()
    .is_some()
}

/// Waits (up to `within`) until job `id` is in the archive; its attempts.
pub async fn archived_attempts(db: &tokio_postgres::Client, id: i64, within: Duration) -> i32 {
    wait_until("job archived", within, || async {
        db.query_opt("SELECT 1 FROM spine.jobs_archive WHERE id = $1", &[&id])
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    crate::one(
        db,
        "SELECT attempts FROM spine.jobs_archive WHERE id = $1",
        &[&id],
    )
    .await
}

/// A queue of its own for one test.
pub async fn new_queue(db: &tokio_postgres::Client) -> String {
    let name = format!("q{}", uuid::Uuid::new_v4().simple());
    db.execute("SELECT spine.create_queue($1)", &[&name])
        .await
        .unwrap();
    name
}
