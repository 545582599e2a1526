//! When to send a request again and how often to poll an operation: the schedules of
//! Exoscale's SDKs, and `Retry-After`.

use std::time::Duration;

/// When and how often to retry a failed request.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// Exoscale's SDKs: at most 4 retries, backoff from 1 s doubling up to 30 s.
    fn default() -> Self {
        Self {
            max_retries: 4,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `attempt` (0-based): `base * 2^attempt`, capped at `max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(16));
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// How an operation is polled until it ends.
#[derive(Clone, Debug)]
pub struct PollPolicy {
    /// The interval during the first `fast_for`.
    pub initial: Duration,
    pub fast_for: Duration,
    /// The interval grows linearly after `fast_for` up to this.
    pub max: Duration,
    /// Give up after this many failed polls in a row.
    pub max_errors: u32,
    /// Give up when the operation is still pending after this long.
    pub timeout: Duration,
}

impl Default for PollPolicy {
    /// The SDKs' schedule: every 3 s for the first 30 s, then slower, linearly up to 60 s;
    /// 5 polling errors in a row end the wait.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(3),
            fast_for: Duration::from_secs(30),
            max: Duration::from_secs(60),
            max_errors: 5,
            timeout: Duration::from_secs(15 * 60),
        }
    }
}

impl PollPolicy {
    /// The pause before the next poll, `elapsed` after the wait began: `initial` until `fast_for`,
    /// then growing in proportion to the time waited (continuous at `fast_for`), capped at `max`.
    pub fn interval(&self, elapsed: Duration) -> Duration {
        if elapsed < self.fast_for || self.fast_for.is_zero() {
            return self.initial;
        }
        let scaled = self
            .initial
            .mul_f64(elapsed.as_secs_f64() / self.fast_for.as_secs_f64());
        scaled.min(self.max).max(self.initial)
    }

    /// A schedule for tests and the local simulator, where operations end in milliseconds.
    pub fn quick() -> Self {
        Self {
            initial: Duration::from_millis(50),
            fast_for: Duration::from_secs(5),
            max: Duration::from_millis(500),
            max_errors: 5,
            timeout: Duration::from_secs(60),
        }
    }
}

/// `Retry-After` as seconds or an HTTP date; capped at 5 minutes so a broken header cannot stall us.
pub(super) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let raw = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let d = if let Ok(secs) = raw.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(raw).ok()?;
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(Duration::from_secs(300)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn poll_schedule_is_three_seconds_then_linear_to_a_minute() {
        let p = PollPolicy::default();
        assert_eq!(p.interval(Duration::ZERO), Duration::from_secs(3));
        assert_eq!(p.interval(Duration::from_secs(29)), Duration::from_secs(3));
        assert_eq!(p.interval(Duration::from_secs(60)), Duration::from_secs(6));
        assert_eq!(
            p.interval(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }

    proptest! {
        #[test]
        fn backoff_grows_and_stays_within_bounds(attempt in 0u32..64) {
            let p = RetryPolicy::default();
            let d = p.backoff(attempt);
            prop_assert!(d >= p.base && d <= p.max);
            prop_assert!(p.backoff(attempt + 1) >= d);
        }
    }
}
