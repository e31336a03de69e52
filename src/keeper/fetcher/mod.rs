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
mod persistence;
pub mod sealed;
pub mod secret_store;
mod served;
mod settings;
mod stats;
mod upstream;

pub use served::{FileBytes, KeeperHealth, Origin, Served, Snapshot, Staleness};
pub use settings::FetchSettings;
pub use stats::FetchStats;
pub use upstream::Upstream;

use crate::backoff;
use crate::ksm::crypto::b64_url;
use crate::ksm::error::KsmError;
use crate::ksm::record::{KeeperFile, Vault};
use budget::RateBudget;
use files::FileCache;
use sealed::SnapshotStore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::time::Instant as TokioInstant;
use zeroize::Zeroizing;

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

struct Failure {
    error: Arc<KsmError>,
    since: SystemTime,
    count: u32,
    next_attempt: Instant,
}

struct State {
    snapshot: Option<Arc<Snapshot>>,
    /// What was last sealed, so unchanged data is not written again for an hour (also set for
    /// a copy too large to persist, so it is not tried again).
    persisted: Option<persistence::Sealed>,
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
                self.persist(state, &vault, fetched_at, &body).await;
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
    pub async fn health(&self) -> KeeperHealth {
        let state = self.state.lock().await;
        KeeperHealth {
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
    #[cfg(test)]
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
