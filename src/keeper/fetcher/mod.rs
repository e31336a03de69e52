//! Shared Keeper access: one fetcher per credential, used by every KeeperSecret on it.
//!
//! - **Single flight.** The first caller that finds a credential's snapshot too old starts one
//!   fetch; callers that arrive while it runs share its result. N KeeperSecrets due together
//!   cost one `get_secret`, and callers whose data is still fresh cost none.
//! - **No worker held hostage.** The fetch runs in its own task. Callers wait for it only until
//!   [`PATIENCE`] after it started; later ones get [`Served::Pending`] at once and come back
//!   when its deadline has passed. A slow or hanging endpoint of one credential therefore holds
//!   the shared reconcile workers for at most a few seconds per refresh wave, not for its whole
//!   request timeout.
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
//! - **Files** are downloaded once per record revision and shared, in one [`FileCache`] for all
//!   credentials under a byte budget. The attachments that KeeperSecrets map are sealed into the
//!   store too (as much as fits beside the snapshot), so a restarted operator can also recreate
//!   a Secret holding a file while Keeper is down.

pub mod budget;
pub mod files;
pub mod ksm_upstream;
pub mod sealed;
pub mod secret_store;

use crate::backoff;
use crate::ksm::crypto::{AesKey, b64_url};
use crate::ksm::error::KsmError;
use crate::ksm::record::{KeeperFile, Vault};
use crate::lock;
use budget::RateBudget;
use files::FileCache;
use futures::future::BoxFuture;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use sealed::{Part, SnapshotStore};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::time::Instant as TokioInstant;
use zeroize::Zeroizing;

/// A downloaded, decrypted file, shared by every Secret that maps it.
pub type FileBytes = Arc<Zeroizing<Vec<u8>>>;

/// What a fetcher needs from Keeper for one credential (the real one wraps `KsmClient`).
pub trait Upstream: Send + Sync + 'static {
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
    /// The longest one fetch may take (from its start to its decoded result).
    pub fetch_deadline: Duration,
    /// Once Keeper refuses the credential (not an outage), its last good copy older than this
    /// is destroyed, in memory and sealed (the operator's `--max-stale-age`).
    pub max_refused_age: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        // A fifth of Keeper's ~100 requests / 10 s per client.
        FetchSettings {
            budget_requests: 20,
            budget_window: Duration::from_secs(10),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            fetch_deadline: Duration::from_secs(30),
            max_refused_age: Duration::from_secs(24 * 3600),
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

/// What a credential's fetcher knows of Keeper's recent answers, learned without asking it.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// When Keeper last answered with data (a copy restored from the sealed store does not count).
    pub fetched_at: Option<SystemTime>,
    /// The failure of the latest attempts, and since when they fail.
    pub failure: Option<(Arc<KsmError>, SystemTime)>,
    /// The latest answer was too large to persist as the last good copy.
    pub persist_refused: bool,
}

/// The answer to "give me this credential's data".
#[derive(Debug, Clone)]
pub enum Served {
    Fresh(Arc<Snapshot>),
    /// Keeper failed; this is the last good copy.
    Stale(Arc<Snapshot>, Staleness),
    /// Keeper failed and there is no copy at all.
    Unavailable(Staleness),
    /// A fetch is still running past [`PATIENCE`]; ask again after this long.
    Pending(Duration),
}

/// How long after a fetch started its callers wait for it inside a reconcile. Keeper usually
/// answers well within it; a slower answer is picked up by a later reconcile.
pub const PATIENCE: Duration = Duration::from_secs(2);

/// How long past its deadline an unfinished fetch is taken for dead.
const ABANDONED_AFTER: Duration = Duration::from_secs(10);

/// A fetch in progress: when it started, when it gives up at the latest, and a channel that
/// closes when its result is in the state. Tokio's clock, so tests can run it paused.
struct InFlight {
    started: TokioInstant,
    deadline: TokioInstant,
    done: tokio::sync::watch::Receiver<()>,
}

/// A caller's view of the fetch it may wait for.
struct Waiting {
    started: TokioInstant,
    done: tokio::sync::watch::Receiver<()>,
    /// This caller started it.
    mine: bool,
}

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

struct Failure {
    error: Arc<KsmError>,
    since: SystemTime,
    count: u32,
    next_attempt: Instant,
}

struct State {
    snapshot: Option<Arc<Snapshot>>,
    /// Fingerprint of the persisted body, so an unchanged vault is not written again (also set
    /// for a body too large to persist, so it is not tried again).
    persisted: Option<[u8; 32]>,
    /// The latest body was too large to persist: a restart would find an older copy, or none.
    persist_refused: bool,
    store_checked: bool,
    failure: Option<Failure>,
    budget: RateBudget,
    /// Size of the persisted snapshot: the persisted files get the room it leaves.
    persisted_len: usize,
    /// Fingerprint of the persisted files (UIDs and revisions).
    persisted_files: Option<[u8; 32]>,
    in_flight: Option<InFlight>,
}

/// The shared fetcher of one credential.
pub struct CredentialFetcher {
    id: String,
    source: Box<dyn Upstream>,
    store: Option<Arc<dyn SnapshotStore>>,
    settings: FetchSettings,
    stats: Arc<FetchStats>,
    /// Downloaded files of every credential (this one's under its `id`).
    files: Arc<FileCache>,
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
        source: Box<dyn Upstream>,
        store: Option<Arc<dyn SnapshotStore>>,
        settings: FetchSettings,
        stats: Arc<FetchStats>,
        files: Arc<FileCache>,
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
            files,
            state: tokio::sync::Mutex::new(State {
                snapshot: None,
                persisted: None,
                persist_refused: false,
                store_checked: false,
                failure: None,
                budget,
                persisted_len: 0,
                persisted_files: None,
                in_flight: None,
            }),
        }
    }

    /// Data no older than `max_age`, from memory when possible, else from one Keeper call
    /// (shared with every caller that arrives while it runs).
    pub async fn snapshot(self: &Arc<Self>, max_age: Duration) -> Served {
        let fetch = match self.serve_or_start(max_age).await {
            Ok(served) => return served,
            Err(fetch) => fetch,
        };
        let patience = (fetch.started + PATIENCE).saturating_duration_since(TokioInstant::now());
        let mut done = fetch.done;
        // The channel only ever closes: `changed` returns when the fetch has finished.
        if tokio::time::timeout(patience, done.changed())
            .await
            .is_err()
        {
            return self.pending().await;
        }
        self.after_fetch(fetch.mine).await
    }

    /// The outcome of the fetch a caller waited for: the snapshot it produced, or the last good
    /// copy with its failure. `mine` is true for the caller that started it.
    async fn after_fetch(&self, mine: bool) -> Served {
        let mut state = self.state.lock().await;
        if let Some(failure) = &state.failure {
            if !mine {
                self.stats.held_back.inc();
            }
            let staleness = staleness(failure, Instant::now());
            return self.serve_last_good(&mut state, staleness).await;
        }
        match &state.snapshot {
            Some(snapshot) => {
                if !mine {
                    self.stats.cache_hits.inc();
                }
                Served::Fresh(snapshot.clone())
            }
            // A finished fetch leaves a snapshot or a failure; look again later if not.
            None => Served::Pending(PATIENCE),
        }
    }

    /// The answer for a caller that stops waiting on a fetch still in progress.
    async fn pending(&self) -> Served {
        let state = self.state.lock().await;
        let retry_in = state
            .in_flight
            .as_ref()
            .map_or(PATIENCE, |f| pending_retry(f, TokioInstant::now()));
        Served::Pending(retry_in)
    }

    /// What can be served without waiting, or the fetch in progress (started here if none).
    async fn serve_or_start(self: &Arc<Self>, max_age: Duration) -> Result<Served, Waiting> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(snapshot) = &state.snapshot {
            let age = SystemTime::now()
                .duration_since(snapshot.fetched_at)
                .unwrap_or_default();
            if snapshot.origin == Origin::Keeper && age < max_age {
                self.stats.cache_hits.inc();
                return Ok(Served::Fresh(snapshot.clone()));
            }
        }
        if let Some(fetch) = &state.in_flight {
            // A fetch task always finishes by its deadline; one far past it died (a panic) and
            // must not block the credential forever.
            if TokioInstant::now() < fetch.deadline + ABANDONED_AFTER {
                return Err(Waiting {
                    started: fetch.started,
                    done: fetch.done.clone(),
                    mine: false,
                });
            }
            state.in_flight = None;
        }
        if let Some(failure) = &state.failure
            && now < failure.next_attempt
        {
            self.stats.held_back.inc();
            let staleness = staleness(failure, now);
            return Ok(self.serve_last_good(&mut state, staleness).await);
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
            return Ok(self.serve_last_good(&mut state, staleness).await);
        }
        let (finished, done) = tokio::sync::watch::channel(());
        let started = TokioInstant::now();
        state.in_flight = Some(InFlight {
            started,
            deadline: started + self.settings.fetch_deadline,
            done: done.clone(),
        });
        let this = self.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(this.settings.fetch_deadline, this.fetch_once())
                .await
                .unwrap_or(Err(KsmError::Timeout));
            let mut state = this.state.lock().await;
            this.record_fetch(&mut state, result, now).await;
            state.in_flight = None;
            drop(finished); // wakes every waiter
        });
        Err(Waiting {
            started,
            done,
            mine: true,
        })
    }

    /// Puts a fetch's outcome into the state: a new snapshot, or a failure to back off from.
    async fn record_fetch(
        &self,
        state: &mut State,
        result: Result<(Vault, Zeroizing<Vec<u8>>), KsmError>,
        started: Instant,
    ) {
        match result {
            Ok((vault, body)) => {
                let fetched_at = SystemTime::now();
                state.failure = None;
                self.persist(state, fetched_at, &body).await;
                forget_old_files(&self.files, &self.id, &vault);
                self.persist_files(state).await;
                state.snapshot = Some(Arc::new(Snapshot {
                    vault,
                    fetched_at,
                    origin: Origin::Keeper,
                }));
            }
            Err(error) => {
                if let KsmError::Throttled { retry_after } = &error {
                    state.budget.block_for(started, *retry_after);
                    self.stats.record_budget(&self.id, &state.budget);
                }
                self.record_failure(state, error, Instant::now());
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
        let mut wait = backoff::jitter(
            backoff::exponential(
                count.saturating_sub(1),
                self.settings.backoff_base,
                self.settings.backoff_max,
            ),
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
            if state.snapshot.is_some() {
                self.restore_files().await;
            }
        }
        if staleness.error.is_refusal()
            && let Some(snapshot) = &state.snapshot
            && SystemTime::now()
                .duration_since(snapshot.fetched_at)
                .is_ok_and(|age| age > self.settings.max_refused_age)
        {
            self.destroy_last_good(state).await;
        }
        match &state.snapshot {
            Some(snapshot) => {
                self.stats.stale_served.inc();
                Served::Stale(snapshot.clone(), staleness)
            }
            None => Served::Unavailable(staleness),
        }
    }

    /// Keeper refuses the credential and its last good copy is older than allowed: data the
    /// credential may no longer read is not kept, neither in memory nor sealed.
    async fn destroy_last_good(&self, state: &mut State) {
        state.snapshot = None;
        self.files.retain(&self.id, |_, _| false);
        state.persisted = None;
        state.persisted_len = 0;
        state.persisted_files = None;
        // Nothing is restored again: the sealed copy is gone (or was unreadable anyway).
        state.store_checked = true;
        tracing::warn!(credential = %self.id,
            "Keeper refuses the credential and its last good copy is older than --max-stale-age; the copy is destroyed");
        if let Some(store) = &self.store
            && let Err(error) = store.destroy(&self.id).await
        {
            tracing::warn!(credential = %self.id, error = %error, "destroying the sealed last good copy failed");
        }
    }

    async fn restore(&self) -> Option<Snapshot> {
        let store = self.store.as_ref()?;
        let sealed = match store.load(&self.id, Part::Snapshot).await {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(credential = %self.id, error = %error, "reading the last-good store failed");
                return None;
            }
        };
        let restored = sealed::open(&self.source.cache_key(), &sealed)
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
        let sealed = sealed::seal(&self.source.cache_key(), fetched_at, body);
        let len = sealed.len();
        if len > sealed::MAX_STORED_BYTES {
            // The API server would refuse it: never send it, and say so once, when the copy
            // turns too large (Keeper's answers differ byte for byte at every fetch, even with
            // the same records). The copy in memory is still served.
            state.persisted = Some(fingerprint);
            if !state.persist_refused {
                state.persist_refused = true;
                self.stats.store_too_large.inc();
                tracing::warn!(credential = %self.id, sealed_bytes = len, limit_bytes = sealed::MAX_STORED_BYTES,
                    "the last good copy is too large to persist; it is kept in memory only");
            }
            return;
        }
        match store.save(&self.id, Part::Snapshot, sealed).await {
            Ok(()) => {
                state.persisted = Some(fingerprint);
                state.persist_refused = false;
                state.persisted_len = len;
            }
            Err(error) => {
                tracing::warn!(credential = %self.id, error = %error, "saving the last good copy failed")
            }
        }
    }

    /// Seals the cached files into the store when the set changed, smallest first while they
    /// fit beside the snapshot.
    async fn persist_files(&self, state: &mut State) {
        let Some(store) = &self.store else { return };
        let cached = self.files.of(&self.id);
        if cached.is_empty() && state.persisted_files.is_none() {
            return;
        }
        let mut files: Vec<(&str, i64, &[u8])> = cached
            .iter()
            .map(|(uid, revision, bytes)| (uid.as_str(), *revision, bytes.as_slice()))
            .collect();
        files.sort_by_key(|(uid, _, bytes)| (bytes.len(), *uid));
        let mut hasher = Sha256::new();
        for (uid, revision, bytes) in &files {
            hasher.update(uid.as_bytes());
            hasher.update(revision.to_be_bytes());
            hasher.update(bytes.len().to_be_bytes());
        }
        let fingerprint: [u8; 32] = hasher.finalize().into();
        if state.persisted_files == Some(fingerprint) {
            return;
        }
        let budget = sealed::files_budget(state.persisted_len);
        let (sealed, left_out) = sealed::seal_files(&self.source.cache_key(), files, budget);
        for uid in &left_out {
            tracing::warn!(credential = %self.id, file = %uid, budget_bytes = budget,
                "attachment does not fit the last good copy; it is kept in memory only");
        }
        match store.save(&self.id, Part::Files, sealed).await {
            Ok(()) => state.persisted_files = Some(fingerprint),
            Err(error) => {
                tracing::warn!(credential = %self.id, error = %error, "saving the last good files failed")
            }
        }
    }

    /// Loads the sealed files beside a restored snapshot (their revisions are checked on use).
    async fn restore_files(&self) {
        let Some(store) = &self.store else { return };
        let sealed = match store.load(&self.id, Part::Files).await {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(credential = %self.id, error = %error, "reading the last good files failed");
                return;
            }
        };
        match sealed::open_files(&self.source.cache_key(), &sealed) {
            Ok(stored) => {
                for file in stored {
                    let content = Arc::new(file.content);
                    self.files
                        .insert(&self.id, &file.uid, file.revision, content);
                }
            }
            Err(error) => {
                tracing::warn!(credential = %self.id, %error, "persisted last good files are unusable")
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
        if let Some(bytes) = self.files.get(&self.id, &file.uid, revision) {
            return Ok(bytes);
        }
        let bytes = Arc::new(self.source.download(file, budget).await?);
        let mut state = self.state.lock().await;
        self.files
            .insert(&self.id, &file.uid, revision, bytes.clone());
        self.persist_files(&mut state).await;
        Ok(bytes)
    }

    /// What the latest fetches found; makes no call.
    pub async fn health(&self) -> Health {
        let state = self.state.lock().await;
        Health {
            fetched_at: state
                .snapshot
                .as_ref()
                .filter(|s| s.origin == Origin::Keeper)
                .map(|s| s.fetched_at),
            failure: state.failure.as_ref().map(|f| (f.error.clone(), f.since)),
            persist_refused: state.persist_refused,
        }
    }

    /// Fraction of the request budget in use (for metrics).
    pub async fn budget_utilization(&self) -> f64 {
        self.state.lock().await.budget.utilization(Instant::now())
    }
}

/// When a caller turned away from `fetch` should look again: after as long as the fetch has
/// run so far (a slow answer is picked up soon, a hanging one costs a few looks), and no later
/// than just after its deadline.
fn pending_retry(fetch: &InFlight, now: TokioInstant) -> Duration {
    let running = now.saturating_duration_since(fetch.started);
    let until_deadline = fetch.deadline.saturating_duration_since(now) + Duration::from_millis(500);
    running.min(until_deadline).max(PATIENCE)
}

/// Drops cached files that are no longer attached to a record of `vault` at the revision they
/// were downloaded for: they would never be served again.
fn forget_old_files(files: &FileCache, credential: &str, vault: &Vault) {
    let current: HashMap<&str, i64> = vault
        .records
        .iter()
        .flat_map(|r| r.files.iter().map(move |f| (f.uid.as_str(), r.revision)))
        .collect();
    files.retain(credential, |uid, revision| {
        current.get(uid) == Some(&revision)
    });
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
