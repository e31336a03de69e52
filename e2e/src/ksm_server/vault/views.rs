//! The encrypted views the endpoints return: `get_secret`
//! (docs/dev/protocol.md#key-hierarchy) and `get_folders` (docs/dev/protocol.md#folder-keys).

use super::{Record, Vault, padded};
use crate::ksm_server::spec::Listing;
use crate::ksm_server::wire::{
    FileJson, FolderJson, FolderListJson, FoldersResponse, RecordJson, SecretsResponse,
};
use anyhow::Context;
use keeper_operator::ksm::crypto::{AesKey, aes_cbc_encrypt, aes_gcm_encrypt, b64_std, b64_url};
use serde_json::json;
use std::collections::BTreeSet;

/// Which records and folders a `get_secret` asks for; empty means all
/// (docs/dev/protocol.md#endpoints).
pub(crate) struct Filter {
    pub records: Option<BTreeSet<String>>,
    pub folders: Option<BTreeSet<String>>,
}

impl Filter {
    pub fn new(records: Option<Vec<String>>, folders: Option<Vec<String>>) -> Self {
        let set = |v: Option<Vec<String>>| {
            v.filter(|v| !v.is_empty())
                .map(|v| v.into_iter().collect::<BTreeSet<_>>())
        };
        Self {
            records: set(records),
            folders: set(folders),
        }
    }
}

fn wrap(key: &AesKey, inner: &AesKey) -> String {
    b64_std(&aes_gcm_encrypt(key, inner.as_bytes()))
}

impl Vault {
    /// `(encryptedAppKey, appOwnerPublicKey)`: set only in the answer that binds a device.
    fn binding_fields(
        &self,
        binding_client: Option<&str>,
    ) -> anyhow::Result<(Option<String>, Option<String>)> {
        let Some(client_id) = binding_client else {
            return Ok((None, None));
        };
        let device = self
            .devices
            .get(client_id)
            .context("device vanished while binding")?;
        let app = self.app(&device.app)?;
        Ok((
            Some(wrap(&device.client_key, &app.key)),
            Some(b64_std(&self.owner.public_key_bytes())),
        ))
    }

    fn record_json(
        &self,
        record: &Record,
        wrapping_key: &AesKey,
        inner_folder: Option<String>,
        editable: bool,
        files_base: &str,
    ) -> RecordJson {
        let files: Vec<FileJson> = record
            .files
            .iter()
            .map(|f| FileJson {
                file_uid: f.uid.clone(),
                file_key: wrap(&record.key, &f.key),
                data: f.meta.clone(),
                url: format!("{files_base}/{}", f.uid),
                thumbnail_url: None,
            })
            .collect();
        RecordJson {
            record_uid: record.spec.uid.clone(),
            record_key: wrap(wrapping_key, &record.key),
            data: record.data.clone(),
            revision: record.revision,
            is_editable: editable,
            files: (!files.is_empty()).then_some(files),
            folder_uid: None,
            inner_folder_uid: inner_folder,
        }
    }

    /// True when `folder` or one of its ancestors is in `wanted`.
    fn folder_matches(&self, folder: &str, wanted: &BTreeSet<String>) -> bool {
        let mut current = Some(folder);
        while let Some(uid) = current {
            if wanted.contains(uid) {
                return true;
            }
            current = self.folders.get(uid).and_then(|f| f.parent.as_deref());
        }
        false
    }

    /// The decrypted-JSON view of `get_secret` for an app (docs/dev/protocol.md#key-hierarchy).
    pub fn secrets_response(
        &self,
        app_name: &str,
        filter: &Filter,
        binding_client: Option<&str>,
        files_base: &str,
    ) -> anyhow::Result<SecretsResponse> {
        let app = self.app(app_name)?;
        let wanted_record = |uid: &str| filter.records.as_ref().is_none_or(|s| s.contains(uid));

        let mut folders = Vec::new();
        // Records of shared folders listed the way Keeper lists those created by Commander or
        // the Vault UI: flat, key wrapped by the shared folder's key.
        let mut flat = Vec::new();
        for shared_uid in &app.shared_folders {
            let Some(shared) = self.folders.get(shared_uid) else {
                continue;
            };
            let editable = app.editable_folders.contains(shared_uid);
            let (nested, in_folder): (Vec<&Record>, Vec<&Record>) = self
                .records
                .values()
                .filter(|r| {
                    let Some(folder) = r.spec.folder_uid.as_deref() else {
                        return false;
                    };
                    self.folders
                        .get(folder)
                        .is_some_and(|f| f.root == *shared_uid)
                        && wanted_record(&r.spec.uid)
                        && filter
                            .folders
                            .as_ref()
                            .is_none_or(|w| self.folder_matches(folder, w))
                })
                .partition(|r| r.spec.listing == Listing::Nested);
            let records: Vec<RecordJson> = nested
                .into_iter()
                .map(|r| {
                    let inner = r.spec.folder_uid.clone().filter(|f| f != shared_uid);
                    self.record_json(r, &shared.key, inner, editable, files_base)
                })
                .collect();
            let has_flat = !in_folder.is_empty();
            flat.extend(in_folder.into_iter().map(|r| {
                // Keeper names the record's own folder, the shared folder itself included.
                self.record_json(
                    r,
                    &shared.key,
                    r.spec.folder_uid.clone(),
                    editable,
                    files_base,
                )
            }));
            let has_records = !records.is_empty() || has_flat;
            let folder_requested = filter
                .folders
                .as_ref()
                .is_none_or(|w| w.contains(shared_uid) || has_records);
            if !folder_requested || (filter.records.is_some() && !has_records) {
                continue;
            }
            folders.push(FolderJson {
                folder_uid: shared_uid.clone(),
                folder_key: wrap(&app.key, &shared.key),
                data: None,
                parent: None,
                is_editable: editable,
                records,
            });
        }

        let mut direct: Vec<RecordJson> = app
            .records
            .iter()
            .filter_map(|uid| self.records.get(uid))
            .filter(|r| match &filter.records {
                Some(wanted) => wanted.contains(&r.spec.uid),
                None => filter.folders.is_none(),
            })
            .map(|r| self.record_json(r, &app.key, None, false, files_base))
            .collect();
        direct.extend(flat);

        let (encrypted_app_key, app_owner_public_key) = self.binding_fields(binding_client)?;
        let app_data = json!({ "title": app.title, "type": "app" });
        Ok(SecretsResponse {
            app_data: b64_url(&aes_gcm_encrypt(&app.key, &padded(&app_data))),
            encrypted_app_key,
            app_owner_public_key,
            folders: (!folders.is_empty()).then_some(folders),
            records: (!direct.is_empty()).then_some(direct),
            expires_on: 0,
            warnings: None,
            extra: None,
        })
    }

    /// The `get_folders` view (docs/dev/protocol.md#folder-keys): shared folders GCM under the app
    /// key, sub-folders CBC under their root shared folder's key, names CBC under each folder's own
    /// key.
    pub fn folders_response(
        &self,
        app_name: &str,
        binding_client: Option<&str>,
    ) -> anyhow::Result<FoldersResponse> {
        let app = self.app(app_name)?;
        let mut folders = Vec::new();
        for shared_uid in &app.shared_folders {
            let Some(shared) = self.folders.get(shared_uid) else {
                continue;
            };
            for (uid, folder) in self.folders.iter().filter(|(_, f)| f.root == *shared_uid) {
                let folder_key = if folder.parent.is_none() {
                    wrap(&app.key, &folder.key)
                } else {
                    b64_std(&aes_cbc_encrypt(&shared.key, folder.key.as_bytes()))
                };
                let name = serde_json::to_vec(&json!({ "name": folder.name }))?;
                folders.push(FolderListJson {
                    folder_uid: uid.clone(),
                    folder_key,
                    data: b64_std(&aes_cbc_encrypt(&folder.key, &name)),
                    parent: folder.parent.clone(),
                });
            }
        }
        let (encrypted_app_key, app_owner_public_key) = self.binding_fields(binding_client)?;
        Ok(FoldersResponse {
            folders,
            encrypted_app_key,
            app_owner_public_key,
        })
    }
}
