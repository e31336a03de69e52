//! Shared Keeper access: one fetcher per credential, used by every KeeperSecret on it.
//!
//! - **Single flight.** A credential's state sits behind one async mutex. The first caller that
//!   finds the snapshot too old fetches while holding it; everyone queued behind it then finds a
//!   fresh snapshot and returns without a call. N KeeperSecrets due together cost one
//!   `get_secret`, and callers whose data is still fresh cost none.
//! - **Whole-credential fetch.** One `get_secret` with no filter returns every record the
//!   application can read, so titles, folders and every KeeperSecret's needs resolve from it.
//! - **Budget.** Requests draw from a per-credential token bucket far below Keeper's throttle,
//!   and a `throttled` answer blocks the credential for the server's `retry_after`.
//! - **Last good copy.** A failed fetch never replaces the snapshot; callers get the old one,
//!   marked stale with the error and since when. After a failure the credential backs off
//!   (exponential, jittered) instead of letting every caller retry: an outage costs one call
//!   per backoff step, not one per KeeperSecret.
//! - **Persistence.** Every snapshot whose content changed is sealed into a [`SnapshotStore`];
//!   a process that has no snapshot yet and cannot reach Keeper loads it from there.
//! - **Files** are downloaded once per record revision and shared.

pub mod budget;
pub mod ksm_source;
pub mod secret_store;
pub mod store;

use crate::ksm::crypto::{AesKey, b64_url};
use crate::ksm::error::KsmError;
use crate::ksm::record::{KeeperFile, Vault};
use crate::lock;
use budget::{RateBudget, failure_backoff, jitter};
use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use store::SnapshotStore;
use zeroize::Zeroizing;

/// A downloaded, decrypted file, shared by every Secret that maps it.
pub type FileBytes = Arc<Zeroizing<Vec<u8>>>;

/// What a fetcher needs from Keeper for one credential (the real one wraps `KsmClient`).
pub trait VaultSource: Send + Sync + 'static {
    /// One `get_secret` for everything the application can read: the decrypted response body,
    /// whose record data is still encrypted under the application key.
    fn fetch(&self) -> BoxFuture<'_, Result<Zeroizing<Vec<u8>>, KsmError>>;
    /// Unwraps a body returned by `fetch` (or restored from the store).
    fn decode(&self, body: &[u8]) -> Result<Vault, KsmError>;
    /// A file's content; refused (`TooLarge`) beyond `budget` bytes.
    fn download<'a>(
        &'a self,
        file: &'a KeeperFile,
        budget: u64,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KsmError>>;
    /// The key sealing this credential's persisted snapshots.
    fn cache_key(&self) -> AesKey;
}

/// Tuning of the shared fetchers.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Requests a credential may make at once, refilled over `budget_window`.
    pub budget_requests: u32,
    pub budget_window: Duration,
    /// First wait after a failed fetch; doubles per consecutive failure up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        // A fifth of Keeper's ~100 requests / 10 s per client.
        FetchSettings {
            budget_requests: 20,
            budget_window: Duration::from_secs(10),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// Where a served snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Keeper,
    /// Restored from the persisted last-good store (Keeper not reachable since start).
    Store,
}

/// A decrypted vault and when Keeper returned it.
#[derive(Debug)]
pub struct Snapshot {
    pub vault: Vault,
    pub fetched_at: SystemTime,
    pub origin: Origin,
}

/// Why the data being served is not fresh.
#[derive(Debug, Clone)]
pub struct Staleness {
    pub error: Arc<KsmError>,
    /// When fetching started failing.
    pub since: SystemTime,
    /// When the fetcher will try Keeper again.
    pub retry_in: Duration,
}

/// The answer to "give me this credential's data".
#[derive(Debug, Clone)]
pub enum Served {
    Fresh(Arc<Snapshot>),
    /// Keeper failed; this is the last good copy.
    Stale(Arc<Snapshot>, Staleness),
    /// Keeper failed and there is no copy at all.
    Unavailable(Staleness),
}

/// What the fetchers did, as Prometheus counters (registered by [`crate::metrics`]).
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Requests not sent because the budget or a backoff said wait.
    pub held_back: Counter,
    /// Callers served from memory without a call.
    pub cache_hits: Counter,
    /// Snapshots restored from the persisted last-good store.
    pub store_restores: Counter,
    /// Callers served a stale last good copy.
    pub stale_served: Counter,
    /// Latest budget state per credential id, for the utilisation gauge.
    budgets: std::sync::Mutex<std::collections::BTreeMap<String, RateBudget>>,
}

impl FetchStats {
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

struct Failure {
    error: Arc<KsmError>,
    since: SystemTime,
    count: u32,
    next_attempt: Instant,
}

struct State {
    snapshot: Option<Arc<Snapshot>>,
    /// Fingerprint of the persisted body, so an unchanged vault is not written again.
    persisted: Option<[u8; 32]>,
    store_checked: bool,
    failure: Option<Failure>,
    budget: RateBudget,
    /// Downloaded files by file UID, with the record revision they belong to.
    files: HashMap<String, (i64, FileBytes)>,
}

/// The shared fetcher of one credential.
pub struct CredentialFetcher {
    id: String,
    source: Box<dyn VaultSource>,
    store: Option<Arc<dyn SnapshotStore>>,
    settings: FetchSettings,
    stats: Arc<FetchStats>,
    state: tokio::sync::Mutex<State>,
}

/// A stable, non-secret name for a credential: a hash of its client id.
pub fn credential_id(client_id: &str) -> String {
    let digest = Sha256::digest(client_id.as_bytes());
    b64_url(&digest[..12])
        .replace(['-', '_'], "x")
        .to_ascii_lowercase()
}

impl CredentialFetcher {
    pub fn new(
        client_id: &str,
        source: Box<dyn VaultSource>,
        store: Option<Arc<dyn SnapshotStore>>,
        settings: FetchSettings,
        stats: Arc<FetchStats>,
    ) -> Self {
        let budget = RateBudget::new(
            settings.budget_requests,
            settings.budget_window,
            Instant::now(),
        );
        let id = credential_id(client_id);
        stats.record_budget(&id, &budget);
        CredentialFetcher {
            id,
            source,
            store,
            settings,
            stats,
            state: tokio::sync::Mutex::new(State {
                snapshot: None,
                persisted: None,
                store_checked: false,
                failure: None,
                budget,
                files: HashMap::new(),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Data no older than `max_age`, from memory when possible, else from one Keeper call.
    pub async fn snapshot(&self, max_age: Duration) -> Served {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(snapshot) = &state.snapshot {
            let age = SystemTime::now()
                .duration_since(snapshot.fetched_at)
                .unwrap_or_default();
            if snapshot.origin == Origin::Keeper && age < max_age {
                self.stats.cache_hits.inc();
                return Served::Fresh(snapshot.clone());
            }
        }
        if let Some(failure) = &state.failure
            && now < failure.next_attempt
        {
            self.stats.held_back.inc();
            let staleness = staleness(failure, now);
            return self.serve_last_good(&mut state, staleness).await;
        }
        let acquired = state.budget.try_acquire(now);
        self.stats.record_budget(&self.id, &state.budget);
        if let Err(wait) = acquired {
            self.stats.held_back.inc();
            let error = Arc::new(KsmError::Throttled {
                retry_after: Some(wait),
            });
            let staleness = Staleness {
                error,
                since: SystemTime::now(),
                retry_in: wait,
            };
            return self.serve_last_good(&mut state, staleness).await;
        }
        match self.fetch_once().await {
            Ok((vault, body)) => {
                let fetched_at = SystemTime::now();
                state.failure = None;
                self.persist(&mut state, fetched_at, &body).await;
                let snapshot = Arc::new(Snapshot {
                    vault,
                    fetched_at,
                    origin: Origin::Keeper,
                });
                state.snapshot = Some(snapshot.clone());
                Served::Fresh(snapshot)
            }
            Err(error) => {
                if let KsmError::Throttled { retry_after } = &error {
                    state.budget.block_for(now, *retry_after);
                    self.stats.record_budget(&self.id, &state.budget);
                }
                let staleness = self.record_failure(&mut state, error, now);
                self.serve_last_good(&mut state, staleness).await
            }
        }
    }

    async fn fetch_once(&self) -> Result<(Vault, Zeroizing<Vec<u8>>), KsmError> {
        let body = self.source.fetch().await?;
        let vault = self.source.decode(&body)?;
        Ok((vault, body))
    }

    fn record_failure(&self, state: &mut State, error: KsmError, now: Instant) -> Staleness {
        let count = state.failure.as_ref().map_or(1, |f| f.count + 1);
        let since = state
            .failure
            .as_ref()
            .map_or_else(SystemTime::now, |f| f.since);
        let mut wait = jitter(
            failure_backoff(count, self.settings.backoff_base, self.settings.backoff_max),
            0.2,
        );
        if let KsmError::Throttled {
            retry_after: Some(after),
        } = &error
        {
            wait = wait.max(*after);
        }
        let failure = Failure {
            error: Arc::new(error),
            since,
            count,
            next_attempt: now + wait,
        };
        let staleness = staleness(&failure, now);
        state.failure = Some(failure);
        staleness
    }

    async fn serve_last_good(&self, state: &mut State, staleness: Staleness) -> Served {
        if state.snapshot.is_none() && !state.store_checked {
            state.store_checked = true;
            state.snapshot = self.restore().await.map(Arc::new);
        }
        match &state.snapshot {
            Some(snapshot) => {
                self.stats.stale_served.inc();
                Served::Stale(snapshot.clone(), staleness)
            }
            None => Served::Unavailable(staleness),
        }
    }

    async fn restore(&self) -> Option<Snapshot> {
        let store = self.store.as_ref()?;
        let sealed = match store.load(&self.id).await {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(credential = %self.id, error = %error, "reading the last-good store failed");
                return None;
            }
        };
        let restored = store::open(&self.source.cache_key(), &sealed)
            .map_err(|e| e.to_string())
            .and_then(|(fetched_at, body)| {
                let vault = self.source.decode(&body).map_err(|e| e.to_string())?;
                Ok(Snapshot {
                    vault,
                    fetched_at,
                    origin: Origin::Store,
                })
            });
        match restored {
            Ok(snapshot) => {
                self.stats.store_restores.inc();
                tracing::info!(credential = %self.id, "serving the persisted last good copy");
                Some(snapshot)
            }
            Err(error) => {
                tracing::warn!(credential = %self.id, %error, "persisted last good copy is unusable");
                None
            }
        }
    }

    async fn persist(&self, state: &mut State, fetched_at: SystemTime, body: &[u8]) {
        let Some(store) = &self.store else { return };
        let fingerprint: [u8; 32] = Sha256::digest(body).into();
        if state.persisted == Some(fingerprint) {
            return;
        }
        let sealed = store::seal(&self.source.cache_key(), fetched_at, body);
        match store.save(&self.id, sealed).await {
            Ok(()) => state.persisted = Some(fingerprint),
            Err(error) => {
                tracing::warn!(credential = %self.id, error = %error, "saving the last good copy failed")
            }
        }
    }

    /// A file's content, downloaded once per revision of the record that holds it; a download
    /// is refused beyond `budget` bytes.
    pub async fn file(
        &self,
        revision: i64,
        file: &KeeperFile,
        budget: u64,
    ) -> Result<FileBytes, KsmError> {
        {
            let state = self.state.lock().await;
            if let Some((cached, bytes)) = state.files.get(&file.uid)
                && *cached == revision
            {
                return Ok(bytes.clone());
            }
        }
        let bytes = Arc::new(self.source.download(file, budget).await?);
        let mut state = self.state.lock().await;
        state
            .files
            .insert(file.uid.clone(), (revision, bytes.clone()));
        Ok(bytes)
    }

    /// Fraction of the request budget in use (for metrics).
    pub async fn budget_utilization(&self) -> f64 {
        self.state.lock().await.budget.utilization(Instant::now())
    }
}

fn staleness(failure: &Failure, now: Instant) -> Staleness {
    Staleness {
        error: failure.error.clone(),
        since: failure.since,
        retry_in: failure.next_attempt.saturating_duration_since(now),
    }
}

#[cfg(test)]
mod tests;
