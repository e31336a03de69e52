//! Secrets as tests create and read them.

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

/// The decoded `data` of a Secret as UTF-8 strings (lossy; test vault values are text).
pub fn secret_strings(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// Creates an Opaque Secret `name` with these keys and byte values, as admin.
pub async fn create_secret(
    api: &Api<Secret>,
    name: &str,
    pairs: &[(&str, &[u8])],
) -> Result<Secret> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    Ok(api.create(&PostParams::default(), &secret).await?)
}

/// The decoded `data` of a Secret, as bytes.
pub fn secret_bytes(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Key `key` of a Secret's `data`, as text (lossy).
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let value = secret.data.as_ref()?.get(key)?;
    Some(String::from_utf8_lossy(&value.0).into_owned())
}
