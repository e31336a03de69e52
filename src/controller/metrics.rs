//! The reconciler's metrics: reconcile outcomes and durations, and the age of the data each
//! KeeperSecret serves.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use jiff::Timestamp;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set of a reconcile outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    /// `synced` (Keeper read and Secret current), `skipped` (nothing due) or `error`.
    result: &'static str,
    /// Condition reason (`Synced`, `KeeperUnavailable`, ...); empty for `skipped`.
    reason: &'static str,
}

/// Reconciles by outcome and their duration; clones share the series.
#[derive(Clone)]
pub struct ReconcileMetrics {
    reconciles: Family<ReconcileLabels, Counter>,
    duration: Histogram,
}

impl ReconcileMetrics {
    /// Reconcile metrics that `registry` exports.
    pub fn register(registry: &mut Registry) -> Self {
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
        ReconcileMetrics {
            reconciles,
            duration,
        }
    }

    /// Starts timing a reconcile; call [`ReconcileTimer::finish`] with its outcome.
    pub fn reconcile(&self) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            start: Instant::now(),
        }
    }
}

/// Measures one reconcile.
pub struct ReconcileTimer<'a> {
    metrics: &'a ReconcileMetrics,
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

/// When the data of each KeeperSecret was fetched from Keeper, for the data-age metric.
pub trait DataTimes: Send + Sync {
    /// `(namespace, name, fetched at)` of every KeeperSecret that has synced.
    fn data_times(&self) -> Vec<(String, String, Timestamp)>;
}

/// `keeper_secret_data_age_seconds{namespace,name}`, exported once a source is watched. The
/// family is registered before the controller exists (a standby serves `/metrics` too), hence
/// the source set later, once.
#[derive(Clone, Default)]
pub struct DataAges(Arc<OnceLock<Arc<dyn DataTimes>>>);

impl DataAges {
    /// The data-age family that `registry` exports.
    pub fn register(registry: &mut Registry) -> Self {
        let ages = DataAges::default();
        registry.register_collector(Box::new(ages.clone()));
        ages
    }

    /// Exposes the age of each KeeperSecret's data from `source`; set once.
    pub fn watch(&self, source: Arc<dyn DataTimes>) {
        let _ = self.0.set(source);
    }
}

impl std::fmt::Debug for DataAges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataAges").finish_non_exhaustive()
    }
}

/// How old the data each KeeperSecret serves is (now minus when Keeper returned it), computed
/// at scrape time from the controller's caches, so a deleted KeeperSecret's series disappears
/// with it.
impl Collector for DataAges {
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
