//! The dev stack's PostgreSQL 15 cluster: initdb, configuration, start and stop,
//! always as the `postgres` OS user, on loopback only.

use crate::config::{Config, DATABASE};
use crate::proc::{as_postgres, as_root, exec, output, step};
use anyhow::{Context, Result};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// Where the `postgres` user keeps the stack's cluster (and pgrx's test clusters):
/// `<dev dir>/pg` when that user can reach the dev directory, otherwise (a checkout
/// under a private home, say) a directory of its own under its home, one per
/// checkout. `SPINE_PG_ROOT` overrides both.
pub fn pg_root(config: &Config) -> PathBuf {
    if let Some(root) = &config.pg_root {
        return root.clone();
    }
    let _ = fs::create_dir_all(&config.dev_dir);
    let reachable = crate::proc::succeeds(as_postgres("test").arg("-x").arg(&config.dev_dir));
    if reachable {
        config.dev_dir.join("pg")
    } else {
        let tag = config
            .dev_dir
            .to_string_lossy()
            .bytes()
            .fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
            });
        PathBuf::from(format!("/var/lib/postgresql/spine-dev/{tag:016x}"))
    }
}

pub fn data_dir(config: &Config) -> PathBuf {
    pg_root(config).join("data")
}

fn socket_dir(config: &Config) -> PathBuf {
    pg_root(config).join("run")
}

fn log_file(config: &Config) -> PathBuf {
    pg_root(config).join("postgres.log")
}

/// Settings appended to postgresql.conf; pg_cron must be preloaded and told which
/// database holds its schedule.
fn settings(config: &Config) -> String {
    format!(
        "\n# --- written by cargo xtask up ---\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{sock}'\n\
         shared_preload_libraries = 'pg_cron'\n\
         cron.database_name = '{DATABASE}'\n\
         max_connections = 200\n\
         wal_level = logical\n\
         autovacuum_naptime = 1s\n\
         log_min_messages = warning\n",
        port = config.pg_port,
        sock = socket_dir(config).display(),
    )
}

pub fn is_running(config: &Config) -> bool {
    let pg_ctl = config.pg_bindir().join("pg_ctl");
    data_dir(config).join("PG_VERSION").exists()
        && crate::proc::succeeds(
            as_postgres(pg_ctl)
                .arg("status")
                .arg("-D")
                .arg(data_dir(config)),
        )
}

/// Creates the cluster if it does not exist and starts it if it is not running.
pub fn up(config: &Config) -> Result<()> {
    let data = data_dir(config);
    if !data.join("PG_VERSION").exists() {
        let _s = step(format!("initdb {}", data.display()));
        let pg_root = pg_root(config);
        exec(
            as_root("mkdir")
                .arg("-p")
                .arg(&data)
                .arg(socket_dir(config)),
        )?;
        exec(
            as_root("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&pg_root),
        )?;
        exec(
            as_postgres(config.pg_bindir().join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ])
                .arg("--no-instructions"),
        )?;
        append_settings(config)?;
    }
    if is_running(config) {
        println!("==> postgres: running on 127.0.0.1:{}", config.pg_port);
        ensure_vault_key(config)?;
        return ensure_tls(config);
    }
    if crate::daemon::port_in_use(config.pg_port) {
        anyhow::bail!(
            "port {} is taken by another process (another checkout's stack? `cargo xtask down` \
             there); or set SPINE_PG_PORT",
            config.pg_port
        );
    }
    {
        let _s = step(format!("start postgres on 127.0.0.1:{}", config.pg_port));
        exec(
            as_postgres(config.pg_bindir().join("pg_ctl"))
                .arg("start")
                .arg("-w")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(log_file(config)),
        )
        .with_context(|| format!("see {}", log_file(config).display()))?;
    }
    ensure_vault_key(config)?;
    ensure_tls(config)
}

/// The CA certificate that signed the server's: what a client verifying the
/// server (`sslmode=verify-full&sslrootcert=…`) trusts. `SPINE_PG_SSLROOTCERT`.
pub fn ca_file(config: &Config) -> PathBuf {
    config.dev_dir.join("tls/ca.crt")
}

/// TLS on the running cluster, set with ALTER SYSTEM and a reload so that a
/// cluster made before TLS existed gets it too: a server certificate for
/// localhost and 127.0.0.1 signed by a throwaway CA ([`crate::tls`]), its key
/// readable by `postgres` only. Plain connections keep working (pg_hba's `host`
/// lines match both). Made once; the CA file is written last, so its presence
/// means the set is complete.
fn ensure_tls(config: &Config) -> Result<()> {
    let ca = ca_file(config);
    let root = pg_root(config);
    let (cert, key) = (root.join("server.crt"), root.join("server.key"));
    let exists = |p: &PathBuf| crate::proc::succeeds(as_postgres("test").arg("-f").arg(p));
    let mut reload = false;
    if !(ca.exists() && exists(&cert) && exists(&key)) {
        let _s = step(format!(
            "TLS certificate for {} (CA {})",
            crate::tls::SERVER_NAMES.join(", "),
            ca.display()
        ));
        let certs = crate::tls::generate()?;
        let tmp_cert = config.dev_dir.join("server.crt.new");
        let tmp_key = config.dev_dir.join("server.key.new");
        fs::write(&tmp_cert, &certs.server_pem)?;
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp_key)?
                .write_all(certs.server_key_pem.as_bytes())?;
        }
        for (from, to, mode) in [(&tmp_cert, &cert, "644"), (&tmp_key, &key, "600")] {
            exec(
                as_root("install")
                    .args(["-o", "postgres", "-g", "postgres", "-m", mode])
                    .arg(from)
                    .arg(to),
            )?;
            fs::remove_file(from)?;
        }
        fs::create_dir_all(ca.parent().context("the CA file has a directory")?)?;
        fs::write(&ca, &certs.ca_pem)?;
        reload = true;
    }
    let url = config.admin_url();
    let cert = cert.to_string_lossy().into_owned();
    let key = key.to_string_lossy().into_owned();
    for (name, wanted) in [
        ("ssl_cert_file", cert.as_str()),
        ("ssl_key_file", key.as_str()),
        ("ssl", "on"),
    ] {
        if query(&url, &format!("SELECT current_setting('{name}')"))? != wanted {
            let value = wanted.replace('\'', "''");
            exec(psql(&url).args(["-c", &format!("ALTER SYSTEM SET {name} = '{value}'")]))?;
            reload = true;
        }
    }
    if reload {
        query(&url, "SELECT pg_reload_conf()")?;
    }
    // The reload is asynchronous: wait until a new session is encrypted.
    let tls_url = format!("{url}?sslmode=require");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        if matches!(query(&tls_url, sql).as_deref(), Ok("t")) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "postgres does not accept TLS connections after `ssl = on`: see {}",
                log_file(config).display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The vault's root key file of the dev stack: 32 random bytes as key version 1,
/// readable by `postgres` only, outside the data directory (keys never enter the
/// database or its backups), named by `spine.vault_key_file` in postgresql.auto.conf.
/// Created once; an existing key is kept, or the stack's secrets would be lost.
fn ensure_vault_key(config: &Config) -> Result<()> {
    let path = pg_root(config).join("vault.key");
    let exists = crate::proc::succeeds(as_postgres("test").arg("-f").arg(&path));
    if !exists {
        let _s = step(format!("vault root key {}", path.display()));
        let mut key = [0u8; 32];
        use std::io::Read;
        fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = config.dev_dir.join("vault.key.new");
        fs::write(
            &tmp,
            format!("# Spine dev stack vault keys: version:hex, newest encrypts\n1:{hex}\n"),
        )?;
        exec(
            as_root("install")
                .args(["-o", "postgres", "-g", "postgres", "-m", "600"])
                .arg(&tmp)
                .arg(&path),
        )?;
        fs::remove_file(&tmp)?;
    }
    let url = config.admin_url();
    let wanted = path.to_string_lossy().into_owned();
    let current = query(&url, "SELECT current_setting('spine.vault_key_file', true)")?;
    if current != wanted {
        // The setting is the extension's: load it so ALTER SYSTEM knows the name
        // (two commands, one session; ALTER SYSTEM refuses a transaction block).
        exec(psql(&url).args([
            "-c",
            "LOAD 'spine'",
            "-c",
            &format!("ALTER SYSTEM SET spine.vault_key_file = '{wanted}'"),
        ]))?;
        query(&url, "SELECT pg_reload_conf()")?;
    }
    Ok(())
}

/// The configuration file belongs to postgres; write it through `tee -a` as that user.
fn append_settings(config: &Config) -> Result<()> {
    let conf = data_dir(config).join("postgresql.conf");
    let tmp = config.dev_dir.join("postgresql.conf.add");
    fs::write(&tmp, settings(config))?;
    let existing = output(as_postgres("cat").arg(&conf))?;
    let combined = format!("{existing}{}", fs::read_to_string(&tmp)?);
    fs::write(&tmp, combined)?;
    exec(as_postgres("cp").arg(&tmp).arg(&conf))?;
    fs::remove_file(&tmp)?;
    Ok(())
}

/// Restarts the running cluster (pg_cron's launcher attaches to its database only
/// at server start, so a recreated database needs one).
pub fn restart(config: &Config) -> Result<()> {
    exec(
        as_postgres(config.pg_bindir().join("pg_ctl"))
            .args(["restart", "-m", "fast", "-w", "-D"])
            .arg(data_dir(config))
            .arg("-l")
            .arg(log_file(config)),
    )
}

pub fn down(config: &Config) -> Result<bool> {
    if !is_running(config) {
        return Ok(false);
    }
    exec(
        as_postgres(config.pg_bindir().join("pg_ctl"))
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(data_dir(config)),
    )?;
    Ok(true)
}

/// psql on `url`, quiet, stopping at the first error.
pub fn psql(url: &str) -> Command {
    let mut c = Command::new("psql");
    c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url]);
    c
}

/// Runs one SQL command and returns its unaligned, tuples-only output.
pub fn query(url: &str, sql: &str) -> Result<String> {
    let out = output(psql(url).args(["-tA", "-c", sql]))?;
    Ok(out.trim().to_string())
}
