//! What the fetchers did, exported to Prometheus.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::budget::RateBudget;
use crate::lock;

/// What the fetchers did, as Prometheus counters ([`FetchStats::register`]).
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Requests not sent because the budget or a backoff said wait.
    pub held_back: Counter,
    /// Callers served from memory without a call.
    pub cache_hits: Counter,
    /// Snapshots restored from the persisted last-good store.
    pub store_restores: Counter,
    /// Times the last good copy turned too large to persist (the API server refuses a Secret
    /// over 1 MiB); counted again only after a copy that fits was persisted.
    pub store_too_large: Counter,
    /// Callers served a stale last good copy.
    pub stale_served: Counter,
    /// Latest budget state per credential id, for the utilisation gauge.
    budgets: std::sync::Mutex<std::collections::BTreeMap<String, RateBudget>>,
}

impl FetchStats {
    /// Stats whose counters and budget gauge `registry` exports.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let stats = Arc::new(FetchStats::default());
        registry.register(
            "keeper_cache_hits",
            "Reads served from a credential's shared snapshot without a Keeper call",
            stats.cache_hits.clone(),
        );
        registry.register(
            "keeper_requests_held_back",
            "Keeper requests not sent because the credential's budget or backoff said wait",
            stats.held_back.clone(),
        );
        registry.register(
            "keeper_stale_served",
            "Reads served from the last good copy because Keeper failed",
            stats.stale_served.clone(),
        );
        registry.register(
            "keeper_store_restores",
            "Snapshots restored from the persisted last-good cache",
            stats.store_restores.clone(),
        );
        registry.register(
            "keeper_store_too_large",
            "Times the last good copy turned too large to persist (it is kept in memory only)",
            stats.store_too_large.clone(),
        );
        registry.register_collector(Box::new(BudgetUse(stats.clone())));
        stats
    }

    /// Remembers the budget of credential `id` after it changed.
    pub(crate) fn record_budget(&self, id: &str, budget: &RateBudget) {
        lock(&self.budgets).insert(id.to_string(), budget.clone());
    }

    /// Every credential's latest budget; refill since then is computed by the reader.
    pub fn budgets(&self) -> Vec<(String, RateBudget)> {
        let budgets = lock(&self.budgets);
        budgets
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// `keeper_budget_utilization{credential}`: each credential's request budget in use at scrape
/// time (0 idle, 1 exhausted or blocked by a throttle), from the fetchers' latest budget state.
#[derive(Debug)]
struct BudgetUse(Arc<FetchStats>);

impl Collector for BudgetUse {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let budgets = self.0.budgets();
        let mut family = encoder.encode_descriptor(
            "keeper_budget_utilization",
            "Share of a credential's Keeper request budget in use (1 = requests held back)",
            None,
            MetricType::Gauge,
        )?;
        let now = Instant::now();
        for (credential, mut budget) in budgets {
            let labels = [("credential", credential)];
            ConstGauge::new(budget.utilization(now)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
