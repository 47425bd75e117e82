//! The previous release of the extension, built from its recorded commit, for the
//! upgrade test.
//!
//! `extension/releases.toml` names each release's commit. The newest release
//! older than this tree is exported (`git archive`, so the working tree and its
//! worktrees are untouched) into `target/upgrade/spine-<version>-<commit>/src`,
//! packaged there with `cargo pgrx package --debug` into `package/`, and its
//! `migrations/` kept beside it; the sources and the build directory are then
//! deleted. A package that exists is reused: the commit never changes.
//!
//! The test gets the directory as `SPINE_UPGRADE_FROM` and the version as
//! `SPINE_UPGRADE_FROM_VERSION`.

use crate::config::Config;
use crate::proc::{exec, output, step};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    pub version: String,
    pub commit: String,
}

#[derive(Debug, Deserialize)]
struct Releases {
    release: Vec<Release>,
}

/// The releases of `extension/releases.toml`, oldest first.
pub fn releases(root: &Path) -> Result<Vec<Release>> {
    let path = root.join("extension/releases.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

fn parse(text: &str) -> Result<Vec<Release>> {
    let releases: Releases = toml::from_str(text)?;
    for r in &releases.release {
        if r.commit.len() != 40 || !r.commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "release {}: commit must be a full 40-digit hash, not {:?}",
                r.version,
                r.commit
            );
        }
    }
    Ok(releases.release)
}

/// The release a database of this tree's version is upgraded from: the newest one
/// listed that is not this version.
pub fn previous(root: &Path) -> Result<Release> {
    let current = env!("CARGO_PKG_VERSION");
    releases(root)?
        .into_iter()
        .rev()
        .find(|r| r.version != current)
        .context("extension/releases.toml lists no release before this version")
}

/// Where the previous release's package and migrations are (or will be) kept.
pub fn cache_dir(config: &Config, release: &Release) -> PathBuf {
    config.root.join("target/upgrade").join(format!(
        "spine-{}-{}",
        release.version,
        &release.commit[..12]
    ))
}

/// Builds the previous release's package unless it is cached.
pub fn prepare(config: &Config) -> Result<()> {
    let release = previous(&config.root)?;
    let dir = cache_dir(config, &release);
    let done = dir.join("ok");
    if !done.exists() {
        build(config, &release, &dir)?;
        fs::write(&done, &release.commit)?;
    } else {
        println!(
            "==> spine {} (for the upgrade test): cached in {}",
            release.version,
            dir.display()
        );
    }
    Ok(())
}

/// The upgrade test's environment when the previous release is built (none before).
pub fn env_vars(config: &Config) -> Result<Vec<(&'static str, String)>> {
    let release = previous(&config.root)?;
    let dir = cache_dir(config, &release);
    if !dir.join("ok").exists() {
        return Ok(Vec::new());
    }
    Ok(vec![
        ("SPINE_UPGRADE_FROM", dir.display().to_string()),
        ("SPINE_UPGRADE_FROM_VERSION", release.version),
    ])
}

fn build(config: &Config, release: &Release, dir: &Path) -> Result<()> {
    let _s = step(format!(
        "build spine {} from {} (for the upgrade test; cached afterwards)",
        release.version,
        &release.commit[..12]
    ));
    let known = Command::new("git")
        .args(["cat-file", "-e"])
        .arg(format!("{}^{{commit}}", release.commit))
        .current_dir(&config.root)
        .stderr(Stdio::null())
        .status()?
        .success();
    if !known {
        bail!(
            "release {}'s commit {} is not in this clone (a shallow clone?): \
             `git fetch --unshallow` and run again",
            release.version,
            release.commit
        );
    }
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    let src = dir.join("src");
    fs::create_dir_all(&src)?;
    let archive = output(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "git archive {} | tar -x -C '{}'",
                release.commit,
                src.display()
            ))
            .current_dir(&config.root),
    );
    archive.context("exporting the release's tree")?;
    exec(
        Command::new("cargo")
            .args(["pgrx", "package", "--debug", "--pg-config"])
            .arg(&config.pg_config)
            .arg("--out-dir")
            .arg(dir.join("package"))
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .current_dir(src.join("extension")),
    )?;
    fs::rename(src.join("migrations"), dir.join("migrations"))?;
    // What the test needs is in package/ and migrations/; the sources and the
    // build (gigabytes) go.
    fs::remove_dir_all(&src)?;
    fs::remove_dir_all(dir.join("target"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_releases_parse_and_one_precedes_this_version() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let all = releases(root).unwrap();
        assert!(all.iter().any(|r| r.version == "0.1.0"));
        assert_ne!(previous(root).unwrap().version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn a_short_commit_is_refused() {
        let err = parse("[[release]]\nversion = \"0.1.0\"\ncommit = \"c22e6fc\"\n").unwrap_err();
        assert!(err.to_string().contains("40-digit"), "{err}");
    }
}
