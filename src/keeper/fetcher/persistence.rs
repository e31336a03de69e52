//! A fetcher's last good copy in the [`SnapshotStore`](super::sealed::SnapshotStore): sealed on
//! change, restored when Keeper cannot be reached, destroyed once Keeper refuses the credential.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::sealed::{self, Part};
use super::{CredentialFetcher, Origin, Snapshot, State};
use crate::ksm::record::{Field, Vault};

/// How old the sealed copy of unchanged data may get before it is sealed again. A restarted
/// operator takes the copy's sealing time for its fetch time (how long it may serve it during
/// an outage counts from there), so this bounds that error, at one write per credential an hour
/// instead of one per refresh.
pub(super) const RESEAL_AFTER: Duration = Duration::from_secs(3600);

/// What was last sealed: a digest of its content, and when that content was fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sealed {
    pub digest: [u8; 32],
    pub fetched_at: SystemTime,
}

/// PURE: whether data with content `digest`, fetched at `fetched_at`, is sealed again over
/// what was `last` sealed: when its content changed, or the sealed copy has grown old.
pub(super) fn reseal(last: Option<Sealed>, digest: &[u8; 32], fetched_at: SystemTime) -> bool {
    match last {
        None => true,
        Some(last) => {
            last.digest != *digest
                || fetched_at
                    .duration_since(last.fetched_at)
                    .is_ok_and(|age| age >= RESEAL_AFTER)
        }
    }
}

/// A digest of everything the operator reads from a vault, but not the file download URLs,
/// which Keeper signs afresh in every answer (its answers also differ byte for byte at every
/// fetch): the same records give the same digest.
pub(super) fn content_digest(vault: &Vault) -> [u8; 32] {
    let mut h = ContentHasher(Sha256::new());
    h.count(vault.records.len());
    for r in &vault.records {
        h.text(&r.uid);
        h.text(&r.title);
        h.text(&r.record_type);
        h.put(&r.revision.to_be_bytes());
        h.opt(&r.folder_uid);
        h.opt(&r.inner_folder_uid);
        h.opt(&r.notes);
        h.fields(&r.fields);
        h.fields(&r.custom);
        h.count(r.files.len());
        for f in &r.files {
            h.text(&f.uid);
            h.text(&f.name);
            h.text(&f.title);
            h.opt(&f.mime_type);
            h.put(&f.size.unwrap_or(u64::MAX).to_be_bytes());
        }
    }
    h.count(vault.folders.len());
    for f in &vault.folders {
        h.text(&f.uid);
        h.opt(&f.name);
        h.opt(&f.parent_uid);
    }
    let skipped = &vault.skipped;
    for set in [&skipped.records, &skipped.folders, &skipped.files_of] {
        h.count(set.len());
        set.iter().for_each(|uid| h.text(uid));
    }
    h.put(&[u8::from(skipped.unnamed)]);
    h.0.finalize().into()
}

/// Length-prefixed input, so no two different vaults hash the same bytes.
struct ContentHasher(Sha256);

impl ContentHasher {
    fn put(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    fn count(&mut self, n: usize) {
        self.put(&(n as u64).to_be_bytes());
    }

    fn text(&mut self, text: &str) {
        self.put(text.as_bytes());
    }

    fn opt(&mut self, text: &Option<String>) {
        match text {
            None => self.put(&[0]),
            Some(text) => self.put(&[&[1], text.as_bytes()].concat()),
        }
    }

    fn fields(&mut self, fields: &[Field]) {
        self.count(fields.len());
        for f in fields {
            self.text(&f.field_type);
            self.opt(&f.label);
            self.put(&serde_json::to_vec(&f.value).unwrap_or_default());
        }
    }
}

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

    pub(super) async fn persist(
        &self,
        state: &mut State,
        vault: &Vault,
        fetched_at: SystemTime,
        body: &[u8],
    ) {
        let Some(store) = &self.store else { return };
        let digest = content_digest(vault);
        if !reseal(state.persisted, &digest, fetched_at) {
            return;
        }
        let sealed = sealed::seal(&self.source.cache_key(), fetched_at, body);
        let len = sealed.len();
        let persisted = Some(Sealed { digest, fetched_at });
        if len > sealed::MAX_STORED_BYTES {
            // The API server would refuse it: never send it, and say so once, when the copy
            // turns too large. The copy in memory is still served.
            state.persisted = persisted;
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
                state.persisted = persisted;
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
