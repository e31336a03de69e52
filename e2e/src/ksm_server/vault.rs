//! The live vault: keys for every app, folder, record and file, devices bound to apps, and the
//! encrypted views the endpoints return (docs/dev/protocol.md#responses). Ciphertexts of record
//! data and files are computed when a record is set and then served unchanged, as a real vault
//! stores them.

use super::spec::{FileSpec, RecordSpec, VaultSpec};
use super::wire::{SIGNATURE_INVALID, UNABLE_TO_VALIDATE};
use anyhow::{anyhow, ensure};
use keeper_operator::ksm::crypto::{
    AesKey, EcKeyPair, aes_gcm_encrypt, b64_std, b64_url, client_id, parse_public_key,
    random_bytes, verify_der,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Real record revisions are large vault-wide counters (1411018 in the recorded traffic).
const FIRST_REVISION: i64 = 1_411_000;
/// Real vault plaintexts are right-padded with spaces (docs/dev/protocol.md#encodings); clients
/// must ignore the padding.
const PAD_TO: usize = 128;

mod views;
mod writes;
pub(crate) use views::Filter;
pub(crate) use writes::{MAX_FILE, WriteError};

struct Folder {
    name: String,
    key: AesKey,
    parent: Option<String>,
    /// The shared folder at the top of this folder's chain (itself for a shared folder).
    root: String,
}

struct StoredFile {
    uid: String,
    key: AesKey,
    meta: String,
    content: Arc<Vec<u8>>,
}

struct Record {
    spec: RecordSpec,
    key: AesKey,
    revision: i64,
    data: String,
    files: Vec<StoredFile>,
    /// The app that made the record through `create_secret`; only it may delete the record.
    created_by: Option<String>,
    /// The state before a `rotation` update, until it is finalized or rolled back.
    rollback: Option<writes::Rollback>,
}

struct App {
    title: String,
    key: AesKey,
    shared_folders: BTreeSet<String>,
    /// The shared folders this app may write to.
    editable_folders: BTreeSet<String>,
    records: BTreeSet<String>,
}

struct Device {
    app: String,
    /// The one-time token's client key: it wraps the app key in the binding response.
    client_key: AesKey,
    public_key: Option<[u8; 65]>,
    expires: Option<Instant>,
}

/// The outcome of checking a request's client id and signature.
pub(crate) enum Auth {
    Ok { app: String, just_bound: bool },
    Denied(&'static str),
}

/// A device registered as already bound, for `TestServer::bound_config`.
pub(crate) struct BoundDevice {
    pub client_id: String,
    pub device_key: EcKeyPair,
    pub app_key: AesKey,
}

pub(crate) struct Vault {
    owner: EcKeyPair,
    next_revision: i64,
    folders: BTreeMap<String, Folder>,
    records: BTreeMap<String, Record>,
    /// file uid → record uid, for downloads and uniqueness.
    file_index: HashMap<String, String>,
    apps: BTreeMap<String, App>,
    devices: HashMap<String, Device>,
    /// file uid → an upload `add_file` reserved.
    pending_uploads: HashMap<String, writes::PendingUpload>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn padded(json: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(json).unwrap_or_default();
    let target = bytes.len().div_ceil(PAD_TO).max(1) * PAD_TO;
    bytes.resize(target, b' ');
    bytes
}

impl Vault {
    pub fn new(spec: &VaultSpec) -> anyhow::Result<Self> {
        spec.validate()?;
        let mut vault = Vault {
            owner: EcKeyPair::generate(),
            next_revision: FIRST_REVISION,
            folders: BTreeMap::new(),
            records: BTreeMap::new(),
            file_index: HashMap::new(),
            apps: BTreeMap::new(),
            devices: HashMap::new(),
            pending_uploads: HashMap::new(),
        };
        for shared in &spec.shared_folders {
            vault.add_folder(shared, None, &shared.uid);
        }
        for record in &spec.records {
            vault.set_record(record.clone())?;
        }
        for app in &spec.apps {
            vault.apps.insert(
                app.name.clone(),
                App {
                    title: app.title.clone().unwrap_or_else(|| app.name.clone()),
                    key: AesKey::random(),
                    shared_folders: app.shared_folders.iter().cloned().collect(),
                    editable_folders: spec
                        .editable_shares
                        .iter()
                        .filter(|s| s.app == app.name)
                        .map(|s| s.folder.clone())
                        .collect(),
                    records: app.records.iter().cloned().collect(),
                },
            );
        }
        Ok(vault)
    }

    fn add_folder(&mut self, spec: &super::spec::FolderSpec, parent: Option<&str>, root: &str) {
        self.folders.insert(
            spec.uid.clone(),
            Folder {
                name: spec.name.clone(),
                key: AesKey::random(),
                parent: parent.map(str::to_string),
                root: root.to_string(),
            },
        );
        for child in &spec.folders {
            self.add_folder(child, Some(&spec.uid), root);
        }
    }

    pub fn app_names(&self) -> Vec<String> {
        self.apps.keys().cloned().collect()
    }

    pub fn owner_public_key(&self) -> [u8; 65] {
        self.owner.public_key_bytes()
    }

    fn app(&self, name: &str) -> anyhow::Result<&App> {
        self.apps
            .get(name)
            .ok_or_else(|| anyhow!("unknown app {name:?}"))
    }

    /// Adds or replaces a record; returns its new revision. The record key and the keys of files
    /// that keep their UID survive edits, as in a real vault.
    pub fn set_record(&mut self, spec: RecordSpec) -> anyhow::Result<i64> {
        spec.validate(|uid| self.folders.contains_key(uid))?;
        for file in &spec.files {
            if let Some(owner) = self.file_index.get(&file.uid) {
                ensure!(
                    *owner == spec.uid,
                    "file {} already belongs to record {owner}",
                    file.uid
                );
            }
        }
        let old = self.records.remove(&spec.uid);
        let created_by = old.as_ref().and_then(|r| r.created_by.clone());
        let key = old.as_ref().map_or_else(AesKey::random, |r| r.key.clone());
        let mut old_file_keys: HashMap<String, AesKey> = HashMap::new();
        if let Some(old) = old {
            for file in old.files {
                self.file_index.remove(&file.uid);
                old_file_keys.insert(file.uid.clone(), file.key.clone());
            }
        }
        let files = spec
            .files
            .iter()
            .map(|f| {
                let key = old_file_keys.remove(&f.uid).unwrap_or_else(AesKey::random);
                encrypt_file(f, key)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let revision = self.next_revision;
        self.next_revision += 1;
        let data = b64_std(&aes_gcm_encrypt(&key, &padded(&record_json(&spec))));
        for file in &files {
            self.file_index.insert(file.uid.clone(), spec.uid.clone());
        }
        self.records.insert(
            spec.uid.clone(),
            Record {
                spec,
                key,
                revision,
                data,
                files,
                created_by,
                rollback: None,
            },
        );
        Ok(revision)
    }

    /// Fault injection: serves new content under the record's current revision, as a
    /// glitching backend would (a real edit always moves the revision).
    pub fn set_record_keeping_revision(&mut self, spec: RecordSpec) -> anyhow::Result<i64> {
        let uid = spec.uid.clone();
        let revision = self
            .revision(&uid)
            .ok_or_else(|| anyhow!("unknown record {uid}"))?;
        self.set_record(spec)?;
        if let Some(record) = self.records.get_mut(&uid) {
            record.revision = revision;
        }
        Ok(revision)
    }

    pub fn delete_record(&mut self, uid: &str) -> anyhow::Result<()> {
        let record = self
            .records
            .remove(uid)
            .ok_or_else(|| anyhow!("unknown record {uid}"))?;
        for file in &record.files {
            self.file_index.remove(&file.uid);
        }
        for app in self.apps.values_mut() {
            app.records.remove(uid);
        }
        Ok(())
    }

    /// Adds a file to a record or replaces the one with the same UID; bumps the revision.
    pub fn set_file(&mut self, record_uid: &str, file: FileSpec) -> anyhow::Result<i64> {
        let mut spec = self.record(record_uid)?.clone();
        match spec.files.iter_mut().find(|f| f.uid == file.uid) {
            Some(existing) => *existing = file,
            None => spec.files.push(file),
        }
        self.set_record(spec)
    }

    pub fn record(&self, uid: &str) -> anyhow::Result<&RecordSpec> {
        self.records
            .get(uid)
            .map(|r| &r.spec)
            .ok_or_else(|| anyhow!("unknown record {uid}"))
    }

    /// The current plaintext of every record.
    pub fn records(&self) -> Vec<RecordSpec> {
        self.records.values().map(|r| r.spec.clone()).collect()
    }

    pub fn revision(&self, uid: &str) -> Option<i64> {
        self.records.get(uid).map(|r| r.revision)
    }

    /// The record that owns a file (so a file can be replaced by its UID alone).
    pub fn file_owner(&self, file_uid: &str) -> Option<&str> {
        self.file_index.get(file_uid).map(String::as_str)
    }

    /// Encrypted content of a file, as served at its download URL.
    pub fn file_content(&self, file_uid: &str) -> Option<Arc<Vec<u8>>> {
        let record = self.records.get(self.file_index.get(file_uid)?)?;
        record
            .files
            .iter()
            .find(|f| f.uid == file_uid)
            .map(|f| f.content.clone())
    }

    /// Creates a one-time token for an app: 32 random bytes, base64url without padding.
    pub fn issue_token(&mut self, app: &str, ttl: Option<Duration>) -> anyhow::Result<String> {
        self.app(app)?;
        let client_key: [u8; 32] = random_bytes();
        self.devices.insert(
            client_id(&client_key),
            Device {
                app: app.to_string(),
                client_key: AesKey::from_slice(&client_key)?,
                public_key: None,
                // A TTL too large to represent means no expiry.
                expires: ttl.and_then(|ttl| Instant::now().checked_add(ttl)),
            },
        );
        Ok(b64_url(&client_key))
    }

    /// Registers a fresh device key as already bound to `app`.
    pub fn bind_new_device(&mut self, app: &str) -> anyhow::Result<BoundDevice> {
        let app_key = self.app(app)?.key.clone();
        let client_key: [u8; 32] = random_bytes();
        let device_key = EcKeyPair::generate();
        let id = client_id(&client_key);
        self.devices.insert(
            id.clone(),
            Device {
                app: app.to_string(),
                client_key: AesKey::from_slice(&client_key)?,
                public_key: Some(device_key.public_key_bytes()),
                expires: None,
            },
        );
        Ok(BoundDevice {
            client_id: id,
            device_key,
            app_key,
        })
    }

    /// Removes a device, so its config stops working (as when a device is deleted in the vault).
    pub fn revoke_device(&mut self, client_id: &str) -> bool {
        self.devices.remove(client_id).is_some()
    }

    /// The app a client id belongs to, if any (for the counters).
    pub fn app_of(&self, client_id: &str) -> Option<&str> {
        self.devices.get(client_id).map(|d| d.app.as_str())
    }

    /// Steps 4–5 of docs/dev/protocol.md#the-test-server: look up the client id, bind on first use,
    /// verify the signature.
    ///
    /// A token reused by a second device fails with "Signature is invalid", as in the recorded
    /// traffic; an unknown client id or an expired unused token gets "Unable to validate
    /// application access". A repeat of the binding request by the same device key (a client
    /// retrying after losing the binding response) is answered with the app key again.
    pub fn authenticate(
        &mut self,
        client_id: &str,
        public_key: Option<&str>,
        signed: &[u8],
        signature: Option<&[u8]>,
    ) -> Auth {
        let Some(device) = self.devices.get_mut(client_id) else {
            return Auth::Denied(UNABLE_TO_VALIDATE);
        };
        let offered = public_key
            .and_then(|k| keeper_operator::ksm::crypto::b64_decode(k).ok())
            .and_then(|k| <[u8; 65]>::try_from(k.as_slice()).ok())
            .filter(|k| parse_public_key(k).is_ok());
        let signature = signature.unwrap_or_default();
        match device.public_key {
            Some(bound) => {
                if !verify_der(&bound, signed, signature) {
                    return Auth::Denied(SIGNATURE_INVALID);
                }
                Auth::Ok {
                    app: device.app.clone(),
                    just_bound: offered == Some(bound),
                }
            }
            None => {
                if device.expires.is_some_and(|at| Instant::now() >= at) {
                    return Auth::Denied(UNABLE_TO_VALIDATE);
                }
                let Some(key) = offered else {
                    return Auth::Denied(UNABLE_TO_VALIDATE);
                };
                if !verify_der(&key, signed, signature) {
                    return Auth::Denied(SIGNATURE_INVALID);
                }
                device.public_key = Some(key);
                Auth::Ok {
                    app: device.app.clone(),
                    just_bound: true,
                }
            }
        }
    }
}

/// The record JSON a real vault stores, with the `fileRef` field listing the attachments.
fn record_json(spec: &RecordSpec) -> Value {
    let file_uids: Vec<Value> = spec.files.iter().map(|f| json!(f.uid)).collect();
    let mut fields = spec.fields.clone();
    match fields
        .iter_mut()
        .find(|f| f.get("type").and_then(Value::as_str) == Some("fileRef"))
    {
        Some(field) => field["value"] = Value::Array(file_uids),
        None if !file_uids.is_empty() => {
            fields.push(json!({ "type": "fileRef", "value": file_uids }));
        }
        None => {}
    }
    let mut record = json!({
        "title": spec.title,
        "type": spec.record_type,
        "fields": fields,
        "custom": spec.custom,
    });
    if let Some(notes) = &spec.notes {
        record["notes"] = json!(notes);
    }
    record
}

fn encrypt_file(spec: &FileSpec, key: AesKey) -> anyhow::Result<StoredFile> {
    let content = spec.bytes()?;
    let meta = json!({
        "name": spec.name,
        "title": spec.title.as_deref().unwrap_or(&spec.name),
        "type": spec.mime_type.as_deref().unwrap_or("application/octet-stream"),
        "size": content.len(),
        "lastModified": now_ms(),
    });
    let meta = serde_json::to_vec(&meta)?;
    Ok(StoredFile {
        uid: spec.uid.clone(),
        meta: b64_std(&aes_gcm_encrypt(&key, &meta)),
        content: Arc::new(aes_gcm_encrypt(&key, &content)),
        key,
    })
}
