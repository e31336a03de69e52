//! The one door to Keeper. The reconciler only sees [`KeeperSource`]; [`SharedKeeper`] gives
//! every credential one shared fetcher (single flight, request budget, last good copy: see
//! [`crate::keeper::fetcher`]).

pub mod fetcher;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};

use crate::keeper::fetcher::files::FileCache;
use crate::keeper::fetcher::ksm_upstream::{KsmUpstream, RequestMetrics};
use crate::keeper::fetcher::sealed::SnapshotStore;
use crate::keeper::fetcher::{
    CredentialFetcher, FetchSettings, FetchStats, FileBytes, KeeperHealth, Served,
};
use crate::ksm::client::{ClientOptions, KsmClient, http_client};
use crate::ksm::config::KsmConfig;
use crate::ksm::error::KsmError;
use crate::ksm::hosts::AllowedHosts;
use crate::ksm::record::KeeperFile;
use crate::ksm::token::redeem_token;
use crate::lock;
use crate::sync::hold::Refusable;

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

    /// SHA-256 of the credential's content.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
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

/// Read access to Keeper, shared per credential.
pub trait KeeperSource: Send + Sync + 'static {
    /// The credential's vault, fetched within `max_age` when Keeper answers; otherwise the last
    /// good copy marked stale, or why there is none. `Err` only when no client can be built.
    fn vault(
        &self,
        cred: &CredentialKey,
        config: &KsmConfig,
        max_age: Duration,
    ) -> impl Future<Output = Result<Served, KsmError>> + Send;

    /// The decrypted content of a file attachment of a record at `revision`, refused beyond
    /// `budget` bytes.
    fn file(
        &self,
        cred: &CredentialKey,
        config: &KsmConfig,
        revision: i64,
        file: &KeeperFile,
        budget: u64,
    ) -> impl Future<Output = Result<FileBytes, KsmError>> + Send;

    /// What the credential's fetcher knows of Keeper's recent answers, without asking Keeper;
    /// `None` while nothing has used the credential.
    fn health(&self, cred: &CredentialKey) -> impl Future<Output = Option<KeeperHealth>> + Send;

    /// Redeems a one-time token (see [`crate::ksm::token::redeem_token`]) into a bound config.
    fn redeem(
        &self,
        token: &str,
        hostname: Option<&str>,
        server_key: Option<(String, String)>,
    ) -> impl Future<Output = Result<KsmConfig, KsmError>> + Send;
}

impl Refusable for KsmError {
    fn is_refusal(&self) -> bool {
        KsmError::is_refusal(self)
    }
}

/// Label set of a one-time-token redemption.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// `success` or the error reason.
    outcome: &'static str,
}

/// What Keeper access exports: requests, token redemptions and the fetchers' counters.
#[derive(Clone)]
pub struct KeeperMetrics {
    /// Requests to Keeper, which each credential's upstream records.
    pub requests: RequestMetrics,
    token_redemptions: Family<OutcomeLabels, Counter>,
    fetch_stats: Arc<FetchStats>,
}

impl KeeperMetrics {
    /// Keeper metrics that `registry` exports.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = RequestMetrics::register(registry);
        let token_redemptions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "token_redemptions",
            "One-time tokens redeemed in-cluster, by outcome",
            token_redemptions.clone(),
        );
        KeeperMetrics {
            requests,
            token_redemptions,
            fetch_stats: FetchStats::register(registry),
        }
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
}

/// Bound on live fetchers; beyond it the least recently created are dropped (they only hold
/// caches that refill on the next wave, and persisted snapshots survive in the store).
const MAX_FETCHERS: usize = 4096;

/// One [`CredentialFetcher`] per credential content, shared by every KeeperSecret using it,
/// whichever namespace or store it came through.
pub struct SharedKeeper {
    options: ClientOptions,
    /// One HTTP client for every credential: one root store and one connection pool per
    /// Keeper host, rather than one per credential.
    http: reqwest::Client,
    settings: FetchSettings,
    store: Option<Arc<dyn SnapshotStore>>,
    metrics: KeeperMetrics,
    /// Downloaded attachments of every credential, under one byte budget.
    files: Arc<FileCache>,
    fetchers: Mutex<HashMap<[u8; 32], Arc<CredentialFetcher>>>,
}

impl SharedKeeper {
    /// Fails if `options` are unusable (an extra CA that is not a PEM bundle).
    pub fn new(
        options: ClientOptions,
        settings: FetchSettings,
        store: Option<Arc<dyn SnapshotStore>>,
        metrics: KeeperMetrics,
    ) -> Result<Self, KsmError> {
        Ok(SharedKeeper {
            http: http_client(&options)?,
            // A fetch is one request (the operator's client surfaces throttling at once).
            settings: FetchSettings {
                fetch_deadline: options.timeout,
                ..settings
            },
            options,
            store,
            metrics,
            files: Arc::default(),
            fetchers: Mutex::default(),
        })
    }

    fn fetcher(
        &self,
        cred: &CredentialKey,
        config: &KsmConfig,
    ) -> Result<Arc<CredentialFetcher>, KsmError> {
        let mut fetchers = lock(&self.fetchers);
        if let Some(f) = fetchers.get(&cred.fingerprint) {
            return Ok(f.clone());
        }
        if fetchers.len() >= MAX_FETCHERS {
            fetchers.clear();
        }
        let client = KsmClient::with_http(config.clone(), &self.options, self.http.clone())?;
        let source = KsmUpstream::new(client, self.metrics.requests.clone())?;
        let fetcher = Arc::new(CredentialFetcher::new(
            config.client_id(),
            Box::new(source),
            self.store.clone(),
            self.settings.clone(),
            self.metrics.fetch_stats(),
            self.files.clone(),
        ));
        fetchers.insert(cred.fingerprint, fetcher.clone());
        Ok(fetcher)
    }
}

impl KeeperSource for SharedKeeper {
    async fn vault(
        &self,
        cred: &CredentialKey,
        config: &KsmConfig,
        max_age: Duration,
    ) -> Result<Served, KsmError> {
        Ok(self.fetcher(cred, config)?.snapshot(max_age).await)
    }

    async fn file(
        &self,
        cred: &CredentialKey,
        config: &KsmConfig,
        revision: i64,
        file: &KeeperFile,
        budget: u64,
    ) -> Result<FileBytes, KsmError> {
        self.fetcher(cred, config)?
            .file(revision, file, budget)
            .await
    }

    async fn health(&self, cred: &CredentialKey) -> Option<KeeperHealth> {
        let fetcher = lock(&self.fetchers).get(&cred.fingerprint).cloned()?;
        Some(fetcher.health().await)
    }

    async fn redeem(
        &self,
        token: &str,
        hostname: Option<&str>,
        server_key: Option<(String, String)>,
    ) -> Result<KsmConfig, KsmError> {
        let outcome = redeem_token(token, hostname, server_key, &self.options).await;
        self.metrics.token_redemption(match &outcome {
            Ok(_) => "success",
            Err(e) => e.reason().as_str(),
        });
        outcome
    }
}

/// Client options for the operator: the extra CA and the allowed Keeper hosts (credentials
/// come from tenants); throttling is surfaced at once so the controller requeues the
/// KeeperSecret instead of blocking a worker.
pub fn client_options(extra_ca_pem: Option<Vec<u8>>, allowed_hosts: AllowedHosts) -> ClientOptions {
    ClientOptions {
        extra_ca_pem,
        allowed_hosts: Some(allowed_hosts),
        throttle_retries: 0,
        ..ClientOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::hold::refusal;

    #[test]
    fn an_unusable_extra_ca_fails_at_startup_not_per_credential() {
        let keeper = |pem: Option<&[u8]>| {
            SharedKeeper::new(
                client_options(pem.map(<[u8]>::to_vec), AllowedHosts::keeper_regions()),
                FetchSettings::default(),
                None,
                KeeperMetrics::register(&mut Registry::default()),
            )
        };
        assert!(matches!(
            keeper(Some(b"not a pem")),
            Err(KsmError::InvalidCa(_))
        ));
        assert!(keeper(None).is_ok());
    }

    #[test]
    fn a_refusal_stops_writes_and_an_outage_does_not() {
        let denied = KsmError::AccessDenied {
            message: "Signature is invalid".into(),
        };
        let down = KsmError::Unavailable("connection refused".into());
        let reason = |e: Option<&KsmError>| e.map(|e| e.reason().as_str());
        assert_eq!(reason(refusal(Some(&denied), None)), Some("AuthFailed"));
        assert_eq!(reason(refusal(None, Some(&denied))), Some("AuthFailed"));
        assert_eq!(reason(refusal(Some(&down), None)), None);
        assert_eq!(reason(refusal(None, Some(&down))), None);
        assert_eq!(reason(refusal(None, None)), None);
        // Only Keeper refusing the credential counts: a wrong server key or a TLS failure says
        // nothing about the application's access, so the last good copy still serves.
        let wrong_key = KsmError::WrongServerKey {
            key_id: Some(9),
            custom_key: true,
        };
        let tls = KsmError::Tls("certificate expired".into());
        assert_eq!(reason(refusal(Some(&wrong_key), None)), None);
        assert_eq!(reason(refusal(None, Some(&tls))), None);
    }
}
