//! PURE: what a ClusterKeeperStore lets its borrowers read (`allowedFolders`, `allowedRecords`).
//!
//! The vault is narrowed *before* mapping, so a title, a notation or a folder can only ever
//! match records the store allows. A selector naming a forbidden UID or folder outright is
//! reported as `NotAllowed` rather than `RecordNotFound`, so the tenant learns why.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::api::{ClusterKeeperStoreSpec, KeeperSecretSpec, Reason};
use crate::ksm::record::notation::{Notation, is_uid_shaped};
use crate::ksm::record::{Skipped, Vault};

/// The store's allow-lists do not cover what a KeeperSecret reads (`what`: a record or folder).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "ClusterKeeperStore {store} does not allow reading {what}; ask an administrator to add it to spec.allowedRecords or spec.allowedFolders"
)]
pub struct Denied {
    pub store: String,
    pub what: String,
}

impl Denied {
    /// Stable reason for status and metrics.
    pub fn reason(&self) -> Reason {
        Reason::NotAllowed
    }
}

/// The records and shared folders a store allows; built only when one of its lists is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    store: String,
    records: BTreeSet<String>,
    folders: BTreeSet<String>,
}

impl AllowList {
    /// `None` when the store restricts nothing (both lists empty).
    pub fn of_store(name: &str, spec: &ClusterKeeperStoreSpec) -> Option<AllowList> {
        if spec.allowed_records.is_empty() && spec.allowed_folders.is_empty() {
            return None;
        }
        Some(AllowList {
            store: name.to_string(),
            records: spec.allowed_records.iter().cloned().collect(),
            folders: spec.allowed_folders.iter().cloned().collect(),
        })
    }

    /// UIDs of the records in `vault` this list allows: listed by UID, or delivered through an
    /// allowed shared folder (a record shared through several folders needs only one).
    fn readable<'v>(&self, vault: &'v Vault) -> BTreeSet<&'v str> {
        vault
            .records
            .iter()
            .filter(|r| {
                self.records.contains(&r.uid)
                    || r.folder_uid
                        .as_ref()
                        .is_some_and(|f| self.folders.contains(f))
            })
            .map(|r| r.uid.as_str())
            .collect()
    }

    /// The undecryptable entries this list could have let a borrower read; others are not
    /// named to it at all.
    fn skipped(&self, skipped: &Skipped, readable: &BTreeSet<&str>) -> Skipped {
        Skipped {
            records: skipped
                .records
                .intersection(&self.records)
                .cloned()
                .collect(),
            folders: skipped
                .folders
                .intersection(&self.folders)
                .cloned()
                .collect(),
            files_of: skipped
                .files_of
                .iter()
                .filter(|uid| readable.contains(uid.as_str()))
                .cloned()
                .collect(),
            unnamed: skipped.unnamed,
        }
    }

    fn denied(&self, what: String) -> Denied {
        Denied {
            store: self.store.clone(),
            what,
        }
    }
}

/// The part of `vault` that `spec` may read through a store with `allow`, or `NotAllowed`
/// naming the first forbidden record UID or folder UID the spec selects explicitly.
pub(crate) fn restrict<'v>(
    allow: Option<&AllowList>,
    spec: &KeeperSecretSpec,
    vault: &'v Vault,
) -> Result<Cow<'v, Vault>, Denied> {
    let Some(allow) = allow else {
        return Ok(Cow::Borrowed(vault));
    };
    let readable = allow.readable(vault);
    // An explicit `uid` selector is judged without looking the record up, so a tenant cannot
    // probe which UIDs exist: unlisted and not in an allowed folder is NotAllowed either way.
    let explicit = spec
        .data
        .iter()
        .filter_map(|d| d.record.as_ref())
        .chain(spec.data_from.iter().filter_map(|d| d.record.as_ref()))
        .filter_map(|sel| sel.uid.as_deref());
    for uid in explicit {
        if !readable.contains(uid) && !allow.records.contains(uid) {
            return Err(allow.denied(format!("record {uid}")));
        }
    }
    // A notation names a UID or a title. A UID-shaped name that is neither a readable record's
    // UID or title nor listed is refused whether or not such a record exists (so existence
    // cannot be probed); anything else is resolved against the narrowed vault, where titles of
    // forbidden records never match.
    let notations = spec
        .data
        .iter()
        .filter_map(|d| d.notation.as_deref()?.parse::<Notation>().ok());
    for n in notations {
        let name = n.record.as_str();
        let visible = readable.contains(name)
            || allow.records.contains(name)
            || vault
                .records
                .iter()
                .any(|r| r.title == name && readable.contains(r.uid.as_str()));
        if is_uid_shaped(name) && !visible {
            return Err(allow.denied(format!("record {name}")));
        }
    }
    for folder in spec.data_from.iter().filter_map(|d| d.folder.as_ref()) {
        if !allow.folders.contains(&folder.uid) {
            return Err(allow.denied(format!("shared folder {}", folder.uid)));
        }
    }
    Ok(Cow::Owned(Vault {
        records: vault
            .records
            .iter()
            .filter(|r| readable.contains(r.uid.as_str()))
            .cloned()
            .collect(),
        folders: vault
            .folders
            .iter()
            .filter(|f| allow.folders.contains(&f.uid))
            .cloned()
            .collect(),
        warnings: vault.warnings.clone(),
        skipped: allow.skipped(&vault.skipped, &readable),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DataFromItem, DataItem, FolderSelector, RecordSelector, SecretKeyRef};
    use crate::ksm::record::{Record, SharedFolder};
    use crate::sync::mapping::{self, MappingError};

    const A: &str = "AAAAAAAAAAAAAAAAAAAAAA";
    const B: &str = "BBBBBBBBBBBBBBBBBBBBBB";
    const DIRECT: &str = "DDDDDDDDDDDDDDDDDDDDDD";
    const MISSING: &str = "MMMMMMMMMMMMMMMMMMMMMM";
    const FOLDER_A: &str = "FaFaFaFaFaFaFaFaFaFaFa";
    const FOLDER_B: &str = "FbFbFbFbFbFbFbFbFbFbFb";

    fn record(uid: &str, title: &str, folder: Option<&str>) -> Record {
        Record {
            uid: uid.into(),
            title: title.into(),
            record_type: "login".into(),
            revision: 1,
            folder_uid: folder.map(Into::into),
            inner_folder_uid: None,
            fields: vec![crate::ksm::record::Field {
                field_type: "password".into(),
                label: None,
                value: vec![serde_json::json!(format!("pw-of-{title}"))],
            }],
            custom: vec![],
            notes: None,
            files: vec![],
        }
    }

    fn vault() -> Vault {
        let folder = |uid: &str| SharedFolder {
            uid: uid.into(),
            name: None,
            parent_uid: None,
        };
        Vault {
            records: vec![
                record(A, "Shared", Some(FOLDER_A)),
                // Same title as the allowed one, in a forbidden folder.
                record(B, "Shared", Some(FOLDER_B)),
                record(DIRECT, "Direct", None),
            ],
            folders: vec![folder(FOLDER_A), folder(FOLDER_B)],
            ..Vault::default()
        }
    }

    fn allow(records: &[&str], folders: &[&str]) -> Option<AllowList> {
        AllowList::of_store(
            "shared",
            &ClusterKeeperStoreSpec {
                credentials_secret_ref: SecretKeyRef {
                    name: "ksm".into(),
                    key: "config".into(),
                },
                namespace_selector: None,
                namespaces: vec![],
                allowed_folders: folders.iter().map(|s| s.to_string()).collect(),
                allowed_records: records.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    fn by_uid(uid: &str) -> RecordSelector {
        RecordSelector {
            uid: Some(uid.into()),
            title: None,
        }
    }

    fn field(key: &str, record: RecordSelector) -> DataItem {
        DataItem {
            key: key.into(),
            notation: None,
            record: Some(record),
            field: Some("password".into()),
            custom: None,
            property: None,
            file: None,
            decoding_strategy: None,
        }
    }

    fn notation(key: &str, text: &str) -> DataItem {
        DataItem {
            key: key.into(),
            notation: Some(text.into()),
            record: None,
            field: None,
            custom: None,
            property: None,
            file: None,
            decoding_strategy: None,
        }
    }

    fn from_folder(uid: &str) -> DataFromItem {
        DataFromItem {
            record: None,
            folder: Some(FolderSelector { uid: uid.into() }),
            prefix: None,
            duplicate_keys: Default::default(),
            decoding_strategy: None,
        }
    }

    fn spec(data: Vec<DataItem>, data_from: Vec<DataFromItem>) -> KeeperSecretSpec {
        KeeperSecretSpec {
            data,
            data_from,
            ..KeeperSecretSpec::default()
        }
    }

    fn denial(allow: Option<&AllowList>, spec: &KeeperSecretSpec) -> String {
        let v = vault();
        let e = restrict(allow, spec, &v).unwrap_err();
        assert_eq!(e.reason(), "NotAllowed");
        let msg = e.to_string();
        assert!(!msg.contains("pw-of-"), "{msg}");
        msg
    }

    #[test]
    fn empty_lists_restrict_nothing() {
        assert_eq!(allow(&[], &[]), None);
        let v = vault();
        let s = spec(vec![field("b", by_uid(B))], vec![]);
        assert!(matches!(restrict(None, &s, &v).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn records_are_readable_by_uid_or_through_an_allowed_folder() {
        let allow = allow(&[DIRECT], &[FOLDER_A]);
        let v = vault();
        let s = spec(
            vec![field("a", by_uid(A)), field("d", by_uid(DIRECT))],
            vec![from_folder(FOLDER_A)],
        );
        let narrowed = restrict(allow.as_ref(), &s, &v).unwrap();
        let uids: Vec<&str> = narrowed.records.iter().map(|r| r.uid.as_str()).collect();
        assert_eq!(uids, [A, DIRECT]);
        assert_eq!(narrowed.folders.len(), 1);
        let plan = mapping::plan(&s, &narrowed).unwrap();
        assert_eq!(
            plan.entries.keys().collect::<Vec<_>>(),
            ["Shared_password", "a", "d"]
        );
    }

    #[test]
    fn a_forbidden_uid_or_folder_is_not_allowed_and_named() {
        let allow = allow(&[DIRECT], &[FOLDER_A]);
        let msg = denial(allow.as_ref(), &spec(vec![field("b", by_uid(B))], vec![]));
        assert!(msg.contains(&format!("record {B}")), "{msg}");
        assert!(msg.contains("ClusterKeeperStore shared"), "{msg}");
        let msg = denial(
            allow.as_ref(),
            &spec(
                vec![notation("b", &format!("keeper://{B}/field/password"))],
                vec![],
            ),
        );
        assert!(msg.contains(&format!("record {B}")), "{msg}");
        let msg = denial(allow.as_ref(), &spec(vec![], vec![from_folder(FOLDER_B)]));
        assert!(msg.contains(&format!("shared folder {FOLDER_B}")), "{msg}");
        let whole = DataFromItem {
            record: Some(by_uid(B)),
            folder: None,
            prefix: None,
            duplicate_keys: Default::default(),
            decoding_strategy: None,
        };
        denial(allow.as_ref(), &spec(vec![], vec![whole]));
        // A UID that does not exist is refused the same way, so existence cannot be probed,
        // by selector and by notation alike.
        let msg = denial(
            allow.as_ref(),
            &spec(vec![field("m", by_uid(MISSING))], vec![]),
        );
        assert!(msg.contains(MISSING), "{msg}");
        let by_notation = |uid: &str| {
            denial(
                allow.as_ref(),
                &spec(
                    vec![notation("x", &format!("keeper://{uid}/field/password"))],
                    vec![],
                ),
            )
        };
        let existing = by_notation(B);
        let missing = by_notation(MISSING);
        assert_eq!(existing.replace(B, "UID"), missing.replace(MISSING, "UID"));
    }

    #[test]
    fn a_listed_uid_that_is_missing_is_record_not_found() {
        let allow = allow(&[MISSING], &[]);
        let v = vault();
        let s = spec(vec![field("m", by_uid(MISSING))], vec![]);
        let narrowed = restrict(allow.as_ref(), &s, &v).unwrap();
        assert!(matches!(
            mapping::plan(&s, &narrowed),
            Err(MappingError::RecordNotFound(_))
        ));
    }

    #[test]
    fn titles_only_match_allowed_records() {
        // Two records are titled "Shared"; only the one in the allowed folder is visible, so the
        // title is unambiguous and resolves to it, by selector and by notation alike.
        let allow = allow(&[], &[FOLDER_A]);
        let v = vault();
        let title = RecordSelector {
            uid: None,
            title: Some("Shared".into()),
        };
        let s = spec(
            vec![
                field("t", title),
                notation("n", "keeper://Shared/field/password"),
            ],
            vec![],
        );
        let narrowed = restrict(allow.as_ref(), &s, &v).unwrap();
        let plan = mapping::plan(&s, &narrowed).unwrap();
        assert_eq!(
            plan.records
                .iter()
                .map(|r| r.uid.as_str())
                .collect::<Vec<_>>(),
            [A]
        );
        // A title that only a forbidden record has is simply not found.
        let s = spec(
            vec![notation("d", "keeper://Direct/field/password")],
            vec![],
        );
        let narrowed = restrict(allow.as_ref(), &s, &v).unwrap();
        assert!(mapping::plan(&s, &narrowed).is_err());
    }
}
