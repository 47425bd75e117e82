//! The payload of a job runner's wake-up (NOTIFY on `spine.jobs_channel`): the
//! queue's name, followed by ` later` when the job that caused it is not due yet.
//!
//! A runner woken for a job due now only fetches; one woken for a later job also
//! looks up when its queues' next job is due. Several runners on a queue are all
//! woken by each notification, so the common case stays one query per runner.
//! `sql/jobs.sql` (`spine.wake_runners`) writes the same form.

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup<'a> {
    pub queue: &'a str,
    /// The job is due later: runners should look up the next due time.
    pub later: bool,
}

const LATER: &str = " later";

/// The payload for a job of `queue`, due now or later.
pub fn payload(queue: &str, later: bool) -> String {
    if later {
        format!("{queue}{LATER}")
    } else {
        queue.to_string()
    }
}

/// Reads a payload (queue names hold no spaces, so the suffix is unambiguous).
pub fn parse(payload: &str) -> Wakeup<'_> {
    match payload.strip_suffix(LATER) {
        Some(queue) => Wakeup { queue, later: true },
        None => Wakeup {
            queue: payload,
            later: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for (queue, later) in [("sms-out", false), ("crm.sync", true), ("q", true)] {
            let p = payload(queue, later);
            assert_eq!(parse(&p), Wakeup { queue, later });
        }
        assert_eq!(payload("q", true), "q later");
        assert!(crate::names::QUEUE.accepts("q") && !crate::names::QUEUE.accepts("q later"));
    }
}
