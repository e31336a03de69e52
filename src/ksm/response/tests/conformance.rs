//! Conformance table: one known answer per response shape Keeper (or an SDK's mock of it) sends,
//! each asserting the exact vault produced. docs/dev/protocol.md#response-shapes lists the rows
//! with the SDK change behind each.

use super::*;

/// What a decoded vault holds, reduced to what the rows compare: per record
/// `(uid, title, folder_uid)`, the folder UIDs, and the UIDs of skipped records and folders.
#[derive(Debug, PartialEq)]
struct Produced {
    records: Vec<(String, String, Option<String>)>,
    folders: Vec<String>,
    skipped_records: Vec<String>,
    skipped_folders: Vec<String>,
}

fn produced(vault: &Vault) -> Produced {
    Produced {
        records: vault
            .records
            .iter()
            .map(|r| (r.uid.clone(), r.title.clone(), r.folder_uid.clone()))
            .collect(),
        folders: vault.folders.iter().map(|f| f.uid.clone()).collect(),
        skipped_records: vault.skipped.records.iter().cloned().collect(),
        skipped_folders: vault.skipped.folders.iter().cloned().collect(),
    }
}

fn expect(
    records: &[(&str, &str, Option<&str>)],
    folders: &[&str],
    skipped_records: &[&str],
    skipped_folders: &[&str],
) -> Produced {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Produced {
        records: records
            .iter()
            .map(|(u, t, f)| (u.to_string(), t.to_string(), f.map(str::to_string)))
            .collect(),
        folders: own(folders),
        skipped_records: own(skipped_records),
        skipped_folders: own(skipped_folders),
    }
}

/// A record entry with the record key wrapped by `wrapping`, no folder hint.
fn rec(wrapping: &AesKey, uid: &str, title: &str) -> Value {
    let mut entry = record_entry(wrapping, uid, title, 0);
    entry["innerFolderUid"] = Value::Null;
    entry
}

/// A flat record created in a folder: key wrapped by the shared folder's key, `innerFolderUid`
/// naming where it sits.
fn flat_in(folder_key: &AesKey, uid: &str, title: &str, inner: &str) -> Value {
    let mut entry = rec(folder_key, uid, title);
    entry["innerFolderUid"] = json!(inner);
    entry
}

fn folder(app_key: &AesKey, uid: &str, key: &AesKey, records: Vec<Value>) -> Value {
    json!({"folderUid": uid, "folderKey": wrap(app_key, key), "data": null, "parent": null,
           "isEditable": false, "records": records})
}

fn decode(app_key: &AesKey, folders: Value, records: Value) -> Vault {
    let body = json!({"appData": null, "encryptedAppKey": null, "expiresOn": 0, "warnings": null,
                      "folders": folders, "records": records});
    decode_secrets(app_key, &padded(&body)).unwrap()
}

const OTHER: &str = "Other-shared-folder-01";

#[test]
fn records_shared_directly() {
    let app = AesKey::random();
    let vault = decode(&app, Value::Null, json!([rec(&app, "direct", "Direct")]));
    assert_eq!(
        produced(&vault),
        expect(&[("direct", "Direct", None)], &[], &[], &[])
    );
}

#[test]
fn records_nested_in_folders() {
    let (app, fk) = (AesKey::random(), AesKey::random());
    let folders = json!([folder(
        &app,
        FOLDER,
        &fk,
        vec![rec(&fk, "nested", "Nested")]
    )]);
    let vault = decode(&app, folders, Value::Null);
    assert_eq!(
        produced(&vault),
        expect(&[("nested", "Nested", Some(FOLDER))], &[FOLDER], &[], &[])
    );
}

#[test]
fn flat_record_naming_its_shared_folder_uses_the_folder_key() {
    let (app, fk) = (AesKey::random(), AesKey::random());
    let folders = json!([folder(&app, FOLDER, &fk, vec![])]);
    let records = json!([flat_in(&fk, "flat", "Flat", FOLDER)]);
    let vault = decode(&app, folders, records);
    assert_eq!(
        produced(&vault),
        expect(&[("flat", "Flat", Some(FOLDER))], &[FOLDER], &[], &[])
    );
    assert_eq!(vault.records[0].inner_folder_uid.as_deref(), Some(FOLDER));
    assert!(vault.warnings.is_empty(), "{:?}", vault.warnings);
}

#[test]
fn flat_record_with_folder_uid_uses_the_folder_key() {
    // The Python SDK's mock marks such records with `folderUid` instead.
    let (app, fk) = (AesKey::random(), AesKey::random());
    let mut entry = rec(&fk, "flat", "Flat");
    entry["folderUid"] = json!(FOLDER);
    let vault = decode(
        &app,
        json!([folder(&app, FOLDER, &fk, vec![])]),
        json!([entry]),
    );
    assert_eq!(
        produced(&vault),
        expect(&[("flat", "Flat", Some(FOLDER))], &[FOLDER], &[], &[])
    );
}

/// A flat record in sub-folder SUB of FOLDER, with a second shared folder OTHER delivered too;
/// `place` says how (or whether) the response shows where SUB sits.
fn sub_folder_case(place: &str) -> Vault {
    let (app, fk, other) = (AesKey::random(), AesKey::random(), AesKey::random());
    let mut shared = folder(&app, FOLDER, &fk, vec![]);
    let mut extra = Vec::new();
    match place {
        "nested record" => {
            shared["records"] = json!([flat_in(&fk, "nested-in-sub", "Nested", SUB)]);
        }
        "nested folders" => shared["folders"] = json!([{"folderUid": SUB, "folders": []}]),
        "parent entry" => extra.push(json!({"folderUid": SUB, "folderKey": null,
                                            "parent": FOLDER, "records": []})),
        "deeper parent entries" => {
            extra.push(json!({"folderUid": SUB2, "parent": SUB, "records": []}));
            extra.push(json!({"folderUid": SUB, "parent": FOLDER, "records": []}));
        }
        _ => {}
    }
    let inner = if place == "deeper parent entries" {
        SUB2
    } else {
        SUB
    };
    let mut folders = vec![folder(&app, OTHER, &other, vec![]), shared];
    folders.extend(extra);
    decode(
        &app,
        json!(folders),
        json!([flat_in(&fk, "flat-in-sub", "In Sub", inner)]),
    )
}

#[test]
fn flat_record_in_a_sub_folder_uses_its_shared_folder_key() {
    for place in [
        "nested record",
        "nested folders",
        "parent entry",
        "deeper parent entries",
        "not shown",
    ] {
        let vault = sub_folder_case(place);
        let flat = vault.records.iter().find(|r| r.uid == "flat-in-sub");
        assert_eq!(
            flat.map(|r| (r.title.as_str(), r.folder_uid.as_deref())),
            Some(("In Sub", Some(FOLDER))),
            "{place}: {:?}",
            vault.warnings
        );
        assert!(vault.skipped.is_empty(), "{place}: {:?}", vault.skipped);
    }
}

#[test]
fn flat_record_naming_an_undelivered_folder_falls_back_to_the_app_key() {
    let app = AesKey::random();
    let vault = decode(
        &app,
        json!([]),
        json!([flat_in(&app, "flat", "Flat", "missing-folder-uid-001")]),
    );
    assert_eq!(
        produced(&vault),
        expect(&[("flat", "Flat", None)], &[], &[], &[])
    );
}

#[test]
fn flat_record_under_no_delivered_key_is_named_against_its_folder() {
    let (app, fk) = (AesKey::random(), AesKey::random());
    let folders = json!([folder(&app, FOLDER, &fk, vec![rec(&fk, "ok", "Ok")])]);
    let records = json!([flat_in(&AesKey::random(), "lost", "Lost", FOLDER)]);
    let vault = decode(&app, folders, records);
    assert_eq!(
        produced(&vault),
        expect(
            &[("ok", "Ok", Some(FOLDER))],
            &[FOLDER],
            &["lost"],
            &[FOLDER]
        )
    );
    assert_eq!(
        vault.warnings,
        ["record lost skipped: record key does not decrypt"]
    );
}

#[test]
fn a_record_reachable_twice_is_listed_once() {
    // Shortcuts: one record in two shared folders and shared directly.
    let (app, f1, f2) = (AesKey::random(), AesKey::random(), AesKey::random());
    let folders = json!([
        folder(&app, FOLDER, &f1, vec![rec(&f1, "twice", "Twice")]),
        folder(&app, OTHER, &f2, vec![rec(&f2, "twice", "Twice")]),
    ]);
    let vault = decode(&app, folders, json!([rec(&app, "twice", "Twice")]));
    assert_eq!(
        produced(&vault),
        expect(
            &[("twice", "Twice", Some(FOLDER))],
            &[FOLDER, OTHER],
            &[],
            &[]
        )
    );
}

#[test]
fn an_undecryptable_record_file_or_folder_is_named_and_the_rest_kept() {
    let (app, fk, bad) = (AesKey::random(), AesKey::random(), AesKey::random());
    let mut with_bad_file = record_entry(&app, "file-rec", "Files", 2);
    with_bad_file["files"][1]["fileKey"] = json!(wrap(&AesKey::random(), &AesKey::random()));
    let folders = json!([
        folder(&app, FOLDER, &fk, vec![rec(&fk, "in-good", "Good")]),
        {"folderUid": OTHER, "folderKey": wrap(&AesKey::random(), &bad), "parent": null,
         "records": [rec(&bad, "in-bad", "Bad")]},
    ]);
    let records = json!([rec(&AesKey::random(), "bad-rec", "X"), with_bad_file]);
    let vault = decode(&app, folders, records);
    assert_eq!(
        produced(&vault),
        expect(
            &[
                ("in-good", "Good", Some(FOLDER)),
                ("file-rec", "Files", None)
            ],
            &[FOLDER],
            &["bad-rec", "in-bad"],
            &[OTHER]
        )
    );
    assert_eq!(vault.records[1].files.len(), 1);
    assert_eq!(vault.skipped.files_of, ["file-rec".to_string()].into());
    assert!(vault.warnings.contains(&format!(
        "shared folder {OTHER} skipped: folder key does not decrypt"
    )));
}

#[test]
fn a_folder_key_of_the_wrong_length_is_rejected() {
    let app = AesKey::random();
    let short = b64_std(&aes_gcm_encrypt(&app, &[7u8; 16]));
    let fake = AesKey::from_slice(&[7u8; 32]).unwrap();
    let folders = json!([{"folderUid": FOLDER, "folderKey": short, "parent": null,
                          "records": [rec(&fake, "inside", "Inside")]}]);
    let vault = decode(&app, folders, json!([rec(&app, "direct", "Direct")]));
    assert_eq!(
        produced(&vault),
        expect(&[("direct", "Direct", None)], &[], &["inside"], &[FOLDER])
    );
}

#[test]
fn a_record_without_record_key_uses_the_app_key() {
    let app = AesKey::random();
    let mut entry = rec(&AesKey::random(), "no-key", "No key");
    let data = json!({"title": "No key", "type": "login", "fields": []});
    entry["data"] = json!(b64_std(&aes_gcm_encrypt(&app, &padded(&data))));
    entry.as_object_mut().unwrap().remove("recordKey");
    let vault = decode(&app, Value::Null, json!([entry]));
    assert_eq!(
        produced(&vault),
        expect(&[("no-key", "No key", None)], &[], &[], &[])
    );
}

fn with_data(app: &AesKey, uid: &str, data: &Value) -> Value {
    let record_key = AesKey::random();
    json!({"recordUid": uid, "recordKey": wrap(app, &record_key), "revision": 1,
           "data": b64_std(&aes_gcm_encrypt(&record_key, &padded(data)))})
}

#[test]
fn null_fields_are_no_fields_and_unknown_field_types_are_kept_as_json() {
    let app = AesKey::random();
    let null_fields = json!({"title": "Null", "type": "login", "fields": null, "custom": null});
    let future = json!({"title": "Future", "type": "futureType", "fields": [
        {"type": "quantumKey", "label": "qk", "value": [{"qubits": 3, "basis": ["x", "z"]}]}]});
    let vault = decode(
        &app,
        Value::Null,
        json!([
            with_data(&app, "null-fields", &null_fields),
            with_data(&app, "future", &future)
        ]),
    );
    assert_eq!(
        produced(&vault),
        expect(
            &[("null-fields", "Null", None), ("future", "Future", None)],
            &[],
            &[],
            &[]
        )
    );
    assert!(vault.records[0].fields.is_empty() && vault.records[0].custom.is_empty());
    let field = vault.records[1].field("qk").unwrap();
    assert_eq!(field.field_type, "quantumKey");
    assert_eq!(field.value, [json!({"qubits": 3, "basis": ["x", "z"]})]);
}

#[test]
fn empty_folder_and_record_lists_are_an_empty_vault() {
    let app = AesKey::random();
    for (folders, records) in [
        (json!([]), json!([])),
        (Value::Null, Value::Null),
        (json!([]), Value::Null),
    ] {
        let vault = decode(&app, folders, records);
        assert_eq!(produced(&vault), expect(&[], &[], &[], &[]));
        assert!(vault.warnings.is_empty());
    }
}
