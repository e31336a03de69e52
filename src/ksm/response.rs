//! Decoding decrypted `get_secret` / `get_folders` JSON through the key hierarchy
//! (docs/dev/protocol.md#key-hierarchy):
//! app key → shared-folder key → record key → record data; record key → file key → metadata;
//! for `get_folders`, CBC sub-folder keys under the root shared folder's key.
//! A flat `records[]` entry that names a folder (`innerFolderUid`, or `folderUid`) was created
//! inside a shared folder: its record key is wrapped by that shared folder's key, with the app key
//! as the fallback (docs/dev/protocol.md#flat-records-in-shared-folders).
//!
//! Policy for partial failures: a record, file or folder entry that does not decrypt is
//! skipped and named (by UID only) in `Vault::warnings`; the others are kept. When the response
//! has entries but *none* decrypts, the app key is wrong or the payload is forged, and the whole
//! response is an error (`Undecryptable`) rather than an empty vault that would look like
//! deleted records. A response whose outer layer fails authentication never gets here
//! (`KsmError::Tampered` in `transport`).

use crate::ksm::crypto::{AesKey, aes_cbc_decrypt, aes_gcm_decrypt, b64_decode};
use crate::ksm::error::{KsmError, sanitize};
use crate::ksm::record::{Field, KeeperFile, Record, SharedFolder, Vault};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

type Obj = Map<String, Value>;

fn parse_object(plaintext: &[u8]) -> Result<Obj, KsmError> {
    if plaintext.iter().all(u8::is_ascii_whitespace) {
        return Err(KsmError::InvalidResponse("empty response body".into()));
    }
    match serde_json::from_slice(plaintext) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(KsmError::InvalidResponse(
            "response is not a JSON object".into(),
        )),
        Err(e) => Err(KsmError::InvalidResponse(format!(
            "response is not JSON (line {} column {})",
            e.line(),
            e.column()
        ))),
    }
}

/// A non-empty string; `null`, missing and `""` are all "absent" (SDKs differ,
/// docs/dev/protocol.md#payload).
fn text<'a>(obj: &'a Obj, key: &str) -> Option<&'a str> {
    obj.get(key)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn list<'a>(obj: &'a Obj, key: &str) -> &'a [Value] {
    obj.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn number(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Why one entry failed; goes into a warning next to the entry's UID.
type EntryError = &'static str;

fn gcm_json(key: &AesKey, b64: Option<&str>, what: EntryError) -> Result<Obj, EntryError> {
    let data = b64_decode(b64.ok_or(what)?).map_err(|_| what)?;
    let plain = aes_gcm_decrypt(key, &data).map_err(|_| what)?;
    // Real plaintexts are right-padded with spaces (docs/dev/protocol.md#encodings); JSON parsing
    // ignores them.
    match serde_json::from_slice(&plain) {
        Ok(Value::Object(obj)) => Ok(obj),
        _ => Err("decrypted data is not a JSON object"),
    }
}

fn unwrap_gcm(wrapping: &AesKey, b64: &str) -> Option<AesKey> {
    wrapping.unwrap_key(&b64_decode(b64).ok()?).ok()
}

/// The app key from a binding response: `encryptedAppKey` opened with the token's client key,
/// plus the `appOwnerPublicKey` as sent (docs/dev/protocol.md#binding).
pub(crate) fn decode_binding(
    client_key: &AesKey,
    plaintext: &[u8],
) -> Result<(AesKey, Option<String>), KsmError> {
    let obj = parse_object(plaintext)?;
    let wrapped = text(&obj, "encryptedAppKey").ok_or_else(|| {
        KsmError::Binding("the server sent no application key (token already used?)".into())
    })?;
    let app_key = unwrap_gcm(client_key, wrapped).ok_or_else(|| {
        KsmError::Binding("the application key does not decrypt with the token".into())
    })?;
    Ok((app_key, text(&obj, "appOwnerPublicKey").map(str::to_string)))
}

fn field_list(value: Option<&Value>) -> Vec<Field> {
    let Some(Value::Array(items)) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(Value::as_object)
        .map(|f| Field {
            field_type: f
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            label: text(f, "label").map(str::to_string),
            value: match f.get("value") {
                Some(Value::Array(values)) => values.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(single) => vec![single.clone()],
            },
        })
        .collect()
}

fn decode_file(record_key: &AesKey, entry: &Obj) -> Result<KeeperFile, EntryError> {
    let uid = text(entry, "fileUid").ok_or("file entry has no fileUid")?;
    let key = text(entry, "fileKey")
        .and_then(|k| unwrap_gcm(record_key, k))
        .ok_or("file key does not decrypt")?;
    let meta = gcm_json(&key, text(entry, "data"), "file metadata does not decrypt")?;
    let meta_text = |k| meta.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(KeeperFile {
        uid: uid.to_string(),
        name: meta_text("name").unwrap_or_default(),
        title: meta_text("title").unwrap_or_default(),
        mime_type: meta_text("type").filter(|t| !t.is_empty()),
        size: number(meta.get("size")).and_then(|s| u64::try_from(s).ok()),
        url: text(entry, "url").map(str::to_string),
        key,
    })
}

/// Which keys may wrap a record's key, in the order they are tried. GCM authenticates, so a
/// wrong candidate fails cleanly instead of yielding a wrong key.
enum Wrapping<'k> {
    /// `folders[].records[]`: the enclosing shared folder's key only.
    Folder { uid: &'k str, key: &'k AesKey },
    /// Top-level `records[]` (or a sub-folder entry's, `default` naming it): the key of the
    /// shared folder the record's folder hint leads to first, then the app key.
    Flat { default: Option<&'k str> },
}

struct Decoder<'a> {
    app_key: &'a AesKey,
    vault: Vault,
    seen: HashSet<String>,
    failed: usize,
    /// Shared folders whose key decrypted, in response order.
    folder_keys: Vec<(String, AesKey)>,
    /// Sub-folder → the folder above it, as far as the response shows it.
    parent_of: HashMap<String, String>,
}

impl Decoder<'_> {
    fn warn(&mut self, what: &str, uid: &str, why: EntryError) {
        self.failed += 1;
        self.vault
            .warnings
            .push(format!("{what} {} skipped: {why}", sanitize(uid)));
    }

    fn record(&mut self, entry: &Value, wrapping: &Wrapping<'_>) {
        let Some(entry) = entry.as_object() else {
            self.vault.skipped.unnamed = true;
            self.warn("record", "<no uid>", "entry is not an object");
            return;
        };
        let Some(uid) = text(entry, "recordUid") else {
            self.vault.skipped.unnamed = true;
            self.warn("record", "<no uid>", "entry has no recordUid");
            return;
        };
        let candidates = self.candidates(entry, wrapping);
        match self.decode_record(entry, uid, &candidates) {
            Ok(record) => {
                if self.seen.insert(record.uid.clone()) {
                    self.vault.records.push(record);
                }
            }
            Err(why) => {
                // A flat record that names a folder counts against that folder, so a folder
                // mapping refuses to write without it.
                let folder = match wrapping {
                    Wrapping::Folder { uid, .. } => Some(uid.to_string()),
                    Wrapping::Flat { default } => self
                        .folder_hint(entry)
                        .or(*default)
                        .map(|hint| self.shared_of(hint).unwrap_or(hint).to_string()),
                };
                self.skip_record(uid, folder.as_deref());
                self.warn("record", uid, why);
            }
        }
    }

    /// `innerFolderUid` (the sub-folder, or the shared folder itself) or, as the Python SDK's
    /// mock sends it, `folderUid`.
    fn folder_hint<'e>(&self, entry: &'e Obj) -> Option<&'e str> {
        text(entry, "innerFolderUid").or_else(|| text(entry, "folderUid"))
    }

    /// The shared folder (with a decrypted key) that `folder` is or sits in.
    fn shared_of<'s>(&'s self, folder: &'s str) -> Option<&'s str> {
        let mut current = folder;
        // Bounded: a parent cycle in a hostile response ends the walk.
        for _ in 0..=self.parent_of.len() {
            if self.folder_keys.iter().any(|(uid, _)| uid == current) {
                return Some(current);
            }
            current = self.parent_of.get(current)?;
        }
        None
    }

    /// Keys to try on a record's `recordKey`, each with the shared folder it places the record in.
    fn candidates(&self, entry: &Obj, wrapping: &Wrapping<'_>) -> Vec<(AesKey, Option<String>)> {
        match wrapping {
            Wrapping::Folder { uid, key } => vec![((*key).clone(), Some(uid.to_string()))],
            Wrapping::Flat { default } => {
                let mut out = Vec::new();
                if let Some(hint) = self.folder_hint(entry).or(*default) {
                    match self.shared_of(hint) {
                        Some(shared) => out.extend(
                            self.folder_keys
                                .iter()
                                .filter(|(uid, _)| uid == shared)
                                .map(|(uid, key)| (key.clone(), Some(uid.clone()))),
                        ),
                        // A sub-folder the response does not place: any delivered shared
                        // folder may hold it.
                        None => out.extend(
                            self.folder_keys
                                .iter()
                                .map(|(uid, key)| (key.clone(), Some(uid.clone()))),
                        ),
                    }
                }
                out.push((self.app_key.clone(), None));
                out
            }
        }
    }

    fn skip_record(&mut self, uid: &str, folder_uid: Option<&str>) {
        self.vault.skipped.records.insert(uid.to_string());
        if let Some(folder) = folder_uid {
            self.vault.skipped.folders.insert(folder.to_string());
        }
    }

    fn decode_record(
        &mut self,
        entry: &Obj,
        uid: &str,
        candidates: &[(AesKey, Option<String>)],
    ) -> Result<Record, EntryError> {
        // PY/RS/GO use the app key when `recordKey` is absent (docs/dev/protocol.md#records).
        let (record_key, folder_uid) = match text(entry, "recordKey") {
            Some(k) => candidates
                .iter()
                .find_map(|(key, folder)| Some((unwrap_gcm(key, k)?, folder.clone())))
                .ok_or("record key does not decrypt")?,
            None => (self.app_key.clone(), None),
        };
        let data = gcm_json(
            &record_key,
            text(entry, "data"),
            "record data does not decrypt",
        )?;
        let mut files = Vec::new();
        for file in list(entry, "files") {
            match file.as_object().ok_or("file entry is not an object") {
                Ok(obj) => match decode_file(&record_key, obj) {
                    Ok(f) => files.push(f),
                    Err(why) => {
                        self.vault.skipped.files_of.insert(uid.to_string());
                        let file_uid = text(obj, "fileUid").unwrap_or("<no uid>");
                        self.vault.warnings.push(format!(
                            "file {} of record {} skipped: {why}",
                            sanitize(file_uid),
                            sanitize(uid)
                        ));
                    }
                },
                Err(why) => {
                    self.vault.skipped.files_of.insert(uid.to_string());
                    self.vault
                        .warnings
                        .push(format!("a file of record {} skipped: {why}", sanitize(uid)))
                }
            }
        }
        let str_of = |k| data.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Record {
            uid: uid.to_string(),
            title: str_of("title").unwrap_or_default(),
            record_type: str_of("type").unwrap_or_default(),
            revision: number(entry.get("revision")).unwrap_or(0),
            folder_uid: folder_uid.or_else(|| text(entry, "folderUid").map(str::to_string)),
            inner_folder_uid: text(entry, "innerFolderUid").map(str::to_string),
            fields: field_list(data.get("fields")),
            custom: field_list(data.get("custom")),
            notes: str_of("notes"),
            files,
        })
    }

    /// First pass over `folders[]`: shared-folder keys and where sub-folders sit, so flat records
    /// can be placed whatever the order of the response.
    fn index_folder(&mut self, entry: &Value) {
        let Some(entry) = entry.as_object() else {
            return;
        };
        let Some(uid) = text(entry, "folderUid") else {
            return;
        };
        if let Some(parent) = text(entry, "parent") {
            self.place(uid, parent);
            return;
        }
        let known = self.folder_keys.iter().any(|(u, _)| u == uid);
        if let (false, Some(key)) = (
            known,
            text(entry, "folderKey").and_then(|k| unwrap_gcm(self.app_key, k)),
        ) {
            self.folder_keys.push((uid.to_string(), key));
        }
        self.index_sub_folders(entry, uid);
        for record in list(entry, "records").iter().filter_map(Value::as_object) {
            if let Some(inner) = text(record, "innerFolderUid") {
                self.place(inner, uid);
            }
        }
    }

    /// Nested `folders[].folders[]` entries, if a response lists sub-folders that way.
    fn index_sub_folders(&mut self, entry: &Obj, uid: &str) {
        for sub in list(entry, "folders").iter().filter_map(Value::as_object) {
            if let Some(sub_uid) = text(sub, "folderUid") {
                self.place(sub_uid, uid);
                self.index_sub_folders(sub, sub_uid);
            }
        }
    }

    fn place(&mut self, folder: &str, parent: &str) {
        if folder != parent {
            self.parent_of
                .entry(folder.to_string())
                .or_insert_with(|| parent.to_string());
        }
    }

    fn folder(&mut self, entry: &Value) {
        let Some(entry) = entry.as_object() else {
            self.vault.skipped.unnamed = true;
            self.warn("folder", "<no uid>", "entry is not an object");
            return;
        };
        let Some(uid) = text(entry, "folderUid") else {
            self.vault.skipped.unnamed = true;
            self.warn("folder", "<no uid>", "entry has no folderUid");
            return;
        };
        if let Some(parent) = text(entry, "parent") {
            // A sub-folder entry carries structure only; its records are wrapped by the key of
            // the shared folder it belongs to, as flat records naming it are.
            self.vault.folders.push(SharedFolder {
                uid: uid.to_string(),
                name: None,
                parent_uid: Some(parent.to_string()),
            });
            for record in list(entry, "records") {
                self.record(record, &Wrapping::Flat { default: Some(uid) });
            }
            return;
        }
        let key = self
            .folder_keys
            .iter()
            .find(|(u, _)| u == uid)
            .map(|(_, key)| key.clone());
        let Some(key) = key else {
            let records = list(entry, "records").len();
            self.vault.skipped.folders.insert(uid.to_string());
            for record in list(entry, "records") {
                match record.as_object().and_then(|r| text(r, "recordUid")) {
                    Some(record_uid) => self.skip_record(record_uid, Some(uid)),
                    None => self.vault.skipped.unnamed = true,
                }
            }
            self.warn("shared folder", uid, "folder key does not decrypt");
            self.failed += records;
            self.vault.warnings.push(format!(
                "{records} record(s) of shared folder {} skipped with it",
                sanitize(uid)
            ));
            return;
        };
        if !self.vault.folders.iter().any(|f| f.uid == uid) {
            self.vault.folders.push(SharedFolder {
                uid: uid.to_string(),
                name: None,
                parent_uid: None,
            });
        }
        for record in list(entry, "records") {
            self.record(record, &Wrapping::Folder { uid, key: &key });
        }
    }
}

/// Decodes a decrypted `get_secret` response with the app key (docs/dev/protocol.md#key-hierarchy).
pub fn decode_secrets(app_key: &AesKey, plaintext: &[u8]) -> Result<Vault, KsmError> {
    let obj = parse_object(plaintext)?;
    let mut decoder = Decoder {
        app_key,
        vault: Vault::default(),
        seen: HashSet::new(),
        failed: 0,
        folder_keys: Vec::new(),
        parent_of: HashMap::new(),
    };
    for warning in list(&obj, "warnings").iter().filter_map(Value::as_str) {
        decoder
            .vault
            .warnings
            .push(format!("Keeper: {}", sanitize(warning)));
    }
    for folder in list(&obj, "folders") {
        decoder.index_folder(folder);
    }
    for folder in list(&obj, "folders") {
        decoder.folder(folder);
    }
    for record in list(&obj, "records") {
        decoder.record(record, &Wrapping::Flat { default: None });
    }
    if decoder.failed > 0 && decoder.vault.records.is_empty() && decoder.vault.folders.is_empty() {
        return Err(KsmError::Undecryptable(format!(
            "none of {} entries decrypts",
            decoder.failed
        )));
    }
    Ok(decoder.vault)
}

struct RawFolder<'a> {
    key: &'a str,
    parent: Option<&'a str>,
    data: Option<&'a str>,
}

/// Unwraps a folder's key: GCM under the app key for a shared folder (no parent), otherwise CBC
/// under the key of the root shared folder found by walking `parent`
/// (docs/dev/protocol.md#folder-keys).
fn folder_key(
    app_key: &AesKey,
    folders: &HashMap<&str, RawFolder<'_>>,
    uid: &str,
) -> Option<AesKey> {
    let folder = folders.get(uid)?;
    let mut root = folder;
    for _ in 0..=folders.len() {
        match root.parent {
            None => {
                let root_key = unwrap_gcm(app_key, root.key)?;
                if std::ptr::eq(root, folder) {
                    return Some(root_key);
                }
                return root_key.unwrap_key_cbc(&b64_decode(folder.key).ok()?).ok();
            }
            Some(parent) => root = folders.get(parent)?,
        }
    }
    None // a parent cycle
}

/// Decodes a decrypted `get_folders` response into folders with names. A folder whose key or
/// name does not decrypt is still listed (structure is not secret), without a name.
pub(crate) fn decode_folders(
    app_key: &AesKey,
    plaintext: &[u8],
) -> Result<Vec<SharedFolder>, KsmError> {
    let obj = parse_object(plaintext)?;
    let mut raw: HashMap<&str, RawFolder<'_>> = HashMap::new();
    let mut order = Vec::new();
    for entry in list(&obj, "folders").iter().filter_map(Value::as_object) {
        let (Some(uid), Some(key)) = (text(entry, "folderUid"), text(entry, "folderKey")) else {
            continue;
        };
        if raw
            .insert(
                uid,
                RawFolder {
                    key,
                    parent: text(entry, "parent"),
                    data: text(entry, "data"),
                },
            )
            .is_none()
        {
            order.push(uid);
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for uid in order {
        let Some(folder) = raw.get(uid) else { continue };
        let name = folder_key(app_key, &raw, uid).and_then(|key| {
            let data = b64_decode(folder.data?).ok()?;
            let plain = aes_cbc_decrypt(&key, &data).ok()?;
            let meta: Value = serde_json::from_slice(&plain).ok()?;
            meta.get("name")?.as_str().map(str::to_string)
        });
        if name.is_none() {
            tracing::warn!(folder = uid, "folder name does not decrypt");
        }
        out.push(SharedFolder {
            uid: uid.to_string(),
            name,
            parent_uid: folder.parent.map(str::to_string),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
