//! What the reconciler remembers between reconciles, so a settled KeeperSecret costs no API
//! request and a cold start costs about one write per object:
//!
//! - the controller's reflectors: every KeeperSecret, and the name and `resourceVersion` of every
//!   managed Secret (no value is ever cached);
//! - recently loaded credentials ([`credentials::Cache`]);
//! - per KeeperSecret, the `resourceVersion` of the target Secret whose data was last written or
//!   verified: while the reflector still shows that version, the Secret cannot have changed and
//!   is not read again;
//! - per KeeperSecret, the status last written, until the watch delivers it: a reconcile
//!   triggered by our own Secret write then does not mistake the lagging cached status for "never
//!   synced" (this replaces reading the KeeperSecret again before each sync).
//!
//! - per KeeperSecret, when it last synced, where the status was not rewritten for that alone
//!   (see [`crate::status::worth_writing`]).
//!
//! The last three maps hold one small entry per KeeperSecret and forget deleted ones (see
//! [`Caches::never_attempted`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};

use crate::crd::{KeeperSecret, KeeperSecretStatus};
use crate::credentials;
use crate::keeper_source::CredentialKey;
use crate::metrics::DataTimes;

/// The backlog count is recomputed at most this often (it scans every KeeperSecret).
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

/// Caches shared by all reconciles.
pub struct Caches {
    keeper_secrets: Store<KeeperSecret>,
    targets: Store<PartialObjectMeta<Secret>>,
    /// Recently loaded credentials.
    pub credentials: credentials::Cache,
    verified: Mutex<HashMap<String, Verified>>,
    written: Mutex<HashMap<String, KeeperSecretStatus>>,
    synced_at: Mutex<HashMap<String, Timestamp>>,
    backlog: Mutex<Option<(Instant, usize)>>,
}

/// The reflector writers behind [`Caches`], fed by the controller's watches.
pub struct Writers {
    /// KeeperSecrets.
    pub keeper_secrets: Writer<KeeperSecret>,
    /// Managed Secrets, metadata only.
    pub targets: Writer<PartialObjectMeta<Secret>>,
}

/// A target Secret version whose data is known to match `hash`. The generation pins the spec
/// (target name included) and the fingerprint the credential content the hash is keyed by; one
/// entry per KeeperSecret, so it holds nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verified {
    resource_version: String,
    generation: Option<i64>,
    credential: [u8; 32],
    hash: String,
}

impl Caches {
    /// Empty caches and the writers that fill their reflectors.
    pub fn new() -> (Caches, Writers) {
        let (keeper_secrets, ks_writer) = reflector::store();
        let (targets, targets_writer) = reflector::store();
        let caches = Caches {
            keeper_secrets,
            targets,
            credentials: credentials::Cache::default(),
            verified: Mutex::default(),
            written: Mutex::default(),
            synced_at: Mutex::default(),
            backlog: Mutex::default(),
        };
        let writers = Writers {
            keeper_secrets: ks_writer,
            targets: targets_writer,
        };
        (caches, writers)
    }

    /// The data hash the target Secret of `ks` holds, when the reflector shows it unchanged
    /// since it was last written or verified for this spec and credential; `None` means "read it".
    pub fn target_hash(&self, ks: &KeeperSecret, credential: &CredentialKey) -> Option<String> {
        let uid = ks.metadata.uid.as_deref()?;
        let verified = lock(&self.verified);
        let entry = verified.get(uid)?;
        let seen = self
            .targets
            .get(&ObjectRef::new(&ks.target_name()).within(&ks.namespace()?))?;
        vouched(
            entry,
            seen.metadata.resource_version.as_deref(),
            ks.metadata.generation,
            credential.fingerprint(),
        )
        .map(str::to_string)
    }

    /// Remembers that `secret` (as returned by the API server) holds data hashing to `hash`.
    pub fn verified_target(
        &self,
        ks: &KeeperSecret,
        credential: &CredentialKey,
        secret: &Secret,
        hash: &str,
    ) {
        let (Some(uid), Some(rv)) = (
            ks.metadata.uid.clone(),
            secret.metadata.resource_version.clone(),
        ) else {
            return;
        };
        lock(&self.verified).insert(
            uid,
            Verified {
                resource_version: rv,
                generation: ks.metadata.generation,
                credential: *credential.fingerprint(),
                hash: hash.to_string(),
            },
        );
    }

    /// Remembers the status just written for `ks`.
    pub fn wrote_status(&self, ks: &KeeperSecret, status: KeeperSecretStatus) {
        if let Some(uid) = ks.metadata.uid.clone() {
            lock(&self.written).insert(uid, status);
        }
    }

    /// Remembers that `ks` synced at `at` without rewriting its status for that.
    pub fn synced_without_status(&self, ks: &KeeperSecret, at: Timestamp) {
        if let Some(uid) = ks.metadata.uid.clone() {
            lock(&self.synced_at).insert(uid, at);
        }
    }

    /// The last sync of `ks` that its status does not show, if any.
    pub fn synced_at(&self, ks: &KeeperSecret) -> Option<Timestamp> {
        lock(&self.synced_at)
            .get(ks.metadata.uid.as_deref()?)
            .copied()
    }

    /// Gives `ks` (from the reflector) the status last written for it, if the reflector has
    /// not caught up with that write yet.
    pub fn with_latest_status(&self, ks: &mut KeeperSecret) {
        let Some(uid) = ks.metadata.uid.as_deref() else {
            return;
        };
        let mut written = lock(&self.written);
        match latest(ks.status.as_ref(), written.get(uid)) {
            Latest::Cached => {}
            Latest::CaughtUp => {
                written.remove(uid);
            }
            Latest::Written(status) => ks.status = Some(status.clone()),
        }
    }

    /// Forgets the status written for `ks` once the watch delivers it, so only writes still in
    /// flight are remembered: a status copy per KeeperSecret would otherwise stay until its next
    /// reconcile, and statuses are most of an object's size.
    pub fn observed(&self, ks: &KeeperSecret) {
        let Some(uid) = ks.metadata.uid.as_deref() else {
            return;
        };
        let mut written = lock(&self.written);
        if latest(ks.status.as_ref(), written.get(uid)) == Latest::CaughtUp {
            written.remove(uid);
        }
    }

    /// How many KeeperSecrets have never been reconciled (no status yet). Recounted at most
    /// once per [`BACKLOG_EVERY`]; each count also forgets entries of deleted KeeperSecrets.
    pub fn never_attempted(&self) -> usize {
        let mut backlog = lock(&self.backlog);
        if let Some((at, n)) = *backlog
            && at.elapsed() < BACKLOG_EVERY
        {
            return n;
        }
        let all = self.keeper_secrets.state();
        let n = all.iter().filter(|ks| ks.status.is_none()).count();
        let live: HashSet<&str> = all
            .iter()
            .filter_map(|ks| ks.metadata.uid.as_deref())
            .collect();
        lock(&self.verified).retain(|uid, _| live.contains(uid.as_str()));
        lock(&self.written).retain(|uid, _| live.contains(uid.as_str()));
        lock(&self.synced_at).retain(|uid, _| live.contains(uid.as_str()));
        *backlog = Some((Instant::now(), n));
        n
    }
}

/// Each synced KeeperSecret's fetch time: its status `lastSyncTime`, or the later sync that the
/// status was not rewritten for.
impl DataTimes for Caches {
    fn data_times(&self) -> Vec<(String, String, Timestamp)> {
        let remembered = lock(&self.synced_at);
        self.keeper_secrets
            .state()
            .iter()
            .filter_map(|ks| {
                let status = ks.status.as_ref()?.last_sync_time.as_ref().map(|t| t.0);
                let later = remembered.get(ks.metadata.uid.as_deref()?).copied();
                Some((ks.namespace()?, ks.name_any(), status.max(later)?))
            })
            .collect()
    }
}

/// Locks `m` even if a panic poisoned it: what these mutexes guard is caches and bookkeeping,
/// still usable afterwards, and one panic should not take every later caller down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// PURE: the recorded hash, if the version seen now is the recorded one and the KeeperSecret
/// still has the same spec and credential (the hash is keyed by the credential).
fn vouched<'a>(
    entry: &'a Verified,
    seen_version: Option<&str>,
    generation: Option<i64>,
    credential: &[u8; 32],
) -> Option<&'a str> {
    (seen_version == Some(entry.resource_version.as_str())
        && entry.generation == generation
        && entry.credential == *credential)
        .then_some(entry.hash.as_str())
}

/// Which status a reconcile should start from.
#[derive(Debug, PartialEq)]
enum Latest<'a> {
    /// Nothing was written since the reflector's copy: use it.
    Cached,
    /// The reflector shows what was written: use it and forget the write.
    CaughtUp,
    /// The reflector lags behind this write. The operator is the status's only writer (one
    /// leader), so its last write is the truth.
    Written(&'a KeeperSecretStatus),
}

/// PURE: see [`Latest`].
fn latest<'a>(
    cached: Option<&KeeperSecretStatus>,
    written: Option<&'a KeeperSecretStatus>,
) -> Latest<'a> {
    match written {
        None => Latest::Cached,
        Some(w) if cached == Some(w) => Latest::CaughtUp,
        Some(w) => Latest::Written(w),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::watcher;

    use super::*;

    fn entry() -> Verified {
        Verified {
            resource_version: "42".into(),
            generation: Some(1),
            credential: *CredentialKey::new("ns/ksm/config", b"cred").fingerprint(),
            hash: "hmac-sha256:ab".into(),
        }
    }

    #[test]
    fn only_the_recorded_version_for_the_same_spec_and_credential_is_vouched_for() {
        let e = entry();
        let cred = e.credential;
        assert_eq!(
            vouched(&e, Some("42"), Some(1), &cred),
            Some("hmac-sha256:ab")
        );
        // Any write (a hand edit, a deletion and re-creation) moves the resourceVersion.
        assert_eq!(vouched(&e, Some("43"), Some(1), &cred), None);
        assert_eq!(vouched(&e, None, Some(1), &cred), None);
        // A spec change (another target name included) moves the generation.
        assert_eq!(vouched(&e, Some("42"), Some(2), &cred), None);
        let rotated = CredentialKey::new("ns/ksm/config", b"rotated");
        assert_eq!(
            vouched(&e, Some("42"), Some(1), rotated.fingerprint()),
            None
        );
    }

    #[test]
    fn the_last_written_status_wins_until_the_reflector_shows_it() {
        let old = KeeperSecretStatus::default();
        let new = KeeperSecretStatus {
            data_hash: Some("h".into()),
            ..KeeperSecretStatus::default()
        };
        assert_eq!(latest(Some(&old), None), Latest::Cached);
        assert_eq!(latest(None, Some(&new)), Latest::Written(&new));
        assert_eq!(latest(Some(&old), Some(&new)), Latest::Written(&new));
        assert_eq!(latest(Some(&new), Some(&new)), Latest::CaughtUp);
    }

    #[test]
    fn data_times_take_the_later_of_status_and_a_remembered_sync() {
        let (caches, mut writers) = Caches::new();
        let t = |secs| Timestamp::from_second(secs).unwrap();
        let ks = |name: &str, uid: &str, synced: Option<i64>| {
            let mut ks = crate::crd::test_keeper_secret();
            ks.metadata.name = Some(name.into());
            ks.metadata.namespace = Some("shop".into());
            ks.metadata.uid = Some(uid.into());
            ks.status = synced.map(|s| KeeperSecretStatus {
                last_sync_time: Some(Time(t(s))),
                ..KeeperSecretStatus::default()
            });
            ks
        };
        let db = ks("db", "u1", Some(1_000));
        let quiet = ks("quiet", "u2", Some(1_000));
        for k in [&db, &quiet, &ks("new", "u3", None)] {
            writers
                .keeper_secrets
                .apply_watcher_event(&watcher::Event::Apply(k.clone()));
        }
        caches.synced_without_status(&db, t(1_300));
        caches.synced_without_status(&quiet, t(900));
        let mut times = caches.data_times();
        times.sort();
        assert_eq!(
            times,
            vec![
                ("shop".into(), "db".into(), t(1_300)),
                ("shop".into(), "quiet".into(), t(1_000)),
            ],
            "never-synced objects have no data time"
        );
    }

    #[test]
    fn a_written_status_is_forgotten_once_the_watch_delivers_it() {
        let (caches, _writers) = Caches::new();
        let mut ks = crate::crd::test_keeper_secret();
        ks.metadata.uid = Some("u1".into());
        let written = KeeperSecretStatus {
            data_hash: Some("h".into()),
            ..KeeperSecretStatus::default()
        };
        caches.wrote_status(&ks, written.clone());
        // An older copy (the watch lags behind the write) keeps the write remembered.
        caches.observed(&ks);
        let mut lagging = ks.clone();
        caches.with_latest_status(&mut lagging);
        assert_eq!(lagging.status.as_ref(), Some(&written));
        // Once the watch shows the write, it is forgotten.
        ks.status = Some(written);
        caches.observed(&ks);
        assert!(lock(&caches.written).is_empty());
    }
}
