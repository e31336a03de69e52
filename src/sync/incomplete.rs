//! PURE: refuses to build a Secret from a Keeper answer that lost entries the KeeperSecret
//! would read.
//!
//! A record, shared folder or file that does not decrypt is left out of the vault (see
//! `ksm::response`). Without this check a `dataFrom.folder` Secret would silently lose
//! that record's keys, and a selector would report a missing record that is really broken.
//! The sync fails instead, so the Secret keeps its last good data and the status names the UIDs.

use crate::api::{KeeperSecretSpec, Reason};
use crate::ksm::record::{Skipped, Vault};
use crate::sync::mapping::{KeyMap, MappingError};

/// Why there is no plan to build from.
#[derive(Debug, thiserror::Error)]
pub enum Incomplete {
    /// The mapping failed on what did decrypt.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// Entries the KeeperSecret may read did not decrypt (listed, by UID).
    #[error(
        "Keeper's answer held {0} that did not decrypt and this KeeperSecret may read; the Secret keeps its last good data"
    )]
    Undecryptable(String),
}

impl Incomplete {
    /// Stable reason for status and metrics: an undecryptable entry is an invalid response, as
    /// when Keeper's answer does not decrypt as a whole.
    pub fn reason(&self) -> Reason {
        match self {
            Incomplete::Mapping(e) => e.reason(),
            Incomplete::Undecryptable(_) => Reason::InvalidResponse,
        }
    }
}

/// `plan` (the mapping of `spec` onto `vault`), unless it may be missing something that was in
/// Keeper's answer but did not decrypt.
pub fn check(
    spec: &KeeperSecretSpec,
    vault: &Vault,
    plan: Result<KeyMap, MappingError>,
) -> Result<KeyMap, Incomplete> {
    let skipped = &vault.skipped;
    if skipped.is_empty() {
        return Ok(plan?);
    }
    let plan = match plan {
        // A selector that found nothing may have meant an entry that did not decrypt.
        Err(e) if e.reason().is_missing_reference() => return Err(undecryptable(skipped)),
        plan => plan?,
    };
    // Whole-folder and whole-record mappings succeed without the lost entries: refuse them.
    let folder_lost = spec
        .data_from
        .iter()
        .filter_map(|d| d.folder.as_ref())
        .any(|f| skipped.unnamed || skipped.folders.contains(&f.uid));
    let files_lost = spec
        .data_from
        .iter()
        .filter_map(|d| d.record.as_ref())
        .any(|sel| {
            vault.records.iter().any(|r| {
                skipped.files_of.contains(&r.uid)
                    && (sel.uid.as_deref() == Some(&r.uid)
                        || sel.title.as_deref() == Some(&r.title))
            })
        });
    if folder_lost || files_lost {
        return Err(undecryptable(skipped));
    }
    Ok(plan)
}

fn undecryptable(skipped: &Skipped) -> Incomplete {
    let mut parts = Vec::new();
    let list = |set: &std::collections::BTreeSet<String>| {
        const SHOWN: usize = 5;
        let mut text: Vec<&str> = set.iter().map(String::as_str).take(SHOWN).collect();
        if set.len() > SHOWN {
            text.push("...");
        }
        text.join(", ")
    };
    if !skipped.records.is_empty() {
        parts.push(format!("records {}", list(&skipped.records)));
    }
    if !skipped.folders.is_empty() {
        parts.push(format!("shared folders {}", list(&skipped.folders)));
    }
    if !skipped.files_of.is_empty() {
        parts.push(format!("files of records {}", list(&skipped.files_of)));
    }
    if skipped.unnamed {
        parts.push("entries without a UID".to_string());
    }
    Incomplete::Undecryptable(parts.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ksm::record::{Field, Record};
    use crate::sync::mapping;

    const KEPT: &str = "KKKKKKKKKKKKKKKKKKKKKK";
    const LOST: &str = "LLLLLLLLLLLLLLLLLLLLLL";
    const FOLDER: &str = "FFFFFFFFFFFFFFFFFFFFFF";

    fn vault(skipped: Skipped) -> Vault {
        Vault {
            records: vec![Record {
                uid: KEPT.into(),
                title: "Kept".into(),
                record_type: "login".into(),
                revision: 1,
                folder_uid: Some(FOLDER.into()),
                inner_folder_uid: None,
                fields: vec![Field {
                    field_type: "password".into(),
                    label: None,
                    value: vec![serde_json::json!("kept-password")],
                }],
                custom: vec![],
                notes: None,
                files: vec![],
            }],
            skipped,
            ..Vault::default()
        }
    }

    fn lost_in_folder() -> Skipped {
        Skipped {
            records: [LOST.to_string()].into(),
            folders: [FOLDER.to_string()].into(),
            ..Skipped::default()
        }
    }

    fn spec(json: serde_json::Value) -> KeeperSecretSpec {
        let mut spec = serde_json::json!({"auth": {"secretRef": {"name": "k", "key": "c"}}});
        spec.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        serde_json::from_value(spec).unwrap()
    }

    fn checked(spec: &KeeperSecretSpec, vault: &Vault) -> Result<KeyMap, Incomplete> {
        check(spec, vault, mapping::plan(spec, vault))
    }

    #[test]
    fn a_folder_that_lost_a_record_is_not_synced_short() {
        let s = spec(serde_json::json!({"dataFrom": [{"folder": {"uid": FOLDER}}]}));
        assert!(checked(&s, &vault(Skipped::default())).is_ok());
        let err = checked(&s, &vault(lost_in_folder())).unwrap_err();
        assert_eq!(err.reason(), "InvalidResponse");
        let text = err.to_string();
        assert!(text.contains(LOST) && text.contains(FOLDER), "{text}");
        assert!(text.contains("keeps its last good data"), "{text}");
    }

    #[test]
    fn a_missing_record_that_may_be_the_lost_one_is_reported_as_undecryptable() {
        let s = spec(serde_json::json!({"data": [
            {"key": "pw", "notation": format!("keeper://{LOST}/field/password")}
        ]}));
        assert_eq!(
            checked(&s, &vault(Skipped::default()))
                .unwrap_err()
                .reason(),
            "RecordNotFound"
        );
        assert_eq!(
            checked(&s, &vault(lost_in_folder())).unwrap_err().reason(),
            "InvalidResponse"
        );
    }

    #[test]
    fn records_that_decrypted_still_sync_next_to_a_lost_one() {
        let s = spec(serde_json::json!({"data": [
            {"key": "pw", "notation": format!("keeper://{KEPT}/field/password")}
        ]}));
        assert!(checked(&s, &vault(lost_in_folder())).is_ok());
    }

    #[test]
    fn a_whole_record_whose_file_was_lost_is_not_synced_short() {
        let lost_file = Skipped {
            files_of: [KEPT.to_string()].into(),
            ..Skipped::default()
        };
        let s = spec(serde_json::json!({"dataFrom": [{"record": {"title": "Kept"}}]}));
        assert_eq!(
            checked(&s, &vault(lost_file)).unwrap_err().reason(),
            "InvalidResponse"
        );
    }
}
