//! PURE: the Secret a KeeperSecret should produce, and whether an existing Secret already is it.
//!
//! The data hash is an HMAC-SHA256 keyed per KeeperSecret with a key derived from the Keeper
//! credential (see [`HashKey`]): a bare hash of short passwords could be brute-forced by anyone
//! allowed to read annotations or status, a keyed one cannot without the credential — and
//! whoever holds the credential can read the values from Keeper anyway.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::api::Reason;
use crate::api::{
    ALLOW_MERGE_ANNOTATION, CREATED_FOR_ANNOTATION, CreationPolicy, DATA_HASH_ANNOTATION,
    KEYS_ANNOTATION, KeeperSecret, MANAGED_BY_LABEL, MANAGED_BY_VALUE, MERGED_BY_ANNOTATION,
    OWNER_ANNOTATION, RESERVED_PREFIX,
};
use crate::sync::mapping::Bytes;

/// Kubernetes rejects Secrets whose data exceeds 1 MiB.
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// Per-KeeperSecret HMAC key; never printed.
#[derive(Clone)]
pub struct HashKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

impl HashKey {
    /// Derives the key from the credential text and the KeeperSecret's UID, so equal data in two
    /// KeeperSecrets hashes differently and nobody without the credential can test guesses.
    pub fn derive(credential: &[u8], keeper_secret_uid: &str) -> HashKey {
        let mut h = Sha256::new();
        h.update(b"keeper-operator.dev/data-hash/v1\0");
        h.update(keeper_secret_uid.as_bytes());
        h.update(b"\0");
        h.update(credential);
        HashKey(Zeroizing::new(h.finalize().into()))
    }

    /// `hmac-sha256:<hex>` over the sorted keys and their values (length-prefixed).
    pub fn hash<'a>(&self, data: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_slice())
            .expect("HMAC takes any key length");
        let mut entries: Vec<(&str, &[u8])> = data.into_iter().collect();
        entries.sort_unstable_by_key(|(k, _)| *k);
        for (k, v) in entries {
            mac.update(&(k.len() as u64).to_be_bytes());
            mac.update(k.as_bytes());
            mac.update(&(v.len() as u64).to_be_bytes());
            mac.update(v);
        }
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("hmac-sha256:{hex}")
    }

    /// A keyed digest of `parts` for `purpose` (such as a deterministic bcrypt salt): the same
    /// for the same inputs, credential and KeeperSecret, and unguessable without the credential.
    /// Starts with `u64::MAX`, which no key's length in [`Self::hash`] can be, so the two never
    /// share an input.
    pub fn digest(&self, purpose: &str, parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_slice())
            .expect("HMAC takes any key length");
        mac.update(&u64::MAX.to_be_bytes());
        for part in std::iter::once(purpose.as_bytes()).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

/// Why the desired Secret cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// Over the 1 MiB limit.
    #[error("the Secret would hold {size} bytes, over the 1 MiB limit; map fewer fields or files")]
    TooLarge { size: usize },
    /// The keys do not fit the Secret type.
    #[error("Secret type {type_} needs key {key:?}; map or template it")]
    MissingTypeKey { type_: String, key: &'static str },
    /// The target asks for something a tenant may not get through the operator.
    #[error("{0}")]
    Forbidden(String),
}

impl DesiredError {
    /// Stable reason for status and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            Self::TooLarge { .. } => Reason::TooLarge,
            Self::MissingTypeKey { .. } => Reason::InvalidSpec,
            Self::Forbidden(_) => Reason::NotAllowed,
        }
    }
}

/// The Secret to apply and the hash of its data.
pub struct Desired {
    /// The full object for server-side apply.
    pub secret: Secret,
    /// Value of the data-hash annotation.
    pub hash: String,
}

impl std::fmt::Debug for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desired")
            .field("name", &self.secret.metadata.name)
            .field(
                "keys",
                &self
                    .secret
                    .data
                    .as_ref()
                    .map(|d| d.keys().collect::<Vec<_>>()),
            )
            .field("hash", &self.hash)
            .finish()
    }
}

/// Builds the Secret for `ks` holding `data`.
pub(crate) fn secret(
    ks: &KeeperSecret,
    data: BTreeMap<String, Bytes>,
    key: &HashKey,
) -> Result<Desired, DesiredError> {
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_SECRET_BYTES {
        return Err(DesiredError::TooLarge { size });
    }
    let target = ks.spec.target.clone().unwrap_or_default();
    check_target_allowed(&target)?;
    let type_ = target.type_.clone().unwrap_or_else(|| "Opaque".to_string());
    if let Some(k) = required_keys(&type_)
        .iter()
        .find(|k| !data.contains_key(**k))
    {
        return Err(DesiredError::MissingTypeKey { type_, key: k });
    }
    let hash = key.hash(data.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    let mut labels = target.labels;
    let mut annotations = target.annotations;
    // A Merge target stays its creator's: it is marked as merged into, never with the label
    // and owner annotation that make a Secret ours.
    if target.creation_policy == CreationPolicy::Merge {
        annotations.insert(MERGED_BY_ANNOTATION.to_string(), ks.name_any());
    } else {
        labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string());
        // Its shard's Secret watch selects on it (crate::controller).
        labels.extend(
            ks.labels()
                .get_key_value(crate::api::SHARD_LABEL)
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        annotations.insert(OWNER_ANNOTATION.to_string(), ks.name_any());
    }
    annotations.insert(DATA_HASH_ANNOTATION.to_string(), hash.clone());
    annotations.insert(
        KEYS_ANNOTATION.to_string(),
        data.keys().cloned().collect::<Vec<_>>().join(","),
    );
    // The created-for marker and the owner reference come from [`mark`], once the write
    // knows whether it creates the Secret.
    let owner_references = None;
    // Only a Secret we create gets our type: Merge must not fight the creator over it.
    let type_ = (target.creation_policy != CreationPolicy::Merge).then_some(type_);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(ks.target_name()),
            namespace: ks.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..ObjectMeta::default()
        },
        type_,
        immutable: target.immutable,
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    Ok(Desired { secret, hash })
}

/// Secret types that are never a target, whatever the policy: rewriting a Helm release
/// record rewrites what Helm deploys, and a bootstrap token lets nodes join the cluster.
pub(crate) const PROTECTED_TYPES: [&str; 2] =
    ["helm.sh/release.v1", "bootstrap.kubernetes.io/token"];

/// The Secret type that makes the API server mint a ServiceAccount token into the Secret.
const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// Annotations that bind a Secret to a ServiceAccount (the token controller acts on them).
const SERVICE_ACCOUNT_ANNOTATIONS: [&str; 2] = [
    "kubernetes.io/service-account.name",
    "kubernetes.io/service-account.uid",
];

/// Refuses targets that would let a tenant act through the operator's write access rather than
/// merely receive Keeper data: minting ServiceAccount tokens, or freezing a Secret it does not
/// own. The CRD's validation rules say the same; this holds where they are not enforced.
pub(crate) fn check_target_allowed(target: &crate::api::TargetSecret) -> Result<(), DesiredError> {
    if target.type_.as_deref() == Some(SERVICE_ACCOUNT_TOKEN_TYPE) {
        return Err(DesiredError::Forbidden(format!(
            "target.type {SERVICE_ACCOUNT_TOKEN_TYPE} is not allowed: the operator does not create ServiceAccount token Secrets"
        )));
    }
    if let Some(a) = SERVICE_ACCOUNT_ANNOTATIONS
        .iter()
        .find(|a| target.annotations.contains_key(**a))
    {
        return Err(DesiredError::Forbidden(format!(
            "target.annotations may not set {a}: the operator does not bind Secrets to ServiceAccounts"
        )));
    }
    if let Some(t) = target
        .type_
        .as_deref()
        .filter(|t| PROTECTED_TYPES.contains(t))
    {
        return Err(DesiredError::Forbidden(format!(
            "target.type {t} is not allowed: Helm release and bootstrap token Secrets are never written"
        )));
    }
    if let Some(a) = target
        .annotations
        .keys()
        .find(|a| a.starts_with(RESERVED_PREFIX))
    {
        return Err(DesiredError::Forbidden(format!(
            "target.annotations may not set {a}: keeper-operator.dev/ annotations are set by the operator only"
        )));
    }
    if target.labels.contains_key(MANAGED_BY_LABEL) {
        return Err(DesiredError::Forbidden(format!(
            "target.labels may not set {MANAGED_BY_LABEL}: the operator sets it on the Secrets it manages"
        )));
    }
    if target.creation_policy == CreationPolicy::Merge && target.immutable.is_some() {
        return Err(DesiredError::Forbidden(
            "target.immutable cannot be combined with creationPolicy Merge: the operator never changes the mutability of a Secret it did not create".into(),
        ));
    }
    Ok(())
}

/// Keys the apiserver requires for the built-in Secret types.
fn required_keys(type_: &str) -> &'static [&'static str] {
    match type_ {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    }
}

/// Who the existing Secret belongs to, from our point of view.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// No Secret yet.
    Absent,
    /// Written by this KeeperSecret (our label and owner annotation). Deleted or owned only
    /// when it also carries our created-for marker (see [`created_for`]).
    Ours,
    /// Someone else's Secret that invited this KeeperSecret to merge into it.
    Foreign,
    /// A Secret keeper-operator did not create and no controller owns: taken over only with
    /// `target.adopt` and the Secret's invitation (see [`adoption`]).
    Unmanaged,
}

/// What the operator did or will do with a Secret it did not create: named in refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// creationPolicy Merge.
    Merge,
    /// `target.adopt`.
    Adopt,
}

impl std::fmt::Display for Takeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Takeover::Merge => "creationPolicy Merge",
            Takeover::Adopt => "target.adopt",
        })
    }
}

/// Why the operator will not write into an existing Secret. Names keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefusal {
    /// Another KeeperSecret writes or merges into it.
    #[error("Secret {name} is written by KeeperSecret {other}; pick another target.name")]
    OwnedBy { name: String, other: String },
    /// Another object is its controller.
    #[error(
        "Secret {name} is controlled by another object; pick another target.name (creationPolicy Merge writes only into Secrets without a controller)"
    )]
    Controlled { name: String },
    /// Its type is never written (Helm release, bootstrap token).
    #[error(
        "Secret {name} has type {type_}, which keeper-operator never writes; pick another target.name"
    )]
    Protected { name: String, type_: String },
    /// Merge or adopt without the Secret's own opt-in.
    #[error(
        "Secret {name} does not invite this KeeperSecret: {how} writes into a Secret someone else created only when it carries the annotation {ALLOW_MERGE_ANNOTATION}: {ks}, which whoever may write that Secret sets; nothing was written"
    )]
    NotInvited {
        name: String,
        ks: String,
        how: Takeover,
    },
    /// Merge into a Secret of another type.
    #[error(
        "Secret {name} has type {actual}, not the declared target.type {declared}; creationPolicy Merge writes only into a Secret of the declared type"
    )]
    MergeTypeMismatch {
        name: String,
        actual: String,
        declared: String,
    },
    /// Adopt a Secret of another type.
    #[error(
        "Secret {name} already exists with type {actual}, not {wanted}, and a Secret's type cannot change; delete it or declare target.type {actual}"
    )]
    AdoptTypeMismatch {
        name: String,
        actual: String,
        wanted: String,
    },
    /// A Secret of the target's name made by someone else while the operator created it.
    #[error(
        "Secret {name} was created by someone else while keeper-operator created it; it is left as they made it"
    )]
    Appeared { name: String },
    /// An unmanaged Secret and no `target.adopt`.
    #[error(
        "Secret {name} already exists and was not created by keeper-operator; to take it over set target.adopt: true and annotate the Secret {ALLOW_MERGE_ANNOTATION}: {ks} (it would add keys: {add}; drop: {drop}), or choose another target.name"
    )]
    NotAdopted {
        name: String,
        ks: String,
        add: String,
        drop: String,
    },
}

impl TargetRefusal {
    /// Stable reason for status and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            Self::Protected { .. } => Reason::NotAllowed,
            Self::NotInvited { .. } => Reason::TargetNotOptedIn,
            Self::OwnedBy { .. }
            | Self::Controlled { .. }
            | Self::MergeTypeMismatch { .. }
            | Self::AdoptTypeMismatch { .. }
            | Self::Appeared { .. }
            | Self::NotAdopted { .. } => Reason::SecretOwnedElsewhere,
        }
    }
}

/// Whether `secret` carries the created-for marker of this KeeperSecret (by UID): only such a
/// Secret was created by the operator for it, and only such a Secret is deleted, owned or
/// garbage-collected with it.
pub(crate) fn created_for(ks: &KeeperSecret, secret: &Secret) -> bool {
    let Some(uid) = ks.metadata.uid.as_deref().filter(|u| !u.is_empty()) else {
        return false;
    };
    secret
        .annotations()
        .get(CREATED_FOR_ANNOTATION)
        .map(String::as_str)
        == Some(uid)
}

/// Whether `secret` invites this KeeperSecret to merge into or adopt it: an annotation only
/// someone who may write the Secret can set.
pub(crate) fn invited(ks: &KeeperSecret, secret: &Secret) -> bool {
    secret.annotations().get(ALLOW_MERGE_ANNOTATION) == Some(&ks.name_any())
}

/// Whether the write that follows creates the target or writes one the operator created for
/// this KeeperSecret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provenance {
    /// No Secret exists (the write creates it), or it carries our created-for marker.
    Created,
    /// The Secret existed and was not created for this KeeperSecret (merged into, adopted, or
    /// written by a version of the operator that set no marker).
    Existing,
}

/// PURE: the provenance of a write over `existing`.
pub(crate) fn provenance(ks: &KeeperSecret, existing: Option<&Secret>) -> Provenance {
    match existing {
        None => Provenance::Created,
        Some(s) if created_for(ks, s) => Provenance::Created,
        Some(_) => Provenance::Existing,
    }
}

/// What a write over a target the memo vouches for (unchanged since it was written or
/// verified) needs to know of it, so it need not be read: whether it was created for this
/// KeeperSecret, and which keys hold a value (all the write guard asks of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub provenance: Provenance,
    pub filled_keys: FilledKeys,
}

impl Shape {
    /// PURE: the shape of `secret` as a write over it for `ks` sees it.
    pub(crate) fn of(ks: &KeeperSecret, secret: &Secret) -> Shape {
        Shape {
            provenance: provenance(ks, Some(secret)),
            filled_keys: FilledKeys::of(secret),
        }
    }
}

/// A digest of the keys of a Secret that hold a non-empty value. Two Secrets with the same
/// digest give the write guard nothing to refuse between them: no key is dropped or emptied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FilledKeys(u64);

impl FilledKeys {
    pub(crate) fn of(secret: &Secret) -> FilledKeys {
        let mut h = Sha256::new();
        for (key, _) in secret
            .data
            .iter()
            .flatten()
            .filter(|(_, v)| !v.0.is_empty())
        {
            h.update((key.len() as u64).to_be_bytes());
            h.update(key.as_bytes());
        }
        let digest = h.finalize();
        FilledKeys(u64::from_be_bytes(
            digest[..8].try_into().unwrap_or_default(),
        ))
    }
}

/// Puts the created-for marker and, with creationPolicy Owner, the owner reference on a
/// Secret the operator creates (or created) for `ks`; nothing on any other.
pub(crate) fn mark(ks: &KeeperSecret, provenance: Provenance, secret: &mut Secret) {
    let policy = ks.creation_policy();
    let Some(uid) = ks.metadata.uid.clone().filter(|u| !u.is_empty()) else {
        return;
    };
    if provenance != Provenance::Created || policy == CreationPolicy::Merge {
        return;
    }
    secret
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(CREATED_FOR_ANNOTATION.to_string(), uid);
    if policy == CreationPolicy::Owner {
        secret.metadata.owner_references = ks.controller_owner_ref(&()).map(|r| vec![r]);
    }
}

/// Refuses a Secret of a protected type, one another KeeperSecret writes, one another object
/// controls, and a Merge into a Secret that did not invite this KeeperSecret.
pub(crate) fn ownership(
    ks: &KeeperSecret,
    existing: Option<&Secret>,
) -> Result<Ownership, TargetRefusal> {
    let Some(s) = existing else {
        return Ok(Ownership::Absent);
    };
    let name = s.name_any();
    let actual = s.type_.as_deref().unwrap_or("Opaque");
    if PROTECTED_TYPES.contains(&actual) {
        return Err(TargetRefusal::Protected {
            name,
            type_: actual.to_string(),
        });
    }
    let me = ks.name_any();
    let managed = s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE);
    let owner = s.annotations().get(OWNER_ANNOTATION);
    let writer = owner.or(s.annotations().get(MERGED_BY_ANNOTATION));
    if let Some(other) = writer.filter(|o| **o != me) {
        return Err(TargetRefusal::OwnedBy {
            name,
            other: other.clone(),
        });
    }
    let my_uid = ks.metadata.uid.as_deref();
    let other_controller = s
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) != my_uid);
    if other_controller {
        return Err(TargetRefusal::Controlled { name });
    }
    match ks.creation_policy() {
        // Merge writes into someone else's Secret: each time, only while it invites us.
        CreationPolicy::Merge => {
            if !invited(ks, s) {
                return Err(TargetRefusal::NotInvited {
                    name,
                    ks: me,
                    how: Takeover::Merge,
                });
            }
            let declared = ks
                .spec
                .target
                .as_ref()
                .and_then(|t| t.type_.as_deref())
                .unwrap_or("Opaque");
            if declared != actual {
                return Err(TargetRefusal::MergeTypeMismatch {
                    name,
                    actual: actual.to_string(),
                    declared: declared.to_string(),
                });
            }
            Ok(Ownership::Foreign)
        }
        _ if managed && owner.is_some() => Ok(Ownership::Ours),
        _ => Ok(Ownership::Unmanaged),
    }
}

/// Whether taking over the unmanaged Secret `existing` to write `desired` is allowed: only with
/// `target.adopt`, the Secret's own invitation and the same type (a Secret's type cannot
/// change). The refusal names the keys adoption would add and drop, never a value, nor which
/// values differ.
pub(crate) fn adoption(
    ks: &KeeperSecret,
    existing: &Secret,
    desired: &Secret,
) -> Result<(), TargetRefusal> {
    let name = existing.name_any();
    let actual = existing.type_.as_deref().unwrap_or("Opaque");
    let wanted = desired.type_.as_deref().unwrap_or("Opaque");
    if actual != wanted {
        return Err(TargetRefusal::AdoptTypeMismatch {
            name,
            actual: actual.to_string(),
            wanted: wanted.to_string(),
        });
    }
    if ks.adopts() {
        if invited(ks, existing) {
            return Ok(());
        }
        return Err(TargetRefusal::NotInvited {
            name,
            ks: ks.name_any(),
            how: Takeover::Adopt,
        });
    }
    let empty = BTreeMap::new();
    let have = existing.data.as_ref().unwrap_or(&empty);
    let want = desired.data.as_ref().unwrap_or(&empty);
    let list = |keys: Vec<&String>| match keys.as_slice() {
        [] => "none".to_string(),
        keys => keys
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let add = want.keys().filter(|k| !have.contains_key(*k)).collect();
    let drop = have.keys().filter(|k| !want.contains_key(*k)).collect();
    Err(TargetRefusal::NotAdopted {
        name,
        ks: ks.name_any(),
        add: list(add),
        drop: list(drop),
    })
}

/// True when `existing` already holds what `desired` would write, so no write is needed.
pub(crate) fn is_up_to_date(existing: &Secret, desired: &Secret) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>,
                  have: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let data_equal = desired
        .data
        .iter()
        .flatten()
        .all(|(k, v)| existing.data.as_ref().and_then(|d| d.get(k)) == Some(v));
    let refs_ok = desired.metadata.owner_references.iter().flatten().all(|r| {
        existing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|e| e.uid == r.uid)
    });
    let type_ok = desired.type_.is_none()
        || desired.type_ == existing.type_.clone().or(Some("Opaque".into()));
    data_equal
        && refs_ok
        && type_ok
        && (desired.immutable.is_none() || desired.immutable == existing.immutable)
        && subset(&desired.metadata.labels, &existing.metadata.labels)
        && subset(
            &desired.metadata.annotations,
            &existing.metadata.annotations,
        )
}

/// Verifies the Secret's data against its own hash annotation (detects hand edits and deleted
/// keys without contacting Keeper). Returns the annotation when it checks out.
pub(crate) fn verified_hash<'a>(secret: &'a Secret, key: &HashKey) -> Option<&'a str> {
    let annotations = secret.metadata.annotations.as_ref()?;
    let claimed = annotations.get(DATA_HASH_ANNOTATION)?;
    let keys = annotations.get(KEYS_ANNOTATION)?;
    let data = secret.data.as_ref();
    let mut entries = Vec::new();
    for k in keys.split(',').filter(|k| !k.is_empty()) {
        entries.push((k, data?.get(k)?.0.as_slice()));
    }
    (key.hash(entries) == *claimed).then_some(claimed.as_str())
}

#[cfg(test)]
mod tests;
