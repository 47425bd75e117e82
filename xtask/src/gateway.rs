//! The dev stack's gateway (`spine-gateway`): built and (re)started by `up`, so
//! it always runs the code in the tree and reads the schema after migrations.
//! Its anon and service-role keys are written once to `gateway/keys.env`.

use crate::config::{Config, DEV_JWT_SECRET};
use crate::daemon;
use crate::proc::{exec, output, step};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const PROGRAM: &str = "spine-gateway";

fn dir(config: &Config) -> PathBuf {
    config.dev_dir.join("gateway")
}

fn pid_file(config: &Config) -> PathBuf {
    dir(config).join("gateway.pid")
}

fn keys_file(config: &Config) -> PathBuf {
    dir(config).join("keys.env")
}

pub fn binary(config: &Config) -> PathBuf {
    config.root.join("target/debug").join(PROGRAM)
}

pub fn url(config: &Config) -> String {
    format!("http://127.0.0.1:{}", config.gateway_port)
}

pub fn running_pid(config: &Config) -> Option<u32> {
    daemon::running_pid(&pid_file(config), PROGRAM)
}

pub fn up(config: &Config) -> Result<()> {
    {
        let _s = step("cargo build -p spine-gateway");
        exec(
            Command::new("cargo")
                .args(["build", "-p", "spine-gateway"])
                .current_dir(&config.root),
        )?;
    }
    down(config)?;
    // The stopped gateway may take a moment to close its listener.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while daemon::port_in_use(config.gateway_port) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if daemon::port_in_use(config.gateway_port) {
        anyhow::bail!(
            "port {} is taken by another process; set SPINE_GATEWAY_PORT",
            config.gateway_port
        );
    }
    std::fs::create_dir_all(dir(config))?;
    let _s = step(format!("start spine-gateway on {}", url(config)));
    let mut cmd = Command::new(binary(config));
    cmd.env("DATABASE_URL", config.database_url())
        .env("SPINE_JWT_SECRET", DEV_JWT_SECRET)
        .env(
            "SPINE_GATEWAY_ADDR",
            format!("127.0.0.1:{}", config.gateway_port),
        )
        .env("SPINE_PUBLISHABLE_KEY", PUBLISHABLE_KEY)
        .env("SPINE_SECRET_KEY", SECRET_KEY)
        // Realtime broadcasts and presence shared with other gateways.
        .env("NATS_URL", config.nats_url())
        // Functions' Supabase.ai.Session: the model the worker embeds entities with.
        .envs(crate::embedder::env_vars(config));
    // The examples' pages, and the supabase-js bundle they load (from the
    // examples' node_modules), on the API's origin.
    let examples = config.root.join("examples");
    cmd.env(
        "SPINE_SITES",
        format!(
            "/examples/hub={},/examples/vendor/supabase-js={}",
            examples.join("hub/web").display(),
            examples
                .join("node_modules/@supabase/supabase-js/dist/umd")
                .display()
        ),
    );
    // The Studio's search box connects to Meilisearch when the stack has one.
    match crate::meili::search(config) {
        crate::meili::Search::External(url) | crate::meili::Search::Managed { url, .. } => {
            cmd.env("SPINE_SEARCH_PUBLIC_URL", url);
        }
        crate::meili::Search::Off => {}
    }
    daemon::spawn(cmd, &dir(config).join("gateway.log"), &pid_file(config))?;
    daemon::wait_for_port(config.gateway_port, PROGRAM, Duration::from_secs(30))?;
    if !keys_file(config).exists() {
        let keys = output(
            Command::new(binary(config))
                .env("SPINE_JWT_SECRET", DEV_JWT_SECRET)
                .arg("keys"),
        )?;
        std::fs::write(keys_file(config), keys)?;
    }
    Ok(())
}

pub fn down(config: &Config) -> Result<bool> {
    daemon::stop(&pid_file(config), PROGRAM)
}

/// The dev stack's opaque keys (Supabase's new key format); loopback only.
pub const PUBLISHABLE_KEY: &str = "sb_publishable_spine_dev_0000000000000000";
pub const SECRET_KEY: &str = "sb_secret_spine_dev_00000000000000000000";

/// `SPINE_URL`, `SPINE_ANON_KEY`, `SPINE_SERVICE_KEY` when the gateway has run.
pub fn env_vars(config: &Config) -> Result<Vec<(&'static str, String)>> {
    let mut vars = vec![("SPINE_URL", url(config))];
    let Ok(text) = std::fs::read_to_string(keys_file(config)) else {
        return Ok(vars);
    };
    for line in text.lines() {
        let (k, v) = line.split_once('=').context("keys.env: KEY=value lines")?;
        match k {
            "SPINE_ANON_KEY" => vars.push(("SPINE_ANON_KEY", v.to_string())),
            "SPINE_SERVICE_KEY" => vars.push(("SPINE_SERVICE_KEY", v.to_string())),
            _ => {}
        }
    }
    vars.push(("SPINE_PUBLISHABLE_KEY", PUBLISHABLE_KEY.into()));
    vars.push(("SPINE_SECRET_KEY", SECRET_KEY.into()));
    Ok(vars)
}
