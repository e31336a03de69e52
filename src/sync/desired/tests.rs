use super::*;
use crate::api::{KeeperSecretSpec, Target};

fn ks(target: Option<Target>) -> KeeperSecret {
    let mut ks = KeeperSecret {
        spec: KeeperSecretSpec {
            target,
            ..KeeperSecretSpec::default()
        },
        ..crate::api::test_keeper_secret()
    };
    ks.metadata.namespace = Some("shop".into());
    ks.metadata.uid = Some("uid-1".into());
    ks
}

fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Bytes> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Zeroizing::new(v.to_vec())))
        .collect()
}

fn key() -> HashKey {
    HashKey::derive(b"credential", "uid-1")
}

#[test]
fn owner_secret_has_labels_annotations_owner_ref_and_binary_data() {
    let target = Target {
        labels: [("team".to_string(), "a".to_string())].into(),
        annotations: [("note".to_string(), "x".to_string())].into(),
        ..Target::default()
    };
    let d = secret(
        &ks(Some(target)),
        data(&[("pw", b"p"), ("bin", &[0, 255])]),
        &key(),
    )
    .unwrap();
    let s = &d.secret;
    assert_eq!(s.metadata.name.as_deref(), Some("db"));
    assert_eq!(s.metadata.namespace.as_deref(), Some("shop"));
    let labels = s.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
    assert_eq!(labels["team"], "a");
    let ann = s.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann[OWNER_ANNOTATION], "db");
    assert_eq!(ann[KEYS_ANNOTATION], "bin,pw");
    assert_eq!(ann[DATA_HASH_ANNOTATION], d.hash);
    assert_eq!(ann["note"], "x");
    let refs = s.metadata.owner_references.as_ref().unwrap();
    assert_eq!(
        (
            refs[0].kind.as_str(),
            refs[0].uid.as_str(),
            refs[0].controller
        ),
        ("KeeperSecret", "uid-1", Some(true))
    );
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert_eq!(s.data.as_ref().unwrap()["bin"].0, vec![0, 255]);
    assert!(s.string_data.is_none());
    assert!(
        !format!("{d:?}").contains("[0, 255]"),
        "Debug must not print values"
    );
}

#[test]
fn orphan_and_merge_have_no_owner_ref_and_merge_leaves_type_alone() {
    for (policy, type_) in [
        (CreationPolicy::Orphan, Some("Opaque")),
        (CreationPolicy::Merge, None),
    ] {
        let t = Target {
            creation_policy: policy,
            ..Target::default()
        };
        let s = secret(&ks(Some(t)), data(&[("a", b"1")]), &key())
            .unwrap()
            .secret;
        assert!(s.metadata.owner_references.is_none(), "{policy:?}");
        assert_eq!(s.type_.as_deref(), type_);
        assert_eq!(s.metadata.annotations.unwrap()[OWNER_ANNOTATION], "db");
    }
}

#[test]
fn target_name_type_and_immutable() {
    let t = Target {
        name: Some("tls".into()),
        type_: Some("kubernetes.io/tls".into()),
        immutable: Some(true),
        ..Target::default()
    };
    let s = secret(
        &ks(Some(t.clone())),
        data(&[("tls.crt", b"c"), ("tls.key", b"k")]),
        &key(),
    )
    .unwrap()
    .secret;
    assert_eq!(s.metadata.name.as_deref(), Some("tls"));
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(s.immutable, Some(true));
    let err = secret(&ks(Some(t)), data(&[("tls.crt", b"c")]), &key()).unwrap_err();
    assert_eq!(err.reason(), "InvalidSpec");
    assert!(err.to_string().contains("tls.key"));
}

#[test]
fn too_large_is_refused() {
    let big = vec![b'x'; MAX_SECRET_BYTES];
    let err = secret(&ks(None), data(&[("big", &big)]), &key()).unwrap_err();
    assert_eq!(err.reason(), "TooLarge");
    assert!(
        secret(
            &ks(None),
            data(&[("b", &big[..MAX_SECRET_BYTES - 1])]),
            &key()
        )
        .is_ok()
    );
}

#[test]
fn hash_is_keyed_and_order_independent() {
    let a = key().hash([("a", b"1".as_slice()), ("b", b"2".as_slice())]);
    assert_eq!(
        a,
        key().hash([("b", b"2".as_slice()), ("a", b"1".as_slice())])
    );
    assert_ne!(
        a,
        HashKey::derive(b"other credential", "uid-1")
            .hash([("a", b"1".as_slice()), ("b", b"2".as_slice())])
    );
    assert_ne!(
        a,
        HashKey::derive(b"credential", "uid-2")
            .hash([("a", b"1".as_slice()), ("b", b"2".as_slice())])
    );
    assert_ne!(
        a,
        key().hash([("a", b"12".as_slice()), ("b", b"".as_slice())]),
        "length-prefixed"
    );
    assert!(a.starts_with("hmac-sha256:") && a.len() == 12 + 64);
    assert_eq!(format!("{:?}", key()), "HashKey(<redacted>)");
}

#[test]
fn digests_are_stable_keyed_and_separated_by_purpose_and_parts() {
    let d = |k: &HashKey, purpose: &str, parts: &[&[u8]]| *k.digest(purpose, parts);
    let a = d(&key(), "salt", &[b"user", b"pw"]);
    assert_eq!(a, d(&key(), "salt", &[b"user", b"pw"]));
    assert_ne!(
        a,
        d(
            &HashKey::derive(b"credential", "uid-2"),
            "salt",
            &[b"user", b"pw"]
        )
    );
    assert_ne!(a, d(&key(), "other", &[b"user", b"pw"]));
    assert_ne!(a, d(&key(), "salt", &[b"use", b"rpw"]), "length-prefixed");
}

#[test]
fn verified_hash_detects_edits_and_deleted_keys_but_ignores_foreign_keys() {
    let mut s = secret(&ks(None), data(&[("a", b"1"), ("b", b"2")]), &key())
        .unwrap()
        .secret;
    assert!(verified_hash(&s, &key()).is_some());
    s.data
        .as_mut()
        .unwrap()
        .insert("someone-elses".into(), ByteString(b"x".to_vec()));
    assert!(
        verified_hash(&s, &key()).is_some(),
        "keys we did not write do not matter"
    );
    s.data
        .as_mut()
        .unwrap()
        .insert("a".into(), ByteString(b"edited".to_vec()));
    assert!(verified_hash(&s, &key()).is_none());
    s.data.as_mut().unwrap().remove("a");
    assert!(verified_hash(&s, &key()).is_none());
    assert!(verified_hash(&Secret::default(), &key()).is_none());
}

#[test]
fn up_to_date_compares_what_we_write() {
    let desired = secret(&ks(None), data(&[("a", b"1")]), &key())
        .unwrap()
        .secret;
    let mut existing = desired.clone();
    existing
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("extra".into(), "x".into());
    assert!(is_up_to_date(&existing, &desired));
    existing
        .data
        .as_mut()
        .unwrap()
        .insert("a".into(), ByteString(b"2".to_vec()));
    assert!(!is_up_to_date(&existing, &desired));
    let mut no_owner = desired.clone();
    no_owner.metadata.owner_references = None;
    assert!(!is_up_to_date(&no_owner, &desired));
}

#[test]
fn ownership_rules() {
    let mine = secret(&ks(None), data(&[("a", b"1")]), &key())
        .unwrap()
        .secret;
    assert_eq!(ownership(&ks(None), None), Ok(Ownership::Absent));
    assert_eq!(ownership(&ks(None), Some(&mine)), Ok(Ownership::Ours));
    let mut other = ks(None);
    other.metadata.name = Some("other".into());
    other.metadata.uid = Some("uid-2".into());
    let msg = ownership(&other, Some(&mine)).unwrap_err();
    assert!(msg.contains("KeeperSecret db"), "{msg}");
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    assert_eq!(
        ownership(&ks(None), Some(&foreign)),
        Ok(Ownership::Unmanaged)
    );
    let merge = ks(Some(Target {
        creation_policy: CreationPolicy::Merge,
        ..Target::default()
    }));
    assert_eq!(ownership(&merge, Some(&foreign)), Ok(Ownership::Foreign));
}

#[test]
fn merge_refuses_controlled_or_differently_typed_secrets() {
    let merge = |type_: Option<&str>| {
        ks(Some(Target {
            creation_policy: CreationPolicy::Merge,
            type_: type_.map(Into::into),
            ..Target::default()
        }))
    };
    let controlled = Secret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "cert-manager.io/v1".into(),
                    kind: "Certificate".into(),
                    name: "db".into(),
                    uid: "cert-uid".into(),
                    controller: Some(true),
                    ..Default::default()
                },
            ]),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    let msg = ownership(&merge(None), Some(&controlled)).unwrap_err();
    assert!(msg.contains("controlled by another object"), "{msg}");

    let tls = Secret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        ..Secret::default()
    };
    let msg = ownership(&merge(None), Some(&tls)).unwrap_err();
    assert!(msg.contains("type kubernetes.io/tls"), "{msg}");
    assert_eq!(
        ownership(&merge(Some("kubernetes.io/tls")), Some(&tls)),
        Ok(Ownership::Foreign)
    );
}

#[test]
fn targets_that_act_beyond_delivering_data_are_refused() {
    let refused = |target: Target| {
        let err = secret(&ks(Some(target)), data(&[("token", b"x")]), &key()).unwrap_err();
        assert_eq!(err.reason(), "NotAllowed");
        err.to_string()
    };
    let msg = refused(Target {
        type_: Some("kubernetes.io/service-account-token".into()),
        ..Target::default()
    });
    assert!(msg.contains("service-account-token"), "{msg}");
    let msg = refused(Target {
        annotations: [(
            "kubernetes.io/service-account.name".into(),
            "default".into(),
        )]
        .into(),
        ..Target::default()
    });
    assert!(msg.contains("service-account.name"), "{msg}");
    let msg = refused(Target {
        creation_policy: CreationPolicy::Merge,
        immutable: Some(true),
        ..Target::default()
    });
    assert!(msg.contains("immutable"), "{msg}");
    // Immutable stays available for Secrets the operator creates.
    assert!(
        secret(
            &ks(Some(Target {
                immutable: Some(true),
                ..Target::default()
            })),
            data(&[("a", b"1")]),
            &key()
        )
        .is_ok()
    );
}

#[test]
fn adoption_needs_the_flag_and_names_the_keys_it_would_touch() {
    let desired = secret(
        &ks(None),
        data(&[("a", b"1"), ("b", b"2"), ("c", b"3")]),
        &key(),
    )
    .unwrap()
    .secret;
    let mut existing = Secret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            [("a", "1"), ("b", "secret-old"), ("z", "secret-z")]
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .into(),
        ),
        ..Secret::default()
    };
    let msg = adoption(&ks(None), &existing, &desired).unwrap_err();
    assert!(
        msg.contains(
            "set target.adopt: true to take it over (it would add keys: c; change: b; drop: z)"
        ),
        "{msg}"
    );
    assert!(!msg.contains("secret-"), "no value: {msg}");
    let adopter = ks(Some(Target {
        adopt: Some(true),
        ..Target::default()
    }));
    assert_eq!(adoption(&adopter, &existing, &desired), Ok(()));
    existing.type_ = Some("kubernetes.io/tls".into());
    let msg = adoption(&adopter, &existing, &desired).unwrap_err();
    assert!(msg.contains("type kubernetes.io/tls, not Opaque"), "{msg}");
}
