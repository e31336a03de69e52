//! Response decoding on synthetic responses built the way Keeper encrypts them.

use super::*;
use crate::ksm::crypto::{aes_cbc_encrypt, aes_gcm_encrypt, b64_std, b64_url};
use proptest::prelude::*;
use serde_json::json;

const FOLDER: &str = "y6FBhg7C-wy2zaM0-ouI-Q";
const SUB: &str = "ZUx3UkTzy2pgLFHNTiMMUw";
const SUB2: &str = "Zc2cqZrGy0bH0DzsBQ2kxg";

/// Pads like the real vault (docs/dev/protocol.md#encodings) so the decoder must tolerate trailing
/// spaces.
fn padded(value: &Value) -> Vec<u8> {
    let mut text = value.to_string().into_bytes();
    text.resize(text.len().div_ceil(128) * 128 + 16, b' ');
    text
}

fn wrap(wrapping: &AesKey, key: &AesKey) -> String {
    b64_std(&aes_gcm_encrypt(wrapping, key.as_bytes()))
}

fn file_entry(record_key: &AesKey, uid: &str, name: &str) -> Value {
    let file_key = AesKey::random();
    let meta = json!({"name": name, "title": format!("{name} title"), "type": "text/plain",
                      "size": 5, "lastModified": 1});
    json!({"fileUid": uid, "fileKey": wrap(record_key, &file_key),
           "data": b64_std(&aes_gcm_encrypt(&file_key, &padded(&meta))),
           "url": format!("https://files.example/{uid}"), "thumbnailUrl": null})
}

fn record_entry(wrapping: &AesKey, uid: &str, title: &str, files: usize) -> Value {
    let record_key = AesKey::random();
    let data = json!({"title": title, "type": "login",
        "fields": [{"type": "login", "value": ["u"]}, {"type": "password", "value": ["p"]},
                   {"type": "name", "value": [{"first": "A", "last": "B"}]},
                   {"type": "text", "label": "single", "value": "not-a-list"},
                   {"type": "text", "label": "nothing", "value": null}],
        "custom": [{"type": "text", "label": "env", "value": ["prod"]}],
        "notes": "n"});
    let files: Vec<Value> = (0..files)
        .map(|i| file_entry(&record_key, &format!("file{i}"), &format!("f{i}.txt")))
        .collect();
    json!({"recordUid": uid, "recordKey": wrap(wrapping, &record_key),
           // url-safe, unpadded: the decoder accepts either alphabet.
           "data": b64_url(&aes_gcm_encrypt(&record_key, &padded(&data))),
           "revision": 42, "isEditable": true, "files": if files.is_empty() { Value::Null } else { json!(files) },
           "folderUid": null, "innerFolderUid": SUB})
}

fn response(app_key: &AesKey) -> (Value, AesKey) {
    let folder_key = AesKey::random();
    let value = json!({
        "appData": null, "encryptedAppKey": null, "appOwnerPublicKey": null, "expiresOn": 0,
        "warnings": ["heads up"], "extra": null,
        "folders": [{"folderUid": FOLDER, "folderKey": wrap(app_key, &folder_key),
                     "data": null, "parent": null,
                     "records": [record_entry(&folder_key, "rec-in-folder-00000001", "In Folder", 2),
                                 record_entry(&folder_key, "rec-shared-twice-00001", "Twice", 0)]}],
        "records": [record_entry(app_key, "rec-direct-00000000001", "Direct", 0),
                    record_entry(app_key, "rec-shared-twice-00001", "Twice", 0)],
    });
    (value, folder_key)
}

#[test]
fn decodes_folders_direct_records_files_and_tolerant_values() {
    let app_key = AesKey::random();
    let (value, _) = response(&app_key);
    let vault = decode_secrets(&app_key, &padded(&value)).unwrap();
    assert_eq!(vault.warnings, ["Keeper: heads up"]);
    assert_eq!(vault.folders.len(), 1);
    let uids: Vec<_> = vault.records.iter().map(|r| r.uid.as_str()).collect();
    assert_eq!(
        uids,
        [
            "rec-in-folder-00000001",
            "rec-shared-twice-00001",
            "rec-direct-00000000001"
        ]
    );
    let in_folder = &vault.records[0];
    assert_eq!(in_folder.folder_uid.as_deref(), Some(FOLDER));
    assert_eq!(in_folder.inner_folder_uid.as_deref(), Some(SUB));
    assert_eq!(in_folder.revision, 42);
    assert_eq!(in_folder.password(), Some("p"));
    assert_eq!(
        in_folder.field("single").unwrap().value,
        [json!("not-a-list")]
    );
    assert!(in_folder.field("nothing").unwrap().value.is_empty());
    assert_eq!(in_folder.field("env").unwrap().value, [json!("prod")]);
    assert_eq!(in_folder.files.len(), 2);
    let file = &in_folder.files[1];
    assert_eq!(
        (file.uid.as_str(), file.name.as_str(), file.title.as_str()),
        ("file1", "f1.txt", "f1.txt title")
    );
    assert_eq!(file.mime_type.as_deref(), Some("text/plain"));
    assert_eq!(file.size, Some(5));
    assert_eq!(vault.records[2].folder_uid, None);
}

#[test]
fn one_bad_record_or_file_is_skipped_and_named() {
    let app_key = AesKey::random();
    let (mut value, _) = response(&app_key);
    // Record data sealed under another key; a file whose metadata is garbage.
    value["records"][0]["data"] = json!(b64_std(&aes_gcm_encrypt(&AesKey::random(), b"{}")));
    value["folders"][0]["records"][0]["files"][0]["data"] = json!("AAAA");
    let vault = decode_secrets(&app_key, &padded(&value)).unwrap();
    assert_eq!(vault.records.len(), 2);
    assert!(
        vault
            .records
            .iter()
            .all(|r| r.uid != "rec-direct-00000000001")
    );
    assert_eq!(vault.records[0].files.len(), 1);
    assert!(vault.warnings.contains(
        &"record rec-direct-00000000001 skipped: record data does not decrypt".to_string()
    ));
    assert!(
        vault
            .warnings
            .iter()
            .any(|w| w.starts_with("file file0 of record"))
    );
    assert_eq!(
        vault.skipped.records,
        ["rec-direct-00000000001".to_string()].into()
    );
    assert_eq!(vault.skipped.files_of.len(), 1);
    assert!(!vault.skipped.unnamed);
}

#[test]
fn a_bad_folder_key_skips_its_records_only() {
    let app_key = AesKey::random();
    let (mut value, _) = response(&app_key);
    value["folders"][0]["folderKey"] = json!(wrap(&AesKey::random(), &AesKey::random()));
    let vault = decode_secrets(&app_key, &padded(&value)).unwrap();
    let uids: Vec<_> = vault.records.iter().map(|r| r.uid.as_str()).collect();
    assert_eq!(uids, ["rec-direct-00000000001", "rec-shared-twice-00001"]);
    assert!(vault.warnings.iter().any(|w| w.contains(FOLDER)));
    assert_eq!(vault.skipped.folders, [FOLDER.to_string()].into());
    assert!(!vault.skipped.records.is_empty());
}

#[test]
fn missing_record_key_falls_back_to_the_app_key() {
    let app_key = AesKey::random();
    let data = json!({"title": "t", "type": "login", "fields": []});
    let value = json!({"records": [{"recordUid": "r", "revision": "7",
        "data": b64_std(&aes_gcm_encrypt(&app_key, &padded(&data)))}], "folders": null});
    let vault = decode_secrets(&app_key, value.to_string().as_bytes()).unwrap();
    assert_eq!(vault.records[0].title, "t");
    assert_eq!(vault.records[0].revision, 7);
    assert!(vault.records[0].custom.is_empty() && vault.records[0].notes.is_none());
}

#[test]
fn empty_and_non_object_bodies_are_invalid() {
    let key = AesKey::random();
    for body in [&b""[..], b"  ", b"[]", b"{", b"null"] {
        assert!(matches!(
            decode_secrets(&key, body),
            Err(KsmError::InvalidResponse(_))
        ));
    }
    let vault = decode_secrets(&key, br#"{"records":null,"folders":null}"#).unwrap();
    assert!(vault.records.is_empty() && vault.warnings.is_empty());
}

fn cbc_folder(
    uid: &str,
    key: &AesKey,
    wrapping: &AesKey,
    parent: Option<&str>,
    name: &str,
) -> Value {
    let folder_key = match parent {
        None => wrap(wrapping, key),
        Some(_) => b64_std(&aes_cbc_encrypt(wrapping, key.as_bytes())),
    };
    json!({"folderUid": uid, "folderKey": folder_key, "parent": parent,
           "data": b64_url(&aes_cbc_encrypt(key, json!({"name": name}).to_string().as_bytes()))})
}

#[test]
fn get_folders_unwraps_sub_folders_under_the_root_shared_folder_key() {
    let app_key = AesKey::random();
    let (root, sub, sub2) = (AesKey::random(), AesKey::random(), AesKey::random());
    // sub2 sits in sub, but both sub-folder keys are CBC-wrapped with the *root* key.
    let value = json!({"folders": [
        cbc_folder(SUB2, &sub2, &root, Some(SUB), "Deeper"),
        cbc_folder(FOLDER, &root, &app_key, None, "Shared"),
        cbc_folder(SUB, &sub, &root, Some(FOLDER), "Sub"),
        {"folderUid": "orphan", "folderKey": "AAAA", "parent": "missing", "data": null},
    ]});
    let folders = decode_folders(&app_key, value.to_string().as_bytes()).unwrap();
    let names: Vec<_> = folders
        .iter()
        .map(|f| (f.uid.as_str(), f.name.as_deref(), f.parent_uid.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            (SUB2, Some("Deeper"), Some(SUB)),
            (FOLDER, Some("Shared"), None),
            (SUB, Some("Sub"), Some(FOLDER)),
            ("orphan", None, Some("missing")),
        ]
    );
}

#[test]
fn get_folders_survives_parent_cycles() {
    let app_key = AesKey::random();
    let key = AesKey::random();
    let value = json!({"folders": [
        cbc_folder("a", &key, &key, Some("b"), "A"),
        cbc_folder("b", &key, &key, Some("a"), "B"),
    ]});
    let folders = decode_folders(&app_key, value.to_string().as_bytes()).unwrap();
    assert!(folders.iter().all(|f| f.name.is_none()));
}

proptest! {
    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let key = AesKey::random();
        let _ = decode_secrets(&key, &bytes);
        let _ = decode_folders(&key, &bytes);
        let _ = decode_binding(&key, &bytes);
    }

    #[test]
    fn decoders_never_panic_on_mangled_responses(
        path in 0usize..12, replacement in prop_oneof![
            Just(Value::Null), Just(json!([])), Just(json!({})), any::<i64>().prop_map(Value::from),
            "[A-Za-z0-9+/=_-]{0,90}".prop_map(Value::from)]
    ) {
        let app_key = AesKey::random();
        let (mut value, _) = response(&app_key);
        let pointer = [
            "/folders", "/folders/0", "/folders/0/folderKey", "/folders/0/records",
            "/folders/0/records/0", "/folders/0/records/0/recordKey", "/folders/0/records/0/data",
            "/folders/0/records/0/files", "/folders/0/records/0/files/0/fileKey",
            "/folders/0/records/0/files/0/data", "/records/0/revision", "/records",
        ][path];
        if let Some(slot) = value.pointer_mut(pointer) {
            *slot = replacement;
        }
        let _ = decode_secrets(&app_key, value.to_string().as_bytes());
        let _ = decode_folders(&app_key, value.to_string().as_bytes());
    }
}

/// Decrypted record data that is not valid JSON (or not an object) must not reach a warning or
/// an error: serde_json's messages can quote the input, which here is the record's content.
#[test]
fn malformed_decrypted_records_are_never_quoted() {
    const SECRET: &str = "hunter2-record-value";
    let app_key = AesKey::random();
    let bad_plaintexts = [
        format!(r#"{{"title":"t","fields":[{{"type":"password","value":["{SECRET}"]}}]"#),
        format!(r#""{SECRET}""#),
        format!(r#"{{"password": {SECRET}}}"#),
        format!(r#"{{"fields": [{{"type": "password", "value": 1e999999, "x": "{SECRET}"}}]}}"#),
        format!("[\"{SECRET}\", \u{0}]"),
    ];
    let entry = |i: usize, plaintext: &str| {
        let record_key = AesKey::random();
        json!({"recordUid": format!("rec-{i}"), "recordKey": wrap(&app_key, &record_key),
               "data": b64_std(&aes_gcm_encrypt(&record_key, plaintext.as_bytes())),
               "files": [{"fileUid": "f", "fileKey": wrap(&record_key, &record_key),
                          "data": b64_std(&aes_gcm_encrypt(&record_key, plaintext.as_bytes()))}]})
    };
    let records: Vec<Value> = bad_plaintexts
        .iter()
        .enumerate()
        .map(|(i, p)| entry(i, p))
        .collect();
    // Every record fails: the whole response is an error, and says why without content.
    let all_bad = json!({"records": records});
    let err = decode_secrets(&app_key, &padded(&all_bad)).unwrap_err();
    assert_eq!(err.reason(), "InvalidResponse");
    assert!(!format!("{err} {err:?}").contains(SECRET), "{err}");

    // With one good record the others become warnings, which must not quote them either.
    let mut mixed = records.clone();
    mixed.push(record_entry(&app_key, "rec-good-000000000001", "Good", 0));
    let vault = decode_secrets(&app_key, &padded(&json!({"records": mixed}))).unwrap();
    assert_eq!(vault.records.len(), 1);
    assert_eq!(vault.warnings.len(), bad_plaintexts.len());
    for warning in &vault.warnings {
        assert!(!warning.contains(SECRET), "{warning}");
        assert!(warning.contains("not a JSON object"), "{warning}");
    }

    // A good record whose file metadata is malformed: the file is skipped, unquoted.
    let record_key = AesKey::random();
    let data = json!({"title": "With file", "type": "file", "fields": []});
    let with_bad_file = json!({"recordUid": "rec-file", "recordKey": wrap(&app_key, &record_key),
        "data": b64_std(&aes_gcm_encrypt(&record_key, data.to_string().as_bytes())),
        "files": [{"fileUid": "f1", "fileKey": wrap(&record_key, &record_key),
                   "data": b64_std(&aes_gcm_encrypt(&record_key, bad_plaintexts[0].as_bytes()))}]});
    let vault = decode_secrets(&app_key, &padded(&json!({"records": [with_bad_file]}))).unwrap();
    assert_eq!(vault.records[0].files.len(), 0);
    assert!(
        vault.warnings.iter().all(|w| !w.contains(SECRET)),
        "{:?}",
        vault.warnings
    );

    // The transmission-level JSON itself: position only.
    let broken = format!(r#"{{"records": ["{SECRET}" "#);
    let err = decode_secrets(&app_key, broken.as_bytes()).unwrap_err();
    assert!(!err.to_string().contains(SECRET), "{err}");
    let err = decode_folders(&app_key, broken.as_bytes()).unwrap_err();
    assert!(!err.to_string().contains(SECRET), "{err}");
}

mod conformance;
