//! Retry delays, in one place: exponential growth with a cap, and random spread so that many
//! waiters (KeeperSecrets, operator replicas, clients of one Keeper tenant) do not come back in
//! the same instant. Used by the reconcile error policy, the shared fetcher and the KSM client.
//!
//! (A KeeperSecret's refresh spread is not random but derived from its UID, so it stays the same
//! across reconciles: see `refresh::jitter`.)

use std::time::Duration;

use rand::Rng;

/// `base · 2^attempt`, at most `cap`; `attempt` counts from 0.
pub fn exponential(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(16));
    base.saturating_mul(factor).min(cap)
}

/// `delay` moved at random by up to ±`fraction` of itself.
pub fn jitter(delay: Duration, fraction: f64) -> Duration {
    let spread = delay.as_secs_f64() * fraction.clamp(0.0, 1.0);
    if spread <= 0.0 {
        return delay;
    }
    let offset = rand::thread_rng().gen_range(-spread..=spread);
    Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_from_the_base_and_caps() {
        let base = Duration::from_secs(5);
        let cap = Duration::from_secs(300);
        assert_eq!(exponential(0, base, cap), Duration::from_secs(5));
        assert_eq!(exponential(2, base, cap), Duration::from_secs(20));
        assert_eq!(exponential(40, base, cap), cap);
        assert_eq!(exponential(u32::MAX, base, Duration::MAX), base * 65_536);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10), 0.25);
            assert!(d >= Duration::from_millis(7500) && d <= Duration::from_millis(12500));
        }
        assert_eq!(jitter(Duration::from_secs(3), 0.0), Duration::from_secs(3));
        assert_eq!(jitter(Duration::ZERO, 0.5), Duration::ZERO);
    }
}
