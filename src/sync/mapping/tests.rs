use serde_json::json;

use super::*;
use crate::api::{Auth, FolderSelector};
use crate::ksm::record::SharedFolder;

const UID_A: &str = "AAAAAAAAAAAAAAAAAAAAAA";
const UID_B: &str = "BBBBBBBBBBBBBBBBBBBBBB";
const FOLDER: &str = "FFFFFFFFFFFFFFFFFFFFFF";

fn field(t: &str, label: Option<&str>, value: serde_json::Value) -> Field {
    Field {
        field_type: t.into(),
        label: label.map(Into::into),
        value: value.as_array().unwrap().clone(),
    }
}

fn file(uid: &str, name: &str) -> KeeperFile {
    KeeperFile {
        uid: uid.into(),
        name: name.into(),
        title: format!("{name} title"),
        mime_type: None,
        size: None,
        url: None,
        key: crate::ksm::crypto::AesKey::random(),
    }
}

fn record(uid: &str, title: &str) -> Record {
    Record {
        uid: uid.into(),
        title: title.into(),
        record_type: "login".into(),
        revision: 1,
        folder_uid: None,
        inner_folder_uid: None,
        fields: vec![],
        custom: vec![],
        notes: None,
        files: vec![],
    }
}

fn login() -> Record {
    Record {
        uid: UID_A.into(),
        title: "Prod DB".into(),
        record_type: "login".into(),
        revision: 7,
        folder_uid: Some(FOLDER.into()),
        fields: vec![
            field("login", None, json!(["admin"])),
            field("password", None, json!(["pa$$"])),
            field(
                "host",
                None,
                json!([{"hostName": "db.local", "port": "5432"}]),
            ),
            field("fileRef", None, json!(["f1"])),
            field("oneTimeCode", None, json!([])),
            field("text", Some("Env Name"), json!(["prod"])),
        ],
        custom: vec![
            field("text", Some("password"), json!(["custom-pw"])),
            field("text", Some("tag"), json!(["a"])),
            field("text", Some("tag"), json!(["b"])),
            field("text", Some("tag"), json!(["c"])),
            field(
                "phone",
                Some("phones"),
                json!([{"number": "1"}, {"number": "2"}]),
            ),
        ],
        notes: Some("note text".into()),
        files: vec![file("f1", "cert.pem")],
        ..record(UID_A, "Prod DB")
    }
}

fn other() -> Record {
    Record {
        uid: UID_B.into(),
        title: "Web".into(),
        revision: 2,
        folder_uid: Some(FOLDER.into()),
        fields: vec![field("password", None, json!(["web-pw"]))],
        ..record(UID_B, "Web")
    }
}

fn vault(records: Vec<Record>) -> Vault {
    Vault {
        records,
        folders: vec![SharedFolder {
            uid: FOLDER.into(),
            name: Some("f".into()),
            parent_uid: None,
        }],
        ..Vault::default()
    }
}

fn spec(data: Vec<DataItem>, data_from: Vec<DataFromItem>) -> KeeperSecretSpec {
    KeeperSecretSpec {
        auth: Auth {
            secret_ref: None,
            store_ref: None,
        },
        refresh_interval: None,
        refresh_policy: None,
        target: None,
        data,
        data_from,
        rollout_restart: vec![],
    }
}

fn by_field(key: &str, sel: RecordSelector, f: &str) -> DataItem {
    DataItem {
        key: key.into(),
        notation: None,
        record: Some(sel),
        field: Some(f.into()),
        custom: None,
        property: None,
        file: None,
        decoding_strategy: None,
    }
}

fn title(t: &str) -> RecordSelector {
    RecordSelector {
        uid: None,
        title: Some(t.into()),
    }
}

fn uid(u: &str) -> RecordSelector {
    RecordSelector {
        uid: Some(u.into()),
        title: None,
    }
}

fn from_record(sel: RecordSelector, policy: DuplicateKeyPolicy) -> DataFromItem {
    DataFromItem {
        record: Some(sel),
        folder: None,
        prefix: None,
        duplicate_keys: policy,
        decoding_strategy: None,
    }
}

fn text(plan: &KeyMap, key: &str) -> String {
    match plan.entries.get(key) {
        Some(Content::Value(v)) => String::from_utf8(v.to_vec()).unwrap(),
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn record_and_field_by_type_label_and_property() {
    let mut host = by_field("host", uid(UID_A), "host");
    host.property = Some("hostName".into());
    let mut std_pw = by_field("stdpw", uid(UID_A), "password");
    std_pw.custom = Some(true);
    let items = vec![
        by_field("user", title("Prod DB"), "LOGIN"),
        by_field("pw", uid(UID_A), "password"),
        std_pw,
        host,
        by_field("hostjson", uid(UID_A), "host"),
        by_field("env", uid(UID_A), "Env Name"),
        by_field("phones", uid(UID_A), "phones"),
    ];
    let plan = plan(&spec(items, vec![]), &vault(vec![login()])).unwrap();
    assert_eq!(
        text(&plan, "user"),
        "admin",
        "type matches case-insensitively"
    );
    assert_eq!(
        text(&plan, "pw"),
        "pa$$",
        "standard fields are searched before custom ones"
    );
    assert_eq!(
        text(&plan, "stdpw"),
        "custom-pw",
        "custom: true searches custom fields only"
    );
    assert_eq!(text(&plan, "host"), "db.local");
    assert_eq!(
        text(&plan, "hostjson"),
        r#"{"hostName":"db.local","port":"5432"}"#
    );
    assert_eq!(text(&plan, "env"), "prod");
    assert_eq!(text(&plan, "phones"), r#"[{"number":"1"},{"number":"2"}]"#);
    assert_eq!(
        plan.records.iter().collect::<Vec<_>>(),
        [&RecordRevision {
            uid: UID_A.into(),
            revision: 7
        }]
    );
}

#[test]
fn lookup_errors_are_specific() {
    let v = vault(vec![login(), record("CCCCCCCCCCCCCCCCCCCCCC", "Prod DB")]);
    let err = plan(
        &spec(vec![by_field("k", title("Prod DB"), "login")], vec![]),
        &v,
    )
    .unwrap_err();
    assert_eq!(err.reason(), "AmbiguousTitle");
    let err = plan(
        &spec(vec![by_field("k", title("Nope"), "login")], vec![]),
        &v,
    )
    .unwrap_err();
    assert_eq!(err.reason(), "RecordNotFound");
    let err = plan(&spec(vec![by_field("k", uid(UID_A), "nope")], vec![]), &v).unwrap_err();
    assert_eq!(err.reason(), "FieldNotFound");
    let mut prop = by_field("k", uid(UID_A), "login");
    prop.property = Some("hostName".into());
    assert_eq!(
        plan(&spec(vec![prop], vec![]), &v).unwrap_err().reason(),
        "FieldNotFound"
    );
    let mut missing_file = by_field("k", uid(UID_A), "x");
    (missing_file.field, missing_file.file) = (None, Some("nope.pem".into()));
    assert_eq!(
        plan(&spec(vec![missing_file], vec![]), &v)
            .unwrap_err()
            .reason(),
        "FieldNotFound"
    );
}

#[test]
fn duplicate_records_from_shortcuts_are_not_ambiguous() {
    let v = vault(vec![login(), login()]);
    assert!(
        plan(
            &spec(vec![by_field("k", title("Prod DB"), "login")], vec![]),
            &v
        )
        .is_ok()
    );
}

#[test]
fn files_by_record_and_notation_stay_files() {
    let mut f = by_field("tls.crt", uid(UID_A), "x");
    (f.field, f.file) = (None, Some("cert.pem title".into()));
    let n = DataItem {
        notation: Some(format!("keeper://{UID_A}/file/cert.pem")),
        record: None,
        field: None,
        ..f.clone()
    };
    let n = DataItem {
        key: "n.crt".into(),
        ..n
    };
    let plan = plan(&spec(vec![f, n], vec![]), &vault(vec![login()])).unwrap();
    for k in ["tls.crt", "n.crt"] {
        assert!(
            matches!(&plan.entries[k], Content::File(file) if file.uid == "f1"),
            "{k}"
        );
    }
}

#[test]
fn notation_values_and_revisions() {
    let item = |key: &str, n: &str| DataItem {
        key: key.into(),
        notation: Some(n.into()),
        record: None,
        field: None,
        custom: None,
        property: None,
        file: None,
        decoding_strategy: None,
    };
    let items = vec![
        item("pw", &format!("keeper://{UID_A}/field/password")),
        item("web", "keeper://Web/field/password"),
    ];
    let plan = plan(&spec(items, vec![]), &vault(vec![login(), other()])).unwrap();
    assert_eq!(text(&plan, "pw"), "pa$$");
    assert_eq!(text(&plan, "web"), "web-pw");
    assert_eq!(
        plan.records.len(),
        2,
        "notation records are reported with revisions"
    );
    let bad = plan_err(vec![item("x", "keeper://Nope/field/password")]);
    assert_eq!(bad, "RecordNotFound");
}

fn plan_err(items: Vec<DataItem>) -> &'static str {
    plan(&spec(items, vec![]), &vault(vec![login()]))
        .unwrap_err()
        .reason()
        .as_str()
}

#[test]
fn data_from_record_maps_every_field_with_suffix_policy() {
    let plan = plan(
        &spec(
            vec![],
            vec![from_record(uid(UID_A), DuplicateKeyPolicy::Suffix)],
        ),
        &vault(vec![login()]),
    )
    .unwrap();
    let keys: Vec<&str> = plan.entries.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "Env_Name",
            "cert.pem",
            "host",
            "login",
            "notes",
            "password",
            "password_2",
            "phones",
            "tag",
            "tag_2",
            "tag_3"
        ]
    );
    assert_eq!(
        text(&plan, "password"),
        "pa$$",
        "standard fields come first"
    );
    assert_eq!(text(&plan, "password_2"), "custom-pw");
    assert_eq!(
        (text(&plan, "tag"), text(&plan, "tag_3")),
        ("a".into(), "c".into())
    );
    assert_eq!(text(&plan, "notes"), "note text");
    assert!(matches!(plan.entries["cert.pem"], Content::File(_)));
}

#[test]
fn data_from_record_first_policy_skips_repeats() {
    let plan = plan(
        &spec(
            vec![],
            vec![from_record(uid(UID_A), DuplicateKeyPolicy::First)],
        ),
        &vault(vec![login()]),
    )
    .unwrap();
    assert_eq!(text(&plan, "tag"), "a");
    assert!(!plan.entries.contains_key("tag_2"));
    assert_eq!(text(&plan, "password"), "pa$$");
}

#[test]
fn data_from_folder_prefixes_titles_and_data_wins() {
    let folder = DataFromItem {
        record: None,
        folder: Some(FolderSelector { uid: FOLDER.into() }),
        prefix: Some("app.".into()),
        duplicate_keys: DuplicateKeyPolicy::Suffix,
        decoding_strategy: None,
    };
    let over = by_field("app.Web_password", uid(UID_B), "password");
    let mut v = vault(vec![login(), other()]);
    v.records[1].fields[0].value = vec![json!("web-pw")];
    let s = spec(
        vec![by_field("app.Prod_DB_login", uid(UID_B), "password"), over],
        vec![folder],
    );
    let plan = plan(&s, &v).unwrap();
    assert_eq!(text(&plan, "app.Prod_DB_password"), "pa$$");
    assert_eq!(text(&plan, "app.Web_password"), "web-pw");
    assert_eq!(
        text(&plan, "app.Prod_DB_login"),
        "web-pw",
        "data[] overrides dataFrom"
    );
    assert_eq!(plan.records.len(), 2);
}

#[test]
fn unknown_folder_is_record_not_found_but_empty_folder_is_fine() {
    let item = |u: &str| DataFromItem {
        record: None,
        folder: Some(FolderSelector { uid: u.into() }),
        prefix: None,
        duplicate_keys: DuplicateKeyPolicy::Suffix,
        decoding_strategy: None,
    };
    assert_eq!(
        plan(&spec(vec![], vec![item(UID_B)]), &vault(vec![]))
            .unwrap_err()
            .reason(),
        "RecordNotFound"
    );
    assert!(
        plan(&spec(vec![], vec![item(FOLDER)]), &vault(vec![]))
            .unwrap()
            .entries
            .is_empty()
    );
}

#[test]
fn field_values_render_as_text_or_json() {
    assert_eq!(field_bytes(&[json!("x")], None).unwrap().as_slice(), b"x");
    assert_eq!(field_bytes(&[], None).unwrap().as_slice(), b"");
    assert_eq!(
        field_bytes(&[json!(1700000000000_i64)], None)
            .unwrap()
            .as_slice(),
        b"1700000000000"
    );
    assert_eq!(
        field_bytes(&[json!("a"), json!("b")], None)
            .unwrap()
            .as_slice(),
        br#"["a","b"]"#
    );
    assert_eq!(
        field_bytes(&[json!({"first": "A", "last": "B"})], Some("last"))
            .unwrap()
            .as_slice(),
        b"B"
    );
    assert!(field_bytes(&[json!({"first": "A"})], Some("last")).is_none());
}

#[test]
fn keys_are_sanitized() {
    assert_eq!(sanitize_key("API Key/v2"), "API_Key_v2");
    assert_eq!(sanitize_key("tls.crt"), "tls.crt");
    assert_eq!(sanitize_key(""), "_");
    assert_eq!(sanitize_key(".."), "___");
    assert_eq!(sanitize_key("ключ"), "____");
    assert!(sanitize_key(&"x".repeat(500)).len() <= 253);
}

#[test]
fn the_item_that_maps_a_key_last_says_how_it_is_decoded() {
    let whole = DataFromItem {
        decoding_strategy: Some(DecodingStrategy::Base64),
        ..from_record(uid(UID_A), DuplicateKeyPolicy::First)
    };
    let as_stored = by_field("login", uid(UID_A), "login");
    let auto = DataItem {
        decoding_strategy: Some(DecodingStrategy::Auto),
        ..by_field("web", uid(UID_B), "password")
    };
    let plan = plan(
        &spec(vec![as_stored, auto], vec![whole]),
        &vault(vec![login(), other()]),
    )
    .unwrap();
    assert_eq!(
        plan.decoding.get("password"),
        Some(&DecodingStrategy::Base64)
    );
    assert_eq!(plan.decoding.get("web"), Some(&DecodingStrategy::Auto));
    assert_eq!(
        plan.decoding.get("login"),
        None,
        "data replaced the dataFrom value"
    );
    assert_eq!(plan.decoding.len(), plan.entries.len() - 1);
}

#[test]
fn a_deletion_policy_leaves_out_what_is_gone_and_retain_fails() {
    let items = || {
        (
            vec![
                by_field("pw", uid(UID_A), "password"),
                DataItem {
                    notation: Some(format!("keeper://{UID_B}/field/password")),
                    record: None,
                    field: None,
                    ..by_field("web", uid(UID_B), "password")
                },
            ],
            vec![from_record(title("Gone"), DuplicateKeyPolicy::First)],
        )
    };
    let with = |policy: Option<DeletionPolicy>| {
        let (data, data_from) = items();
        let mut spec = spec(data, data_from);
        spec.target = Some(crate::api::TargetSecret {
            deletion_policy: policy,
            ..Default::default()
        });
        plan(&spec, &vault(vec![login()]))
    };
    for retain in [None, Some(DeletionPolicy::Retain)] {
        assert_eq!(with(retain).unwrap_err().reason(), "RecordNotFound");
    }
    for policy in [DeletionPolicy::Delete, DeletionPolicy::Merge] {
        let plan = with(Some(policy)).unwrap();
        assert_eq!(plan.entries.keys().collect::<Vec<_>>(), ["pw"]);
        let gone: Vec<&str> = plan.gone.iter().map(String::as_str).collect();
        assert_eq!(
            gone,
            ["record \"BBBBBBBBBBBBBBBBBBBBBB\"", "titled \"Gone\""]
        );
    }
    // Only a missing record is left out: a missing field still fails.
    let mut spec = spec(vec![by_field("x", uid(UID_A), "nope")], vec![]);
    spec.target = Some(crate::api::TargetSecret {
        deletion_policy: Some(DeletionPolicy::Delete),
        ..Default::default()
    });
    let err = plan(&spec, &vault(vec![login()])).unwrap_err();
    assert_eq!(err.reason(), "FieldNotFound");
}
