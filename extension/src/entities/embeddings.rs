//! `spine.record_embedding`: the `embed` job's write-back (`sql/embeddings.sql`
//! queues the jobs). Only the version the job embedded is written: a job that
//! read the entity before a later change must not overwrite the newer text's
//! vector (the later change queued a job of its own). `data.EmbeddingUpdated`
//! tells rules and plugins that the entity is searchable by meaning now.

use crate::error::{internal, SpineError};
use crate::spi_ext::{optional_row, returning_one};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::json;

/// Longest model name kept in the event.
const MAX_MODEL_NAME: usize = 200;

/// Sets entity `entity_id`'s embedding if it is still at `version`; emits
/// `data.EmbeddingUpdated`. False when the entity is gone or has changed since.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn record_embedding(
    entity_id: Option<Uuid>,
    version: Option<i64>,
    embedding: Option<Vec<f32>>,
    model: Option<&str>,
) -> Result<bool, ErrorReport> {
    let id = entity_id.ok_or(SpineError::NullArgument("entity_id"))?;
    let version = version.ok_or(SpineError::NullArgument("version"))?;
    let embedding = embedding.ok_or(SpineError::NullArgument("embedding"))?;
    let model = model.ok_or(SpineError::NullArgument("model"))?;
    if embedding.is_empty() || embedding.iter().any(|x| !x.is_finite()) {
        return Err(SpineError::InvalidParameter {
            name: "embedding",
            reason: "at least one number, all finite".into(),
        }
        .into());
    }
    if model.is_empty() || model.len() > MAX_MODEL_NAME {
        return Err(SpineError::InvalidParameter {
            name: "model",
            reason: format!("1 to {MAX_MODEL_NAME} characters"),
        }
        .into());
    }
    let schema = Spi::get_one::<String>(
        "SELECT quote_ident(n.nspname) FROM pg_catalog.pg_extension e \
         JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'",
    )
    .map_err(internal("embeddings: pgvector's schema"))?
    .ok_or_else(|| {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "embeddings need pgvector, which is not installed",
            "spine.record_embedding",
        )
    })?;
    let dimensions = embedding.len();
    let written = optional_row(returning_one::<JsonB>(
        &format!(
            "UPDATE spine.entities SET embedding = $3::{schema}.vector \
             WHERE id = $1 AND version = $2 \
             RETURNING jsonb_build_object('owner', owner_id, 'kind', kind)"
        ),
        &[id.into(), version.into(), embedding.into()],
    ))
    .map_err(internal("embeddings: write"))?
    .flatten();
    let Some(JsonB(written)) = written else {
        return Ok(false);
    };
    let owner = written["owner"]
        .as_str()
        .and_then(|o| uuid::Uuid::parse_str(o).ok())
        .map(|o| Uuid::from_bytes(*o.as_bytes()))
        .ok_or_else(|| SpineError::Internal {
            context: "embeddings: owner",
            message: "the entity's owner is not a uuid".into(),
        })?;
    super::entity_event(
        "data.EmbeddingUpdated",
        owner,
        id,
        json!({
            "id": id.to_string(),
            "kind": written["kind"],
            "version": version,
            "model": model,
            "dimensions": dimensions,
        }),
    )?;
    Ok(true)
}
