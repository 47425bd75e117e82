//! `/rest/v1`: PostgREST's contract as postgrest-js uses it, over a schema cache.
//!
//! - [`cache`]: tables, views and functions of the exposed schemas;
//! - [`query`]: the query string parsed; [`sql`]: SQL from both;
//! - [`handlers`]: tables (read, insert, upsert, update, delete) and RPC.

pub mod cache;
pub mod handlers;
pub mod query;
pub mod sql;

use crate::config::Config;
use crate::keys::ApiKeys;
use axum::routing::{any, MethodRouter};
use axum::Router;
use cache::SchemaCache;
use std::sync::{Arc, RwLock};

pub struct Rest {
    pub pool: spine_db::Pool,
    db: spine_db::DbConfig,
    pub schemas: Vec<String>,
    pub max_rows: u64,
    pub max_body: usize,
    cache: RwLock<Arc<SchemaCache>>,
}

impl Rest {
    /// Loads the schema cache, and reloads it on `NOTIFY pgrst, 'reload schema'`.
    pub async fn start(
        pool: spine_db::Pool,
        db: spine_db::DbConfig,
        config: &Config,
    ) -> anyhow::Result<Arc<Rest>> {
        let schemas = config.schemas();
        anyhow::ensure!(!schemas.is_empty(), "SPINE_REST_SCHEMAS names no schema");
        let rest = Arc::new(Rest {
            pool,
            db,
            schemas,
            max_rows: config.max_rows,
            max_body: config.max_body,
            cache: RwLock::new(Arc::new(SchemaCache::default())),
        });
        rest.reload().await?;
        tokio::spawn(listen_for_reloads(rest.clone()));
        Ok(rest)
    }

    pub fn cache(&self) -> Arc<SchemaCache> {
        self.cache.read().expect("never poisoned").clone()
    }

    /// Reads the catalog again on a connection of its own.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let (client, connection) = self.db.connect().await?;
        let driver = tokio::spawn(connection);
        let cache = SchemaCache::load(&client, &self.schemas).await?;
        drop(client);
        let _ = driver.await;
        tracing::info!(
            tables = cache.table_count(),
            functions = cache.function_count(),
            "schema cache loaded"
        );
        *self.cache.write().expect("never poisoned") = Arc::new(cache);
        Ok(())
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
        let cache = self.cache();
        let pool = self.pool.status();
        format!(
            "# TYPE spine_gateway_schema_cache_tables gauge\nspine_gateway_schema_cache_tables {}\n\
             # TYPE spine_gateway_schema_cache_functions gauge\nspine_gateway_schema_cache_functions {}\n\
             # TYPE spine_gateway_pool_connections gauge\nspine_gateway_pool_connections {}\n\
             # TYPE spine_gateway_pool_available gauge\nspine_gateway_pool_available {}\n# EOF\n",
            cache.table_count(),
            cache.function_count(),
            pool.size,
            pool.available
        )
    }
}

/// `LISTEN pgrst`: PostgREST's reload channel (Supabase's DDL event trigger
/// notifies it). Reconnects after a second when the connection drops.
async fn listen_for_reloads(rest: Arc<Rest>) {
    use futures_util::StreamExt;
    loop {
        let Ok((client, mut connection)) = rest.db.connect().await else {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        // Ends at the connection's first error: a closed connection answers every
        // poll with an error at once, and looping on that would spin a worker
        // thread forever (it did, after a Postgres restart, until this stopped
        // it). Ending drops `tx`, which ends the loop below: reconnect.
        let driver = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        let _ = tx.send(n.payload().to_string());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "schema reload listener lost its connection");
                        break;
                    }
                }
            }
        });
        if client.batch_execute("LISTEN pgrst").await.is_ok() {
            // A NOTIFY sent while the connection was down is lost: read again.
            if let Err(e) = rest.reload().await {
                tracing::warn!(error = %e, "schema cache reload failed");
            }
            while let Some(payload) = rx.recv().await {
                if payload.is_empty() || payload == "reload schema" {
                    if let Err(e) = rest.reload().await {
                        tracing::warn!(error = %e, "schema cache reload failed");
                    }
                }
            }
        }
        driver.abort();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

pub fn router(rest: Arc<Rest>, keys: Arc<ApiKeys>) -> Router {
    let state = handlers::State { rest, keys };
    let rpc: MethodRouter<handlers::State> = any(handlers::rpc);
    Router::new()
        .route("/rpc/{function}", rpc)
        .route("/{table}", any(handlers::table))
        .with_state(state)
}
