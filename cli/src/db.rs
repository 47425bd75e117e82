//! The one connection a command uses, and its errors as the CLI reports them.

use crate::BadInput;
use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

pub type Row = Map<String, Value>;

pub struct Db {
    pub client: Client,
    /// For work that opens connections of its own (`spine reindex`).
    pub config: spine_db::DbConfig,
    /// `postgres://user@host:port/db`, without a password: what messages show.
    pub target: String,
}

impl Db {
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        let config = spine_db::DbConfig::parse_for_process(
            url,
            concat!("spine-cli/", env!("CARGO_PKG_VERSION")),
        )
        .map_err(|e| BadInput(format!("--db / DATABASE_URL: {e}")))?;
        let (client, connection) = config.connect().await?;
        tokio::spawn(connection);
        Ok(Db {
            client,
            target: config.redacted().to_string(),
            config,
        })
    }

    /// The rows of `sql` as JSON objects (`row_to_json`, so every column type
    /// Postgres can render works).
    pub async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> anyhow::Result<Vec<Row>> {
        let wrapped = format!("SELECT row_to_json(x)::text FROM ({sql}) x");
        let rows = self
            .client
            .query(&wrapped, params)
            .await
            .map_err(sql_error)?;
        rows.iter()
            .map(|r| {
                let text: String = r.get(0);
                match serde_json::from_str(&text)? {
                    Value::Object(map) => Ok(map),
                    other => anyhow::bail!("row_to_json gave {other}"),
                }
            })
            .collect()
    }

    /// The first column of the one row of `sql`.
    pub async fn value<T>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> anyhow::Result<T>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let row = self
            .client
            .query_one(sql, params)
            .await
            .map_err(sql_error)?;
        Ok(row.try_get(0)?)
    }
}

/// A failed statement as one line. Errors about the input (a name that does not
/// exist, an invalid value) become [`BadInput`] (exit 2); the rest exit 1.
pub fn sql_error(err: tokio_postgres::Error) -> anyhow::Error {
    let Some(db) = err.as_db_error() else {
        return anyhow::Error::new(err);
    };
    let code = db.code().code();
    let mut message = db.message().to_string();
    if let Some(hint) = db.hint() {
        message = format!("{message} ({hint})");
    }
    let bad_input = code.starts_with("22") || matches!(code, "42704" | "P0002" | "23505");
    if bad_input {
        BadInput(message).into()
    } else {
        anyhow::anyhow!("{message} [SQLSTATE {code}]")
    }
}
