//! The one door to Keeper. The reconciler only sees [`KeeperSource`]; today's implementation
//! ([`KsmSource`]) calls Keeper directly with one cached client per credential, and the shared
//! single-flight fetcher with a last-good cache (issue #5) slots in behind the same trait.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::ksm::client::{ClientOptions, KsmClient, Query};
use crate::ksm::config::KsmConfig;
use crate::ksm::error::KsmError;
use crate::ksm::record::{KeeperFile, Vault};
use crate::metrics::Metrics;

/// Identifies one credential: where it came from plus a fingerprint of its content, so a
/// rotated credential is a new key (and gets a new client) while equal ones share.
#[derive(Clone, Hash, PartialEq, Eq)]
pub struct CredentialKey {
    source: String,
    fingerprint: [u8; 32],
}

impl CredentialKey {
    /// `source` names the Secret (`namespace/name/key`); `credential` is its content.
    pub fn new(source: impl Into<String>, credential: &[u8]) -> Self {
        CredentialKey {
            source: source.into(),
            fingerprint: Sha256::digest(credential).into(),
        }
    }
}

impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The fingerprint is a hash of a high-entropy credential; a short prefix helps
        // correlate rotations in logs without revealing anything.
        let short: String = self.fingerprint[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        write!(f, "CredentialKey({}, {short})", self.source)
    }
}

/// Read access to Keeper.
pub trait KeeperSource: Send + Sync + 'static {
    /// The records (and folders) `query` selects, decrypted.
    fn fetch(
        &self,
        cred: &CredentialKey,
        config: &KsmConfig,
        query: &Query,
    ) -> impl Future<Output = Result<Arc<Vault>, KsmError>> + Send;

    /// The decrypted content of a file attachment.
    fn download(
        &self,
        cred: &CredentialKey,
        config: &KsmConfig,
        file: &KeeperFile,
    ) -> impl Future<Output = Result<Zeroizing<Vec<u8>>, KsmError>> + Send;
}

/// Bound on cached clients; a client is cheap to rebuild, so the cache is simply reset.
const MAX_CLIENTS: usize = 1024;

/// Direct Keeper access through [`KsmClient`].
pub struct KsmSource {
    options: ClientOptions,
    clients: Mutex<HashMap<CredentialKey, KsmClient>>,
    metrics: Arc<Metrics>,
}

impl KsmSource {
    /// A source whose clients use `options` (extra CA, timeouts).
    pub fn new(options: ClientOptions, metrics: Arc<Metrics>) -> Self {
        KsmSource {
            options,
            clients: Mutex::default(),
            metrics,
        }
    }

    fn client(&self, cred: &CredentialKey, config: &KsmConfig) -> Result<KsmClient, KsmError> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = clients.get(cred) {
            return Ok(c.clone());
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let client = KsmClient::new(config.clone(), &self.options)?;
        clients.insert(cred.clone(), client.clone());
        Ok(client)
    }

    fn count<T>(&self, operation: &'static str, result: &Result<T, KsmError>) {
        let outcome = match result {
            Ok(_) => "success",
            Err(e) => e.reason(),
        };
        self.metrics.keeper_request(operation, outcome);
    }
}

impl KeeperSource for KsmSource {
    async fn fetch(
        &self,
        cred: &CredentialKey,
        config: &KsmConfig,
        query: &Query,
    ) -> Result<Arc<Vault>, KsmError> {
        let client = self.client(cred, config)?;
        let result = client.get_secrets(query).await;
        self.count("get_secret", &result);
        result.map(Arc::new)
    }

    async fn download(
        &self,
        cred: &CredentialKey,
        config: &KsmConfig,
        file: &KeeperFile,
    ) -> Result<Zeroizing<Vec<u8>>, KsmError> {
        let client = self.client(cred, config)?;
        let result = client.download_file(file).await;
        self.count("download", &result);
        result
    }
}

/// Client options for the operator: the extra CA; throttling is surfaced at once so the
/// controller requeues the KeeperSecret instead of blocking a worker.
pub fn client_options(extra_ca_pem: Option<Vec<u8>>) -> ClientOptions {
    ClientOptions {
        extra_ca_pem,
        throttle_retries: 0,
        ..ClientOptions::default()
    }
}
