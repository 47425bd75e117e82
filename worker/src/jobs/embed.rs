//! The `embed` handler: one entity's text (`spine.embedding_text`) into a vector
//! from an OpenAI-compatible `/embeddings` API (the stack's `spine-embedder`,
//! Ollama, a cloud API), written back with `spine.record_embedding`, which
//! emits `data.EmbeddingUpdated`.
//!
//! Idempotent per job: a rerun embeds the entity's current text again and
//! writes only if the entity is still at the version it read. An entity that
//! is gone, or has no text, completes the job. 429/503 with `Retry-After`
//! snoozes it; other failures are retried with backoff. Without a configured
//! API the jobs wait (snoozed), so embeddings configured later catch up.

use super::handler::{snooze_for, Handler, HandlerFuture, Job, JobError};
use crate::config::EmbeddingsConfig;
use serde::Deserialize;
use spine_db::Pool;
use spine_functions::embeddings::EmbedError;
use std::sync::Arc;
use std::time::Duration;

/// How long an `embed` job waits when no embeddings API is configured.
const UNCONFIGURED_SNOOZE: Duration = Duration::from_secs(300);
/// One request's time limit (a cold local model loads in well under this).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct EmbedHandler {
    db: Pool,
    http: reqwest::Client,
    api: Option<EmbeddingsConfig>,
}

#[derive(Deserialize)]
struct Payload {
    entity_id: uuid::Uuid,
}

impl EmbedHandler {
    pub fn new(database: &spine_db::DbConfig, api: Option<EmbeddingsConfig>) -> Self {
        Self {
            db: super::handler::handler_pool(database),
            http: super::http::client(reqwest::redirect::Policy::none()),
            api,
        }
    }

    async fn run(&self, job: &Job) -> Result<(), JobError> {
        let Some(api) = &self.api else {
            tracing::warn!(
                job = job.id,
                "an embed job waits: SPINE_EMBEDDINGS_URL is not set (see docs/configuration.md)"
            );
            return Err(JobError::Snooze(UNCONFIGURED_SNOOZE));
        };
        let payload: Payload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::Failed(format!("embed payload: {e}")))?;
        let session = self.db.get().await.map_err(|e| e.to_string())?;
        let row = session
            .query_opt(
                "SELECT e.version, spine.embedding_text(e.kind, e.data) \
                   FROM spine.entities e WHERE e.id = $1",
                &[&payload.entity_id],
            )
            .await
            .map_err(|e| format!("reading entity {}: {e}", payload.entity_id))?;
        let Some(row) = row else {
            return Ok(()); // deleted since: nothing to embed
        };
        let version: i64 = row.get(0);
        let text: Option<String> = row.get(1);
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            return Ok(()); // no text to embed
        };
        let vector = self.embed(api, &text).await?;
        let written: bool = session
            .query_one(
                "SELECT spine.record_embedding($1, $2, $3, $4)",
                &[&payload.entity_id, &version, &vector, &api.model],
            )
            .await
            .map_err(|e| format!("recording the embedding: {e}"))?
            .get(0);
        if !written {
            // Changed (or deleted) while we embedded: that write queued its own job.
            tracing::debug!(entity = %payload.entity_id, "entity changed while embedding");
        }
        Ok(())
    }

    async fn embed(&self, api: &EmbeddingsConfig, text: &str) -> Result<Vec<f32>, JobError> {
        match api
            .embed(&self.http, &[text.to_string()], REQUEST_TIMEOUT)
            .await
        {
            Ok(mut vectors) => Ok(vectors.remove(0)),
            Err(e) => {
                if let EmbedError::Status {
                    status,
                    retry_after,
                    ..
                } = &e
                {
                    if let Some(wait) = snooze_for(*status, retry_after.as_deref()) {
                        return Err(JobError::Snooze(wait));
                    }
                }
                Err(JobError::Failed(e.to_string()))
            }
        }
    }
}

impl Handler for Arc<EmbedHandler> {
    fn handle(&self, job: Job) -> HandlerFuture {
        let this = self.clone();
        Box::pin(async move { this.run(&job).await })
    }
}
