//! Edge function sources: `spine.deploy_function` registers a plugin's manifest
//! and stores its module in one transaction (what `spine-functions deploy` calls);
//! `spine.function_source` is how the function host loads it. Table in
//! `sql/webhooks.sql`.

use crate::audit;
use crate::caller::require_privileged;
use crate::error::{internal, SpineError};
use crate::policy;
use crate::spi_ext::optional_row;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Largest module source: a function is a plugin, not a bundle of dependencies.
const MAX_SOURCE_BYTES: usize = 1 << 20;

/// Registers (or updates) the plugin `manifest` describes and stores `source` as
/// its edge function. Returns the source's SHA-256 (hex). service_role only.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn deploy_function(manifest: Option<JsonB>, source: Option<&str>) -> Result<String, ErrorReport> {
    let manifest = manifest.ok_or(SpineError::NullArgument("manifest"))?;
    let source = source.ok_or(SpineError::NullArgument("source"))?;
    require_privileged("deploy functions")?;
    if source.trim().is_empty() {
        Err(SpineError::InvalidParameter {
            name: "source",
            reason: "the module is empty".into(),
        })?;
    }
    if source.len() > MAX_SOURCE_BYTES {
        Err(SpineError::TooLarge {
            what: "function source",
            actual: source.len(),
            limit: MAX_SOURCE_BYTES,
        })?;
    }
    let name = policy::register(manifest)?;
    let sha256 = hex::encode(Sha256::digest(source.as_bytes()));
    let previous = optional_row(Spi::get_one_with_args::<String>(
        "SELECT sha256 FROM spine.functions WHERE name = $1",
        &[name.as_str().into()],
    ))
    .map_err(internal("deploy function"))?
    .flatten();
    if previous.as_deref() == Some(sha256.as_str()) {
        return Ok(sha256); // same code: nothing to record
    }
    Spi::run_with_args(
        "INSERT INTO spine.functions (name, source, sha256) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE \
            SET source = EXCLUDED.source, sha256 = EXCLUDED.sha256, deployed_at = now()",
        &[name.as_str().into(), source.into(), sha256.as_str().into()],
    )
    .map_err(internal("deploy function"))?;
    audit::record(
        "function.deployed",
        Some(&format!("plugin:{name}")),
        json!({"sha256": sha256, "previous_sha256": previous, "bytes": source.len()}),
    )?;
    Ok(sha256)
}

/// A deployed function's module, manifest and whether its plugin is enabled: what
/// the function host loads (granted to spine_functions and service_role).
#[pg_extern(security_definer, stable)]
#[search_path(pg_catalog, pg_temp)]
fn function_source(
    name: Option<&str>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(source, String),
            name!(sha256, String),
            name!(manifest, JsonB),
            name!(enabled, bool),
        ),
    >,
    ErrorReport,
> {
    let name = name.ok_or(SpineError::NullArgument("name"))?;
    let row = Spi::connect(|client| {
        let table = client.select(
            "SELECT f.source, f.sha256, p.manifest, p.enabled \
               FROM spine.functions f JOIN spine.plugins p USING (name) WHERE f.name = $1",
            None,
            &[name.into()],
        )?;
        let mut out = None;
        for row in table {
            out = Some((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<JsonB>(3)?.unwrap_or(JsonB(json!({}))),
                row.get::<bool>(4)?.unwrap_or(false),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(internal("function source"))?;
    let row = row.ok_or_else(|| SpineError::NotFound {
        kind: "edge function",
        name: name.into(),
    })?;
    Ok(TableIterator::once(row))
}
