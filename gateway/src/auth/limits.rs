//! Rate limits on sign-in and sign-up, in memory (per gateway process), with
//! `governor`'s keyed GCRA: a burst of `burst` requests, refilled evenly over
//! `per`. Defaults are Supabase's (`sign_in_sign_ups`: 30 per 5 minutes).
//!
//! Keys: sign-in by client IP and email, sign-up by client IP. The client IP is
//! the socket's peer address (axum `ConnectInfo`); `X-Forwarded-For` is not
//! trusted, since any client can send it. When the server does not provide
//! `ConnectInfo`, sign-in falls back to a bucket per email (still stops
//! guessing one account's password, at the price that a flood can lock that
//! account out for a few minutes) and sign-up to one bucket for everyone.

use super::error::AuthError;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `burst` requests, then one more each `per / burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub burst: u32,
    pub per: Duration,
}

impl Limit {
    /// `N/SECONDS`: N at once, refilled over SECONDS (`30/300`).
    pub fn parse(text: &str) -> Result<Limit, String> {
        let (n, secs) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not N/SECONDS"))?;
        let burst: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: N is not a number"))?;
        let secs: u64 = secs
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: SECONDS is not a number"))?;
        if burst == 0 || secs == 0 {
            return Err(format!("{text:?}: N and SECONDS must be above 0"));
        }
        Ok(Limit {
            burst,
            per: Duration::from_secs(secs),
        })
    }

    fn quota(self) -> Quota {
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let period = (self.per / burst.get()).max(Duration::from_millis(1));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

/// The limits `/auth/v1` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Password sign-ins per client IP and email.
    pub sign_in: Limit,
    /// Sign-ups per client IP.
    pub sign_up: Limit,
}

impl Default for RateLimits {
    fn default() -> Self {
        let supabase = Limit {
            burst: 30,
            per: Duration::from_secs(300),
        };
        RateLimits {
            sign_in: supabase,
            sign_up: supabase,
        }
    }
}

pub struct Limiters {
    sign_in: DefaultKeyedRateLimiter<String>,
    sign_up: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
}

/// Every this many checks, keys whose bucket is full again are forgotten, so
/// the maps stay as small as the set of recently active clients.
const SWEEP_EVERY: u64 = 4096;

impl Limiters {
    pub fn new(limits: RateLimits) -> Self {
        Limiters {
            sign_in: RateLimiter::keyed(limits.sign_in.quota()),
            sign_up: RateLimiter::keyed(limits.sign_up.quota()),
            checks: AtomicU64::new(0),
        }
    }

    pub fn sign_in(&self, ip: Option<IpAddr>, email: &str) -> Result<(), AuthError> {
        let key = match ip {
            Some(ip) => format!("{ip}|{}", email.to_lowercase()),
            None => format!("*|{}", email.to_lowercase()),
        };
        self.check(&self.sign_in, key)
    }

    pub fn sign_up(&self, ip: Option<IpAddr>) -> Result<(), AuthError> {
        let key = ip.map(|ip| ip.to_string()).unwrap_or_else(|| "*".into());
        self.check(&self.sign_up, key)
    }

    fn check(
        &self,
        limiter: &DefaultKeyedRateLimiter<String>,
        key: String,
    ) -> Result<(), AuthError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sign_in.retain_recent();
            self.sign_up.retain_recent();
        }
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            AuthError::rate_limited(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_429_with_retry_after_per_key() {
        let l = Limiters::new(RateLimits {
            sign_in: Limit {
                burst: 3,
                per: Duration::from_secs(300),
            },
            sign_up: Limit {
                burst: 1,
                per: Duration::from_secs(60),
            },
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            l.sign_in(Some(ip), "A@x.io").unwrap();
        }
        let e = l.sign_in(Some(ip), "a@x.io").unwrap_err();
        assert_eq!(e.code, "over_request_rate_limit");
        let secs = e.retry_after.unwrap();
        assert!((90..=100).contains(&secs), "{secs}");
        // Another email, another IP: their own buckets.
        l.sign_in(Some(ip), "b@x.io").unwrap();
        l.sign_in(Some("10.0.0.2".parse().unwrap()), "a@x.io")
            .unwrap();
        l.sign_up(Some(ip)).unwrap();
        assert!(l.sign_up(Some(ip)).is_err());
        l.sign_up(None).unwrap();
    }
}
