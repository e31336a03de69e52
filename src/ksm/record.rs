//! The decrypted record model: what a `get_secret` response holds once every key is unwrapped.
//!
//! `Debug` on every type here prints structure (UIDs, types, labels, counts) but never a field
//! value, a note or a key, so these types can appear in logs and error chains.

use crate::ksm::crypto::AesKey;
use std::fmt;

pub mod notation;

/// One Keeper record (docs/dev/protocol.md#records).
#[derive(Clone, PartialEq)]
pub struct Record {
    pub uid: String,
    pub title: String,
    pub record_type: String,
    pub revision: i64,
    /// The shared folder the record was delivered in; `None` when shared directly to the app.
    pub folder_uid: Option<String>,
    /// The sub-folder (inside the shared folder) the record sits in, if any.
    pub inner_folder_uid: Option<String>,
    pub fields: Vec<Field>,
    pub custom: Vec<Field>,
    pub notes: Option<String>,
    pub files: Vec<KeeperFile>,
}

/// A standard or custom field. `value` is always a list on the wire; elements are strings,
/// numbers or objects (e.g. `name`, `phone`, `host`).
#[derive(Clone, PartialEq)]
pub struct Field {
    pub field_type: String,
    pub label: Option<String>,
    pub value: Vec<serde_json::Value>,
}

/// A file attached to a record. Its content is fetched with `KsmClient::download_file`.
#[derive(Clone, PartialEq)]
pub struct KeeperFile {
    pub uid: String,
    pub name: String,
    pub title: String,
    pub mime_type: Option<String>,
    pub size: Option<u64>,
    pub url: Option<String>,
    /// Decrypts the downloaded content (unwrapped from the record key).
    pub key: AesKey,
}

/// Everything one `get_secret` call returned, decrypted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vault {
    /// Unique by UID (a record shared through several folders is listed once).
    pub records: Vec<Record>,
    /// Shared folders the response delivered (names are only known from `get_folders`).
    pub folders: Vec<SharedFolder>,
    /// Non-fatal problems: server warnings and entries skipped because they did not decrypt.
    /// They name UIDs only, never content.
    pub warnings: Vec<String>,
    /// What those skipped entries were, so a KeeperSecret that would have read one can refuse
    /// to write an incomplete Secret.
    pub skipped: Skipped,
}

/// Entries of a response that did not decrypt, by UID. Their titles and content are unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Records that did not decrypt (also every record of a shared folder whose key did not).
    pub records: std::collections::BTreeSet<String>,
    /// Shared folders that lost records this way.
    pub folders: std::collections::BTreeSet<String>,
    /// Records some of whose files did not decrypt.
    pub files_of: std::collections::BTreeSet<String>,
    /// A record or folder entry without a UID was skipped: any selector may have needed it.
    pub unnamed: bool,
}

impl Skipped {
    /// True when every entry decrypted.
    pub fn is_empty(&self) -> bool {
        *self == Skipped::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedFolder {
    pub uid: String,
    pub name: Option<String>,
    /// `None` for a shared folder; the parent folder's UID for a sub-folder.
    pub parent_uid: Option<String>,
}

impl Field {
    /// Label match (case-sensitive) or type match (case-insensitive); see [`find_field`].
    fn matches_label(&self, name: &str) -> bool {
        self.label.as_deref() == Some(name)
    }

    fn matches_type(&self, name: &str) -> bool {
        self.field_type.eq_ignore_ascii_case(name)
    }
}

/// Field lookup shared by notation and the controller: a label match (case-sensitive) wins over
/// a type match (case-insensitive); within a kind the first field in record order wins. Repeated
/// labels are therefore resolved deterministically instead of failing.
pub(crate) fn find_field<'a>(fields: &'a [Field], name: &str) -> Option<&'a Field> {
    fields
        .iter()
        .find(|f| f.matches_label(name))
        .or_else(|| fields.iter().find(|f| f.matches_type(name)))
}

impl Record {
    /// Looks a field up among the standard fields first, then the custom ones.
    pub fn field(&self, name: &str) -> Option<&Field> {
        find_field(&self.fields, name).or_else(|| find_field(&self.custom, name))
    }

    /// The first value of the `password` field, as the SDKs expose it for `login` records.
    pub fn password(&self) -> Option<&str> {
        find_field(&self.fields, "password")?
            .value
            .first()?
            .as_str()
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("uid", &self.uid)
            .field("title", &self.title)
            .field("record_type", &self.record_type)
            .field("revision", &self.revision)
            .field("folder_uid", &self.folder_uid)
            .field("inner_folder_uid", &self.inner_folder_uid)
            .field("fields", &self.fields)
            .field("custom", &self.custom)
            .field("notes", &self.notes.as_ref().map(|_| "<redacted>"))
            .field("files", &self.files)
            .finish()
    }
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Field")
            .field("field_type", &self.field_type)
            .field("label", &self.label)
            .field("values", &self.value.len())
            .finish()
    }
}

impl fmt::Debug for KeeperFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeeperFile")
            .field("uid", &self.uid)
            .field("name", &self.name)
            .field("title", &self.title)
            .field("mime_type", &self.mime_type)
            .field("size", &self.size)
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(field_type: &str, label: Option<&str>, value: &str) -> Field {
        Field {
            field_type: field_type.into(),
            label: label.map(Into::into),
            value: vec![json!(value)],
        }
    }

    #[test]
    fn label_beats_type_and_standard_beats_custom() {
        let fields = vec![
            field("password", None, "by-type"),
            field("text", Some("password"), "by-label"),
        ];
        assert_eq!(
            find_field(&fields, "password").unwrap().value[0],
            "by-label"
        );
        assert_eq!(find_field(&fields, "PASSWORD").unwrap().value[0], "by-type");
        let record = Record {
            uid: "u".into(),
            title: "t".into(),
            record_type: "login".into(),
            revision: 1,
            folder_uid: None,
            inner_folder_uid: None,
            fields: vec![field("login", None, "std")],
            custom: vec![
                field("text", Some("login"), "custom"),
                field("text", Some("x"), "x"),
            ],
            notes: Some("secret note".into()),
            files: vec![],
        };
        assert_eq!(record.field("login").unwrap().value[0], "std");
        assert_eq!(record.field("x").unwrap().value[0], "x");
        assert!(record.password().is_none());
    }

    #[test]
    fn debug_never_prints_values() {
        let record = Record {
            uid: "u".into(),
            title: "t".into(),
            record_type: "login".into(),
            revision: 1,
            folder_uid: None,
            inner_folder_uid: None,
            fields: vec![field("password", None, "hunter2")],
            custom: vec![],
            notes: Some("secret note".into()),
            files: vec![KeeperFile {
                uid: "f".into(),
                name: "a.pem".into(),
                title: "a".into(),
                mime_type: None,
                size: Some(3),
                url: Some("https://signed/?token=abc".into()),
                key: AesKey::random(),
            }],
        };
        let text = format!("{record:?}");
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("secret note"));
        assert!(!text.contains("token=abc"));
        assert!(text.contains("password"));
    }
}
