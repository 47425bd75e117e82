//! `/rest/v1`: PostgREST's contract as postgrest-js uses it, over a schema cache.

use crate::config::Config;
use crate::keys::ApiKeys;
use axum::Router;
use std::sync::Arc;

pub struct Rest {
    pool: spine_db::Pool,
}

impl Rest {
    pub async fn start(
        pool: spine_db::Pool,
        _db: spine_db::DbConfig,
        _config: &Config,
    ) -> anyhow::Result<Arc<Rest>> {
        Ok(Arc::new(Rest { pool }))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), String> {
        let session = self.pool.get().await.map_err(|e| e.to_string())?;
        session
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub fn metrics_text(&self) -> String {
        String::new()
    }
}

pub fn router(_rest: Arc<Rest>, _keys: Arc<ApiKeys>) -> Router {
    Router::new()
}
