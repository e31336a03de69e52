//! What the reconciler remembers between reconciles, so a settled KeeperSecret costs no API
//! request and a cold start costs about one write per object:
//!
//! - the controller's reflectors: every KeeperSecret, and the name and `resourceVersion` of every
//!   managed Secret (no value is ever cached);
//! - recently loaded credentials ([`credentials::Cache`]);
//! - per KeeperSecret, one [`Known`] entry:
//!   - the generation last passed to the reconciler (the controller's generation predicate);
//!   - what the target Secret was last written or verified as: while the reflector still shows
//!     that `resourceVersion`, the Secret cannot have changed and is not read again;
//!   - the status last written, until the watch delivers it: a reconcile triggered by our own
//!     Secret write then does not mistake the lagging cached status for "never synced" (this
//!     replaces reading the KeeperSecret again before each sync);
//!   - when it last synced, where the status was not rewritten for that alone (see
//!     [`crate::sync::status::worth_writing`]).
//!
//! The entries are keyed by a 128-bit digest of the UID and hold fixed-size digests where they
//! can: at 10,000 KeeperSecrets, one compact map is several MiB less than a map per concern keyed
//! by UID strings (plus kube's predicate cache). Entries of deleted KeeperSecrets are forgotten
//! when the watch reports them deleted, or does not list them again after a reconnect.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use sha2::{Digest, Sha256};

use crate::api::{KeeperSecret, KeeperSecretStatus};
use crate::controller::metrics::DataTimes;
use crate::controller::target_versions::{TargetVersions, Version, version};
use crate::k8s::credentials;
use crate::keeper::CredentialKey;
use crate::lock;
use crate::sync::desired::Shape;
use crate::sync::hold::Sighting;
use crate::sync::refresh;

/// The backlog count is recomputed at most this often (it scans every KeeperSecret).
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

/// Caches shared by all reconciles.
pub struct Caches {
    keeper_secrets: Store<KeeperSecret>,
    targets: TargetVersions,
    /// Recently loaded credentials.
    pub credentials: credentials::Cache,
    known: Mutex<HashMap<UidKey, Known>>,
    backlog: Mutex<Option<(Instant, usize)>>,
    /// KeeperSecrets whose due refresh waits for the backlog to drain.
    deferred: Mutex<HashSet<ObjectRef<KeeperSecret>>>,
}

/// The reflector writers behind [`Caches`], fed by the controller's watches.
pub struct Writers {
    /// KeeperSecrets.
    pub keeper_secrets: Writer<KeeperSecret>,
    /// Managed Secrets' versions.
    pub targets: TargetVersions,
}

/// A digest of a KeeperSecret's UID: 16 bytes inline instead of a 36-character string.
type UidKey = [u8; 16];

fn uid_key(uid: &str) -> UidKey {
    let digest = Sha256::digest(uid.as_bytes());
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// What the operator knows of one KeeperSecret beyond the reflector (see the module docs).
#[derive(Debug, Default)]
struct Known {
    generation: Option<i64>,
    /// Digest of the sync-request annotations last seen ([`refresh::sync_request`]).
    request: Option<u64>,
    verified: Option<Verified>,
    written: Option<Box<KeeperSecretStatus>>,
    synced_at: Option<Timestamp>,
    /// When the last requested sync ran ([`refresh::forced_sync_wait`] spaces them).
    forced_at: Option<Timestamp>,
    /// When the watch first showed the current sync request: its time, for a value that is
    /// not one ([`refresh::requested_max_age`]).
    requested_at: Option<Timestamp>,
    /// The first fresh answer that lacked records a deletion policy would remove.
    gone: Option<Box<Sighting>>,
    /// When a generation (the first) first missed a record or field ([`refresh::on_miss`]).
    missed: Option<(i64, Timestamp)>,
}

/// A target Secret known to hold data hashing to `hash`, shaped `shape`, for as long as the
/// same `pin` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verified {
    pin: Pin,
    hash: Box<str>,
    shape: Shape,
}

/// What the memo vouches for of a target Secret it need not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouched {
    /// The hash of the data it holds.
    pub hash: String,
    pub shape: Shape,
}

/// A digest of the target's version, the KeeperSecret's generation (which pins the spec,
/// target name included) and the fingerprint of the credential the hash is keyed by.
type Pin = [u8; 16];

/// PURE: see [`Pin`].
fn pin(version: Version, generation: Option<i64>, credential: &[u8; 32]) -> Pin {
    let mut h = Sha256::new();
    h.update(version.to_be_bytes());
    match generation {
        Some(g) => {
            h.update([1]);
            h.update(g.to_be_bytes());
        }
        None => h.update([0]),
    }
    h.update(credential);
    let mut pin = [0; 16];
    pin.copy_from_slice(&h.finalize()[..16]);
    pin
}

impl Caches {
    /// Empty caches and the writers that fill their reflectors.
    pub fn new() -> (Caches, Writers) {
        let (keeper_secrets, ks_writer) = reflector::store();
        let targets = TargetVersions::default();
        let caches = Caches {
            keeper_secrets,
            targets: targets.clone(),
            credentials: credentials::Cache::default(),
            known: Mutex::default(),
            backlog: Mutex::default(),
            deferred: Mutex::default(),
        };
        let writers = Writers {
            keeper_secrets: ks_writer,
            targets,
        };
        (caches, writers)
    }

    /// Runs `f` on the entry of `ks`, if it has a UID; `None` if it has none.
    fn with_known<T>(&self, ks: &KeeperSecret, f: impl FnOnce(&mut Known) -> T) -> Option<T> {
        let key = uid_key(ks.metadata.uid.as_deref()?);
        Some(f(lock(&self.known).entry(key).or_default()))
    }

    /// Whether `ks` (from the watch) has a generation, or a sync request, not yet passed to the
    /// reconciler: the controller's predicate, so our own status writes trigger no reconcile
    /// while `kubectl annotate ... keeper-operator.dev/force-sync=...` does. Kept here rather
    /// than in kube's `predicate_filter`, whose per-object map of name, namespace and UID
    /// strings cost ~0.3 KB per KeeperSecret.
    pub fn new_generation(&self, ks: &KeeperSecret) -> bool {
        let Some(generation) = ks.metadata.generation else {
            return true;
        };
        let request = refresh::sync_request(ks).map(|r| {
            let digest = Sha256::digest(r.as_bytes());
            u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
        });
        self.with_known(ks, |known| {
            let new_generation = known.generation.replace(generation) != Some(generation);
            let new_request = request.is_some() && known.request != request;
            if new_request {
                known.requested_at = Some(Timestamp::now());
            }
            known.request = request;
            new_generation || new_request
        })
        .unwrap_or(true)
    }

    /// What the memo holds for `ks`, read once at the start of its reconcile.
    pub fn recall(&self, ks: &KeeperSecret) -> Recall {
        let generation = ks.metadata.generation.unwrap_or_default();
        self.with_known(ks, |known| Recall {
            status: match latest(ks.status.as_ref(), known.written.as_deref()) {
                Latest::Written(status) => Some(status.clone()),
                Latest::Cached | Latest::CaughtUp => None,
            },
            forced_at: known.forced_at,
            synced_at: known.synced_at,
            requested_at: known.requested_at,
            missed_at: known
                .missed
                .and_then(|(g, at)| (g == generation).then_some(at)),
            gone: known.gone.as_deref().cloned(),
            verified: known.verified.clone(),
        })
        .unwrap_or_default()
    }

    /// What the target Secret of `ks` holds, when the reflector shows it unchanged since it
    /// was last written or verified (as `recall` remembers) for this spec and credential;
    /// `None` means "read it".
    pub fn vouched_target(
        &self,
        ks: &KeeperSecret,
        recall: &Recall,
        credential: &CredentialKey,
    ) -> Option<Vouched> {
        let version = self.targets.get(&ks.namespace()?, &ks.target_name())?;
        let now = pin(version, ks.metadata.generation, credential.fingerprint());
        vouched(recall.verified.as_ref()?, &now)
    }

    /// Keeps what one reconcile of `ks` learned: the memo's one update per reconcile.
    pub fn learn(&self, ks: &KeeperSecret, learned: Learned) {
        let generation = ks.metadata.generation;
        self.with_known(ks, |known| {
            let Learned {
                target,
                status,
                synced_at,
                forced_at,
                missed_at,
                gone,
            } = learned;
            if let Some((version, credential, hash, shape)) = target {
                known.verified = Some(Verified {
                    pin: pin(version, generation, &credential),
                    hash,
                    shape,
                });
            }
            if let Some(status) = status {
                known.written = Some(Box::new(status));
            }
            known.synced_at = synced_at.or(known.synced_at);
            known.forced_at = forced_at.or(known.forced_at);
            if let Some(at) = missed_at {
                known.missed = Some((generation.unwrap_or_default(), at));
            }
            match gone {
                Sighted::Unchanged => {}
                Sighted::Forget => known.gone = None,
                Sighted::First(sighting) => known.gone = Some(Box::new(sighting)),
            }
        });
    }

    /// Forgets the status written for `ks` once the watch delivers it, so only writes still in
    /// flight are remembered: a status copy per KeeperSecret would otherwise stay until its next
    /// reconcile, and statuses are most of an object's size.
    pub fn observed(&self, ks: &KeeperSecret) {
        self.with_known(ks, |known| {
            if latest(ks.status.as_ref(), known.written.as_deref()) == Latest::CaughtUp {
                known.written = None;
            }
        });
    }

    /// How many KeeperSecrets have never been reconciled (no status yet), recounted at most
    /// once per [`BACKLOG_EVERY`] (a count scans every KeeperSecret).
    pub fn backlog(&self) -> usize {
        let mut backlog = lock(&self.backlog);
        if let Some((at, n)) = *backlog
            && at.elapsed() < BACKLOG_EVERY
        {
            return n;
        }
        let n = self
            .keeper_secrets
            .state()
            .iter()
            .filter(|ks| ks.status.is_none())
            .count();
        *backlog = Some((Instant::now(), n));
        n
    }

    /// Remembers that the due refresh of `ks` waits for the backlog ([`Caches::drained`]).
    pub fn defer(&self, ks: &KeeperSecret) {
        lock(&self.deferred).insert(ObjectRef::from_obj(ks));
    }

    /// The deferred refreshes, each once, as soon as the backlog has drained: checked once per
    /// [`BACKLOG_EVERY`], for the controller to reconcile them. A deferred refresh otherwise
    /// waits up to an interval; retrying each every few seconds instead kept 35,000 synced
    /// KeeperSecrets cycling through the controller during a 50,000-object cold start.
    pub fn drained(self: Arc<Self>) -> impl Stream<Item = ObjectRef<KeeperSecret>> + Send {
        stream::unfold(self, |caches| async move {
            loop {
                tokio::time::sleep(BACKLOG_EVERY).await;
                if lock(&caches.deferred).is_empty() || caches.backlog() > 0 {
                    continue;
                }
                let woken = std::mem::take(&mut *lock(&caches.deferred));
                return Some((stream::iter(woken), caches));
            }
        })
        .flatten()
    }

    /// Forgets what the memo holds for a deleted KeeperSecret.
    pub fn forget(&self, ks: &KeeperSecret) {
        lock(&self.deferred).remove(&ObjectRef::from_obj(ks));
        if let Some(uid) = ks.metadata.uid.as_deref() {
            lock(&self.known).remove(&uid_key(uid));
        }
    }

    /// Forgets every entry whose KeeperSecret the reflector no longer holds: after a re-list,
    /// deletions the watch missed while it was disconnected.
    pub fn forget_unlisted(&self) {
        let live: HashSet<UidKey> = self
            .keeper_secrets
            .state()
            .iter()
            .filter_map(|ks| ks.metadata.uid.as_deref().map(uid_key))
            .collect();
        lock(&self.known).retain(|key, _| live.contains(key));
    }
}

/// What the memo held for one KeeperSecret when its reconcile started ([`Caches::recall`]).
#[derive(Debug, Default)]
pub struct Recall {
    /// The status last written, when the reflector's copy lags behind it.
    pub status: Option<KeeperSecretStatus>,
    /// When a requested sync last ran, if one did since the operator started.
    pub forced_at: Option<Timestamp>,
    /// The last sync that the status does not show, if any.
    pub synced_at: Option<Timestamp>,
    /// When the watch first showed the current sync request.
    pub requested_at: Option<Timestamp>,
    /// When the current generation first missed a record or field.
    pub missed_at: Option<Timestamp>,
    /// The first fresh answer in which records were gone (see [`crate::sync::hold`]).
    pub gone: Option<Sighting>,
    verified: Option<Verified>,
}

/// What one reconcile learned, kept by [`Caches::learn`].
#[derive(Debug, Default)]
pub struct Learned {
    /// The target Secret's version, the fingerprint of the credential its hash is keyed by,
    /// that hash and the Secret's shape: it was written or read and verified.
    target: Option<(Version, [u8; 32], Box<str>, Shape)>,
    /// The status written.
    pub status: Option<KeeperSecretStatus>,
    /// A sync whose status was not rewritten for it alone.
    pub synced_at: Option<Timestamp>,
    /// A requested sync ran.
    pub forced_at: Option<Timestamp>,
    /// The current generation missed a record or field for the first time.
    pub missed_at: Option<Timestamp>,
    /// What to keep of gone records.
    gone: Sighted,
}

impl Learned {
    /// The first sighting of gone records as of now: what this reconcile learned, else what
    /// the memo recalled.
    pub fn sighting<'a>(&'a self, recall: &'a Recall) -> Option<&'a Sighting> {
        match &self.gone {
            Sighted::Unchanged => recall.gone.as_ref(),
            Sighted::Forget => None,
            Sighted::First(sighting) => Some(sighting),
        }
    }

    /// Keeps what a build taught of gone records (nothing new keeps what was learned before).
    pub fn sighted(&mut self, sighted: Sighted) {
        if !matches!(sighted, Sighted::Unchanged) {
            self.gone = sighted;
        }
    }

    /// `secret` (as returned by the API server), the target of `ks`, holds data hashing to
    /// `hash`, keyed by `credential`.
    pub fn verified(
        &mut self,
        ks: &KeeperSecret,
        credential: &CredentialKey,
        secret: &Secret,
        hash: &str,
    ) {
        if let Some(rv) = &secret.metadata.resource_version {
            let shape = Shape::of(ks, secret);
            self.target = Some((version(rv), *credential.fingerprint(), hash.into(), shape));
        }
    }
}

/// What a reconcile learned of records gone from Keeper.
#[derive(Debug, Default)]
pub enum Sighted {
    /// Nothing new.
    #[default]
    Unchanged,
    /// None is gone any more.
    Forget,
    /// The first fresh answer that lacked them.
    First(Sighting),
}

/// Each synced KeeperSecret's fetch time: its status `lastSyncTime`, or the later sync that the
/// status was not rewritten for.
impl DataTimes for Caches {
    fn data_times(&self) -> Vec<(String, String, Timestamp)> {
        let known = lock(&self.known);
        self.keeper_secrets
            .state()
            .iter()
            .filter_map(|ks| {
                let status = ks.status.as_ref()?.last_sync_time.as_ref().map(|t| t.0);
                let key = uid_key(ks.metadata.uid.as_deref()?);
                let later = known.get(&key).and_then(|k| k.synced_at);
                Some((ks.namespace()?, ks.name_any(), status.max(later)?))
            })
            .collect()
    }
}

/// PURE: the recorded hash and shape, if recorded for the same target version, spec and
/// credential.
fn vouched(entry: &Verified, now: &Pin) -> Option<Vouched> {
    (entry.pin == *now).then(|| Vouched {
        hash: entry.hash.to_string(),
        shape: entry.shape,
    })
}

/// Which status a reconcile should start from.
#[derive(Debug, PartialEq)]
enum Latest<'a> {
    /// Nothing was written since the reflector's copy: use it.
    Cached,
    /// The reflector shows what was written: use it (the watch forgets the write).
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

    #[test]
    fn only_the_recorded_version_for_the_same_spec_and_credential_is_vouched_for() {
        let cred = *CredentialKey::new("ns/ksm/config", b"cred").fingerprint();
        let shape = Shape::of(
            &KeeperSecret::new("db", Default::default()),
            &Secret::default(),
        );
        let entry = Verified {
            pin: pin(version("42"), Some(1), &cred),
            hash: "hmac-sha256:ab".into(),
            shape,
        };
        assert_eq!(
            vouched(&entry, &pin(version("42"), Some(1), &cred)),
            Some(Vouched {
                hash: "hmac-sha256:ab".into(),
                shape
            })
        );
        // Any write (a hand edit, a deletion and re-creation) moves the resourceVersion.
        assert_eq!(vouched(&entry, &pin(version("43"), Some(1), &cred)), None);
        // A spec change (another target name included) moves the generation.
        assert_eq!(vouched(&entry, &pin(version("42"), Some(2), &cred)), None);
        assert_eq!(vouched(&entry, &pin(version("42"), None, &cred)), None);
        let rotated = CredentialKey::new("ns/ksm/config", b"rotated");
        assert_eq!(
            vouched(&entry, &pin(version("42"), Some(1), rotated.fingerprint())),
            None
        );
    }

    #[test]
    fn the_generation_predicate_passes_each_generation_once_per_uid() {
        let (caches, _writers) = Caches::new();
        let mut ks = crate::api::test_keeper_secret();
        ks.metadata.uid = Some("u1".into());
        ks.metadata.generation = Some(1);
        assert!(caches.new_generation(&ks), "first sight");
        assert!(
            !caches.new_generation(&ks),
            "a status write keeps the generation"
        );
        ks.metadata.generation = Some(2);
        assert!(caches.new_generation(&ks), "a spec change");
        // Deleted and re-created under the same name: a new UID starts again.
        ks.metadata.uid = Some("u2".into());
        assert!(caches.new_generation(&ks));
        // A new sync request passes; the same one again (our status write) does not.
        ks.metadata.annotations = Some(
            [(
                crate::api::FORCE_SYNC_ANNOTATION.to_string(),
                "1".to_string(),
            )]
            .into(),
        );
        assert!(caches.new_generation(&ks), "a force-sync request");
        assert!(!caches.new_generation(&ks));
        ks.metadata.annotations = None;
        assert!(
            !caches.new_generation(&ks),
            "removing the annotation asks nothing"
        );
        // Objects without a generation or UID are never filtered.
        ks.metadata.generation = None;
        assert!(caches.new_generation(&ks));
        assert!(caches.new_generation(&ks));
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
            let mut ks = crate::api::test_keeper_secret();
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
        for (k, at) in [(&db, 1_300), (&quiet, 900)] {
            let learned = Learned {
                synced_at: Some(t(at)),
                ..Learned::default()
            };
            caches.learn(k, learned);
        }
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

    #[tokio::test]
    async fn deferred_refreshes_are_woken_once_when_the_backlog_drains() {
        let (caches, mut writers) = Caches::new();
        let caches = Arc::new(caches);
        let named = |name: &str, status| {
            let mut ks = crate::api::test_keeper_secret();
            ks.metadata.name = Some(name.into());
            ks.status = status;
            ks
        };
        let synced = named("synced", Some(KeeperSecretStatus::default()));
        let mut cold = named("cold", None);
        for ks in [&synced, &cold] {
            writers
                .keeper_secrets
                .apply_watcher_event(&watcher::Event::Apply(ks.clone()));
        }
        caches.defer(&synced);
        let mut woken = Box::pin(caches.clone().drained());
        let next = Duration::from_millis(1500);
        assert!(
            tokio::time::timeout(next, woken.next()).await.is_err(),
            "`cold` was never reconciled: the refresh keeps waiting"
        );
        cold.status = Some(KeeperSecretStatus::default());
        writers
            .keeper_secrets
            .apply_watcher_event(&watcher::Event::Apply(cold));
        let first = tokio::time::timeout(2 * next, woken.next()).await;
        assert_eq!(first.unwrap().unwrap().name, "synced");
        assert!(
            tokio::time::timeout(next, woken.next()).await.is_err(),
            "each deferred refresh is woken once"
        );
    }

    #[test]
    fn entries_of_deleted_keeper_secrets_are_forgotten() {
        let (caches, mut writers) = Caches::new();
        let ks = |uid: &str| {
            let mut ks = crate::api::test_keeper_secret();
            ks.metadata.uid = Some(uid.into());
            ks
        };
        let forced = |at| Learned {
            forced_at: Some(Timestamp::from_second(at).unwrap()),
            ..Learned::default()
        };
        let (kept, deleted, missed) = (ks("u1"), ks("u2"), ks("u3"));
        for k in [&kept, &deleted, &missed] {
            caches.learn(k, forced(1));
        }
        // The watch reports a deletion.
        caches.forget(&deleted);
        assert_eq!(caches.recall(&deleted).forced_at, None);
        // After a re-list, what the list no longer holds goes too.
        writers
            .keeper_secrets
            .apply_watcher_event(&watcher::Event::Apply(kept.clone()));
        caches.forget_unlisted();
        assert_eq!(caches.recall(&missed).forced_at, None);
        assert!(caches.recall(&kept).forced_at.is_some());
    }

    #[test]
    fn a_written_status_is_forgotten_once_the_watch_delivers_it() {
        let (caches, _writers) = Caches::new();
        let mut ks = crate::api::test_keeper_secret();
        ks.metadata.uid = Some("u1".into());
        let written = KeeperSecretStatus {
            data_hash: Some("h".into()),
            ..KeeperSecretStatus::default()
        };
        let learned = Learned {
            status: Some(written.clone()),
            ..Learned::default()
        };
        caches.learn(&ks, learned);
        // An older copy (the watch lags behind the write) keeps the write remembered.
        caches.observed(&ks);
        assert_eq!(caches.recall(&ks).status.as_ref(), Some(&written));
        // Once the watch shows the write, it is forgotten.
        ks.status = Some(written);
        caches.observed(&ks);
        assert!(lock(&caches.known).values().all(|k| k.written.is_none()));
    }
}
