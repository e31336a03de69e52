//! The real [`Upstream`]: a `KsmClient` for one bound credential.

use super::Upstream;
use super::sealed::cache_key;
use crate::ksm::client::{KsmClient, Query};
use crate::ksm::config::ConfigError;
use crate::ksm::crypto::AesKey;
use crate::ksm::error::KsmError;
use crate::ksm::record::{KeeperFile, Vault};
use crate::runtime::metrics::Metrics;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Instant;
use zeroize::Zeroizing;

pub struct KsmUpstream {
    client: KsmClient,
    cache_key: AesKey,
    metrics: Arc<Metrics>,
}

impl KsmUpstream {
    /// Fails for an unbound config: only a bound credential has the key that seals its cache.
    pub fn new(client: KsmClient, metrics: Arc<Metrics>) -> Result<Self, KsmError> {
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
                .keeper_request("get_secret", outcome(&result), start.elapsed());
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
                .keeper_request("download", outcome(&result), start.elapsed());
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
