//! A pooled connection for one `/auth/v1` request, with an explicit
//! transaction: statements are prepared once per connection, and a connection
//! dropped inside an unfinished transaction (the client went away mid-request)
//! is closed rather than returned to the pool.
//!
//! The gateway's own connection (the owner of `auth.*`) runs these statements;
//! no `SET ROLE`, since anon and authenticated may not read these tables.

use super::error::AuthError;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub struct Conn {
    session: spine_db::Session,
}

impl Conn {
    pub async fn get(pool: &spine_db::Pool) -> Result<Conn, AuthError> {
        Ok(Conn {
            session: pool.get().await?,
        })
    }

    pub async fn begin(&mut self) -> Result<(), AuthError> {
        self.session.mark_busy();
        self.session
            .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        Ok(())
    }

    /// Ends the transaction: COMMIT when `result` is Ok, else ROLLBACK, and
    /// passes `result` on.
    pub async fn finish<T>(&mut self, result: Result<T, AuthError>) -> Result<T, AuthError> {
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        self.session.batch_execute(end).await?;
        self.session.mark_idle();
        result
    }

    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, AuthError> {
        let statement = self.session.prepare_cached(sql).await?;
        Ok(self.session.query(&statement, params).await?)
    }

    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, AuthError> {
        let statement = self.session.prepare_cached(sql).await?;
        Ok(self.session.query_opt(&statement, params).await?)
    }

    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, AuthError> {
        let statement = self.session.prepare_cached(sql).await?;
        Ok(self.session.query_one(&statement, params).await?)
    }

    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, AuthError> {
        let statement = self.session.prepare_cached(sql).await?;
        Ok(self.session.execute(&statement, params).await?)
    }

    /// Like [`Conn::query_opt`], but a unique violation (23505) becomes `dup`.
    pub async fn query_unique(
        &self,
        sql: &str,
        params: Params<'_>,
        dup: AuthError,
    ) -> Result<Option<Row>, AuthError> {
        let statement = self.session.prepare_cached(sql).await?;
        match self.session.query_opt(&statement, params).await {
            Ok(row) => Ok(row),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Err(dup)
            }
            Err(e) => Err(e.into()),
        }
    }
}
