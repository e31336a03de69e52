//! Prometheus metrics (`keeper_operator_` prefix). Labels are low-cardinality categories
//! (result, reason, outcome) — never object names or values.

use std::sync::Arc;
use std::time::Instant;

use crate::fetcher::FetchStats;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set of a reconcile outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `synced` (Keeper read and Secret current), `skipped` (nothing due) or `error`.
    pub result: &'static str,
    /// Condition reason (`Synced`, `KeeperUnavailable`, ...); empty for `skipped`.
    pub reason: &'static str,
}

/// Label set of a Keeper request outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeeperLabels {
    /// `get_secret` or `download`.
    pub operation: &'static str,
    /// `success` or the error reason.
    pub outcome: &'static str,
}

/// Label set of a one-time-token redemption.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `success` or the error reason.
    pub outcome: &'static str,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    duration: Histogram,
    keeper_requests: Family<KeeperLabels, Counter>,
    token_redemptions: Family<OutcomeLabels, Counter>,
    fetch_stats: Arc<FetchStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keeper_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result and condition reason",
            reconciles.clone(),
        );
        // Coarse buckets: a reconcile is a few API calls and at most one Keeper round trip.
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            duration.clone(),
        );
        let keeper_requests = Family::<KeeperLabels, Counter>::default();
        registry.register(
            "keeper_requests",
            "Requests made to Keeper by operation and outcome",
            keeper_requests.clone(),
        );
        let token_redemptions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "token_redemptions",
            "One-time tokens redeemed in-cluster, by outcome",
            token_redemptions.clone(),
        );
        let fetch_stats = Arc::new(FetchStats::default());
        registry.register(
            "keeper_cache_hits",
            "Reads served from a credential's shared snapshot without a Keeper call",
            fetch_stats.cache_hits.clone(),
        );
        registry.register(
            "keeper_requests_held_back",
            "Keeper requests not sent because the credential's budget or backoff said wait",
            fetch_stats.held_back.clone(),
        );
        registry.register(
            "keeper_stale_served",
            "Reads served from the last good copy because Keeper failed",
            fetch_stats.stale_served.clone(),
        );
        registry.register(
            "keeper_store_restores",
            "Snapshots restored from the persisted last-good cache",
            fetch_stats.store_restores.clone(),
        );
        Metrics {
            registry,
            reconciles,
            duration,
            keeper_requests,
            token_redemptions,
            fetch_stats,
        }
    }
}

impl Metrics {
    /// Starts timing a reconcile; call [`ReconcileTimer::finish`] with its outcome.
    pub fn reconcile(&self) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            start: Instant::now(),
        }
    }

    /// Counts one Keeper request.
    pub fn keeper_request(&self, operation: &'static str, outcome: &'static str) {
        self.keeper_requests
            .get_or_create(&KeeperLabels { operation, outcome })
            .inc();
    }

    /// Counts one token redemption attempt.
    pub fn token_redemption(&self, outcome: &'static str) {
        self.token_redemptions
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counters the shared fetchers update.
    pub fn fetch_stats(&self) -> Arc<FetchStats> {
        self.fetch_stats.clone()
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Measures one reconcile.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl ReconcileTimer<'_> {
    /// Records the duration and the outcome.
    pub fn finish(self, result: &'static str, reason: &'static str) {
        self.metrics
            .duration
            .observe(self.start.elapsed().as_secs_f64());
        self.metrics
            .reconciles
            .get_or_create(&ReconcileLabels { result, reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exposes_prefixed_families() {
        let m = super::Metrics::default();
        m.reconcile().finish("error", "KeeperUnavailable");
        m.keeper_request("get_secret", "success");
        m.token_redemption("AuthFailed");
        let text = m.encode().unwrap();
        assert!(
            text.contains(
                r#"keeper_operator_reconciles_total{result="error",reason="KeeperUnavailable"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("keeper_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains(
            r#"keeper_operator_keeper_requests_total{operation="get_secret",outcome="success"} 1"#
        ));
        assert!(
            text.contains(r#"keeper_operator_token_redemptions_total{outcome="AuthFailed"} 1"#),
            "{text}"
        );
    }
}
