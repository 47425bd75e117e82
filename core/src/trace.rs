//! W3C Trace Context (`traceparent`) for the requests Spine's jobs make, so a
//! receiver's tracing joins the chain of events that caused them.
//!
//! The trace id is the chain's correlation id (one trace per chain of events,
//! however many jobs and functions it passes through); the parent id is the job,
//! stable across its retries. A job outside any chain gets a trace id derived
//! from its id, so its retries still share one trace.

use uuid::Uuid;

/// `00-<trace id>-<parent id>-01` (version 00, sampled).
pub fn traceparent(correlation_id: Option<Uuid>, job_id: i64) -> String {
    let trace = match correlation_id.filter(|c| !c.is_nil()) {
        Some(c) => c.simple().to_string(),
        // "spine-job" in hex, then the job id: never all zeros.
        None => format!("7370696e656a6f62{:016x}", job_id as u64),
    };
    // The parent id must not be all zeros either: job ids start at 1, and 0 maps
    // to a fixed non-zero id.
    let parent = if job_id == 0 { u64::MAX } else { job_id as u64 };
    format!("00-{trace}-{parent:016x}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The form W3C Trace Context level 1 requires: lowercase hex, 32 + 16 digits,
    /// neither all zeros.
    fn valid(tp: &str) -> bool {
        let parts: Vec<&str> = tp.split('-').collect();
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        parts.len() == 4
            && parts[0] == "00"
            && hex(parts[1], 32)
            && parts[1].bytes().any(|b| b != b'0')
            && hex(parts[2], 16)
            && parts[2].bytes().any(|b| b != b'0')
            && parts[3] == "01"
    }

    #[test]
    fn carries_the_correlation_id_and_the_job() {
        let c = Uuid::parse_str("0191e7a2-5c1d-7b3e-9f00-aabbccddeeff").unwrap();
        let tp = traceparent(Some(c), 42);
        assert_eq!(
            tp,
            "00-0191e7a25c1d7b3e9f00aabbccddeeff-000000000000002a-01"
        );
        assert!(valid(&tp));
    }

    #[test]
    fn a_job_without_a_chain_still_gets_a_valid_stable_trace() {
        let tp = traceparent(None, 7);
        assert!(valid(&tp), "{tp}");
        assert_eq!(tp, traceparent(None, 7));
        assert_ne!(tp, traceparent(None, 8));
        assert!(valid(&traceparent(None, 0)));
        assert!(valid(&traceparent(Some(Uuid::nil()), -1)));
    }
}
