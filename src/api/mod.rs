//! The `keeper-operator.dev/v1alpha1` API: `KeeperSecret` and `ClusterKeeperStore`.
//!
//! Doc comments become the CRD descriptions that `kubectl explain` prints; CEL rules
//! (`x_kube(validation = ...)`) are enforced by the apiserver at admission time.

pub mod conditions;
pub mod yaml;

pub use crate::reason::Reason;
pub use conditions::{Change, ConditionStatus, ConditionType, set_condition};

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// Every label, annotation, field manager and well-known key the operator puts on or reads from
// objects, in one place.

/// Field manager of the controller's server-side applies (Secrets, status, rollout patches).
pub(crate) const FIELD_MANAGER: &str = "keeper-operator.dev/controller";
/// Field manager of the sealed last good copy in a credential's cache Secret.
pub(crate) const SNAPSHOT_FIELD_MANAGER: &str = "keeper-operator.dev/last-good-cache";
/// Field manager of the sealed attachments in a credential's cache Secret (its own, so saving
/// them leaves the snapshot in place and the other way round).
pub(crate) const FILES_FIELD_MANAGER: &str = "keeper-operator.dev/last-good-files";
/// Label put on every Secret the operator writes; the controller watches only these.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "keeper-operator";
/// Label naming the shard that reconciles a KeeperSecret (`--watch-label-selector`); copied to
/// the Secrets written for it, so each shard's Secret watch sees its own.
pub const SHARD_LABEL: &str = "sharding.keeper-operator.dev/key";
/// Annotation naming the KeeperSecret (same namespace) that writes a Secret.
pub(crate) const OWNER_ANNOTATION: &str = "keeper-operator.dev/owner";
/// Annotation with the keyed hash of the data the operator last wrote.
pub(crate) const DATA_HASH_ANNOTATION: &str = "keeper-operator.dev/data-hash";
/// Annotation listing the data keys the operator wrote (comma-separated, sorted).
pub(crate) const KEYS_ANNOTATION: &str = "keeper-operator.dev/keys";
/// Provenance: on a Secret the operator created, the UID of the KeeperSecret it created it
/// for. Only a Secret carrying this KeeperSecret's UID here is ever deleted, owned or
/// garbage-collected with it.
pub const CREATED_FOR_ANNOTATION: &str = "keeper-operator.dev/created-for";
/// On a Secret someone else created and a KeeperSecret (named here) merges keys into.
pub(crate) const MERGED_BY_ANNOTATION: &str = "keeper-operator.dev/merged-by";
/// The opt-in that only someone who may write a Secret can set: names the KeeperSecret (same
/// namespace) that may merge into it (creationPolicy Merge) or adopt it (`target.adopt`).
pub const ALLOW_MERGE_ANNOTATION: &str = "keeper-operator.dev/allow-merge-from";
/// Annotation and label prefix reserved for the operator: a KeeperSecret may not set it on its
/// target, so no tenant can forge provenance or an invitation through `target.annotations`.
pub(crate) const RESERVED_PREFIX: &str = "keeper-operator.dev/";
/// On a KeeperSecret: any new value asks for an immediate sync (answered in
/// `status.lastHandledReconcileAt`).
pub const FORCE_SYNC_ANNOTATION: &str = "keeper-operator.dev/force-sync";
/// Flux's "reconcile now" annotation (`flux reconcile`), honoured like [`FORCE_SYNC_ANNOTATION`].
pub(crate) const FLUX_REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";
/// Pod-template annotation whose change makes the workload controller roll its pods.
pub const RESTARTED_AT_ANNOTATION: &str = "keeper-operator.dev/restartedAt";
/// On a credential Secret while a redeemer holds its one-time token (RFC 3339 time of the claim).
pub const CLAIM_ANNOTATION: &str = "keeper-operator.dev/token-redemption-started";
/// On a credential Secret once its token was replaced by its config (RFC 3339 time).
pub const REDEEMED_ANNOTATION: &str = "keeper-operator.dev/token-redeemed-at";
/// Optional key in the credential Secret: `HOST[:PORT]`, overrides the token's region prefix.
pub(crate) const HOSTNAME_KEY: &str = "hostname";
/// Optional key in the credential Secret: `ID:BASE64URL_POINT`, a custom Keeper server key.
pub(crate) const SERVER_KEY_KEY: &str = "serverPublicKey";

/// Valid Secret data key.
pub(crate) const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

// Size bounds of a KeeperSecret (characters or items). Every KeeperSecret sits in the
// operator's watch cache, and every tenant may create them: with these bounds an ASCII spec
// stays under about 1 MiB whatever it holds (the table in docs/templates.md adds it up).

/// Items of `data`.
pub const MAX_DATA_ITEMS: usize = 256;
/// Items of `dataFrom`.
pub const MAX_DATA_FROM_ITEMS: usize = 32;
/// Templates in `target.template.data` (the render takes at most this many in all).
pub const MAX_INLINE_TEMPLATES: usize = 64;
/// Characters of one inline template; longer ones belong in a `templateFrom` ConfigMap, which is
/// read at each sync rather than held in the watch cache.
pub const MAX_INLINE_TEMPLATE_CHARS: usize = 8 * 1024;
/// Characters of a notation.
pub const MAX_NOTATION_CHARS: usize = 512;
/// Workloads in `rolloutRestart`.
pub const MAX_ROLLOUT_TARGETS: usize = 16;
/// Labels, and annotations, on the target Secret.
pub(crate) const MAX_TARGET_METADATA: usize = 32;
/// Characters of a label value (Kubernetes' own limit).
pub(crate) const MAX_LABEL_VALUE_CHARS: usize = 63;
/// Characters of an annotation value.
pub(crate) const MAX_ANNOTATION_VALUE_CHARS: usize = 1024;
/// Characters of a label or annotation key (a 253-character prefix, '/', a 63-character name).
pub const MAX_METADATA_KEY_CHARS: usize = 317;

/// Bounds a map of strings: at most `KEYS` entries, each value at most `CHARS` characters.
/// (Key lengths are checked by CEL rules: structural schemas cannot bound property names.)
fn bounded_map<const KEYS: usize, const CHARS: usize>(schema: &mut schemars::Schema) {
    schema.insert("maxProperties".into(), KEYS.into());
    if let Some(values) = schema
        .get_mut("additionalProperties")
        .and_then(|v| v.as_object_mut())
    {
        values.insert("maxLength".into(), CHARS.into());
    }
}
const DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$";
const UID_PATTERN: &str = r"^[A-Za-z0-9_-]{22}$";
const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Syncs Keeper Secrets Manager records into a native Kubernetes Secret.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "keeper-operator.dev",
    version = "v1alpha1",
    kind = "KeeperSecret",
    namespaced,
    shortname = "ks",
    category = "keeper",
    status = "KeeperSecretStatus",
    derive = "PartialEq",
    doc = "KeeperSecret syncs Keeper Secrets Manager records into a native Kubernetes Secret.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".status.secretName"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[cfg_attr(test, kube(cel))]
#[x_kube(validation = Rule::new("(has(self.data) ? size(self.data) : 0) + (has(self.dataFrom) ? size(self.dataFrom) : 0) > 0").message("set at least one entry in data or dataFrom"))]
#[x_kube(validation = Rule::new("(has(self.target) && has(self.target.name) ? self.target.name : '') == (has(oldSelf.target) && has(oldSelf.target.name) ? oldSelf.target.name : '')").message("target.name is immutable: create a new KeeperSecret instead"))]
#[x_kube(validation = Rule::new("(has(self.target) && has(self.target.creationPolicy) ? self.target.creationPolicy : 'Owner') == (has(oldSelf.target) && has(oldSelf.target.creationPolicy) ? oldSelf.target.creationPolicy : 'Owner')").message("target.creationPolicy is immutable: create a new KeeperSecret instead"))]
#[serde(rename_all = "camelCase")]
pub struct KeeperSecretSpec {
    /// Where the Keeper Secrets Manager credentials come from.
    pub auth: Auth,
    /// How often the operator re-reads Keeper, as a Go duration (`30s`, `5m`, `1h30m`).
    /// Defaults to the operator's `--default-refresh-interval` (1h). `0` turns periodic
    /// refreshes off (as refreshPolicy OnChange does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub refresh_interval: Option<String>,
    /// When Keeper is read again after the first sync. Periodic (default): every
    /// refreshInterval, and at once when the spec changes or the Secret is deleted or edited.
    /// OnChange: only when the spec changes or the Secret is deleted or edited. CreatedOnce:
    /// only when the Secret is missing (first sync, or deleted) or the spec changes; edits to
    /// the Secret are kept. Every policy honours the force-sync annotation, and none touches
    /// the Secret while Keeper is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_policy: Option<RefreshPolicy>,
    /// The Secret to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSecret>,
    /// Single values, each written under its own key. Applied after `dataFrom`, so a key
    /// here wins over the same key produced by `dataFrom`. At most 256 items.
    #[serde(default)]
    #[schemars(length(max = MAX_DATA_ITEMS))]
    pub data: Vec<DataItem>,
    /// Whole records or whole shared folders, every field becoming a key. Items apply in
    /// order; a later item wins over an earlier one for the same key. At most 32 items.
    #[serde(default)]
    #[schemars(length(max = MAX_DATA_FROM_ITEMS))]
    pub data_from: Vec<DataFromItem>,
    /// Deployments, StatefulSets and DaemonSets in this namespace to restart (as `kubectl
    /// rollout restart` does) when the synced data changes. Not on the first sync, not when a
    /// deleted Secret is restored with the same data; restarts of one workload requested within
    /// one refresh wave (at least the operator's `--rollout-debounce`) are coalesced into one.
    /// Needs the chart's `rbac.rolloutRestart`. At most 16 workloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ROLLOUT_TARGETS))]
    pub rollout_restart: Vec<RolloutTarget>,
}

/// When a KeeperSecret reads Keeper again after its first sync.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefreshPolicy {
    /// Every refreshInterval, and whenever the spec or the Secret changes.
    #[default]
    Periodic,
    /// Whenever the spec or the Secret changes; never on a timer.
    OnChange,
    /// When the Secret is missing or the spec changes; edits to the Secret are kept.
    CreatedOnce,
}

/// Credentials: exactly one of `secretRef` or `storeRef`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(test, x_kube(cel))]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.storeRef)").message("set exactly one of secretRef or storeRef"))]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// A Secret in this KeeperSecret's namespace holding a KSM configuration (base64 or JSON,
    /// as produced by `ksm init` or the Keeper SDKs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// A ClusterKeeperStore that allows this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_ref: Option<StoreRef>,
}

/// A key of a Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(regex(pattern = SECRET_KEY_PATTERN), length(max = 253))]
    pub key: String,
}

/// A reference to a ClusterKeeperStore.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StoreRef {
    /// Name of the ClusterKeeperStore.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The Secret the operator writes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(test, x_kube(cel))]
#[x_kube(validation = Rule::new("!has(self.type) || self.type != 'kubernetes.io/service-account-token'").message("type kubernetes.io/service-account-token is not allowed: the operator does not create ServiceAccount token Secrets"))]
#[x_kube(validation = Rule::new("!has(self.annotations) || !('kubernetes.io/service-account.name' in self.annotations || 'kubernetes.io/service-account.uid' in self.annotations)").message("annotations may not bind the Secret to a ServiceAccount"))]
#[x_kube(validation = Rule::new("!has(self.immutable) || !has(self.creationPolicy) || self.creationPolicy != 'Merge'").message("immutable cannot be combined with creationPolicy Merge"))]
#[x_kube(validation = Rule::new("!has(self.type) || !(self.type in ['helm.sh/release.v1', 'bootstrap.kubernetes.io/token'])").message("Helm release and bootstrap token Secrets are never targets"))]
#[serde(rename_all = "camelCase")]
pub struct TargetSecret {
    /// Name of the Secret (default: the KeeperSecret's name). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(max = 253))]
    pub name: Option<String>,
    /// Secret type: `Opaque` (default), `kubernetes.io/tls`, `kubernetes.io/dockerconfigjson`,
    /// `kubernetes.io/basic-auth`, `kubernetes.io/ssh-auth`, ... (not
    /// `kubernetes.io/service-account-token`, `helm.sh/release.v1` or
    /// `bootstrap.kubernetes.io/token`: Secrets of those types are never written). With
    /// creationPolicy Merge it must equal the existing Secret's type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub type_: Option<String>,
    /// Owner (default): the Secret is owned by the KeeperSecret and deleted with it.
    /// Orphan: the Secret is kept when the KeeperSecret is deleted.
    /// Merge: only our keys are written into an existing Secret that someone else created,
    /// of the declared type and with no controller owner (such as cert-manager's), and only
    /// when that Secret opts in with the annotation `keeper-operator.dev/allow-merge-from:
    /// <this KeeperSecret's name>`. Only a Secret the operator created (annotated
    /// `keeper-operator.dev/created-for: <this KeeperSecret's UID>`) is ever owned or deleted.
    /// Immutable.
    #[serde(default)]
    pub creation_policy: CreationPolicy,
    /// What happens to the keys of a record deleted in Keeper (or no longer shared with the
    /// application). Retain (default): the Secret keeps them and Ready turns False with reason
    /// RecordNotFound. Delete: its keys are removed, and a Secret the operator created whose
    /// every record is gone is deleted. Merge: its keys are removed, the Secret always stays.
    /// Either way Ready stays True with reason RecordDeleted naming the records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Take over an existing Secret of this name that keeper-operator did not create and no
    /// other controller owns, if that Secret opts in with the annotation
    /// `keeper-operator.dev/allow-merge-from: <this KeeperSecret's name>`: it then holds
    /// exactly the synced keys (others are dropped) and the operator's labels and annotations,
    /// but is never deleted or owned by the KeeperSecret. Without adopt such a Secret is left
    /// untouched and the status names the keys taking it over would add and drop (never values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<bool>,
    /// Mark the Secret immutable. Changing its data later requires deleting the Secret. Not
    /// allowed with creationPolicy Merge (the operator never freezes a Secret it did not create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// Extra labels on the Secret (at most 32).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_map::<MAX_TARGET_METADATA, MAX_LABEL_VALUE_CHARS>)]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 317)").message("label keys are at most 317 characters"))]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the Secret (at most 32, each value at most 1024 characters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_map::<MAX_TARGET_METADATA, MAX_ANNOTATION_VALUE_CHARS>)]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 317)").message("annotation keys are at most 317 characters"))]
    pub annotations: BTreeMap<String, String>,
    /// Render keys from templates instead of (or on top of) the mapped values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
}

/// How the operator relates to the target Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CreationPolicy {
    /// The Secret gets an owner reference and is garbage-collected with the KeeperSecret.
    #[default]
    Owner,
    /// The Secret is labelled and annotated but has no owner reference.
    Orphan,
    /// Write only our keys into an existing Secret created by someone else.
    Merge,
}

/// What happens to the keys of a record that is gone from Keeper.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the keys; report RecordNotFound.
    #[default]
    Retain,
    /// Remove the keys; delete the Secret (if the operator created it) once all are gone.
    Delete,
    /// Remove the keys; keep the Secret.
    Merge,
}

/// Templates rendered with MiniJinja (Jinja2 syntax).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(test, x_kube(cel))]
#[serde(rename_all = "camelCase")]
pub struct Template {
    /// Secret key → template. Every mapped value is available by its key, both as a
    /// variable (`{{ password }}`) and in the `data` map (`{{ data["tls.crt"] }}`).
    /// Filters: `b64encode`, `b64decode`, `b64urlencode`, `b64urldecode`, `hexencode`,
    /// `hexdecode`, `sha256`, `tojson`, `fromjson`, `toyaml`, `fromyaml`, `pem_blocks`,
    /// `pem_certificates`, `pem_private_key`, `pem_join`; function `htpasswd(user, password)`;
    /// plus the Jinja2 built-ins. A key here wins over the same key from `templateFrom`.
    /// At most 64 templates of 8192 characters each; longer ones belong in `templateFrom`.
    #[serde(default)]
    #[schemars(transform = bounded_map::<MAX_INLINE_TEMPLATES, MAX_INLINE_TEMPLATE_CHARS>)]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 253 && k.matches('^[-._a-zA-Z0-9]+$'))").message("template keys must be valid Secret keys (at most 253 letters, digits, '-', '_', '.')"))]
    pub data: BTreeMap<String, String>,
    /// ConfigMaps or Secrets in this namespace whose keys are templates, each for the Secret key
    /// of the same name (all keys, or the listed `items`). Read at every sync: a change shows at
    /// the next refresh, or at once with the `keeper-operator.dev/force-sync` annotation. Later
    /// entries win over earlier ones for the same key. At most 64 templates and 1 MiB in all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub template_from: Vec<TemplateFrom>,
    /// Replace (default): the Secret holds only the templated keys.
    /// Merge: the Secret holds the mapped values plus the templated keys.
    #[serde(default)]
    pub merge_policy: TemplateMergePolicy,
}

/// Where templates come from: exactly one of `configMap` or `secret`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(test, x_kube(cel))]
#[x_kube(validation = Rule::new("has(self.configMap) != has(self.secret)").message("set exactly one of configMap or secret"))]
#[serde(rename_all = "camelCase")]
pub struct TemplateFrom {
    /// A ConfigMap in this namespace (its `data` and `binaryData`, as UTF-8 text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<TemplateSourceRef>,
    /// A Secret in this namespace, for templates that are themselves confidential; they are
    /// never logged or quoted in errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<TemplateSourceRef>,
}

/// A ConfigMap or Secret holding templates.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TemplateSourceRef {
    /// Name of the ConfigMap or Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Keys to use (each must exist); empty: every key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub items: Vec<TemplateSourceItem>,
}

/// One key of a template source.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TemplateSourceItem {
    /// The key: its value is the template for the Secret key of the same name.
    #[schemars(regex(pattern = SECRET_KEY_PATTERN), length(min = 1, max = 253))]
    pub key: String,
}

/// Whether templated keys replace or extend the mapped values.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TemplateMergePolicy {
    /// Only templated keys are written.
    #[default]
    Replace,
    /// Mapped values are written too; a templated key wins on conflict.
    Merge,
}

/// Selects a Keeper record by UID or by exact title (exactly one).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(test, x_kube(cel))]
#[x_kube(validation = Rule::new("has(self.uid) != has(self.title)").message("set exactly one of uid or title"))]
pub struct RecordSelector {
    /// Record UID (22 characters, URL-safe base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = UID_PATTERN))]
    pub uid: Option<String>,
    /// Exact record title; more than one match is reported as AmbiguousTitle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub title: Option<String>,
}

/// One Secret key: either a Keeper notation, or a record plus a field or file.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(test, x_kube(cel))]
#[x_kube(validation = Rule::new("has(self.notation) != has(self.record)").message("set exactly one of notation or record"))]
#[x_kube(validation = Rule::new("!has(self.record) || (has(self.field) != has(self.file))").message("with record, set exactly one of field or file"))]
#[x_kube(validation = Rule::new("!has(self.notation) || !(has(self.field) || has(self.file) || has(self.custom) || has(self.property))").message("field, file, custom and property go with record, not with notation"))]
#[x_kube(validation = Rule::new("has(self.field) || !(has(self.custom) || has(self.property))").message("custom and property need field"))]
#[serde(rename_all = "camelCase")]
pub struct DataItem {
    /// Secret key to write.
    #[schemars(regex(pattern = SECRET_KEY_PATTERN), length(min = 1, max = 253))]
    pub key: String,
    /// Keeper notation, e.g. `keeper://<uid or title>/field/password`,
    /// `keeper://<uid>/custom_field/API Key`, `keeper://<uid>/field/host[0][hostName]`,
    /// `keeper://<uid>/file/cert.pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NOTATION_CHARS))]
    pub notation: Option<String>,
    /// The record to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordSelector>,
    /// Field label (case-sensitive) or type (case-insensitive), e.g. `password`, `login`, `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub field: Option<String>,
    /// Search only custom fields (true) or only standard fields (false); default both,
    /// standard fields first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<bool>,
    /// For complex values (host, name, phone...): the property to take, e.g. `hostName`.
    /// Without it a complex value is written as compact JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub property: Option<String>,
    /// File attachment by name, title or UID; its bytes are written unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub file: Option<String>,
    /// How the value is stored in Keeper: None (default, written as is), Base64, Base64URL
    /// (decoded before writing; padding optional, whitespace ignored), or Auto (decoded when it
    /// is valid base64 or base64url, else written as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
}

/// How a value stored in Keeper is decoded before it is written.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecodingStrategy {
    /// Written as stored.
    #[default]
    None,
    /// Standard base64 (RFC 4648 §4).
    Base64,
    /// URL-safe base64 (RFC 4648 §5).
    #[serde(rename = "Base64URL")]
    Base64Url,
    /// Base64, else base64url, else as stored.
    Auto,
}

/// Many keys at once: every field of a record, or of every record in a shared folder.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(test, x_kube(cel))]
#[x_kube(validation = Rule::new("has(self.record) != has(self.folder)").message("set exactly one of record or folder"))]
#[serde(rename_all = "camelCase")]
pub struct DataFromItem {
    /// Every field, custom field, file and the notes of this record become keys named
    /// after the field label (or type), sanitized to a valid Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordSelector>,
    /// Every record in this shared folder; keys are `<record title>_<field key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<FolderSelector>,
    /// Prefix added to every key of this item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]*$"), length(max = 63))]
    pub prefix: Option<String>,
    /// What to do when two fields map to the same key. Suffix (default): later ones get
    /// `_2`, `_3`, ... First: later ones are skipped. Never fails the record.
    #[serde(default)]
    pub duplicate_keys: DuplicateKeyPolicy,
    /// How every value of this item is stored in Keeper (see `data[].decodingStrategy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
}

/// A shared folder.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FolderSelector {
    /// Shared folder UID.
    #[schemars(regex(pattern = UID_PATTERN))]
    pub uid: String,
}

/// Policy for fields that map to the same Secret key.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DuplicateKeyPolicy {
    /// Keep every value: the 2nd gets `_2`, the 3rd `_3`, ...
    #[default]
    Suffix,
    /// Keep the first value, skip the others.
    First,
}

/// A workload to restart when the Secret changes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RolloutTarget {
    /// Kind of the workload.
    pub kind: WorkloadKind,
    /// Name of the workload in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Workload kinds that can be restarted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

/// Observed state of a KeeperSecret. Never contains secret values.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeeperSecretStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is True when the Secret holds the current Keeper data; its reason says why not
    /// (KeeperUnavailable, Throttled, AuthFailed, RecordNotFound, AmbiguousTitle, FieldNotFound,
    /// InvalidSpec, NotAllowed, SecretOwnedElsewhere, TargetNotOptedIn, CredentialRefused,
    /// DeletionHeld, TooLarge, TemplateTimeout, RenderBusy, ...). `Stale` is True while the
    /// Secret holds the last good copy because Keeper fails. For Flux and kstatus,
    /// `Reconciling` is True until this generation first syncs, and `Stalled` is True on a
    /// failure no retry fixes (InvalidSpec, AmbiguousTitle, NotAllowed, SecretOwnedElsewhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When Keeper data was last read successfully and written to the Secret. Moves every
    /// refresh at intervals of 5m or more; at shorter intervals at most every 5m when nothing
    /// else in the status changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Keeper records (UID and revision) the Secret was built from at the last sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<RecordRevision>,
    /// Keyed hash (HMAC-SHA256) of the data written at the last sync; also on the Secret as
    /// the `keeper-operator.dev/data-hash` annotation. Reveals nothing about the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hash: Option<String>,
    /// Name of the Secret written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The value of the `keeper-operator.dev/force-sync` (or Flux's
    /// `reconcile.fluxcd.io/requestedAt`) annotation whose sync request was last handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// A record and the revision that was synced.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordRevision {
    /// Record UID.
    pub uid: String,
    /// Record revision.
    pub revision: i64,
}

/// Shared Keeper credentials that an administrator lends to some namespaces.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "keeper-operator.dev",
    version = "v1alpha1",
    kind = "ClusterKeeperStore",
    shortname = "cks",
    category = "keeper",
    derive = "PartialEq",
    status = "ClusterKeeperStoreStatus",
    doc = "ClusterKeeperStore lends Keeper credentials from the operator's namespace to selected namespaces.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"KeeperSecrets","type":"integer","jsonPath":".status.keeperSecrets"}"#,
    printcolumn = r#"{"name":"Last Fetch","type":"date","jsonPath":".status.lastFetchTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterKeeperStoreSpec {
    /// Secret in the operator's namespace holding the KSM configuration (base64 or JSON).
    pub credentials_secret_ref: SecretKeyRef,
    /// Namespaces whose labels match may use this store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces, by name, that may use this store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Shared folder UIDs whose records borrowers may read, and which `dataFrom.folder` may
    /// name. When this or `allowedRecords` is set, a record is readable only if its UID is in
    /// `allowedRecords` or it is shared through a folder listed here (sub-folders of a listed
    /// folder included for records, but a `dataFrom.folder` must be listed itself); anything
    /// else is refused with Ready=False, reason NotAllowed. Both empty: no restriction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_folders: Vec<String>,
    /// Record UIDs borrowers may read (see `allowedFolders`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_records: Vec<String>,
}

/// Observed state of a ClusterKeeperStore, from what the operator already knows: no Keeper call
/// is made for it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterKeeperStoreStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is True when the credential parses and Keeper's last answer to it succeeded.
    /// False with the reason of the failure (AuthFailed for a missing or unreadable credential
    /// Secret, KeeperUnavailable, Throttled, ...); Unknown while no KeeperSecret has used the
    /// store since the operator started (NotUsed) or a one-time token awaits its first use
    /// (TokenNotRedeemed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When Keeper last answered for this store's credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch_time: Option<Time>,
    /// Number of KeeperSecrets that name this store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeper_secrets: Option<i32>,
    /// Namespaces whose KeeperSecrets use this store and are admitted by it (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Number of KeeperSecrets that name this store but are refused (Ready reason NotAllowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_keeper_secrets: Option<i32>,
}

impl KeeperSecret {
    /// Name of the Secret this KeeperSecret writes.
    pub fn target_name(&self) -> String {
        self.spec
            .target
            .as_ref()
            .and_then(|t| t.name.clone())
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }

    /// The creation policy, defaulted.
    pub fn creation_policy(&self) -> CreationPolicy {
        self.spec
            .target
            .as_ref()
            .map(|t| t.creation_policy)
            .unwrap_or_default()
    }

    /// Whether `target.adopt` is set.
    pub fn adopts(&self) -> bool {
        self.spec
            .target
            .as_ref()
            .and_then(|t| t.adopt)
            .unwrap_or(false)
    }

    /// The deletion policy, defaulted.
    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.spec
            .target
            .as_ref()
            .and_then(|t| t.deletion_policy)
            .unwrap_or_default()
    }

    /// The Ready condition, if any.
    pub fn ready_condition(&self) -> Option<&Condition> {
        conditions::find(&self.status.as_ref()?.conditions, ConditionType::Ready)
    }
}

#[cfg(test)]
mod tests;

/// A KeeperSecret named `db` with an empty spec, for unit tests to build on.
#[cfg(test)]
pub(crate) fn test_keeper_secret() -> KeeperSecret {
    KeeperSecret::new("db", KeeperSecretSpec::default())
}
