//! Per-credential request budget (pure: the caller supplies the clock).
//!
//! Keeper throttles at about 100 requests per 10 s per client id and endpoint, and the window
//! restarts on every request (docs/dev/protocol.md#throttling). A token bucket well under that rate
//! keeps the operator from ever reaching it, and a block set from `retry_after` honours the server
//! when something else sharing the credential did.

use std::time::{Duration, Instant};

/// The default wait when Keeper throttles without saying for how long: its window is 10 s.
pub const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(11);

#[derive(Debug, Clone)]
pub struct RateBudget {
    capacity: f64,
    refill_per_sec: f64,
    tokens: f64,
    last: Instant,
    blocked_until: Option<Instant>,
}

impl RateBudget {
    /// `capacity` requests at once, refilled evenly over `window`.
    pub fn new(capacity: u32, window: Duration, now: Instant) -> Self {
        let capacity = f64::from(capacity.max(1));
        RateBudget {
            capacity,
            refill_per_sec: capacity / window.as_secs_f64().max(0.001),
            tokens: capacity,
            last: now,
            blocked_until: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        self.last = now;
    }

    /// Takes one request from the budget, or says how long to wait for one.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(until) = self.blocked_until {
            if now < until {
                return Err(until - now);
            }
            self.blocked_until = None;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.refill_per_sec,
            ))
        }
    }

    /// Keeper said "throttled": send nothing until its wait (or the default window) is over.
    pub fn block_for(&mut self, now: Instant, retry_after: Option<Duration>) {
        let until = now + retry_after.unwrap_or(DEFAULT_THROTTLE_WAIT);
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
        self.tokens = 0.0;
    }

    /// Fraction of the budget in use right now, 0.0..=1.0 (for metrics and status).
    pub fn utilization(&mut self, now: Instant) -> f64 {
        if self.blocked_until.is_some_and(|b| now < b) {
            return 1.0;
        }
        self.refill(now);
        1.0 - self.tokens / self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_capacity_then_refills_evenly() {
        let t0 = Instant::now();
        let mut budget = RateBudget::new(5, Duration::from_secs(10), t0);
        for _ in 0..5 {
            assert!(budget.try_acquire(t0).is_ok());
        }
        let wait = budget.try_acquire(t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(2));
        assert!(budget.try_acquire(t0 + Duration::from_secs(2)).is_ok());
        assert!(budget.try_acquire(t0 + Duration::from_secs(2)).is_err());
    }

    #[test]
    fn throttle_blocks_until_retry_after_and_empties_the_bucket() {
        let t0 = Instant::now();
        let mut budget = RateBudget::new(5, Duration::from_secs(10), t0);
        budget.block_for(t0, Some(Duration::from_secs(30)));
        assert_eq!(
            budget.try_acquire(t0 + Duration::from_secs(10)),
            Err(Duration::from_secs(20))
        );
        assert_eq!(budget.utilization(t0 + Duration::from_secs(10)), 1.0);
        // After the block the bucket has refilled from zero at the normal rate.
        assert!(budget.try_acquire(t0 + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn throttle_without_retry_after_waits_one_keeper_window() {
        let t0 = Instant::now();
        let mut budget = RateBudget::new(5, Duration::from_secs(10), t0);
        budget.block_for(t0, None);
        assert_eq!(budget.try_acquire(t0), Err(DEFAULT_THROTTLE_WAIT));
    }

    #[test]
    fn a_shorter_block_never_shortens_a_longer_one() {
        let t0 = Instant::now();
        let mut budget = RateBudget::new(5, Duration::from_secs(10), t0);
        budget.block_for(t0, Some(Duration::from_secs(60)));
        budget.block_for(t0, Some(Duration::from_secs(1)));
        assert_eq!(budget.try_acquire(t0), Err(Duration::from_secs(60)));
    }
}
