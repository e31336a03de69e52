//! Finds the Keeper credential a KeeperSecret may use: a Secret in its own namespace, or a
//! ClusterKeeperStore that allows the namespace (its Secret lives in the operator's namespace).
//! A KeeperSecret can never name a Secret in another namespace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::{Selector, SelectorExt};
use kube::{Api, Client, ResourceExt};
use zeroize::Zeroizing;

use crate::api::{ClusterKeeperStore, KeeperSecret, SecretKeyRef};
use crate::error::{CredentialError, Error, Redemption, Refusal, SpecError};
use crate::k8s::redeem::{TokenRequest, redeem_in_place, token_request};
use crate::keeper::{CredentialKey, KeeperSource};
use crate::ksm::config::KsmConfig;
use crate::ksm::credential::CredentialValue;
use crate::lock;
use crate::sync::allowlist::AllowList;
use crate::sync::desired::HashKey;

/// A parsed credential and what is derived from it.
pub struct Credential {
    /// Cache identity for the Keeper source.
    pub key: CredentialKey,
    /// The KSM configuration.
    pub config: KsmConfig,
    /// What a ClusterKeeperStore lets a KeeperSecret read; `None` reads everything.
    pub allow: Option<AllowList>,
    /// The stored text, kept only to derive per-KeeperSecret hash keys.
    text: Zeroizing<String>,
}

impl Credential {
    /// Key for the data hash of the KeeperSecret with this UID.
    pub fn hash_key(&self, keeper_secret_uid: &str) -> HashKey {
        HashKey::derive(self.text.as_bytes(), keeper_secret_uid)
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("key", &self.key)
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

/// What a credential Secret holds.
#[derive(Debug)]
pub enum Stored {
    /// A usable KSM config.
    Config(Box<Credential>),
    /// A one-time token the operator must redeem first.
    Token(TokenRequest),
}

/// How long a loaded credential is reused before its Secret (and ClusterKeeperStore and
/// Namespace) is read again. A rotated, deleted or revoked credential takes effect within this
/// time, and a wave over thousands of KeeperSecrets costs a handful of reads instead of one each.
pub const REUSE_FOR: Duration = Duration::from_secs(5);

/// Why a store's credential cannot be read: stores keep it in the operator's own namespace.
pub const NO_OPERATOR_NAMESPACE: &str =
    "ClusterKeeperStores need the operator namespace (--operator-namespace / POD_NAMESPACE)";

/// Credentials loaded within the last [`REUSE_FOR`], by what a KeeperSecret points at (its
/// namespace and `spec.auth`, so neither a namespace nor a store check is ever shared). Holds key
/// material only in parsed form, never printed; expired entries go at the next load.
pub struct Cache(Recent<Credential>);

impl Default for Cache {
    fn default() -> Self {
        Cache(Recent::new(REUSE_FOR))
    }
}

impl Cache {
    /// [`load`], served from a recent load of the same reference when there is one. Failures
    /// are not kept: the next reconcile reads again.
    pub async fn load<S: KeeperSource>(
        &self,
        client: &Client,
        keeper: &S,
        ks: &KeeperSecret,
        operator_ns: Option<&str>,
    ) -> Result<Arc<Credential>, Error> {
        let key = format!(
            "{}\0{}",
            ks.namespace().unwrap_or_default(),
            serde_json::to_string(&ks.spec.auth).unwrap_or_default()
        );
        if let Some(c) = self.0.get(&key, Instant::now()) {
            return Ok(c);
        }
        let c = Arc::new(load(client, keeper, ks, operator_ns).await?);
        self.0.insert(key, c.clone(), Instant::now());
        Ok(c)
    }
}

/// Values younger than a fixed age, by key. Expired entries are dropped whenever one is added,
/// so the map only holds what was used within that age.
pub struct Recent<V> {
    max_age: Duration,
    entries: Mutex<HashMap<String, (Instant, Arc<V>)>>,
}

impl<V> Recent<V> {
    /// An empty map whose entries live for `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Recent {
            max_age,
            entries: Mutex::default(),
        }
    }

    /// The value stored under `key`, unless it is older than `max_age` at `now`.
    pub fn get(&self, key: &str, now: Instant) -> Option<Arc<V>> {
        let entries = lock(&self.entries);
        let (at, value) = entries.get(key)?;
        (now.saturating_duration_since(*at) < self.max_age).then(|| value.clone())
    }

    /// Stores `value` as of `now`, dropping expired entries.
    pub fn insert(&self, key: String, value: Arc<V>, now: Instant) {
        let mut entries = lock(&self.entries);
        entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < self.max_age);
        entries.insert(key, (now, value));
    }
}

/// Loads the credential for `ks`, redeeming a one-time token in place first (see
/// [`crate::k8s::redeem`]).
pub async fn load<S: KeeperSource>(
    client: &Client,
    keeper: &S,
    ks: &KeeperSecret,
    operator_ns: Option<&str>,
) -> Result<Credential, Error> {
    let ns = ks.namespace().unwrap_or_default();
    check_namespace_allowed(&ns, operator_ns)?;
    let (secret_ns, reference, allow) = match (&ks.spec.auth.secret_ref, &ks.spec.auth.store_ref) {
        (Some(r), None) => (ns.clone(), r.clone(), None),
        (None, Some(store)) => {
            let store = Api::<ClusterKeeperStore>::all(client.clone())
                .get_opt(&store.name)
                .await?
                .ok_or_else(|| {
                    Error::from(Refusal::NoStore {
                        store: store.name.clone(),
                    })
                })?;
            let labels = Api::<Namespace>::all(client.clone())
                .get_opt(&ns)
                .await?
                .map(|n| n.labels().clone());
            check_store_allows(&store, &ns, &labels.unwrap_or_default())?;
            let operator_ns = operator_ns.ok_or(SpecError::NoOperatorNamespace)?;
            (
                operator_ns.to_string(),
                store.spec.credentials_secret_ref.clone(),
                AllowList::of_store(&store.name_any(), &store.spec),
            )
        }
        _ => {
            return Err(SpecError::Auth.into());
        }
    };
    let api = Api::<Secret>::namespaced(client.clone(), &secret_ns);
    let secret = api.get_opt(&reference.name).await?;
    let cred = match parse(secret.as_ref(), &secret_ns, &reference)? {
        Stored::Config(c) => *c,
        Stored::Token(request) => {
            let where_ = format!("Secret {secret_ns}/{}", reference.name);
            let secret = secret.as_ref().expect("parse found a token in it");
            let stored =
                redeem_in_place(&api, secret, &reference.key, &request, &where_, keeper).await?;
            match parse(Some(&stored), &secret_ns, &reference)? {
                Stored::Config(c) => *c,
                Stored::Token(_) => {
                    return Err(Redemption::StillToken { secret: where_ }.into());
                }
            }
        }
    };
    Ok(Credential { allow, ..cred })
}

/// Refuses every KeeperSecret in the operator's own namespace: its Secrets hold every
/// ClusterKeeperStore's credential and the sealed last good copies, so a KeeperSecret there could
/// read a credential past its store's allow-lists or write over the operator's own state.
pub fn check_namespace_allowed(ns: &str, operator_ns: Option<&str>) -> Result<(), Error> {
    if operator_ns == Some(ns) {
        return Err(Refusal::OperatorNamespace { ns: ns.to_string() }.into());
    }
    Ok(())
}

/// Whether a store lends itself to namespace `ns` (by name list or label selector).
pub fn check_store_allows(
    store: &ClusterKeeperStore,
    ns: &str,
    ns_labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), Error> {
    let by_name = store.spec.namespaces.iter().any(|n| n == ns);
    let by_selector = match &store.spec.namespace_selector {
        Some(sel) => Selector::try_from(sel.clone())
            .map_err(|e| Refusal::InvalidSelector {
                store: store.name_any(),
                error: e.to_string(),
            })?
            .matches(ns_labels),
        None => false,
    };
    if by_name || by_selector {
        Ok(())
    } else {
        Err(Refusal::Namespace {
            store: store.name_any(),
            ns: ns.to_string(),
        }
        .into())
    }
}

/// Reads and parses the credential from the Secret (pure; messages never echo content).
pub fn parse(secret: Option<&Secret>, ns: &str, r: &SecretKeyRef) -> Result<Stored, Error> {
    let where_ = format!("Secret {ns}/{}", r.name);
    let secret = secret.ok_or_else(|| CredentialError::Missing {
        secret: where_.clone(),
    })?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .ok_or_else(|| CredentialError::NoKey {
            secret: where_.clone(),
            key: r.key.clone(),
        })?;
    let text = Zeroizing::new(
        std::str::from_utf8(&bytes.0)
            .map_err(|_| CredentialError::NotText {
                secret: where_.clone(),
                key: r.key.clone(),
            })?
            .to_string(),
    );
    let config = match CredentialValue::parse(text.trim()) {
        Ok(CredentialValue::Config(config)) => *config,
        Ok(CredentialValue::OneTimeToken(_)) => {
            return token_request(secret, text.trim(), &where_, &r.key).map(Stored::Token);
        }
        Err(e) => {
            return Err(CredentialError::Unparsable {
                secret: where_,
                key: r.key.clone(),
                error: e.to_string(),
            }
            .into());
        }
    };
    Ok(Stored::Config(Box::new(Credential {
        key: CredentialKey::new(format!("{ns}/{}/{}", r.name, r.key), text.as_bytes()),
        config,
        allow: None,
        text,
    })))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;
    use crate::api::ClusterKeeperStoreSpec;

    fn secret(key: &str, value: &[u8]) -> Secret {
        Secret {
            data: Some([(key.to_string(), ByteString(value.to_vec()))].into()),
            ..Secret::default()
        }
    }

    fn r() -> SecretKeyRef {
        SecretKeyRef {
            name: "ksm".into(),
            key: "config".into(),
        }
    }

    #[test]
    fn credential_errors_are_actionable_and_value_free() {
        let e = parse(None, "ns", &r()).unwrap_err();
        assert_eq!(
            (e.reason().as_str(), e.to_string()),
            (
                "AuthFailed",
                "Secret ns/ksm (the KSM credential) does not exist".into()
            )
        );
        let e = parse(Some(&secret("other", b"x")), "ns", &r()).unwrap_err();
        assert!(e.to_string().contains("has no key \"config\""));
        let e = parse(
            Some(&secret("config", b"NOT-A-CONFIG-SECRET-VALUE")),
            "ns",
            &r(),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "AuthFailed");
        assert!(!e.to_string().contains("NOT-A-CONFIG-SECRET-VALUE"), "{e}");
        assert!(e.to_string().contains("nor a one-time access token"), "{e}");
        let token = b"US:Rbzt3YwDxQcn9rLbFmGt0hIHi2yh3lVmBL7Gbbay3Xc";
        match parse(Some(&secret("config", token)), "ns", &r()).unwrap() {
            Stored::Token(t) => assert_eq!(t.hostname, None),
            Stored::Config(_) => panic!("a token parsed as a config"),
        }
        // A bare token needs the hostname key; the error says so without echoing the token.
        let e = parse(Some(&secret("config", &token[3..])), "ns", &r()).unwrap_err();
        assert!(e.to_string().contains("\"hostname\""), "{e}");
        assert!(!e.to_string().contains("Rbzt3Yw"), "{e}");
    }

    #[test]
    fn recent_values_expire_and_expired_entries_are_dropped() {
        let recent = Recent::new(Duration::from_secs(5));
        let t0 = Instant::now();
        recent.insert("a".into(), Arc::new(1), t0);
        assert_eq!(
            recent.get("a", t0 + Duration::from_secs(4)).as_deref(),
            Some(&1)
        );
        assert_eq!(recent.get("a", t0 + Duration::from_secs(5)), None);
        assert_eq!(recent.get("b", t0), None);
        recent.insert("b".into(), Arc::new(2), t0 + Duration::from_secs(6));
        assert_eq!(lock(&recent.entries).len(), 1, "the expired entry is gone");
        recent.insert("b".into(), Arc::new(3), t0 + Duration::from_secs(7));
        assert_eq!(
            recent.get("b", t0 + Duration::from_secs(8)).as_deref(),
            Some(&3)
        );
    }

    #[test]
    fn store_allows_by_name_or_selector() {
        let mut store = ClusterKeeperStore::new(
            "shared",
            ClusterKeeperStoreSpec {
                credentials_secret_ref: r(),
                namespace_selector: None,
                namespaces: vec!["a".into()],
                allowed_folders: vec![],
                allowed_records: vec![],
            },
        );
        let none = BTreeMap::new();
        assert!(check_store_allows(&store, "a", &none).is_ok());
        assert_eq!(
            check_store_allows(&store, "b", &none).unwrap_err().reason(),
            "NotAllowed"
        );
        store.spec.namespace_selector = Some(LabelSelector {
            match_labels: Some([("team".into(), "x".into())].into()),
            ..LabelSelector::default()
        });
        let labels: BTreeMap<String, String> = [("team".into(), "x".into())].into();
        assert!(check_store_allows(&store, "b", &labels).is_ok());
        assert!(check_store_allows(&store, "b", &none).is_err());
    }

    #[test]
    fn keeper_secrets_in_the_operator_namespace_are_refused() {
        let err = check_namespace_allowed("keeper-system", Some("keeper-system")).unwrap_err();
        assert_eq!(err.reason(), "NotAllowed");
        assert!(err.to_string().contains("operator namespace"), "{err}");
        assert!(check_namespace_allowed("shop", Some("keeper-system")).is_ok());
        assert!(check_namespace_allowed("shop", None).is_ok());
    }
}
