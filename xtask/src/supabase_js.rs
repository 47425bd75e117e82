//! The supabase-js suite (`gateway/tests/supabase-js`): the real client from npm,
//! pinned by its lockfile, against the dev stack's gateway. Applies the suite's
//! fixture, deploys the example functions, waits for the gateway to see the
//! fixture's tables, then runs `node --test`.

use crate::config::Config;
use crate::postgres::psql;
use crate::proc::{exec, exec_tests, find_program, step, TestCounts};
use crate::stack;
use anyhow::{bail, Context, Result};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn run(config: &Config) -> Result<TestCounts> {
    let dir = config.root.join("gateway/tests/supabase-js");
    let (Some(_), Some(npm)) = (find_program("node"), find_program("npm")) else {
        bail!("node and npm are needed for the supabase-js suite: run `cargo xtask setup`");
    };
    {
        let _s = step("npm ci (supabase-js suite, from its lockfile)");
        exec(
            Command::new(npm)
                .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
                .current_dir(&dir),
        )?;
    }
    let env = stack::env_vars(config)?;
    let db = config.database_url();
    {
        let _s = step("supabase-js fixture and example functions");
        exec(psql(&db).arg("-f").arg(dir.join("fixture.sql")))?;
        exec(
            Command::new("cargo")
                .args(["build", "-p", "spine-functions"])
                .current_dir(&config.root),
        )?;
        exec(
            Command::new(config.root.join("target/debug/spine-functions"))
                .args(["deploy", "edge-functions/functions"])
                .env("DATABASE_URL", &db)
                .current_dir(&config.root),
        )?;
        wait_for_fixture(config)?;
    }
    let _s = step("supabase-js suite (node --test)");
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-concurrency=1", "--test-reporter=tap"])
        .current_dir(&dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // signing-keys.test.mjs starts a gateway of its own with an ES256 key.
    cmd.env("SPINE_GATEWAY_BIN", crate::gateway::binary(config));
    exec_tests(&mut cmd)
}

/// The fixture's NOTIFY reloads the gateway's schema cache asynchronously:
/// wait until `/rest/v1/sjs_kv` stops being unknown (404).
fn wait_for_fixture(config: &Config) -> Result<()> {
    let url = format!("{}/rest/v1/sjs_kv?limit=0", crate::gateway::url(config));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
            .output()
            .context("curl")?;
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        if code != "404" && code != "000" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the gateway did not load the supabase-js fixture within 15 s (last status {code})"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
