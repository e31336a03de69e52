//! Prometheus metrics (`keeper_operator_` prefix). Labels are low-cardinality categories
//! (result, reason, outcome, kind), a credential's non-secret id, and — for the age of served
//! data only — the KeeperSecret's namespace and name. Never a value or a record title.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::keeper::fetcher::FetchStats;

use jiff::Timestamp;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
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

/// Label set of a Keeper request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// `get_secret` or `download`.
    pub operation: &'static str,
}

/// Label set of a rollout restart.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: &'static str,
    /// `restarted`, `not_found`, `forbidden` or `error`.
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
    keeper_latency: Family<OperationLabels, Histogram>,
    token_redemptions: Family<OutcomeLabels, Counter>,
    rollout_restarts: Family<RolloutLabels, Counter>,
    leader: Gauge,
    fetch_stats: Arc<FetchStats>,
    data_times: Arc<OnceLock<Arc<dyn DataTimes>>>,
}

/// Keeper answers in tens of milliseconds; a slow one or a large download takes seconds.
fn keeper_latency_buckets() -> Histogram {
    Histogram::new([0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
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
        let keeper_latency = Family::<OperationLabels, Histogram>::new_with_constructor(
            keeper_latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "keeper_request_duration_seconds",
            "Latency of Keeper requests by operation, failures included",
            keeper_latency.clone(),
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
        registry.register(
            "keeper_store_too_large",
            "Times the last good copy turned too large to persist (it is kept in memory only)",
            fetch_stats.store_too_large.clone(),
        );
        registry.register_collector(Box::new(BudgetUse(fetch_stats.clone())));
        let rollout_restarts = Family::<RolloutLabels, Counter>::default();
        registry.register(
            "rollout_restarts",
            "Workload restarts after synced data changed (spec.rolloutRestart), by kind and outcome",
            rollout_restarts.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controller (always 1 without --leader-elect), else 0",
            leader.clone(),
        );
        let data_times = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(DataAge(data_times.clone())));
        Metrics {
            registry,
            reconciles,
            duration,
            keeper_requests,
            keeper_latency,
            token_redemptions,
            rollout_restarts,
            leader,
            fetch_stats,
            data_times,
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

    /// Counts one Keeper request and how long it took.
    pub fn keeper_request(&self, operation: &'static str, outcome: &'static str, took: Duration) {
        self.keeper_requests
            .get_or_create(&KeeperLabels { operation, outcome })
            .inc();
        self.keeper_latency
            .get_or_create(&OperationLabels { operation })
            .observe(took.as_secs_f64());
    }

    /// Counts one rollout restart attempt.
    pub fn rollout_restart(&self, kind: &'static str, outcome: &'static str) {
        self.rollout_restarts
            .get_or_create(&RolloutLabels { kind, outcome })
            .inc();
    }

    /// Whether this replica leads (runs the controller).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Exposes the age of each KeeperSecret's data from the controller's caches; set once.
    pub fn watch_data_times(&self, source: Arc<dyn DataTimes>) {
        let _ = self.data_times.set(source);
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

/// When the data of each KeeperSecret was fetched from Keeper, for the data-age metric.
pub trait DataTimes: Send + Sync {
    /// `(namespace, name, fetched at)` of every KeeperSecret that has synced.
    fn data_times(&self) -> Vec<(String, String, Timestamp)>;
}

/// `keeper_secret_data_age_seconds{namespace,name}`: how old the data each KeeperSecret serves
/// is (now minus when Keeper returned it), computed at scrape time from the controller's caches,
/// so a deleted KeeperSecret's series disappears with it.
struct DataAge(Arc<OnceLock<Arc<dyn DataTimes>>>);

impl std::fmt::Debug for DataAge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataAge").finish_non_exhaustive()
    }
}

impl Collector for DataAge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.0.get() else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "keeper_secret_data_age_seconds",
            "Age of the Keeper data a KeeperSecret's Secret holds (grows while Keeper is down)",
            None,
            MetricType::Gauge,
        )?;
        let now = Timestamp::now();
        for (namespace, name, fetched) in source.data_times() {
            let age = now.duration_since(fetched).as_secs_f64().max(0.0);
            let labels = [("namespace", namespace), ("name", name)];
            ConstGauge::new(age).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
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
    use std::time::Duration;

    #[test]
    fn exposes_prefixed_families() {
        let m = super::Metrics::default();
        m.reconcile().finish("error", "KeeperUnavailable");
        m.keeper_request("get_secret", "success", Duration::from_millis(30));
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

    #[test]
    fn latency_restarts_and_leader() {
        let m = super::Metrics::default();
        let text = m.encode().unwrap();
        assert!(text.contains("keeper_operator_leader 0"), "{text}");
        m.set_leader(true);
        m.keeper_request("get_secret", "success", Duration::from_millis(30));
        m.keeper_request("get_secret", "KeeperUnavailable", Duration::from_secs(3));
        m.keeper_request("download", "success", Duration::from_millis(200));
        m.rollout_restart("Deployment", "restarted");
        m.rollout_restart("Deployment", "restarted");
        m.rollout_restart("DaemonSet", "forbidden");
        let text = m.encode().unwrap();
        assert!(text.contains("keeper_operator_leader 1"), "{text}");
        let get = r#"keeper_operator_keeper_request_duration_seconds"#;
        assert!(
            text.contains(&format!(r#"{get}_count{{operation="get_secret"}} 2"#)),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                r#"{get}_bucket{{le="0.05",operation="get_secret"}} 1"#
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(r#"{get}_count{{operation="download"}} 1"#)),
            "{text}"
        );
        assert!(
            text.contains(
                r#"keeper_operator_rollout_restarts_total{kind="Deployment",outcome="restarted"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"keeper_operator_rollout_restarts_total{kind="DaemonSet",outcome="forbidden"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn budget_utilization_per_credential_id() {
        use crate::keeper::fetcher::budget::RateBudget;
        let m = super::Metrics::default();
        let stats = m.fetch_stats();
        let now = std::time::Instant::now();
        // A day-long window: no noticeable refill between here and the scrape.
        let mut budget = RateBudget::new(4, Duration::from_secs(86_400), now);
        stats.record_budget("idle", &budget);
        budget.try_acquire(now).unwrap();
        stats.record_budget("quarter", &budget);
        budget.block_for(now, Some(Duration::from_secs(3600)));
        stats.record_budget("blocked", &budget);
        let text = m.encode().unwrap();
        let value = |id: &str| -> f64 {
            let series =
                format!(r#"keeper_operator_keeper_budget_utilization{{credential="{id}"}} "#);
            text.lines()
                .find_map(|l| l.strip_prefix(&series))
                .unwrap_or_else(|| panic!("{series} missing in {text}"))
                .parse()
                .unwrap()
        };
        assert_eq!(value("idle"), 0.0);
        assert!((value("quarter") - 0.25).abs() < 1e-3, "{text}");
        assert_eq!(value("blocked"), 1.0);
        assert!(text.contains("# TYPE keeper_operator_keeper_budget_utilization gauge"));
    }

    /// Data times as a test sets them.
    struct Fixed(std::sync::Mutex<Vec<(String, String, jiff::Timestamp)>>);

    impl super::DataTimes for Fixed {
        fn data_times(&self) -> Vec<(String, String, jiff::Timestamp)> {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn data_age_is_computed_at_scrape_time_from_the_source() {
        let m = super::Metrics::default();
        // Before the controller runs (a standby) there is no such family at all.
        assert!(!m.encode().unwrap().contains("data_age"));
        let fetched = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(90);
        let source = std::sync::Arc::new(Fixed(std::sync::Mutex::new(vec![(
            "shop".into(),
            "db".into(),
            fetched,
        )])));
        m.watch_data_times(source.clone());
        let text = m.encode().unwrap();
        let series =
            r#"keeper_operator_keeper_secret_data_age_seconds{namespace="shop",name="db"} "#;
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .unwrap_or_else(|| panic!("{text}"))
            .parse()
            .unwrap();
        assert!((90.0..100.0).contains(&age), "{age}");
        source.0.lock().unwrap().clear();
        assert!(!m.encode().unwrap().contains(r#"name="db""#));
    }
}
