//! Brings the stack's database up to date the way the Supabase CLI does: each file
//! of `migrations/` runs once, in name order, in its own transaction, and is recorded
//! in `supabase_migrations.schema_migrations`; `seed.sql` runs when the database is new.
//!
//! The dev database keeps its data across upgrades, as a user's does: when the
//! installed extension is a newer version than the database's, `ALTER EXTENSION
//! spine UPDATE` runs the release's upgrade scripts. Only a development build
//! whose SQL changed under the same version (no upgrade script can exist for it
//! yet) gets its database dropped and created again, and says so.

use crate::config::{Config, DATABASE};
use crate::postgres::{psql, query};
use crate::proc::{exec, output, step};
use anyhow::{Context, Result};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

const LEDGER: &str = "CREATE SCHEMA IF NOT EXISTS supabase_migrations; \
    CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations \
    (version text PRIMARY KEY, statements text[], name text)";

pub fn run(config: &Config) -> Result<()> {
    let fingerprint = extension_fingerprint(config)?;
    let stamp = config.dev_dir.join("spine-sql.fingerprint");
    let exists = query(
        &config.admin_url(),
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{DATABASE}'"),
    )? == "1";
    let installed = match exists {
        true => query(
            &config.database_url(),
            "SELECT extversion FROM pg_extension WHERE extname = 'spine'",
        )?,
        false => String::new(),
    };
    let version = env!("CARGO_PKG_VERSION");
    let mut same_schema = fs::read_to_string(&stamp).ok().as_deref() == Some(fingerprint.as_str());
    if !installed.is_empty() && installed != version {
        let _s = step(format!(
            "upgrade extension spine {installed} → {version} (ALTER EXTENSION spine UPDATE; data kept)"
        ));
        query(&config.database_url(), "ALTER EXTENSION spine UPDATE").with_context(|| {
            format!(
                "upgrading the dev database from spine {installed}; `cargo xtask down --clean` \
                 starts over without its data"
            )
        })?;
        fs::write(&stamp, &fingerprint)?;
        same_schema = true;
    }
    if exists && !same_schema {
        let _s = step(format!(
            "extension spine {version}'s SQL changed in this tree (a development build: no \
             upgrade script applies within a version): recreating database {DATABASE}"
        ));
        query(
            &config.admin_url(),
            &format!("DROP DATABASE {DATABASE} WITH (FORCE)"),
        )?;
    }
    let fresh = !exists || !same_schema;
    if fresh {
        query(&config.admin_url(), &format!("CREATE DATABASE {DATABASE}"))?;
        fs::write(&stamp, &fingerprint)?;
    }
    apply_migrations(config)?;
    ensure_pg_cron_attached(config)?;
    if fresh {
        let _s = step("seed.sql");
        exec(
            psql(&config.database_url())
                .arg("-f")
                .arg(config.root.join("seed.sql")),
        )?;
    }
    Ok(())
}

/// pg_cron's launcher finds `cron.database_name` only at server start: when the
/// database did not exist then, or was dropped under it, the cluster is restarted.
fn ensure_pg_cron_attached(config: &Config) -> Result<()> {
    let attached = || -> Result<bool> {
        Ok(query(
            &config.admin_url(),
            &format!(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE backend_type = 'pg_cron launcher' AND datname = '{DATABASE}'"
            ),
        )? == "1")
    };
    // A launcher that just started may not have connected yet.
    for _ in 0..10 {
        if attached()? {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _s = step("restart postgres so pg_cron attaches to the database");
    crate::postgres::restart(config)?;
    for _ in 0..50 {
        if attached()? {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!("pg_cron's launcher did not attach to database {DATABASE}; see the postgres log")
}

fn apply_migrations(config: &Config) -> Result<()> {
    let url = config.database_url();
    query(&url, LEDGER)?;
    let applied = query(
        &url,
        "SELECT string_agg(version, ' ') FROM supabase_migrations.schema_migrations",
    )?;
    let applied: Vec<&str> = applied.split_whitespace().collect();
    let mut pending = 0;
    for file in migration_files(config)? {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .context("migration file name is not UTF-8")?;
        let (version, label) = name.split_once('_').unwrap_or((name, ""));
        if applied.contains(&version) {
            continue;
        }
        pending += 1;
        let _s = step(format!("migration {name}"));
        // psql runs the file and the ledger insert in one transaction: a failed
        // migration leaves neither behind.
        exec(
            psql(&url)
                .arg("--single-transaction")
                .arg("-f")
                .arg(&file)
                .arg("-c")
                .arg(format!(
                    "INSERT INTO supabase_migrations.schema_migrations (version, name) \
                 VALUES ('{version}', '{}')",
                    label.replace('\'', "''")
                )),
        )?;
    }
    if pending == 0 {
        println!("==> migrations: up to date");
    }
    Ok(())
}

fn migration_files(config: &Config) -> Result<Vec<PathBuf>> {
    let dir = config.root.join("migrations");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    Ok(files)
}

/// Identifies the installed extension's schema: the bytes of its install script.
fn extension_fingerprint(config: &Config) -> Result<String> {
    let sharedir = output(Command::new(&config.pg_config).arg("--sharedir"))?;
    let version = env!("CARGO_PKG_VERSION");
    let script = PathBuf::from(sharedir.trim()).join(format!("extension/spine--{version}.sql"));
    let bytes = fs::read(&script)
        .with_context(|| format!("{} missing: is the extension installed?", script.display()))?;
    Ok(format!("{:016x}-{}", fnv1a(&bytes), bytes.len()))
}

/// FNV-1a: enough to notice a changed file; not a security hash.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}
