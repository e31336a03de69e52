//! The plaintext description of a test vault (`VaultSpec`), read from JSON.
//!
//! The spec holds secret-looking test values, so the `Debug` output of records and files is
//! redacted like every other secret-bearing type in the project.

use anyhow::{Context, bail, ensure};
use keeper_operator::ksm::crypto::{b64_decode, generate_uid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// A whole vault: shared folders (with sub-folders), records and the applications that see them.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultSpec {
    #[serde(default)]
    pub shared_folders: Vec<FolderSpec>,
    #[serde(default)]
    pub records: Vec<RecordSpec>,
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    /// Folder shares an app may write through ("Can Edit" in the vault). Keeper shares a folder
    /// with an application read-only unless asked, so every other share is read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub editable_shares: Vec<EditableShare>,
}

/// One app's write access to one of its shared folders (and everything below it).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EditableShare {
    pub app: String,
    pub folder: String,
}

/// A shared folder (top level) or a sub-folder (nested in `folders`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FolderSpec {
    pub uid: String,
    pub name: String,
    #[serde(default)]
    pub folders: Vec<FolderSpec>,
}

/// A record. `folderUid` places it in a shared folder or a sub-folder; without it the record
/// is in nobody's shared folder and reaches an app only when shared directly (`AppSpec.records`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordSpec {
    pub uid: String,
    pub title: String,
    #[serde(rename = "type")]
    pub record_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder_uid: Option<String>,
    /// Field objects exactly as Keeper stores them: `{"type", "label"?, "value": [..]}`.
    #[serde(default)]
    pub fields: Vec<serde_json::Value>,
    #[serde(default)]
    pub custom: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// How `get_secret` lists the record when it sits in a shared folder or sub-folder.
    #[serde(default, skip_serializing_if = "Listing::is_nested")]
    pub listing: Listing,
}

/// Where `get_secret` puts a record of a shared folder (docs/dev/protocol.md#key-hierarchy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Listing {
    /// In `folders[].records[]` of its shared folder, as the SDKs' own mocks do.
    #[default]
    Nested,
    /// In the top-level `records[]` with `innerFolderUid` naming its folder and its key wrapped
    /// by the shared folder's key: how Keeper lists records created in a shared folder by
    /// Commander or the Vault UI.
    FlatInFolder,
}

impl Listing {
    fn is_nested(&self) -> bool {
        *self == Listing::Nested
    }
}

impl fmt::Debug for RecordSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordSpec")
            .field("uid", &self.uid)
            .field("title", &self.title)
            .field("type", &self.record_type)
            .field("files", &self.files)
            .field("listing", &self.listing)
            .finish_non_exhaustive()
    }
}

/// A file attachment. Give the content as base64 (`content`) or as UTF-8 text (`text`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileSpec {
    pub uid: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl FileSpec {
    /// A file spec from raw bytes.
    pub fn from_bytes(uid: &str, name: &str, mime_type: Option<&str>, bytes: &[u8]) -> Self {
        Self {
            uid: uid.to_string(),
            name: name.to_string(),
            title: None,
            mime_type: mime_type.map(str::to_string),
            content: Some(keeper_operator::ksm::crypto::b64_std(bytes)),
            text: None,
        }
    }

    /// The decoded content.
    pub fn bytes(&self) -> anyhow::Result<Vec<u8>> {
        match (&self.content, &self.text) {
            (Some(b64), None) => {
                b64_decode(b64).with_context(|| format!("file {}: content", self.uid))
            }
            (None, Some(text)) => Ok(text.as_bytes().to_vec()),
            _ => bail!("file {}: give exactly one of content or text", self.uid),
        }
    }
}

impl fmt::Debug for FileSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSpec")
            .field("uid", &self.uid)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A Secrets Manager application: which shared folders it sees (with all their sub-folders and
/// records) and which records are shared with it directly.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub shared_folders: Vec<String>,
    #[serde(default)]
    pub records: Vec<String>,
}

/// A Keeper UID: 22 characters of base64url without padding, 16 bytes.
pub fn is_valid_uid(uid: &str) -> bool {
    uid.len() == 22
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && b64_decode(uid).is_ok_and(|bytes| bytes.len() == 16)
}

fn check_uid(kind: &str, uid: &str) -> anyhow::Result<()> {
    ensure!(
        is_valid_uid(uid),
        "{kind} uid {uid:?} is not a 22-character base64url UID"
    );
    Ok(())
}

impl VaultSpec {
    /// A vault for load tests: app `operator` sees one shared folder "Load" holding `records`
    /// login records titled `Record 0`, `Record 1`, … with random UIDs.
    pub fn generated(records: usize) -> Self {
        let folder = generate_uid();
        let records = (0..records)
            .map(|i| {
                RecordSpec::login(generate_uid(), format!("Record {i}"))
                    .in_folder(&folder)
                    .field("login", serde_json::json!([format!("user-{i}")]))
                    .password(&format!("password-{i}"))
            })
            .collect();
        VaultSpec {
            shared_folders: vec![FolderSpec {
                uid: folder.clone(),
                name: "Load".to_string(),
                folders: Vec::new(),
            }],
            records,
            apps: vec![AppSpec {
                name: "operator".to_string(),
                title: None,
                shared_folders: vec![folder],
                records: Vec::new(),
            }],
            editable_shares: Vec::new(),
        }
    }

    /// A file of any record, by file UID.
    pub fn file(&self, uid: &str) -> Option<&FileSpec> {
        self.records
            .iter()
            .flat_map(|r| r.files.iter())
            .find(|f| f.uid == uid)
    }

    /// Parses and validates a vault file.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let spec: VaultSpec = serde_json::from_str(text).context("vault JSON")?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks UIDs, uniqueness and references, so a bad vault fails at start, not mid-test.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut folder_uids = BTreeSet::new();
        fn walk(
            folders: &[FolderSpec],
            seen: &mut BTreeSet<String>,
            shared: bool,
            roots: &mut BTreeSet<String>,
        ) -> anyhow::Result<()> {
            for folder in folders {
                check_uid("folder", &folder.uid)?;
                ensure!(
                    seen.insert(folder.uid.clone()),
                    "duplicate folder uid {}",
                    folder.uid
                );
                if shared {
                    roots.insert(folder.uid.clone());
                }
                walk(&folder.folders, seen, false, roots)?;
            }
            Ok(())
        }
        let mut shared_roots = BTreeSet::new();
        walk(
            &self.shared_folders,
            &mut folder_uids,
            true,
            &mut shared_roots,
        )?;

        let mut record_uids = BTreeSet::new();
        let mut file_uids = BTreeSet::new();
        for record in &self.records {
            record.validate(|uid| folder_uids.contains(uid))?;
            ensure!(
                record_uids.insert(record.uid.clone()),
                "duplicate record uid {}",
                record.uid
            );
            for file in &record.files {
                ensure!(
                    file_uids.insert(file.uid.clone()),
                    "duplicate file uid {}",
                    file.uid
                );
            }
        }

        let mut app_names = BTreeSet::new();
        for app in &self.apps {
            ensure!(!app.name.is_empty(), "app without a name");
            ensure!(
                app_names.insert(app.name.clone()),
                "duplicate app {}",
                app.name
            );
            for folder in &app.shared_folders {
                ensure!(
                    shared_roots.contains(folder),
                    "app {}: {folder} is not a shared folder",
                    app.name
                );
            }
            for record in &app.records {
                ensure!(
                    record_uids.contains(record),
                    "app {}: unknown record {record}",
                    app.name
                );
            }
        }
        for share in &self.editable_shares {
            ensure!(
                self.apps
                    .iter()
                    .any(|a| a.name == share.app && a.shared_folders.contains(&share.folder)),
                "editable share: app {:?} does not see shared folder {}",
                share.app,
                share.folder
            );
        }
        Ok(())
    }
}

impl RecordSpec {
    /// The first value of standard field `field_type`, when it is text.
    pub fn field_text(&self, field_type: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|f| f["type"] == field_type)
            .and_then(|f| f["value"][0].as_str())
            .map(str::to_string)
    }

    /// Validates one record against the set of known folders.
    pub fn validate(&self, folder_exists: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        check_uid("record", &self.uid)?;
        if let Some(folder) = &self.folder_uid {
            ensure!(
                folder_exists(folder),
                "record {}: unknown folder {folder}",
                self.uid
            );
        }
        ensure!(
            self.listing.is_nested() || self.folder_uid.is_some(),
            "record {}: listing flatInFolder needs a folderUid",
            self.uid
        );
        for field in self.fields.iter().chain(&self.custom) {
            ensure!(
                field.get("type").is_some_and(serde_json::Value::is_string)
                    && field.get("value").is_some_and(serde_json::Value::is_array),
                "record {}: every field needs a string \"type\" and an array \"value\"",
                self.uid
            );
        }
        let mut seen = BTreeSet::new();
        for file in &self.files {
            check_uid("file", &file.uid)?;
            ensure!(
                seen.insert(&file.uid),
                "record {}: duplicate file {}",
                self.uid,
                file.uid
            );
            file.bytes()?;
        }
        Ok(())
    }
}

/// Chainable construction and editing of records for tests, new
/// (`RecordSpec::login(uid, "Title").in_folder(folder).password("x")`) or from the server
/// (`server.record(uid)?.password("rotated")`).
impl RecordSpec {
    /// A record of `record_type` with no fields, in no shared folder.
    pub fn new(uid: impl Into<String>, title: impl Into<String>, record_type: &str) -> Self {
        RecordSpec {
            uid: uid.into(),
            title: title.into(),
            record_type: record_type.to_string(),
            folder_uid: None,
            fields: Vec::new(),
            custom: Vec::new(),
            notes: None,
            files: Vec::new(),
            listing: Listing::Nested,
        }
    }

    /// A `login` record with no fields, in no shared folder.
    pub fn login(uid: impl Into<String>, title: impl Into<String>) -> Self {
        Self::new(uid, title, "login")
    }

    /// A new record with this one's content, under another UID and title.
    pub fn copy_as(mut self, uid: impl Into<String>, title: impl Into<String>) -> Self {
        self.uid = uid.into();
        self.title = title.into();
        self
    }

    pub fn in_folder(mut self, folder_uid: &str) -> Self {
        self.folder_uid = Some(folder_uid.to_string());
        self
    }

    pub fn listed(mut self, listing: Listing) -> Self {
        self.listing = listing;
        self
    }

    /// Standard field `field_type` holds `value` (a JSON array): every field of that type is
    /// set, as an edit in the vault would, or a new one is appended.
    pub fn field(mut self, field_type: &str, value: serde_json::Value) -> Self {
        let mut found = false;
        for field in self.fields.iter_mut().filter(|f| f["type"] == field_type) {
            field["value"] = value.clone();
            found = true;
        }
        if !found {
            self.fields
                .push(serde_json::json!({ "type": field_type, "value": value }));
        }
        self
    }

    /// The password field holds `password`.
    pub fn password(self, password: &str) -> Self {
        self.field("password", serde_json::json!([password]))
    }

    /// Appends custom field `field_type` labelled `label` holding `value` (a JSON array).
    pub fn custom(mut self, field_type: &str, label: &str, value: serde_json::Value) -> Self {
        self.custom
            .push(serde_json::json!({ "type": field_type, "label": label, "value": value }));
        self
    }

    /// Attaches `file`; the vault lists it in the record's `fileRef` field.
    pub fn file(mut self, file: FileSpec) -> Self {
        self.files.push(file);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_must_be_22_char_base64url() {
        assert!(is_valid_uid("y6FBhg7C-wy2zaM0-ouI-Q"));
        assert!(!is_valid_uid("y6FBhg7C-wy2zaM0-ouI-"));
        assert!(!is_valid_uid("y6FBhg7C+wy2zaM0/ouI-Q"));
        assert!(!is_valid_uid("y6FBhg7C-wy2zaM0-ouI-Q="));
    }

    #[test]
    fn rejects_unknown_references() {
        let spec = VaultSpec::from_json(
            r#"{"records":[{"uid":"Ue8h6JyWUs7Iu6eY_mha-w","title":"a","type":"login",
                 "folderUid":"y6FBhg7C-wy2zaM0-ouI-Q"}]}"#,
        );
        assert!(spec.is_err());
        let spec = VaultSpec::from_json(r#"{"apps":[{"name":"a","records":["x"]}]}"#);
        assert!(spec.is_err());
    }

    #[test]
    fn flat_listing_needs_a_folder() {
        let flat = r#"{"records":[{"uid":"Ue8h6JyWUs7Iu6eY_mha-w","title":"a","type":"login",
                 "listing":"flatInFolder"}]}"#;
        let err = VaultSpec::from_json(flat).err().map(|e| format!("{e:#}"));
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("flatInFolder needs a folderUid")),
            "{err:?}"
        );
        let spec = VaultSpec::from_json(
            r#"{"sharedFolders":[{"uid":"y6FBhg7C-wy2zaM0-ouI-Q","name":"S"}],
                "records":[{"uid":"Ue8h6JyWUs7Iu6eY_mha-w","title":"a","type":"login",
                 "folderUid":"y6FBhg7C-wy2zaM0-ouI-Q","listing":"flatInFolder"}]}"#,
        )
        .unwrap();
        assert_eq!(spec.records[0].listing, Listing::FlatInFolder);
    }

    #[test]
    fn the_builder_makes_what_the_json_form_says() {
        let built = RecordSpec::login("Ue8h6JyWUs7Iu6eY_mha-w", "t")
            .in_folder("y6FBhg7C-wy2zaM0-ouI-Q")
            .field("login", serde_json::json!(["admin"]))
            .password("first")
            .custom("pinCode", "PIN", serde_json::json!([1234]))
            .password("second");
        let parsed: RecordSpec = serde_json::from_str(
            r#"{"uid":"Ue8h6JyWUs7Iu6eY_mha-w","title":"t","type":"login",
                "folderUid":"y6FBhg7C-wy2zaM0-ouI-Q",
                "fields":[{"type":"login","value":["admin"]},{"type":"password","value":["second"]}],
                "custom":[{"type":"pinCode","label":"PIN","value":[1234]}]}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&built).unwrap(),
            serde_json::to_value(&parsed).unwrap()
        );
    }

    #[test]
    fn debug_hides_field_values() {
        let record: RecordSpec = serde_json::from_str(
            r#"{"uid":"Ue8h6JyWUs7Iu6eY_mha-w","title":"t","type":"login",
                "fields":[{"type":"password","value":["hunter2"]}]}"#,
        )
        .unwrap();
        assert!(!format!("{record:?}").contains("hunter2"));
    }
}
