//! The retry schedule: how long a deferred message waits before its next attempt,
//! and when it has been queued too long and is bounced (RFC 5321 §4.5.4.1: retry for
//! at least 4–5 days, first retry after at least 30 minutes in the RFC's advice; both
//! are the operator's call here). Trusted input: the operator's settings.

use std::time::Duration;

/// Intervals between attempts (the last one repeats) and the maximum queue age.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    /// Wait after the 1st, 2nd, ... failed attempt; never empty.
    pub intervals: Vec<Duration>,
    /// A message still undelivered this long after arrival is bounced.
    pub max_age: Duration,
    /// A recipient still undelivered this long after arrival whose `NOTIFY`
    /// lists `DELAY` gets one delay notice (RFC 3461 §4.1); zero: never.
    pub delay_warning: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        RetrySchedule {
            intervals: vec![m(1), m(5), m(15), m(30), m(60), m(120), m(240)],
            max_age: Duration::from_secs(5 * 24 * 3600),
            delay_warning: Duration::from_secs(4 * 3600),
        }
    }
}

impl RetrySchedule {
    /// The wait after `attempts` failed attempts (1-based; the last interval repeats).
    pub fn delay_after(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) as usize - 1).min(self.intervals.len().saturating_sub(1));
        self.intervals
            .get(i)
            .copied()
            .unwrap_or(Duration::from_secs(300))
    }

    /// When a message that arrived at `arrival_ms` expires.
    pub fn expires_at(&self, arrival_ms: u64) -> u64 {
        arrival_ms.saturating_add(self.max_age.as_millis() as u64)
    }

    /// Whether a message that arrived at `arrival_ms` has expired at `now_ms`.
    pub fn expired(&self, arrival_ms: u64, now_ms: u64) -> bool {
        now_ms >= self.expires_at(arrival_ms)
    }

    /// When to try again after `attempts` failed attempts: the next interval, but no
    /// later than the expiry time, so the last attempt happens right at expiry.
    pub fn next_attempt(&self, attempts: u32, now_ms: u64, arrival_ms: u64) -> u64 {
        let next = now_ms.saturating_add(self.delay_after(attempts).as_millis() as u64);
        next.min(self.expires_at(arrival_ms).max(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_back_off_and_the_last_repeats() {
        let r = RetrySchedule::default();
        let mins = |a| r.delay_after(a).as_secs() / 60;
        assert_eq!(
            (1..=9).map(mins).collect::<Vec<_>>(),
            vec![1, 5, 15, 30, 60, 120, 240, 240, 240]
        );
        assert_eq!(mins(0), 1);
    }

    #[test]
    fn expiry_caps_the_next_attempt() {
        let r = RetrySchedule {
            intervals: vec![Duration::from_secs(3600)],
            max_age: Duration::from_secs(7200),
            ..RetrySchedule::default()
        };
        let arrival = 1_000_000;
        assert_eq!(r.next_attempt(1, arrival, arrival), arrival + 3_600_000);
        assert_eq!(
            r.next_attempt(2, arrival + 5_000_000, arrival),
            arrival + 7_200_000
        );
        assert!(!r.expired(arrival, arrival + 7_199_999));
        assert!(r.expired(arrival, arrival + 7_200_000));
        // Past expiry the next attempt is now (and the message is then bounced).
        assert_eq!(
            r.next_attempt(3, arrival + 9_000_000, arrival),
            arrival + 9_000_000
        );
    }
}
