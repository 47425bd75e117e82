//! A Postgres cluster of a test's own, on an installation of its own: the system's
//! PostgreSQL 15 with the `spine` extension's files chosen by the test. The upgrade
//! test installs one release's files, then replaces them with the next one's, the
//! way a package upgrade does, without touching the installation the dev stack
//! (and every other test) uses meanwhile.
//!
//! The installation mirrors the system's layout under a new root (`<root>/usr/…`).
//! Postgres finds its share and library directories relative to its executable
//! (after resolving symlinks), so the programs are copied; every other file is a
//! symlink to the system's, except the extension's own.

use crate::daemons::Message;
use crate::proc::free_port;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tokio_postgres::Client;

/// The programs a cluster needs; each finds the others in its own directory.
const PROGRAMS: &[&str] = &["postgres", "initdb", "pg_ctl", "pg_config"];

/// Files of these names belong to the extension and are the test's to install.
fn is_spine_file(name: &str) -> bool {
    name == "spine.so" || name == "spine.control" || name.starts_with("spine--")
}

pub struct Installation {
    root: PathBuf,
    pub bindir: PathBuf,
    sharedir: PathBuf,
    pkglibdir: PathBuf,
}

impl Installation {
    /// A copy of the system's installation (`SPINE_PG_BINDIR`) under `root`,
    /// without any of the extension's files.
    pub fn new(root: &Path) -> Self {
        let system_bindir = PathBuf::from(
            std::env::var("SPINE_PG_BINDIR").expect("SPINE_PG_BINDIR: run via `cargo xtask test`"),
        );
        let ask = |flag: &str| -> PathBuf {
            let out = Command::new(system_bindir.join("pg_config"))
                .arg(flag)
                .output()
                .expect("run pg_config");
            assert!(out.status.success(), "pg_config {flag}");
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        };
        let (system_share, system_lib) = (ask("--sharedir"), ask("--pkglibdir"));
        let under = |p: &Path| root.join(p.strip_prefix("/").unwrap());
        let inst = Installation {
            root: root.to_path_buf(),
            bindir: under(&system_bindir),
            sharedir: under(&system_share),
            pkglibdir: under(&system_lib),
        };
        fs::create_dir_all(&inst.bindir).unwrap();
        for program in PROGRAMS {
            fs::copy(system_bindir.join(program), inst.bindir.join(program)).unwrap();
        }
        mirror(&system_lib, &inst.pkglibdir);
        mirror(&system_share, &inst.sharedir);
        let system_ext = system_share.join("extension");
        let ext = inst.sharedir.join("extension");
        fs::remove_file(&ext).unwrap();
        mirror(&system_ext, &ext);
        // The copy must place its share directory where we think it does.
        let out = Command::new(inst.bindir.join("pg_config"))
            .arg("--sharedir")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            inst.sharedir.to_str().unwrap(),
            "the copied installation is not relocatable as expected"
        );
        inst
    }

    /// Replaces the extension's files with those under `package` (a `cargo pgrx
    /// package` or install tree: `spine.so`, `spine.control`, `spine--*.sql`, found
    /// wherever they are), each by an atomic rename as a package manager does: a
    /// backend that has the old library mapped keeps it.
    pub fn install_extension(&self, files: &[PathBuf]) {
        for old in fs::read_dir(self.sharedir.join("extension")).unwrap() {
            let old = old.unwrap();
            if is_spine_file(&old.file_name().to_string_lossy()) {
                fs::remove_file(old.path()).unwrap();
            }
        }
        let mut library = false;
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                is_spine_file(&name),
                "{} is not the extension's",
                file.display()
            );
            let dir = if name.ends_with(".so") {
                library = true;
                &self.pkglibdir
            } else {
                &self.sharedir.join("extension")
            };
            let tmp = dir.join(format!(".{name}.new"));
            fs::copy(file, &tmp).unwrap();
            fs::rename(&tmp, dir.join(&name)).unwrap();
        }
        assert!(library, "no spine.so among {files:?}");
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Symlinks every entry of `from` into `to`, except the extension's files.
fn mirror(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if !is_spine_file(&entry.file_name().to_string_lossy()) {
            symlink(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The extension's files under `dir`, at any depth: what a package holds.
pub fn extension_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if is_spine_file(&entry.file_name().to_string_lossy()) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The extension's files of the system's installation: what `cargo xtask up`
/// installed from this tree.
pub fn system_extension_files() -> Vec<PathBuf> {
    let bindir = PathBuf::from(std::env::var("SPINE_PG_BINDIR").expect("SPINE_PG_BINDIR"));
    let ask = |flag: &str| -> PathBuf {
        let out = Command::new(bindir.join("pg_config"))
            .arg(flag)
            .output()
            .unwrap();
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    };
    let mut files = vec![ask("--pkglibdir").join("spine.so")];
    for entry in fs::read_dir(ask("--sharedir").join("extension")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_spine_file(&name) {
            files.push(entry.path());
        }
    }
    files.sort();
    files
}

/// A cluster of an [`Installation`], run as the `postgres` OS user on a free
/// loopback port, with trust authentication and pg_cron preloaded for database
/// `spine`. Stopped (immediately) on drop.
pub struct Cluster {
    bindir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
}

impl Cluster {
    pub fn init(inst: &Installation, name: &str) -> Self {
        let dir = inst.root().join(name);
        let data = dir.join("data");
        fs::create_dir_all(&dir).unwrap();
        let key = dir.join("vault.key");
        fs::write(
            &key,
            format!("1:{}\n", "ab".repeat(32)), // a test key: this cluster is thrown away
        )
        .unwrap();
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir));
        run(Command::new("chmod").arg("600").arg(&key));
        // Every directory above must be traversable by postgres.
        run(as_postgres(inst.bindir.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync", "--no-instructions"]));
        let port = free_port();
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{dir}'\n\
             shared_preload_libraries = 'pg_cron'\ncron.database_name = 'spine'\n\
             spine.vault_key_file = '{key}'\nfsync = off\nlog_min_messages = warning\n",
            dir = dir.display(),
            key = key.display(),
        );
        let conf = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).unwrap();
        text.push_str(&settings);
        fs::write(&conf, text).unwrap();
        let cluster = Cluster {
            bindir: inst.bindir.clone(),
            log: dir.join("postgres.log"),
            data,
            port,
        };
        cluster.pg_ctl(&["start"]);
        cluster
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast"]);
    }

    /// The server's log so far, for a failure message.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pg_ctl(&self, action: &[&str]) {
        run(as_postgres(self.bindir.join("pg_ctl"))
            .args(action)
            .args(["-w", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(self.bindir.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// psql, stopping at the first error; its stdout.
pub fn psql(url: &str, args: &[&str]) -> String {
    let bindir = std::env::var("SPINE_PG_BINDIR").expect("SPINE_PG_BINDIR");
    let out = Command::new(Path::new(&bindir).join("psql"))
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url])
        .args(args)
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs each migration of `dir` not in `done`, in name order, in its own
/// transaction (as `supabase db push` and `cargo xtask up` do); their names.
pub fn migrate(url: &str, dir: &Path, done: &BTreeSet<String>) -> BTreeSet<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    let mut applied = BTreeSet::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if !done.contains(&name) {
            psql(url, &["--single-transaction", "-f", file.to_str().unwrap()]);
        }
        applied.insert(name);
    }
    pause_cron(url);
    applied
}

/// Pauses every pg_cron schedule of the database at `url`: a test's rows must
/// not change behind its back (the audit anchor emits an event every minute).
/// pg_cron 1.4 has no switch for the whole launcher, and `cron.max_running_jobs
/// = 0` means one job at a time, not none (pg_cron.c raises it to 1).
pub fn pause_cron(url: &str) {
    psql(
        url,
        &["-c", "UPDATE cron.job SET active = false WHERE active"],
    );
}

/// A new cluster on `inst` with database `spine`: Spine's migrations from
/// `migrations`, then each of `then` (SQL files). pg_cron runs no job
/// ([`pause_cron`]): a test's rows must not change behind its back.
pub fn new_database(
    inst: &Installation,
    name: &str,
    migrations: &Path,
    then: &[PathBuf],
) -> (Cluster, BTreeSet<String>) {
    let cluster = Cluster::init(inst, name);
    psql(&cluster.url("postgres"), &["-c", "CREATE DATABASE spine"]);
    let url = cluster.url("spine");
    let applied = migrate(&url, migrations, &BTreeSet::new());
    for file in then {
        psql(&url, &["-f", file.to_str().unwrap()]);
    }
    pause_cron(&url);
    (cluster, applied)
}

/// Every user table (schema-qualified) with its columns now.
pub async fn tables(db: &Client) -> BTreeMap<String, Vec<String>> {
    let rows = db
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), \
                    array_agg(quote_ident(a.attname) ORDER BY a.attnum) \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
              WHERE c.relkind IN ('r', 'p') \
                AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
                AND (n.nspname, c.relname) <> ('cron', 'job_run_details') \
              GROUP BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Each table's row count and a digest of its rows, over the given columns (for
/// the upgrade test, those it had before: a later release may add some).
pub async fn contents(
    db: &Client,
    tables: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, (i64, String)> {
    let mut out = BTreeMap::new();
    for (table, columns) in tables {
        let row = db
            .query_one(
                &format!(
                    "SELECT count(*), md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '')) \
                       FROM (SELECT {} FROM {table}) r",
                    columns.join(", ")
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("reading {table}: {e:?}"));
        out.insert(table.clone(), (row.get(0), row.get(1)));
    }
    out
}

/// Waits (up to 60 s) until `sink` of the database at `url` exists and has
/// nothing left to deliver.
pub async fn sink_drained(url: &str, sink: &str) {
    crate::proc::wait_until(
        "the relay's sink is drained",
        std::time::Duration::from_secs(60),
        || async move {
            let db = crate::connect_to(url).await.unwrap();
            db.query_opt("SELECT 1 FROM spine.sink_status WHERE name = $1", &[&sink])
                .await
                .unwrap()
                .is_some()
                && crate::sink_status(&db, sink).await.backlog == 0
        },
    )
    .await;
}

/// The relay's promise after whatever a test did to the database: stream `SPINE`
/// of `nats` holds each event of the outbox once, in commit order.
pub async fn assert_outbox_delivered_once_in_order(db: &Client, nats: &crate::daemons::Nats) {
    let outbox: Vec<uuid::Uuid> =
        crate::column(db, "SELECT id FROM spine.events_after(0, 0, 1000000)", &[]).await;
    assert_stream_holds(nats, &outbox).await;
}

/// The events `sink` of `db` has delivered (those up to its cursor), in commit order.
pub async fn delivered_by(db: &Client, sink: &str) -> Vec<uuid::Uuid> {
    crate::column(
        db,
        "SELECT e.id FROM spine.events_after(0, 0, 1000000) e, spine.sinks s \
          WHERE s.name = $1 AND (e.commit_seq, e.seq) <= (s.cursor_commit_seq, s.cursor_seq)",
        &[&sink],
    )
    .await
}

/// Stream `SPINE` of `nats` holds exactly `expected` (event ids), each once, in
/// that order.
pub async fn assert_stream_holds(nats: &crate::daemons::Nats, expected: &[uuid::Uuid]) {
    let messages = nats.read_all("SPINE").await;
    let delivered: Vec<uuid::Uuid> = messages
        .iter()
        .map(|(_, id, _)| id.parse().expect("Nats-Msg-Id is the event's id"))
        .collect();
    let strays: Vec<&Message> = messages
        .iter()
        .filter(|(_, id, _)| !expected.iter().any(|e| e.to_string() == *id))
        .collect();
    assert_eq!(
        delivered.len(),
        expected.len(),
        "every event once: no loss, no duplicate; not expected: {strays:#?}"
    );
    assert_eq!(delivered, expected, "in commit order");
}

/// The repository's root (tests read its migrations, SQL fixtures, deploy files).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn as_postgres(program: PathBuf) -> Command {
    let mut c = Command::new("sudo");
    c.args(["-u", "postgres", "--"]).arg(program);
    c
}

fn run(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().expect("start a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
