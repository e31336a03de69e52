//! The managed Secrets as the reconciler needs them: which version each one is at, and nothing
//! else. A digest of namespace and name maps to a digest of the `resourceVersion`: ~40 bytes a
//! Secret where a kube reflector store of slimmed metadata kept ~0.4 KB (the object, its
//! reference as the key, and their strings).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use sha2::{Digest, Sha256};

use crate::lock;

/// A digest of a Secret's namespace and name.
type Key = [u8; 16];

/// A digest of a `resourceVersion`: equal digests are equal versions, for a pin's purposes.
pub type Version = u64;

/// The versions, shared by the watch that writes them and the reconciles that read them.
#[derive(Clone, Default)]
pub struct TargetVersions(Arc<Mutex<Versions>>);

#[derive(Default)]
struct Versions {
    current: HashMap<Key, Version>,
    /// A re-list in progress: the listed versions replace `current` when it completes, so
    /// Secrets deleted while the watch was down are forgotten.
    relisting: Option<HashMap<Key, Version>>,
}

impl TargetVersions {
    /// The version of Secret `namespace/name`, if the watch has seen it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Version> {
        lock(&self.0).current.get(&key(namespace, name)).copied()
    }

    /// Applies one event of the managed-Secret watch.
    pub fn apply_watcher_event(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let mut versions = lock(&self.0);
        match event {
            watcher::Event::Apply(secret) => {
                if let Some((key, version)) = entry(secret) {
                    versions.current.insert(key, version);
                }
            }
            watcher::Event::Delete(secret) => {
                if let Some((key, _)) = entry(secret) {
                    versions.current.remove(&key);
                }
            }
            watcher::Event::Init => versions.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(secret) => {
                if let (Some((key, version)), Some(relisting)) =
                    (entry(secret), versions.relisting.as_mut())
                {
                    relisting.insert(key, version);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = versions.relisting.take() {
                    versions.current = listed;
                }
            }
        }
    }
}

/// The digest of `resource_version`.
pub fn version(resource_version: &str) -> Version {
    let digest = Sha256::digest(resource_version.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

fn key(namespace: &str, name: &str) -> Key {
    let mut h = Sha256::new();
    h.update((namespace.len() as u64).to_be_bytes());
    h.update(namespace.as_bytes());
    h.update(name.as_bytes());
    let mut key = [0; 16];
    key.copy_from_slice(&h.finalize()[..16]);
    key
}

fn entry(secret: &PartialObjectMeta<Secret>) -> Option<(Key, Version)> {
    let meta = &secret.metadata;
    let key = key(meta.namespace.as_deref()?, meta.name.as_deref()?);
    Some((key, version(meta.resource_version.as_deref()?)))
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use kube::core::PartialObjectMetaExt;

    use super::*;

    fn secret(name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            resource_version: Some(rv.into()),
            ..ObjectMeta::default()
        }
        .into_response_partial::<Secret>()
    }

    #[test]
    fn versions_follow_the_watch_and_a_relist_forgets_what_it_does_not_list() {
        let versions = TargetVersions::default();
        versions.apply_watcher_event(&watcher::Event::Apply(secret("db", "1")));
        versions.apply_watcher_event(&watcher::Event::Apply(secret("gone", "1")));
        versions.apply_watcher_event(&watcher::Event::Apply(secret("db", "2")));
        assert_eq!(versions.get("shop", "db"), Some(version("2")));
        assert_eq!(versions.get("other", "db"), None);
        versions.apply_watcher_event(&watcher::Event::Delete(secret("db", "2")));
        assert_eq!(versions.get("shop", "db"), None);
        // While a re-list runs, the old versions still answer.
        versions.apply_watcher_event(&watcher::Event::Init);
        versions.apply_watcher_event(&watcher::Event::InitApply(secret("db", "3")));
        assert_eq!(versions.get("shop", "gone"), Some(version("1")));
        versions.apply_watcher_event(&watcher::Event::InitDone);
        assert_eq!(versions.get("shop", "db"), Some(version("3")));
        assert_eq!(
            versions.get("shop", "gone"),
            None,
            "deleted while the watch was down"
        );
    }
}
