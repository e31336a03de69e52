//! The build's order of checks, with file bytes and renders from a stub.

use std::sync::Mutex;

use serde_json::json;
use zeroize::Zeroizing;

use super::*;
// The reconcile error, to check each refusal keeps its step's reason through the conversion.
use crate::error::Error;
use crate::ksm::crypto::AesKey;
use crate::ksm::record::{Field, Record, Skipped};

const UID: &str = "AAAAAAAAAAAAAAAAAAAAAA";
const OTHER: &str = "BBBBBBBBBBBBBBBBBBBBBB";
const FILE: &str = "FFFFFFFFFFFFFFFFFFFFFF";

/// File bytes from a table; remembers the room each download was given.
#[derive(Default)]
struct Stub {
    file: Vec<u8>,
    rooms: Mutex<Vec<usize>>,
}

impl Inputs for Stub {
    type Error = Error;

    async fn file(&self, _: &KeeperFile, _: i64, room: usize) -> Result<Bytes, Error> {
        self.rooms.lock().unwrap().push(room);
        Ok(Zeroizing::new(self.file.clone()))
    }
}

fn record(uid: &str, password: &str) -> Record {
    Record {
        uid: uid.into(),
        title: format!("record {uid}"),
        record_type: "login".into(),
        revision: 4,
        folder_uid: None,
        inner_folder_uid: None,
        fields: vec![Field {
            field_type: "password".into(),
            label: None,
            value: vec![json!(password)],
        }],
        custom: vec![],
        notes: None,
        files: vec![KeeperFile {
            uid: FILE.into(),
            name: "cert.pem".into(),
            title: "cert".into(),
            mime_type: None,
            size: None,
            url: None,
            key: AesKey::from_slice(&[9u8; 32]).expect("32 bytes"),
        }],
    }
}

fn vault(records: Vec<Record>) -> Vault {
    Vault {
        records,
        ..Vault::default()
    }
}

/// KeeperSecret `db` with `spec` merged over an auth and one password item.
fn keeper_secret(spec: serde_json::Value) -> KeeperSecret {
    let mut value = json!({
        "apiVersion": "keeper-operator.dev/v1alpha1",
        "kind": "KeeperSecret",
        "metadata": {"name": "db", "namespace": "shop", "uid": "ks-uid"},
        "spec": {
            "auth": {"secretRef": {"name": "ksm-config", "key": "config"}},
            "data": [{"key": "password", "record": {"uid": UID}, "field": "password"}],
        },
    });
    for (key, v) in spec.as_object().into_iter().flatten() {
        value["spec"][key] = v.clone();
    }
    serde_json::from_value(value).expect("a valid KeeperSecret")
}

fn key() -> HashKey {
    HashKey::derive(b"credential", "ks-uid")
}

async fn built(ks: &KeeperSecret, vault: &Vault, stub: &Stub) -> Result<Built, Error> {
    build(ks, None, vault, &key(), stub).await
}

fn applied(built: Built) -> desired::Desired {
    match built.write {
        Write::Apply(d) => *d,
        Write::Delete { .. } => panic!("a deletion"),
    }
}

#[tokio::test]
async fn files_are_decoded_then_templated_then_hashed() {
    let ks = keeper_secret(json!({
        "data": [
            {"key": "password", "record": {"uid": UID}, "field": "password"},
            {"key": "cert", "record": {"uid": UID}, "file": "cert.pem", "decodingStrategy": "Base64"},
        ],
        "target": {"template": {"mergePolicy": "Merge", "data": {"both": "{{ password }}:{{ cert }}"}}},
    }));
    let stub = Stub {
        file: b"aGVsbG8=".to_vec(),
        ..Stub::default()
    };
    let d = applied(
        built(&ks, &vault(vec![record(UID, "pw")]), &stub)
            .await
            .unwrap(),
    );
    let data = d.secret.data.clone().unwrap();
    assert_eq!(data["cert"].0, b"hello");
    assert_eq!(data["both"].0, b"pw:hello");
    let plain: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (k.as_str(), &v.0[..])).collect();
    assert_eq!(d.hash, key().hash(plain));
    // The download may use what the keys and the inline value leave of the Secret.
    let inline = "password".len() + "pw".len() + "cert".len();
    assert_eq!(
        *stub.rooms.lock().unwrap(),
        [desired::MAX_SECRET_BYTES - inline]
    );
}

#[tokio::test]
async fn a_record_the_store_forbids_is_refused_before_anything_else() {
    let ks = keeper_secret(json!({}));
    let allow = AllowList::of_store(
        "shared",
        &serde_json::from_value(json!({
            "credentialsSecretRef": {"name": "ksm", "key": "config"},
            "allowedRecords": [OTHER],
        }))
        .unwrap(),
    );
    // Also missing data (a record that did not decrypt): the store's refusal comes first.
    let mut v = vault(vec![record(UID, "pw")]);
    v.skipped.records.insert(UID.into());
    let e = build(&ks, allow.as_ref(), &v, &key(), &Stub::default())
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "NotAllowed", "{e}");
}

#[tokio::test]
async fn data_that_did_not_decrypt_fails_the_build() {
    let ks = keeper_secret(json!({}));
    let v = Vault {
        skipped: Skipped {
            records: [UID.to_string()].into(),
            ..Skipped::default()
        },
        ..Vault::default()
    };
    let e = built(&ks, &v, &Stub::default()).await.unwrap_err();
    assert_eq!(e.reason(), "InvalidResponse", "{e}");
    assert!(e.to_string().contains("did not decrypt"), "{e}");
}

#[tokio::test]
async fn every_record_gone_under_delete_deletes_without_downloading() {
    let ks = keeper_secret(json!({
        "data": [
            {"key": "password", "record": {"uid": UID}, "field": "password"},
            {"key": "cert", "record": {"uid": UID}, "file": "cert.pem"},
        ],
        "target": {"deletionPolicy": "Delete"},
    }));
    let stub = Stub::default();
    let b = built(&ks, &vault(vec![]), &stub).await.unwrap();
    assert!(matches!(&b.write, Write::Delete { hash } if *hash == key().hash([])));
    assert_eq!((b.keys, b.gone.len()), (0, 1));
    assert!(stub.rooms.lock().unwrap().is_empty());
    // Merge never deletes the Secret it merges into: it withdraws its keys.
    let merge = keeper_secret(json!({
        "target": {"deletionPolicy": "Delete", "creationPolicy": "Merge"},
    }));
    let b = built(&merge, &vault(vec![]), &stub).await.unwrap();
    assert_eq!(applied(b).secret.data.unwrap().len(), 0);
    // Some records left: their keys are written.
    let ks = keeper_secret(json!({
        "data": [
            {"key": "password", "record": {"uid": UID}, "field": "password"},
            {"key": "other", "record": {"uid": OTHER}, "field": "password"},
        ],
        "target": {"deletionPolicy": "Delete"},
    }));
    let b = built(&ks, &vault(vec![record(UID, "pw")]), &stub)
        .await
        .unwrap();
    assert_eq!((b.keys, b.gone.len()), (1, 1));
}

#[tokio::test]
async fn a_secret_over_the_size_budget_is_refused() {
    let ks = keeper_secret(json!({}));
    let big = "x".repeat(desired::MAX_SECRET_BYTES);
    let e = built(&ks, &vault(vec![record(UID, &big)]), &Stub::default())
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "TooLarge", "{e}");
}
