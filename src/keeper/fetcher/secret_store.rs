//! [`SnapshotStore`] in Secrets of the operator's namespace: survives restarts and failover,
//! and a standby replica reads what the previous leader wrote.

use super::sealed::{Part, SnapshotStore};
use crate::api::{FILES_FIELD_MANAGER, SNAPSHOT_FIELD_MANAGER};
use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams};
use std::collections::BTreeMap;

/// Each part has its own data key and field manager, so saving one leaves the other in place.
fn data_key_and_manager(part: Part) -> (&'static str, &'static str) {
    match part {
        Part::Snapshot => ("snapshot", SNAPSHOT_FIELD_MANAGER),
        Part::Files => ("files", FILES_FIELD_MANAGER),
    }
}

pub struct SecretStore {
    api: Api<Secret>,
}

impl SecretStore {
    pub fn new(client: kube::Client, operator_namespace: &str) -> Self {
        SecretStore {
            api: Api::namespaced(client, operator_namespace),
        }
    }

    /// One Secret per credential, named by the credential's non-secret id.
    pub fn secret_name(credential: &str) -> String {
        format!("keeper-operator-cache-{credential}")
    }
}

impl SnapshotStore for SecretStore {
    fn load<'a>(
        &'a self,
        credential: &'a str,
        part: Part,
    ) -> BoxFuture<'a, anyhow::Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let (data_key, _) = data_key_and_manager(part);
            let secret = self.api.get_opt(&Self::secret_name(credential)).await?;
            Ok(secret
                .and_then(|s| s.data)
                .and_then(|mut d| d.remove(data_key))
                .map(|b| b.0))
        })
    }

    fn save<'a>(
        &'a self,
        credential: &'a str,
        part: Part,
        sealed: Vec<u8>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let (data_key, field_manager) = data_key_and_manager(part);
            let name = Self::secret_name(credential);
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(BTreeMap::from([
                        (
                            "app.kubernetes.io/part-of".to_string(),
                            "keeper-operator".to_string(),
                        ),
                        (
                            "app.kubernetes.io/component".to_string(),
                            "last-good-cache".to_string(),
                        ),
                    ])),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(data_key.to_string(), ByteString(sealed))])),
                type_: Some("Opaque".to_string()),
                ..Secret::default()
            };
            let params = PatchParams::apply(field_manager).force();
            self.api
                .patch(&name, &params, &Patch::Apply(&secret))
                .await?;
            Ok(())
        })
    }

    /// Each part's field manager applies the Secret without its data key, which removes the
    /// sealed blob (the operator needs no delete permission in its namespace for this).
    fn destroy<'a>(&'a self, credential: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let name = Self::secret_name(credential);
            if self.api.get_opt(&name).await?.is_none() {
                return Ok(());
            }
            for part in [Part::Snapshot, Part::Files] {
                let (_, field_manager) = data_key_and_manager(part);
                let emptied = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name},
                });
                let params = PatchParams::apply(field_manager).force();
                self.api
                    .patch(&name, &params, &Patch::Apply(&emptied))
                    .await?;
            }
            Ok(())
        })
    }
}
