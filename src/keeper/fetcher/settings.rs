//! How the shared fetchers are tuned.

use std::time::Duration;

/// Tuning of the shared fetchers.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Requests a credential may make at once, refilled over `budget_window`.
    pub budget_requests: u32,
    pub budget_window: Duration,
    /// First wait after a failed fetch; doubles per consecutive failure up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The longest one fetch may take (from its start to its decoded result).
    pub fetch_deadline: Duration,
    /// Once Keeper refuses the credential (not an outage), its last good copy older than this
    /// is destroyed, in memory and sealed (the operator's `--max-stale-age`).
    pub max_refused_age: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        // A fifth of Keeper's ~100 requests / 10 s per client.
        FetchSettings {
            budget_requests: 20,
            budget_window: Duration::from_secs(10),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            fetch_deadline: Duration::from_secs(30),
            max_refused_age: Duration::from_secs(24 * 3600),
        }
    }
}
