//! Facts about the installed extension.

use crate::gucs;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// The extension's version, e.g. `0.1.0`.
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The effective `spine.*` settings of this session, validated.
#[pg_extern(stable, parallel_safe)]
fn settings() -> Result<pgrx::JsonB, ErrorReport> {
    let channel = gucs::notify_channel()?;
    Ok(pgrx::JsonB(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "notify_channel": channel,
    })))
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_semver() {
        let parts: Vec<&str> = env!("CARGO_PKG_VERSION").split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()));
    }
}
