//! `cargo xtask demo`: setup + up, then the main flow, printed for a person to read.
//! The flow is plain SQL (`xtask/demo.sql`), so what it shows is what a psql user types.

use crate::config::Config;
use crate::postgres::psql;
use crate::proc::exec;
use crate::{setup, stack};
use anyhow::Result;

pub fn run(config: &Config) -> Result<()> {
    setup::run(config)?;
    stack::up(config)?;
    println!("\n================ Spine demo: the main flow ================\n");
    exec(
        psql(&config.database_url())
            .args(["-P", "pager=off"])
            .arg("-f")
            .arg(config.root.join("xtask/demo.sql")),
    )?;
    println!(
        "\nThe stack keeps running: `cargo xtask psql` to explore, `cargo xtask down` to stop."
    );
    Ok(())
}
