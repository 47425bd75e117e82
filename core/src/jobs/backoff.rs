//! Retry delays: exponential backoff with jitter.
//!
//! The jitter is derived from (job id, attempt) rather than a random source, so a
//! given retry is reproducible in tests and in "why did this run at 12:03?", while
//! jobs that failed together still spread out instead of retrying in lockstep.

use std::time::Duration;

/// Delay before the first retry.
pub const BASE: Duration = Duration::from_secs(1);
/// No retry waits longer than this, however many attempts came before.
pub const CAP: Duration = Duration::from_secs(3600);

/// Delay before retrying after failed attempt `attempt` (1-based) of job `job_id`:
/// `BASE × 2^(attempt−1)`, capped at `CAP`, scaled by a factor in [0.5, 1.5).
pub fn retry_delay(job_id: i64, attempt: i32) -> Duration {
    let exponent = attempt.clamp(1, 32) as u32 - 1;
    let nominal = BASE.saturating_mul(2u32.saturating_pow(exponent)).min(CAP);
    let factor = 0.5 + unit_interval(job_id, attempt);
    nominal.mul_f64(factor)
}

/// A well-mixed number in [0, 1) from the two inputs (splitmix64).
fn unit_interval(job_id: i64, attempt: i32) -> f64 {
    let mut z = (job_id as u64) ^ ((attempt as u64) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_bounds() {
        for attempt in 1..=10 {
            let nominal = BASE * 2u32.pow(attempt as u32 - 1);
            let d = retry_delay(42, attempt);
            assert!(
                d >= nominal / 2 && d < nominal * 3 / 2,
                "attempt {attempt}: {d:?}"
            );
        }
    }

    #[test]
    fn is_capped_and_never_overflows() {
        assert!(retry_delay(7, 40) < CAP * 3 / 2);
        assert!(retry_delay(7, i32::MAX) < CAP * 3 / 2);
        assert!(retry_delay(7, 0) < BASE * 3 / 2);
    }

    #[test]
    fn jitter_spreads_jobs_that_failed_together() {
        let delays: std::collections::HashSet<_> =
            (0..100).map(|id| retry_delay(id, 3).as_millis()).collect();
        assert!(delays.len() > 90, "only {} distinct delays", delays.len());
        assert_eq!(retry_delay(5, 3), retry_delay(5, 3), "reproducible");
    }
}
