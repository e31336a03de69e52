//! Reads the ConfigMaps and Secrets that `spec.target.template.templateFrom` names, in the
//! KeeperSecret's namespace, at every sync. What they hold is kept between syncs by UID and
//! resourceVersion, so an unchanged source costs a metadata-only GET rather than its whole
//! content (up to 1 MiB each, eight per KeeperSecret); the cache has one byte budget for the
//! whole process. A watch would cost no request at all, but needs list and watch on every
//! ConfigMap and Secret in the cluster. What the sources hold is checked and bounded by
//! [`template::collect`].

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::api::TemplateFrom;
use crate::bounded_cache::BoundedCache;
use crate::error::Error;
use crate::sync::mapping::Bytes;
use crate::sync::template::{self, FetchedSource, SourceKind, TemplateSource};

/// Total size of the template sources kept between syncs, across all namespaces.
pub const SOURCES_BUDGET: usize = 8 << 20;

/// A source: its namespace, kind and name.
type SourceKey = (String, SourceKind, String);
/// The UID and resourceVersion a source's content was read at.
type Version = (String, String);
type SourceData = BTreeMap<String, Bytes>;

static SOURCES: LazyLock<BoundedCache<SourceKey, Version, Arc<SourceData>>> =
    LazyLock::new(|| BoundedCache::new(SOURCES_BUDGET));

/// The templates `from` brings, by Secret key.
pub async fn read(
    client: &Client,
    namespace: &str,
    from: &[TemplateFrom],
) -> Result<BTreeMap<String, TemplateSource>, Error> {
    let mut fetched = Vec::with_capacity(from.len());
    for entry in from {
        let (kind, r, data) = match (&entry.config_map, &entry.secret) {
            (Some(r), _) => {
                let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
                let key = (namespace.to_string(), SourceKind::ConfigMap, r.name.clone());
                (
                    SourceKind::ConfigMap,
                    r,
                    get(&api, key, config_map_data).await?,
                )
            }
            (None, Some(r)) => {
                let api = Api::<Secret>::namespaced(client.clone(), namespace);
                let key = (namespace.to_string(), SourceKind::Secret, r.name.clone());
                (SourceKind::Secret, r, get(&api, key, secret_data).await?)
            }
            // The CRD's rule requires exactly one.
            (None, None) => continue,
        };
        fetched.push(FetchedSource {
            kind,
            name: &r.name,
            items: &r.items,
            data,
        });
    }
    Ok(template::collect(fetched)?)
}

/// The content of source `key` (`None` if it does not exist): from the cache while its UID and
/// resourceVersion are the ones it was read at, else read whole (and cached).
async fn get<K>(
    api: &Api<K>,
    key: SourceKey,
    data: fn(K) -> SourceData,
) -> Result<Option<SourceData>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = key.2.clone();
    let Some(meta) = api.get_metadata_opt(&name).await? else {
        return Ok(None);
    };
    if let Some(cached) = SOURCES.get(&key, &version(&meta.metadata)) {
        return Ok(Some((*cached).clone()));
    }
    let Some(object) = api.get_opt(&name).await? else {
        return Ok(None);
    };
    let read_at = version(object.meta());
    let content = data(object);
    // Without a resourceVersion, nothing could tell a later version from this one.
    if !read_at.1.is_empty() {
        let bytes = content.iter().map(|(k, v)| k.len() + v.len()).sum();
        SOURCES.insert(key, read_at, Arc::new(content.clone()), bytes);
    }
    Ok(Some(content))
}

fn version(meta: &ObjectMeta) -> Version {
    (
        meta.uid.clone().unwrap_or_default(),
        meta.resource_version.clone().unwrap_or_default(),
    )
}

fn config_map_data(cm: ConfigMap) -> BTreeMap<String, Bytes> {
    let text = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Zeroizing::new(v.into_bytes())));
    let binary = cm
        .binary_data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Zeroizing::new(v.0)));
    text.chain(binary).collect()
}

fn secret_data(secret: Secret) -> BTreeMap<String, Bytes> {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Zeroizing::new(v.0)))
        .collect()
}
