//! A verb's JSON Schema contracts (`spine.bind_schema('verb', 'service.verb',
//! schema, 'input' | 'output')`): a request's data is checked before anything
//! runs (`VALIDATION`, naming each offending value's JSON Pointer), a reply's
//! data before it is sent — and for a SQL verb before its transaction commits,
//! so a reply that breaks its contract writes nothing. Loaded with the verb's
//! target and cached as long ([`super::TARGET_TTL`]).

use super::Failure;
use serde_json::Value;
use spine_core::contract::{details, summary, NamedContract};
use spine_core::service::ErrorCode;
use spine_functions::contracts;

/// The schemas bound to one verb.
#[derive(Default)]
pub(crate) struct VerbContracts {
    pub input: Option<NamedContract>,
    pub output: Option<NamedContract>,
}

impl VerbContracts {
    /// The request's data, or why it is refused.
    pub fn check_input(&self, data: &Value) -> Result<(), Failure> {
        let Some(input) = &self.input else {
            return Ok(());
        };
        input.check(data).map_err(|violations| Failure {
            code: ErrorCode::Validation,
            message: format!(
                "data does not match schema \"{}\": {}",
                input.name,
                summary(&violations)
            ),
            details: details(&input.name, &violations),
        })
    }

    /// The reply's data, or why it may not be sent: the server broke its own
    /// contract, which is no fault of the caller's (`INTERNAL`, logged).
    pub fn check_output(&self, verb: &str, data: &Value) -> Result<(), Failure> {
        let Some(output) = &self.output else {
            return Ok(());
        };
        output.check(data).map_err(|violations| {
            let summary = summary(&violations);
            tracing::error!(verb, schema = %output.name, %summary, "a verb's reply breaks its output schema");
            Failure {
                code: ErrorCode::Internal,
                message: format!(
                    "the reply of {verb} does not match its output schema \"{}\"",
                    output.name
                ),
                details: details(&output.name, &violations),
            }
        })
    }
}

/// The contracts bound to `service.verb`, compiled.
pub(super) async fn load(
    db: &spine_db::Pool,
    service: &str,
    verb: &str,
) -> Result<VerbContracts, Failure> {
    let session = db
        .get()
        .await
        .map_err(|e| Failure::new(ErrorCode::Unavailable, format!("database unavailable: {e}")))?;
    let client: &tokio_postgres::Client = &session;
    let bound = contracts::load(client, "verb", &format!("{service}.{verb}"))
        .await
        .map_err(|e| match e {
            contracts::LoadError::Database(e) => {
                tracing::warn!(error = %e, "could not read a verb's contracts");
                Failure::new(
                    ErrorCode::Unavailable,
                    "could not read the verb's contracts",
                )
            }
            contracts::LoadError::Compile { schema, reason } => {
                tracing::error!(%schema, %reason, "a bound schema does not compile");
                Failure::new(
                    ErrorCode::Internal,
                    format!("schema \"{schema}\" does not compile"),
                )
            }
        })?;
    Ok(VerbContracts {
        input: bound.input,
        output: bound.output,
    })
}
