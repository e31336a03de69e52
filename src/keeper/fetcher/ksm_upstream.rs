//! The real [`Upstream`]: a `KsmClient` for one bound credential.

use super::Upstream;
use super::sealed::cache_key;
use crate::ksm::client::{KsmClient, Query};
use crate::ksm::config::ConfigError;
use crate::ksm::crypto::AesKey;
use crate::ksm::error::KsmError;
use crate::ksm::record::{KeeperFile, Vault};
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Label set of a Keeper request outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeeperLabels {
    /// `get_secret` or `download`.
    operation: &'static str,
    /// `success` or the error reason.
    outcome: &'static str,
}

/// Label set of a Keeper request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    /// `get_secret` or `download`.
    operation: &'static str,
}

/// Requests made to Keeper: count by outcome and latency; clones share the series.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: Family<KeeperLabels, Counter>,
    latency: Family<OperationLabels, Histogram>,
}

/// Keeper answers in tens of milliseconds; a slow one or a large download takes seconds.
fn keeper_latency_buckets() -> Histogram {
    Histogram::new([0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

impl RequestMetrics {
    /// Request metrics that `registry` exports.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<KeeperLabels, Counter>::default();
        registry.register(
            "keeper_requests",
            "Requests made to Keeper by operation and outcome",
            requests.clone(),
        );
        let latency = Family::<OperationLabels, Histogram>::new_with_constructor(
            keeper_latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "keeper_request_duration_seconds",
            "Latency of Keeper requests by operation, failures included",
            latency.clone(),
        );
        RequestMetrics { requests, latency }
    }

    /// Counts one Keeper request and how long it took.
    pub fn record(&self, operation: &'static str, outcome: &'static str, took: Duration) {
        self.requests
            .get_or_create(&KeeperLabels { operation, outcome })
            .inc();
        self.latency
            .get_or_create(&OperationLabels { operation })
            .observe(took.as_secs_f64());
    }
}

pub struct KsmUpstream {
    client: KsmClient,
    cache_key: AesKey,
    metrics: RequestMetrics,
}

impl KsmUpstream {
    /// Fails for an unbound config: only a bound credential has the key that seals its cache.
    pub fn new(client: KsmClient, metrics: RequestMetrics) -> Result<Self, KsmError> {
        let app_key = client
            .config()
            .app_key()
            .ok_or(KsmError::Config(ConfigError::NotBound))?;
        let cache_key = cache_key(app_key);
        Ok(KsmUpstream {
            client,
            cache_key,
            metrics,
        })
    }
}

impl Upstream for KsmUpstream {
    fn fetch(&self) -> BoxFuture<'_, Result<Zeroizing<Vec<u8>>, KsmError>> {
        Box::pin(async move {
            let start = Instant::now();
            let result = self.client.get_secrets_body(&Query::default()).await;
            self.metrics
                .record("get_secret", outcome(&result), start.elapsed());
            result
        })
    }

    fn decode(&self, body: &[u8]) -> Result<Vault, KsmError> {
        self.client.decode_secrets_body(body)
    }

    fn download<'a>(
        &'a self,
        file: &'a KeeperFile,
        budget: u64,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KsmError>> {
        Box::pin(async move {
            let start = Instant::now();
            let result = self.client.download_file(file, budget).await;
            self.metrics
                .record("download", outcome(&result), start.elapsed());
            result
        })
    }

    fn cache_key(&self) -> AesKey {
        self.cache_key.clone()
    }
}

fn outcome<T>(result: &Result<T, KsmError>) -> &'static str {
    match result {
        Ok(_) => "success",
        Err(e) => e.reason().as_str(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::registry::Registry;

    use super::RequestMetrics;

    #[test]
    fn counts_requests_and_their_latency_by_operation() {
        let mut registry = Registry::with_prefix("keeper_operator");
        let m = RequestMetrics::register(&mut registry);
        m.record("get_secret", "success", Duration::from_millis(30));
        m.record("get_secret", "KeeperUnavailable", Duration::from_secs(3));
        m.record("download", "success", Duration::from_millis(200));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"keeper_operator_keeper_requests_total{operation="get_secret",outcome="success"} 1"#
            ),
            "{text}"
        );
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
    }
}
