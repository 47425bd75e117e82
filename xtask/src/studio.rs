//! Spine Studio (`studio/`): checks that the committed build (`studio/dist`,
//! embedded in spine-gateway) is what the lockfile's Vite makes of the sources,
//! then drives the console in Debian's Chromium with Playwright against the dev
//! stack's gateway. Screenshots land in docs/studio/.

use crate::config::Config;
use crate::proc::{exec, exec_tests, find_program, step, TestCounts};
use crate::stack;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

pub fn run(config: &Config) -> Result<TestCounts> {
    let dir = config.root.join("studio");
    let Some(npm) = find_program("npm") else {
        bail!("npm is needed for Studio's tests: run `cargo xtask setup`");
    };
    {
        let _s = step("npm ci (studio, from its lockfile)");
        exec(
            Command::new(&npm)
                .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
                .current_dir(&dir),
        )?;
    }
    check_build(&dir)?;
    if !Path::new(CHROMIUM).exists() {
        bail!("{CHROMIUM} is missing: `cargo xtask setup` installs Debian's chromium");
    }
    let _s = step("studio suite (Playwright, headless Chromium)");
    let mut cmd = Command::new("node");
    cmd.args([
        // supabase-js (the tests set up data with it) needs a WebSocket: Node 20 has
        // one behind this flag.
        "--experimental-websocket",
        "--test",
        "--test-concurrency=1",
        "--test-reporter=tap",
        "tests/",
    ])
    .current_dir(&dir)
    .env("CHROMIUM", CHROMIUM)
    .env("STUDIO_SCREENSHOTS", config.root.join("docs/studio"))
    // The overview test runs a relay of its own (built by the workspace tests).
    .env(
        "SPINE_WORKER_BIN",
        config.root.join("target/debug/spine-worker"),
    );
    for (k, v) in stack::env_vars(config)? {
        cmd.env(k, v);
    }
    exec_tests(&mut cmd)
}

/// Builds the console into a scratch directory and compares it, file by file,
/// with the committed `dist/`: the binary embeds `dist/`, so a source change
/// without a rebuild would ship the old console.
fn check_build(dir: &Path) -> Result<()> {
    let _s = step("studio: the committed dist/ is a fresh build");
    let scratch = std::env::temp_dir().join(format!("spine-studio-{}", std::process::id()));
    exec(
        Command::new("npx")
            .args(["vite", "build", "--logLevel", "warn", "--outDir"])
            .arg(&scratch)
            .current_dir(dir),
    )?;
    let differences = compare(&scratch, &dir.join("dist"))?;
    let _ = std::fs::remove_dir_all(&scratch);
    if !differences.is_empty() {
        bail!(
            "studio/dist differs from a fresh build ({}): run `npm run build` in studio/ and commit dist/",
            differences.join(", ")
        );
    }
    Ok(())
}

/// Relative paths that differ between two trees (missing on either side, or
/// other bytes).
fn compare(fresh: &Path, committed: &Path) -> Result<Vec<String>> {
    let list = |root: &Path| -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in
                std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?
            {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push(path.strip_prefix(root)?.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    };
    let (a, b) = (list(fresh)?, list(committed).unwrap_or_default());
    let mut differences: Vec<String> = a
        .iter()
        .filter(|p| !b.contains(p))
        .map(|p| format!("{p} missing"))
        .collect();
    differences.extend(
        b.iter()
            .filter(|p| !a.contains(p))
            .map(|p| format!("{p} stale")),
    );
    for p in a.iter().filter(|p| b.contains(p)) {
        if std::fs::read(fresh.join(p))? != std::fs::read(committed.join(p))? {
            differences.push(format!("{p} differs"));
        }
    }
    Ok(differences)
}
