//! `examples/`: apps built on Spine's public surfaces. `cargo xtask example
//! <name>` brings the stack up and walks through one (its `walkthrough.mjs`,
//! printing each step); `cargo xtask test` runs every example's end-to-end test
//! (`examples/<name>/*.test.mjs` here; a Rust example's `tests/` run with the
//! workspace's). Both use the examples' own npm packages
//! (supabase-js, the NATS client), pinned by `examples/package-lock.json`.

use crate::config::Config;
use crate::proc::{cargo_build, exec, exec_tests, find_program, step, TestCounts};
use crate::stack;
use anyhow::{bail, Result};
use std::path::Path;
use std::process::Command;

/// The examples, each a directory of `examples/`.
pub const EXAMPLES: &[&str] = &[
    "agent-bridge",
    "assistant",
    "call-responder",
    "hub",
    "notes-cell",
];

/// Installs the examples' npm packages and builds the processes they start.
fn prepare(config: &Config) -> Result<()> {
    let Some(npm) = find_program("npm") else {
        bail!("node and npm are needed for the examples: run `cargo xtask setup`");
    };
    {
        let _s = step("npm ci (examples, from their lockfile)");
        exec(
            Command::new(npm)
                // The client packages ask for Node 22 and run on 20 (with
                // --experimental-websocket): no warning per package.
                .args([
                    "ci",
                    "--no-audit",
                    "--no-fund",
                    "--prefer-offline",
                    "--loglevel=error",
                ])
                .current_dir(config.root.join("examples")),
        )?;
    }
    cargo_build(
        &config.root,
        &[
            "spine-worker",
            "spine-functions",
            "spine-example-notes-cell",
            "spine-example-agent-bridge",
            "spine-example-assistant",
        ],
    )
}

/// Node with the stack's environment and the binaries the examples start.
fn node(config: &Config, dir: &Path) -> Result<Command> {
    let mut cmd = Command::new("node");
    // supabase-js needs a WebSocket for Realtime: Node 20 has one behind this flag.
    cmd.arg("--experimental-websocket").current_dir(dir);
    for (k, v) in stack::env_vars(config)? {
        cmd.env(k, v);
    }
    // The hub's page test drives Debian's Chromium (`cargo xtask setup`).
    cmd.env("CHROMIUM", "/usr/bin/chromium");
    for (var, binary) in [
        ("SPINE_WORKER_BIN", "spine-worker"),
        ("SPINE_FUNCTIONS_BIN", "spine-functions"),
        ("SPINE_NOTES_CELL_BIN", "notes-cell"),
        ("SPINE_BRIDGE_SUPERVISOR_BIN", "bridge-supervisor"),
        ("SPINE_ASSISTANT_BIN", "spine-assistant"),
    ] {
        cmd.env(var, config.root.join("target/debug").join(binary));
    }
    Ok(cmd)
}

/// `cargo xtask example <name>`: the stack, then the example's walkthrough.
pub fn walk(config: &Config, name: &str) -> Result<()> {
    stack::up(config, None)?;
    prepare(config)?;
    println!("\n================ Spine example: {name} ================");
    exec(node(config, &config.root.join("examples").join(name))?.arg("walkthrough.mjs"))
}

/// Every example's end-to-end test, against the running stack.
pub fn test(config: &Config) -> Result<TestCounts> {
    prepare(config)?;
    let mut counts = TestCounts::default();
    for name in EXAMPLES {
        let dir = config.root.join("examples").join(name);
        let has_node_tests = std::fs::read_dir(&dir)?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".test.mjs"));
        if !has_node_tests {
            continue;
        }
        let _s = step(format!("example {name}: end-to-end test (node --test)"));
        counts += exec_tests(node(config, &dir)?.args([
            "--test",
            "--test-concurrency=1",
            "--test-reporter=tap",
        ]))?;
    }
    Ok(counts)
}
