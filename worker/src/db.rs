//! Connecting to Postgres: through spine-db, which reads `DATABASE_URL` once,
//! speaks TLS as its `sslmode` says and names the database without its password.

use spine_db::{Connection, DbConfig};
use tokio_postgres::Client;

/// A dedicated connection; the caller drives the returned connection future.
pub async fn connect(db: &DbConfig) -> anyhow::Result<(Client, Connection)> {
    Ok(db.connect().await?)
}

/// Aborts a spawned task when dropped: a session's connection driver ends with it.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
