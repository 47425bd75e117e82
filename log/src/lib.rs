//! How every Spine process logs, set up once at start:
//!
//! - `RUST_LOG` filters (tracing's `EnvFilter` syntax; each process has its default);
//! - `SPINE_LOG_FORMAT`: `text` (the default, for a terminal) or `json`, one object
//!   per line for a log collector. In JSON each line carries the fields of the
//!   span it was written in under `span` (a job's `id`, `queue` and
//!   `correlation_id`: the chain of events it belongs to) and its event fields at
//!   the top level.

use tracing_subscriber::EnvFilter;

/// The log formats `SPINE_LOG_FORMAT` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// Reads `SPINE_LOG_FORMAT` (unset or empty: text).
    pub fn from_env() -> Result<Format, String> {
        Format::parse(&std::env::var("SPINE_LOG_FORMAT").unwrap_or_default())
    }

    pub fn parse(value: &str) -> Result<Format, String> {
        match value.trim() {
            "" | "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "SPINE_LOG_FORMAT must be text or json, not {other:?}"
            )),
        }
    }
}

/// Installs the global subscriber: `RUST_LOG`, or `default_filter` without it,
/// in the format `SPINE_LOG_FORMAT` names, on stdout (as before it existed).
pub fn init(default_filter: &str) -> Result<(), String> {
    let format = Format::from_env()?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        Format::Text => builder.init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_others_are_refused() {
        assert_eq!(Format::parse(""), Ok(Format::Text));
        assert_eq!(Format::parse("text"), Ok(Format::Text));
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert!(Format::parse("xml").unwrap_err().contains("text or json"));
    }
}
