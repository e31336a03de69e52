//! The `/metrics` registry (`keeper_operator_` prefix): every component registers its own
//! metrics into it at startup and keeps the handles it updates. Labels are low-cardinality
//! categories (result, reason, outcome, kind), a credential's non-secret id, and — for the age
//! of served data only — the KeeperSecret's namespace and name. Never a value or a record title.

use prometheus_client::registry::Registry;

use crate::controller::metrics::{DataAges, ReconcileMetrics};
use crate::k8s::rollout::RolloutMetrics;
use crate::keeper::KeeperMetrics;
use crate::runtime::leader::LeaderGauge;

/// The registry and each component's handles into it.
pub struct Metrics {
    /// What `/metrics` exposes; complete once built (a standby serves it before the
    /// components exist).
    pub registry: Registry,
    /// The reconciler's outcomes and durations.
    pub reconcile: ReconcileMetrics,
    /// Keeper requests, token redemptions and the shared fetchers' counters.
    pub keeper: KeeperMetrics,
    /// Rollout restarts.
    pub rollouts: RolloutMetrics,
    /// Whether this replica leads.
    pub leader: LeaderGauge,
    /// Age of each KeeperSecret's data, once the controller's caches exist.
    pub data_ages: DataAges,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keeper_operator");
        Metrics {
            reconcile: ReconcileMetrics::register(&mut registry),
            keeper: KeeperMetrics::register(&mut registry),
            rollouts: RolloutMetrics::register(&mut registry),
            leader: LeaderGauge::register(&mut registry),
            data_ages: DataAges::register(&mut registry),
            registry,
        }
    }
}

/// OpenMetrics text exposition of `registry`.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Metrics, encode};

    /// Every family `/metrics` exports, as `# TYPE` lines; dashboards, docs and the e2e tests
    /// read these names, so a change here must be deliberate.
    #[test]
    fn exports_every_family_under_its_name() {
        struct One;
        impl crate::controller::metrics::DataTimes for One {
            fn data_times(&self) -> Vec<(String, String, jiff::Timestamp)> {
                vec![("ns".into(), "n".into(), jiff::Timestamp::now())]
            }
        }
        let m = Metrics::default();
        // A family without series renders nothing: give each one.
        m.data_ages.watch(std::sync::Arc::new(One));
        m.reconcile.reconcile().finish("synced", "Synced");
        m.keeper.token_redemption("success");
        m.keeper
            .requests
            .record("get_secret", "success", Duration::from_millis(30));
        m.rollouts.restart("Deployment", "restarted");
        m.keeper.fetch_stats().record_budget(
            "id",
            &crate::keeper::fetcher::budget::RateBudget::new(
                4,
                Duration::from_secs(60),
                std::time::Instant::now(),
            ),
        );
        let text = encode(&m.registry).unwrap();
        let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        types.sort_unstable();
        assert_eq!(
            types,
            [
                "# TYPE keeper_operator_keeper_budget_utilization gauge",
                "# TYPE keeper_operator_keeper_cache_hits counter",
                "# TYPE keeper_operator_keeper_request_duration_seconds histogram",
                "# TYPE keeper_operator_keeper_requests counter",
                "# TYPE keeper_operator_keeper_requests_held_back counter",
                "# TYPE keeper_operator_keeper_secret_data_age_seconds gauge",
                "# TYPE keeper_operator_keeper_stale_served counter",
                "# TYPE keeper_operator_keeper_store_restores counter",
                "# TYPE keeper_operator_keeper_store_too_large counter",
                "# TYPE keeper_operator_leader gauge",
                "# TYPE keeper_operator_reconcile_duration_seconds histogram",
                "# TYPE keeper_operator_reconciles counter",
                "# TYPE keeper_operator_rollout_restarts counter",
                "# TYPE keeper_operator_token_redemptions counter",
            ]
        );
    }

    #[test]
    fn exposes_prefixed_families() {
        let m = Metrics::default();
        m.reconcile.reconcile().finish("error", "KeeperUnavailable");
        m.keeper.token_redemption("AuthFailed");
        let text = encode(&m.registry).unwrap();
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
        assert!(
            text.contains(r#"keeper_operator_token_redemptions_total{outcome="AuthFailed"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn restarts_and_leader() {
        let m = Metrics::default();
        let text = encode(&m.registry).unwrap();
        assert!(text.contains("keeper_operator_leader 0"), "{text}");
        m.leader.set(true);
        m.rollouts.restart("Deployment", "restarted");
        m.rollouts.restart("Deployment", "restarted");
        m.rollouts.restart("DaemonSet", "forbidden");
        let text = encode(&m.registry).unwrap();
        assert!(text.contains("keeper_operator_leader 1"), "{text}");
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
        let m = Metrics::default();
        let stats = m.keeper.fetch_stats();
        let now = std::time::Instant::now();
        // A day-long window: no noticeable refill between here and the scrape.
        let mut budget = RateBudget::new(4, Duration::from_secs(86_400), now);
        stats.record_budget("idle", &budget);
        budget.try_acquire(now).unwrap();
        stats.record_budget("quarter", &budget);
        budget.block_for(now, Some(Duration::from_secs(3600)));
        stats.record_budget("blocked", &budget);
        let text = encode(&m.registry).unwrap();
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

    impl crate::controller::metrics::DataTimes for Fixed {
        fn data_times(&self) -> Vec<(String, String, jiff::Timestamp)> {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn data_age_is_computed_at_scrape_time_from_the_source() {
        let m = Metrics::default();
        // Before the controller runs (a standby) there is no such family at all.
        assert!(!encode(&m.registry).unwrap().contains("data_age"));
        let fetched = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(90);
        let source = std::sync::Arc::new(Fixed(std::sync::Mutex::new(vec![(
            "shop".into(),
            "db".into(),
            fetched,
        )])));
        m.data_ages.watch(source.clone());
        let text = encode(&m.registry).unwrap();
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
        assert!(!encode(&m.registry).unwrap().contains(r#"name="db""#));
    }
}
