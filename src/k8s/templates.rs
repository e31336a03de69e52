//! Reads the ConfigMaps and Secrets that `spec.target.template.templateFrom` names: one GET
//! each, at every sync (no watch, no cache), in the KeeperSecret's namespace. What they hold is
//! checked and bounded by [`template::collect`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use zeroize::Zeroizing;

use crate::api::TemplateFrom;
use crate::error::Error;
use crate::sync::mapping::Bytes;
use crate::sync::template::{self, Fetched, Source, SourceKind};

/// The templates `from` brings, by Secret key.
pub async fn read(
    client: &Client,
    namespace: &str,
    from: &[TemplateFrom],
) -> Result<BTreeMap<String, Source>, Error> {
    let mut fetched = Vec::with_capacity(from.len());
    for entry in from {
        let f = match (&entry.config_map, &entry.secret) {
            (Some(r), _) => {
                let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
                let data = api.get_opt(&r.name).await?.map(config_map_data);
                (SourceKind::ConfigMap, r, data)
            }
            (None, Some(r)) => {
                let api = Api::<Secret>::namespaced(client.clone(), namespace);
                let data = api.get_opt(&r.name).await?.map(secret_data);
                (SourceKind::Secret, r, data)
            }
            // The CRD's rule requires exactly one.
            (None, None) => continue,
        };
        let (kind, r, data) = f;
        fetched.push(Fetched {
            kind,
            name: &r.name,
            items: &r.items,
            data,
        });
    }
    Ok(template::collect(fetched)?)
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
