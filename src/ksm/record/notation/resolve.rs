//! Resolving a parsed notation against decrypted records
//! (docs/dev/protocol.md#notation-resolution).

use super::{FieldKind, Notation, NotationError, NotationValue, Selector};
use crate::ksm::record::{Record, find_field};
use serde_json::Value;

/// `^[A-Za-z0-9_-]{22}$`: the shape of a record UID (16 bytes, base64url).
pub fn is_uid_shaped(text: &str) -> bool {
    text.len() == 22
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The record lookup rule shared by notation and the controller: a UID-shaped selector is
/// tried as a UID first; otherwise (or when no UID matches) the exact title is matched, and
/// more than one record with that title is `AmbiguousTitle`, never a guess.
pub fn find_record<'a>(records: &'a [Record], selector: &str) -> Result<&'a Record, NotationError> {
    if is_uid_shaped(selector)
        && let Some(record) = records.iter().find(|r| r.uid == selector)
    {
        return Ok(record);
    }
    let mut matches = records.iter().filter(|r| r.title == selector);
    let Some(first) = matches.next() else {
        return Err(NotationError::RecordNotFound(selector.to_string()));
    };
    // The same record may be delivered twice (shared through two folders): count UIDs.
    let mut uids: Vec<&str> = vec![&first.uid];
    for other in matches {
        if !uids.contains(&other.uid.as_str()) {
            uids.push(&other.uid);
        }
    }
    if uids.len() > 1 {
        return Err(NotationError::AmbiguousTitle {
            title: selector.to_string(),
            count: uids.len(),
        });
    }
    Ok(first)
}

fn to_value(value: &Value) -> NotationValue {
    match value {
        Value::String(text) => NotationValue::Text(text.clone()),
        other => NotationValue::Json(other.clone()),
    }
}

fn resolve_field(
    record: &Record,
    kind: FieldKind,
    name: &str,
    index: Option<usize>,
    property: Option<&str>,
) -> Result<Vec<NotationValue>, NotationError> {
    let fields = match kind {
        FieldKind::Standard => &record.fields,
        FieldKind::Custom => &record.custom,
    };
    let field =
        find_field(fields, name).ok_or_else(|| NotationError::FieldNotFound(name.to_string()))?;
    let selected: &[Value] = match index {
        None => &field.value,
        Some(i) => {
            let one = field
                .value
                .get(i)
                .ok_or_else(|| NotationError::IndexOutOfRange {
                    field: name.to_string(),
                    index: i,
                    len: field.value.len(),
                })?;
            std::slice::from_ref(one)
        }
    };
    let Some(property) = property else {
        return Ok(selected.iter().map(to_value).collect());
    };
    // Values without the property are skipped (as the SDKs do); none at all is an error so a
    // typo never resolves to an empty secret.
    let found: Vec<NotationValue> = selected
        .iter()
        .filter_map(|v| v.as_object()?.get(property))
        .map(to_value)
        .collect();
    if found.is_empty() {
        return Err(NotationError::PropertyNotFound {
            field: name.to_string(),
            property: property.to_string(),
        });
    }
    Ok(found)
}

/// Resolves `notation` against `records` (as returned by `get_secrets`). Field selectors
/// give all values without an index or with `[]`, one value with `[N]`; file selectors give
/// the one matching file, to be downloaded by the caller.
pub fn resolve(
    records: &[Record],
    notation: &Notation,
) -> Result<Vec<NotationValue>, NotationError> {
    let record = find_record(records, &notation.record)?;
    match &notation.selector {
        Selector::Type => Ok(vec![NotationValue::Text(record.record_type.clone())]),
        Selector::Title => Ok(vec![NotationValue::Text(record.title.clone())]),
        Selector::Notes => Ok(record
            .notes
            .iter()
            .cloned()
            .map(NotationValue::Text)
            .collect()),
        Selector::Field {
            kind,
            name,
            index,
            property,
        } => resolve_field(record, *kind, name, *index, property.as_deref()),
        Selector::File(name) => {
            let matches: Vec<_> = record
                .files
                .iter()
                .filter(|f| f.name == *name || f.title == *name || f.uid == *name)
                .collect();
            match matches.as_slice() {
                [] => Err(NotationError::FileNotFound(name.clone())),
                [file] => Ok(vec![NotationValue::File((*file).clone())]),
                many => Err(NotationError::AmbiguousFile {
                    name: name.clone(),
                    count: many.len(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ksm::crypto::AesKey;
    use crate::ksm::record::{Field, KeeperFile};
    use serde_json::json;

    const UID_A: &str = "6ya_fdc6XTsZ7i7x9Jcodg";
    const UID_B: &str = "Ue8h6JyWUs7Iu6eY_mha-w";
    const UID_C: &str = "ZUx3UkTzy2pgLFHNTiMMUw";

    fn field(field_type: &str, label: Option<&str>, value: Vec<Value>) -> Field {
        Field {
            field_type: field_type.into(),
            label: label.map(Into::into),
            value,
        }
    }

    fn file(uid: &str, name: &str, title: &str) -> KeeperFile {
        KeeperFile {
            uid: uid.into(),
            name: name.into(),
            title: title.into(),
            mime_type: Some("text/plain".into()),
            size: Some(4),
            url: None,
            key: AesKey::random(),
        }
    }

    fn record(uid: &str, title: &str) -> Record {
        Record {
            uid: uid.into(),
            title: title.into(),
            record_type: "login".into(),
            revision: 7,
            folder_uid: None,
            inner_folder_uid: None,
            fields: vec![
                field("login", None, vec![json!("admin")]),
                field("password", None, vec![json!("pw1"), json!("pw2")]),
                field(
                    "name",
                    None,
                    vec![
                        json!({"first":"Ada","last":"Lovelace"}),
                        json!({"first":"Bob"}),
                    ],
                ),
                field("date", Some("Born"), vec![json!(1_700_000_000_000i64)]),
            ],
            custom: vec![
                field("text", Some("API Key"), vec![json!("k1")]),
                field("text", Some("dup"), vec![json!("first")]),
                field("text", Some("dup"), vec![json!("second")]),
                field(
                    "phone",
                    Some("Phone"),
                    vec![json!({"number":"555","ext":"1"})],
                ),
            ],
            notes: Some("line1\nline2".into()),
            files: vec![
                file("fileuid1", "cert.pem", "Certificate"),
                file("fileuid2", "key.pem", "Certificate"),
            ],
        }
    }

    fn run(records: &[Record], text: &str) -> Result<Vec<NotationValue>, NotationError> {
        resolve(records, &text.parse()?)
    }

    fn texts(values: Vec<NotationValue>) -> Vec<String> {
        values.iter().filter_map(NotationValue::to_text).collect()
    }

    #[test]
    fn fields_indexes_and_properties() {
        let records = vec![record(UID_A, "Web")];
        let t = |s| texts(run(&records, s).unwrap());
        assert_eq!(t("keeper://Web/field/login"), ["admin"]);
        assert_eq!(t("Web/field/password"), ["pw1", "pw2"]);
        assert_eq!(t("Web/field/password[]"), ["pw1", "pw2"]);
        assert_eq!(t("Web/field/password[1]"), ["pw2"]);
        assert_eq!(
            t("Web/field/name[0]"),
            [r#"{"first":"Ada","last":"Lovelace"}"#]
        );
        assert_eq!(t("Web/field/name[][last]"), ["Lovelace"]);
        assert_eq!(t("Web/field/name[1][first]"), ["Bob"]);
        // The property as the only bracket: of the first value, as the SDKs' getter answers.
        assert_eq!(t("Web/field/name[first]"), ["Ada"]);
        assert_eq!(t("Web/field/name[last]"), ["Lovelace"]);
        assert_eq!(t("Web/custom_field/Phone[number]"), ["555"]);
        assert_eq!(t("Web/field/Born"), ["1700000000000"]);
        assert_eq!(t("Web/custom_field/API Key"), ["k1"]);
        assert_eq!(t("Web/custom_field/Phone[0][number]"), ["555"]);
        assert_eq!(t("Web/custom_field/dup"), ["first"]);
        assert_eq!(t("Web/type"), ["login"]);
        assert_eq!(t("Web/title"), ["Web"]);
        assert_eq!(t("Web/notes"), ["line1\nline2"]);
        assert_eq!(
            run(&records, "Web/field/password[2]"),
            Err(NotationError::IndexOutOfRange {
                field: "password".into(),
                index: 2,
                len: 2
            })
        );
        assert!(matches!(
            run(&records, "Web/field/name[1][last]"),
            Err(NotationError::PropertyNotFound { .. })
        ));
        // Custom fields are not searched by `field/` and vice versa.
        assert_eq!(
            run(&records, "Web/field/API Key"),
            Err(NotationError::FieldNotFound("API Key".into()))
        );
        assert!(run(&records, "Web/custom_field/login").is_err());
    }

    #[test]
    fn records_by_uid_then_title_and_ambiguity() {
        let mut records = vec![record(UID_A, "Same"), record(UID_B, "Same")];
        assert_eq!(
            texts(run(&records, &format!("{UID_A}/title")).unwrap()),
            ["Same"]
        );
        let err = run(&records, "Same/title").unwrap_err();
        assert_eq!(
            err,
            NotationError::AmbiguousTitle {
                title: "Same".into(),
                count: 2
            }
        );
        assert_eq!(err.reason(), "AmbiguousTitle");
        // A UID-shaped title that is not a UID falls back to the title.
        records.push(record(UID_C, "AAAAAAAAAAAAAAAAAAAAAA"));
        assert_eq!(
            texts(run(&records, "AAAAAAAAAAAAAAAAAAAAAA/type").unwrap()),
            ["login"]
        );
        // The same record delivered twice is not ambiguous.
        let twice = vec![record(UID_A, "Once"), record(UID_A, "Once")];
        assert!(run(&twice, "Once/type").is_ok());
        assert_eq!(
            run(&records, "Nope/type").unwrap_err().reason(),
            "RecordNotFound"
        );
    }

    #[test]
    fn files_by_name_title_or_uid() {
        let records = vec![record(UID_A, "Web")];
        let one = |s| match run(&records, s).unwrap().as_slice() {
            [NotationValue::File(f)] => f.uid.clone(),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(one("Web/file/cert.pem"), "fileuid1");
        assert_eq!(one("Web/file/fileuid2"), "fileuid2");
        assert!(matches!(
            run(&records, "Web/file/Certificate"),
            Err(NotationError::AmbiguousFile { count: 2, .. })
        ));
        assert_eq!(
            run(&records, "Web/file/none.txt"),
            Err(NotationError::FileNotFound("none.txt".into()))
        );
    }

    #[test]
    fn empty_notes_give_no_value() {
        let mut r = record(UID_A, "Web");
        r.notes = None;
        assert!(run(&[r], "Web/notes").unwrap().is_empty());
    }
}
