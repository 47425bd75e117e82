//! Errors that reach SQL. Every domain reports through the one [`SpineError`] enum,
//! and each variant maps to a SQLSTATE here, so a client can tell bad input (22xxx/23xxx) from a missing object
//! (42704) or a denial (42501) without parsing messages. Messages never contain
//! secrets: callers pass names and reasons, never values they were given to protect.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

/// Errors shared by every domain.
#[derive(Debug, thiserror::Error)]
pub enum SpineError {
    /// A parameter or setting has a value the function cannot accept.
    #[error("invalid value for {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
    /// A named object (queue, rule, source, secret…) does not exist.
    #[error("{kind} \"{name}\" does not exist")]
    NotFound { kind: &'static str, name: String },
    /// An object of that name exists already.
    #[error("{kind} \"{name}\" already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// The caller's role or grants do not allow the action.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A value is larger than Spine can carry (e.g. an event over a NATS message).
    #[error("{what} is {actual} bytes; the limit is {limit}")]
    TooLarge {
        what: &'static str,
        actual: usize,
        limit: usize,
    },
    /// A value breaks the JSON Schema bound to what carries it (`what`: "data of
    /// event shop.OrderPlaced"); each violation names the offending value's pointer.
    #[error("{what} does not match schema \"{schema}\": {}", spine_core::contract::summary(.violations))]
    Violates {
        what: String,
        schema: String,
        violations: Vec<spine_core::contract::Violation>,
    },
    /// A required argument is NULL.
    #[error("{0} must not be NULL")]
    NullArgument(&'static str),
    /// A concurrent transaction got in the way; retrying the transaction succeeds.
    #[error("{0}")]
    Conflict(String),
    /// Something the call needs is not set up (e.g. the vault's root key).
    #[error("{0}")]
    Unavailable(String),
    /// Stored data fails its integrity check (e.g. a secret that does not decrypt).
    #[error("{0}")]
    Corrupted(String),
    /// A rule's action failed: the cause keeps its SQLSTATE, the message names the rule.
    #[error("rule \"{rule}\", action {action}: {source}")]
    InRule {
        rule: String,
        action: usize,
        source: Box<SpineError>,
    },
    /// SPI failed underneath us; the message says which statement.
    #[error("internal error in {context}: {message}")]
    Internal {
        context: &'static str,
        message: String,
    },
}

impl SpineError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            SpineError::InvalidParameter { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            SpineError::NotFound { .. } => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            SpineError::AlreadyExists { .. } => PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            SpineError::PermissionDenied(_) => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            SpineError::TooLarge { .. } => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            SpineError::Violates { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            SpineError::NullArgument(_) => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            SpineError::Conflict(_) => PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            SpineError::Unavailable(_) => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            SpineError::Corrupted(_) => PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            SpineError::InRule { source, .. } => source.sqlstate(),
            SpineError::Internal { .. } => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            SpineError::InRule { source, .. } => source.hint(),
            // A plugin's denial is about its manifest and the user's consent, not
            // about who the request acts as.
            SpineError::PermissionDenied(m) if m.starts_with("plugin:") => Some(
                "Declare it in the plugin's manifest, and have the user consent (spine.grant_consent).",
            ),
            SpineError::PermissionDenied(_) => {
                Some("Set request.jwt.claims for the acting user, or use service_role.")
            }
            _ => None,
        }
    }
}

/// Maps a failed SPI statement to [`SpineError::Internal`], naming where it ran:
/// `.map_err(internal("vault: rotate"))`.
pub fn internal(context: &'static str) -> impl Fn(pgrx::spi::SpiError) -> SpineError + Copy {
    move |e| SpineError::Internal {
        context,
        message: e.to_string(),
    }
}

impl SpineError {
    /// DETAIL for a client to act on: a contract's violations as JSON
    /// (`{"schema", "violations": [{pointer, message}]}`).
    fn detail(&self) -> Option<String> {
        match self {
            SpineError::InRule { source, .. } => source.detail(),
            SpineError::Violates {
                schema, violations, ..
            } => Some(
                serde_json::json!({
                    "schema": schema,
                    "violations": violations,
                })
                .to_string(),
            ),
            _ => None,
        }
    }
}

impl From<SpineError> for ErrorReport {
    fn from(e: SpineError) -> Self {
        let mut report = ErrorReport::new(e.sqlstate(), e.to_string(), "spine");
        if let Some(detail) = e.detail() {
            report = report.set_detail(detail);
        }
        match e.hint() {
            Some(h) => report.set_hint(h),
            None => report,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_sqlstate() {
        let bad = SpineError::InvalidParameter {
            name: "x",
            reason: "y".into(),
        };
        let missing = SpineError::NotFound {
            kind: "queue",
            name: "q".into(),
        };
        assert_eq!(
            bad.sqlstate(),
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
        );
        assert_eq!(missing.sqlstate(), PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT);
        assert_eq!(missing.to_string(), "queue \"q\" does not exist");
    }
}
