//! Facts about the installed extension.

use crate::error::{internal, SpineError};
use crate::gucs;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// The version of the extension's SQL objects in this database, e.g. `0.2.0`: what
/// `ALTER EXTENSION spine UPDATE` last brought it to. Read from the catalog, not
/// compiled in, because during an upgrade the new library is on disk (and loaded)
/// before the database's objects are updated; processes decide from this what
/// they can work with ([`library_version`] is the other half).
#[pg_extern(stable, parallel_safe)]
fn version() -> Result<String, ErrorReport> {
    Spi::get_one::<String>("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'spine'")
        .map_err(internal("spine.version"))?
        .ok_or_else(|| {
            SpineError::NotFound {
                kind: "extension",
                name: "spine".into(),
            }
            .into()
        })
}

/// The version of the loaded library (`spine.so`), which differs from
/// [`version`] between installing a new release's files and running
/// `ALTER EXTENSION spine UPDATE`.
#[pg_extern(immutable, parallel_safe)]
fn library_version() -> &'static str {
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
