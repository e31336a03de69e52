//! Writes an app makes through the SDKs (docs/dev/protocol.md#write-endpoints): `create_secret`,
//! `update_secret` (with rotation transactions), `delete_secret`, and `add_file` followed by the
//! upload. Every payload is checked as a real vault must before it stores ciphertext it cannot
//! read later: UIDs have the right shape, wrapped keys unwrap under the keys they claim and
//! agree with each other, data decrypts to a record, the app may edit the folder, revisions
//! match, sizes are bounded. The client's ciphertexts are then stored and served unchanged.

use super::{Record, StoredFile, Vault};
use crate::ksm_server::spec::{FileSpec, RecordSpec, is_valid_uid};
use crate::ksm_server::wire::{AddFilePayload, CreatePayload, UpdatePayload};
use keeper_operator::ksm::crypto::{AesKey, aes_gcm_decrypt, b64_decode, b64_std, ecies_decrypt};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// Largest record `data` ciphertext accepted (Keeper's record data limit is in this range).
pub(crate) const MAX_RECORD_DATA: usize = 32 * 1024;
/// Largest encrypted file an upload may carry (under axum's 2 MiB default body limit).
pub(crate) const MAX_FILE: u64 = 1024 * 1024;
/// Largest file metadata ciphertext.
const MAX_FILE_META: usize = 4 * 1024;
/// Uploads reserved by `add_file` and not yet received; more are refused.
const MAX_PENDING_UPLOADS: usize = 16;
/// GCM overhead: nonce and tag.
const GCM_OVERHEAD: u64 = 28;

/// Why a write is refused. The handlers turn each into a Keeper-style error body; the codes
/// follow Keeper's record-modify statuses (`outdated_revision`, `access_denied`,
/// `record_exists`, `size_exceeded_limit`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// The payload itself is wrong: bad base64, a key that does not unwrap, bad record JSON.
    BadRequest(String),
    /// The app does not see the folder or record, or may not edit it.
    AccessDenied(String),
    /// `revision` is not the record's current one (optimistic concurrency).
    OutdatedRevision {
        uid: String,
        current: i64,
    },
    Exists(String),
    TooLarge(String),
}

fn bad(message: impl Into<String>) -> WriteError {
    WriteError::BadRequest(message.into())
}

/// The record data JSON the SDKs encrypt (docs/dev/protocol.md#record-data).
#[derive(Deserialize)]
struct RecordData {
    title: String,
    #[serde(rename = "type")]
    record_type: String,
    #[serde(default)]
    fields: Option<Vec<Value>>,
    #[serde(default)]
    custom: Option<Vec<Value>>,
    #[serde(default)]
    notes: Option<String>,
}

/// File metadata JSON (docs/dev/protocol.md#files).
#[derive(Deserialize)]
struct FileMeta {
    name: String,
    title: Option<String>,
    #[serde(rename = "type")]
    mime_type: Option<String>,
}

/// A state to return to when a rotation transaction is rolled back.
pub(super) struct Rollback {
    spec: RecordSpec,
    data: String,
}

/// An upload reserved by `add_file`, committed when the content arrives.
pub(super) struct PendingUpload {
    app: String,
    owner: String,
    owner_revision: i64,
    owner_spec: RecordSpec,
    owner_data: String,
    key: AesKey,
    meta: FileMeta,
    meta_cipher: String,
    size: u64,
}

fn decode(field: &str, text: &str) -> Result<Vec<u8>, WriteError> {
    b64_decode(text).map_err(|_| bad(format!("{field} is not base64")))
}

fn check_uid(field: &str, uid: &str) -> Result<(), WriteError> {
    if is_valid_uid(uid) {
        Ok(())
    } else {
        Err(bad(format!("{field} is not a 22-character base64url UID")))
    }
}

/// Decrypts record `data` under `key` into a record spec placed like `template`.
fn read_record(
    key: &AesKey,
    data: &str,
    template: RecordSpec,
) -> Result<(RecordSpec, String), WriteError> {
    let cipher = decode("data", data)?;
    if cipher.len() > MAX_RECORD_DATA {
        return Err(WriteError::TooLarge(format!(
            "record data is {} bytes, the limit is {MAX_RECORD_DATA}",
            cipher.len()
        )));
    }
    let plain = aes_gcm_decrypt(key, &cipher)
        .map_err(|_| bad("data does not decrypt with the record key"))?;
    let parsed: RecordData =
        serde_json::from_slice(&plain).map_err(|e| bad(format!("record data: {e}")))?;
    let spec = RecordSpec {
        title: parsed.title,
        record_type: parsed.record_type,
        fields: parsed.fields.unwrap_or_default(),
        custom: parsed.custom.unwrap_or_default(),
        notes: parsed.notes,
        ..template
    };
    Ok((spec, b64_std(&cipher)))
}

impl Vault {
    /// Checks that `ecies` (base64 ECIES for the app owner) holds exactly `key`: what lets the
    /// owner open the record or file in the vault.
    fn check_owner_wrap(&self, field: &str, ecies: &str, key: &AesKey) -> Result<(), WriteError> {
        let blob = decode(field, ecies)?;
        let plain = ecies_decrypt(self.owner.secret_key(), &blob)
            .map_err(|_| bad(format!("{field} does not decrypt with the owner's key")))?;
        if plain.as_slice() != key.as_bytes() {
            return Err(bad(format!(
                "{field} and the folder/link key wrap different keys"
            )));
        }
        Ok(())
    }

    /// The shared folder `folder_uid` if `app` sees it and may write to it.
    fn writable_shared_folder(&self, app: &str, folder_uid: &str) -> Result<(), WriteError> {
        let app_entry = self
            .apps
            .get(app)
            .ok_or_else(|| WriteError::AccessDenied(format!("unknown application {app}")))?;
        if !app_entry.shared_folders.contains(folder_uid) {
            return Err(WriteError::AccessDenied(format!(
                "folder {folder_uid} is not shared with this application"
            )));
        }
        if !app_entry.editable_folders.contains(folder_uid) {
            return Err(WriteError::AccessDenied(format!(
                "folder {folder_uid} is read-only for this application"
            )));
        }
        Ok(())
    }

    /// The record `uid` if `app` sees it through a shared folder it may edit. Records shared
    /// with the app directly are read-only here, as the test vault has no per-record edit flag.
    fn writable_record(&self, app: &str, uid: &str) -> Result<&Record, WriteError> {
        let denied = || {
            WriteError::AccessDenied(format!("record {uid} is not editable by this application"))
        };
        let record = self.records.get(uid).ok_or_else(denied)?;
        let root = record
            .spec
            .folder_uid
            .as_deref()
            .and_then(|f| self.folders.get(f))
            .map(|f| f.root.as_str())
            .ok_or_else(denied)?;
        self.writable_shared_folder(app, root)?;
        Ok(record)
    }

    fn take_revision(&mut self) -> i64 {
        let revision = self.next_revision;
        self.next_revision += 1;
        revision
    }

    /// `create_secret`: a new record in a shared folder (or one of its sub-folders), listed
    /// under the shared folder like the records Keeper lists there, key wrapped by the folder's.
    pub fn create(&mut self, app: &str, payload: &CreatePayload) -> Result<i64, WriteError> {
        check_uid("recordUid", &payload.record_uid)?;
        check_uid("folderUid", &payload.folder_uid)?;
        self.writable_shared_folder(app, &payload.folder_uid)?;
        let shared = self
            .folders
            .get(&payload.folder_uid)
            .filter(|f| f.parent.is_none())
            .ok_or_else(|| bad(format!("{} is not a shared folder", payload.folder_uid)))?;
        let folder = match payload.sub_folder_uid.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                check_uid("subFolderUid", sub)?;
                if self
                    .folders
                    .get(sub)
                    .is_none_or(|f| f.root != payload.folder_uid)
                {
                    return Err(bad(format!(
                        "{sub} is not a folder of {}",
                        payload.folder_uid
                    )));
                }
                sub.to_string()
            }
            None => payload.folder_uid.clone(),
        };
        if self.records.contains_key(&payload.record_uid) {
            return Err(WriteError::Exists(format!(
                "record {} already exists",
                payload.record_uid
            )));
        }
        let key = shared
            .key
            .unwrap_key(&decode("folderKey", &payload.folder_key)?)
            .map_err(|_| bad("folderKey does not unwrap with the shared folder's key"))?;
        self.check_owner_wrap("recordKey", &payload.record_key, &key)?;
        let template = RecordSpec::new(payload.record_uid.clone(), "", "").in_folder(&folder);
        let (spec, data) = read_record(&key, &payload.data, template)?;
        spec.validate(|uid| self.folders.contains_key(uid))
            .map_err(|e| bad(e.to_string()))?;
        let revision = self.take_revision();
        self.records.insert(
            spec.uid.clone(),
            Record {
                spec,
                key,
                revision,
                data,
                files: Vec::new(),
                created_by: Some(app.to_string()),
                rollback: None,
            },
        );
        Ok(revision)
    }

    /// `update_secret`: new data for a record at the revision the client last read. A
    /// `rotation` update keeps the previous state until it is finalized or rolled back.
    pub fn update(&mut self, app: &str, payload: &UpdatePayload) -> Result<i64, WriteError> {
        check_uid("recordUid", &payload.record_uid)?;
        let rotation = match payload.transaction_type.as_deref() {
            None | Some("general") => false,
            Some("rotation") => true,
            Some(other) => return Err(bad(format!("unknown transactionType {other:?}"))),
        };
        let record = self.writable_record(app, &payload.record_uid)?;
        if payload.revision != record.revision {
            return Err(WriteError::OutdatedRevision {
                uid: payload.record_uid.clone(),
                current: record.revision,
            });
        }
        let (spec, data) = read_record(&record.key, &payload.data, record.spec.clone())?;
        spec.validate(|uid| self.folders.contains_key(uid))
            .map_err(|e| bad(e.to_string()))?;
        let revision = self.take_revision();
        let record = self
            .records
            .get_mut(&payload.record_uid)
            .expect("checked above");
        if rotation && record.rollback.is_none() {
            record.rollback = Some(Rollback {
                spec: record.spec.clone(),
                data: record.data.clone(),
            });
        }
        record.spec = spec;
        record.data = data;
        record.revision = revision;
        Ok(revision)
    }

    /// `finalize_secret_update` (keep the rotated data) or `rollback_secret_update` (return
    /// to the data before the transaction, as a new revision).
    pub fn complete_transaction(
        &mut self,
        app: &str,
        uid: &str,
        rollback: bool,
    ) -> Result<(), WriteError> {
        check_uid("recordUid", uid)?;
        self.writable_record(app, uid)?;
        let revision = self.next_revision;
        let record = self.records.get_mut(uid).expect("checked above");
        let saved = record
            .rollback
            .take()
            .ok_or_else(|| bad(format!("record {uid} has no transaction in progress")))?;
        if rollback {
            record.spec = saved.spec;
            record.data = saved.data;
            record.revision = revision;
            self.next_revision += 1;
        }
        Ok(())
    }

    /// `delete_secret`: one `(uid, outcome)` per requested UID. Only records this app created
    /// in a folder it may still edit can be deleted.
    pub fn delete_created(
        &mut self,
        app: &str,
        uids: &[String],
    ) -> Vec<(String, Result<(), WriteError>)> {
        uids.iter()
            .map(|uid| {
                let outcome = check_uid("recordUid", uid)
                    .and_then(|()| {
                        self.writable_record(app, uid)
                            .map(|r| r.created_by.as_deref() == Some(app))
                    })
                    .and_then(|own| {
                        if own {
                            Ok(())
                        } else {
                            Err(WriteError::AccessDenied(format!(
                                "record {uid} was not created by this application"
                            )))
                        }
                    });
                if outcome.is_ok() {
                    // Known to exist: writable_record found it.
                    let _ = self.delete_record(uid);
                }
                (uid.clone(), outcome)
            })
            .collect()
    }

    /// `add_file`: checks the file's keys and metadata and the owner record's new data, and
    /// reserves the upload; nothing changes until the content arrives.
    pub fn reserve_upload(
        &mut self,
        app: &str,
        payload: &AddFilePayload,
    ) -> Result<(), WriteError> {
        check_uid("fileRecordUid", &payload.file_record_uid)?;
        check_uid("ownerRecordUid", &payload.owner_record_uid)?;
        if payload.file_size > MAX_FILE {
            return Err(WriteError::TooLarge(format!(
                "fileSize {} is over the limit of {MAX_FILE}",
                payload.file_size
            )));
        }
        if payload.file_size < GCM_OVERHEAD {
            return Err(bad("fileSize is smaller than an encrypted empty file"));
        }
        let owner = self.writable_record(app, &payload.owner_record_uid)?;
        if payload.owner_record_revision != owner.revision {
            return Err(WriteError::OutdatedRevision {
                uid: payload.owner_record_uid.clone(),
                current: owner.revision,
            });
        }
        let uid = &payload.file_record_uid;
        if self.file_index.contains_key(uid) || self.records.contains_key(uid) {
            return Err(WriteError::Exists(format!("file {uid} already exists")));
        }
        let key = owner
            .key
            .unwrap_key(&decode("linkKey", &payload.link_key)?)
            .map_err(|_| bad("linkKey does not unwrap with the owner record's key"))?;
        self.check_owner_wrap("fileRecordKey", &payload.file_record_key, &key)?;
        let meta_cipher = decode("fileRecordData", &payload.file_record_data)?;
        if meta_cipher.len() > MAX_FILE_META {
            return Err(WriteError::TooLarge("fileRecordData is too large".into()));
        }
        let meta_plain = aes_gcm_decrypt(&key, &meta_cipher)
            .map_err(|_| bad("fileRecordData does not decrypt with the file key"))?;
        let meta: FileMeta =
            serde_json::from_slice(&meta_plain).map_err(|e| bad(format!("fileRecordData: {e}")))?;
        let (owner_spec, owner_data) =
            read_record(&owner.key, &payload.owner_record_data, owner.spec.clone())?;
        let links = owner_spec.fields.iter().any(|f| {
            f["type"] == "fileRef"
                && f["value"]
                    .as_array()
                    .is_some_and(|v| v.contains(&Value::from(uid.as_str())))
        });
        if !links {
            return Err(bad("ownerRecordData has no fileRef to the new file"));
        }
        if self.pending_uploads.len() >= MAX_PENDING_UPLOADS {
            return Err(WriteError::TooLarge("too many uploads in progress".into()));
        }
        let pending = PendingUpload {
            app: app.to_string(),
            owner: payload.owner_record_uid.clone(),
            owner_revision: owner.revision,
            owner_spec,
            owner_data,
            key,
            meta,
            meta_cipher: b64_std(&meta_cipher),
            size: payload.file_size,
        };
        self.pending_uploads.insert(uid.clone(), pending);
        Ok(())
    }

    /// The upload of a file reserved by `add_file`: the encrypted content must have the
    /// announced size and decrypt with the file key. The file then joins the owner record,
    /// whose data becomes what `add_file` sent, as a new revision.
    pub fn complete_upload(&mut self, file_uid: &str, content: Vec<u8>) -> Result<i64, WriteError> {
        let pending = self.pending_uploads.get(file_uid).ok_or_else(|| {
            WriteError::AccessDenied(format!("no upload reserved for {file_uid}"))
        })?;
        if content.len() as u64 != pending.size {
            return Err(bad(format!(
                "the file is {} bytes, add_file announced {}",
                content.len(),
                pending.size
            )));
        }
        let plain = aes_gcm_decrypt(&pending.key, &content)
            .map_err(|_| bad("the file does not decrypt with the file key"))?;
        let pending = self
            .pending_uploads
            .remove(file_uid)
            .expect("checked above");
        // The owner may have changed or lost its access since add_file.
        let owner = self.writable_record(&pending.app, &pending.owner)?;
        if owner.revision != pending.owner_revision {
            return Err(WriteError::OutdatedRevision {
                uid: pending.owner,
                current: owner.revision,
            });
        }
        let mut file = FileSpec::from_bytes(
            file_uid,
            &pending.meta.name,
            pending.meta.mime_type.as_deref(),
            &plain,
        );
        file.title = pending.meta.title;
        let mut spec = pending.owner_spec;
        spec.files.push(file);
        let revision = self.take_revision();
        let record = self.records.get_mut(&pending.owner).expect("checked above");
        record.spec = spec;
        record.data = pending.owner_data;
        record.revision = revision;
        record.files.push(StoredFile {
            uid: file_uid.to_string(),
            key: pending.key,
            meta: pending.meta_cipher,
            content: Arc::new(content),
        });
        self.file_index.insert(file_uid.to_string(), pending.owner);
        Ok(revision)
    }
}
