//! The JSON Schemas bound to a function or a NATS verb
//! (`spine.schema_bindings`), read and compiled: one loader for the function
//! host (`function` bindings) and the worker's services (`verb` bindings).

use spine_core::contract::NamedContract;
use tokio_postgres::GenericClient;

/// A target's input and output schemas, compiled.
#[derive(Debug, Default)]
pub struct Bound {
    pub input: Option<NamedContract>,
    pub output: Option<NamedContract>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading the contracts: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// Only a row written with plain SQL can fail here (spine.define_schema
    /// compiles first): callers refuse the target rather than serve it unchecked.
    #[error("schema \"{schema}\" does not compile: {reason}")]
    Compile { schema: String, reason: String },
}

/// The schemas bound to `target` of `kind` (`function` or `verb`).
pub async fn load(
    client: &impl GenericClient,
    kind: &str,
    target: &str,
) -> Result<Bound, LoadError> {
    let rows = client
        .query(
            "SELECT b.direction, s.name, s.schema FROM spine.schema_bindings b \
               JOIN spine.schemas s ON s.name = b.schema_name \
              WHERE b.target_kind = $1 AND b.target = $2",
            &[&kind, &target],
        )
        .await?;
    let mut bound = Bound::default();
    for row in rows {
        let (direction, schema): (String, String) = (row.get(0), row.get(1));
        let contract = NamedContract::compile(schema.clone(), &row.get(2))
            .map_err(|reason| LoadError::Compile { schema, reason })?;
        match direction.as_str() {
            "output" => bound.output = Some(contract),
            _ => bound.input = Some(contract),
        }
    }
    Ok(bound)
}
