//! A fetcher's last good copy in the [`SnapshotStore`](super::sealed::SnapshotStore): sealed on
//! change, restored when Keeper cannot be reached, destroyed once Keeper refuses the credential.

use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::sealed::{self, Part};
use super::{CredentialFetcher, Origin, Snapshot, State};

impl CredentialFetcher {
    /// Keeper refuses the credential and its last good copy is older than allowed: data the
    /// credential may no longer read is not kept, neither in memory nor sealed.
    pub(super) async fn destroy_last_good(&self, state: &mut State) {
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

    pub(super) async fn restore(&self) -> Option<Snapshot> {
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

    pub(super) async fn persist(&self, state: &mut State, fetched_at: SystemTime, body: &[u8]) {
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
    pub(super) async fn persist_files(&self, state: &mut State) {
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
    pub(super) async fn restore_files(&self) {
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
}
