use super::*;
use crate::api::{KeeperSecretSpec, TargetSecret};

fn ks(target: Option<TargetSecret>) -> KeeperSecret {
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
    let target = TargetSecret {
        labels: [("team".to_string(), "a".to_string())].into(),
        annotations: [("note".to_string(), "x".to_string())].into(),
        ..TargetSecret::default()
    };
    let owner = ks(Some(target));
    let mut d = secret(&owner, data(&[("pw", b"p"), ("bin", &[0, 255])]), &key()).unwrap();
    mark(&owner, Provenance::Created, &mut d.secret);
    let s = &d.secret;
    assert_eq!(s.metadata.name.as_deref(), Some("db"));
    assert_eq!(s.metadata.namespace.as_deref(), Some("shop"));
    let labels = s.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
    assert_eq!(labels["team"], "a");
    let ann = s.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann[OWNER_ANNOTATION], "db");
    assert_eq!(ann[CREATED_FOR_ANNOTATION], "uid-1");
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
        let t = TargetSecret {
            creation_policy: policy,
            ..TargetSecret::default()
        };
        let s = secret(&ks(Some(t)), data(&[("a", b"1")]), &key())
            .unwrap()
            .secret;
        assert!(s.metadata.owner_references.is_none(), "{policy:?}");
        assert_eq!(s.type_.as_deref(), type_);
        let ann = s.metadata.annotations.unwrap();
        let labels = s.metadata.labels.unwrap_or_default();
        if policy == CreationPolicy::Merge {
            // A Merge target is marked as merged into, never as ours.
            assert_eq!(ann[MERGED_BY_ANNOTATION], "db");
            assert!(!ann.contains_key(OWNER_ANNOTATION), "{ann:?}");
            assert!(!labels.contains_key(MANAGED_BY_LABEL), "{labels:?}");
        } else {
            assert_eq!(ann[OWNER_ANNOTATION], "db");
            assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
        }
    }
}

#[test]
fn target_name_type_and_immutable() {
    let t = TargetSecret {
        name: Some("tls".into()),
        type_: Some("kubernetes.io/tls".into()),
        immutable: Some(true),
        ..TargetSecret::default()
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
    let mut desired = secret(&ks(None), data(&[("a", b"1")]), &key())
        .unwrap()
        .secret;
    mark(&ks(None), Provenance::Created, &mut desired);
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
    let msg = ownership(&other, Some(&mine)).unwrap_err().to_string();
    assert!(msg.contains("KeeperSecret db"), "{msg}");
    let foreign = invite(Secret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    });
    assert_eq!(
        ownership(&ks(None), Some(&foreign)),
        Ok(Ownership::Unmanaged)
    );
    let merge = ks(Some(TargetSecret {
        creation_policy: CreationPolicy::Merge,
        ..TargetSecret::default()
    }));
    assert_eq!(ownership(&merge, Some(&foreign)), Ok(Ownership::Foreign));
}

#[test]
fn merge_refuses_controlled_or_differently_typed_secrets() {
    let merge = |type_: Option<&str>| {
        ks(Some(TargetSecret {
            creation_policy: CreationPolicy::Merge,
            type_: type_.map(Into::into),
            ..TargetSecret::default()
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
    let msg = ownership(&merge(None), Some(&controlled))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("controlled by another object"), "{msg}");

    let tls = invite(Secret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        ..Secret::default()
    });
    let msg = ownership(&merge(None), Some(&tls)).unwrap_err().to_string();
    assert!(msg.contains("type kubernetes.io/tls"), "{msg}");
    assert_eq!(
        ownership(&merge(Some("kubernetes.io/tls")), Some(&tls)),
        Ok(Ownership::Foreign)
    );
}

#[test]
fn targets_that_act_beyond_delivering_data_are_refused() {
    let refused = |target: TargetSecret| {
        let err = secret(&ks(Some(target)), data(&[("token", b"x")]), &key()).unwrap_err();
        assert_eq!(err.reason(), "NotAllowed");
        err.to_string()
    };
    let msg = refused(TargetSecret {
        type_: Some("kubernetes.io/service-account-token".into()),
        ..TargetSecret::default()
    });
    assert!(msg.contains("service-account-token"), "{msg}");
    let msg = refused(TargetSecret {
        annotations: [(
            "kubernetes.io/service-account.name".into(),
            "default".into(),
        )]
        .into(),
        ..TargetSecret::default()
    });
    assert!(msg.contains("service-account.name"), "{msg}");
    let msg = refused(TargetSecret {
        creation_policy: CreationPolicy::Merge,
        immutable: Some(true),
        ..TargetSecret::default()
    });
    assert!(msg.contains("immutable"), "{msg}");
    // Immutable stays available for Secrets the operator creates.
    assert!(
        secret(
            &ks(Some(TargetSecret {
                immutable: Some(true),
                ..TargetSecret::default()
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
    let existing = Secret {
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
    let msg = adoption(&ks(None), &existing, &desired)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("(it would add keys: c; drop: z)"),
        "only keys added or dropped, never which values differ: {msg}"
    );
    assert!(!msg.contains("change"), "{msg}");
    assert!(!msg.contains("secret-"), "no value: {msg}");
    let adopter = ks(Some(TargetSecret {
        adopt: Some(true),
        ..TargetSecret::default()
    }));
    // The flag alone is not enough: the Secret itself must invite this KeeperSecret.
    let refusal = adoption(&adopter, &existing, &desired).unwrap_err();
    assert_eq!(refusal.reason(), "TargetNotOptedIn");
    assert!(refusal.to_string().contains(ALLOW_MERGE_ANNOTATION));
    let mut existing = invite(existing);
    assert_eq!(adoption(&adopter, &existing, &desired), Ok(()));
    existing.type_ = Some("kubernetes.io/tls".into());
    let msg = adoption(&adopter, &existing, &desired)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("type kubernetes.io/tls, not Opaque"), "{msg}");
}

/// `secret` with the opt-in annotation for KeeperSecret `db`.
fn invite(mut secret: Secret) -> Secret {
    secret
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(ALLOW_MERGE_ANNOTATION.into(), "db".into());
    secret
}

fn hand_made(type_: Option<&str>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        },
        type_: type_.map(Into::into),
        data: Some([("user".to_string(), ByteString(b"app".to_vec()))].into()),
        ..Secret::default()
    }
}

fn with_policy(policy: CreationPolicy) -> KeeperSecret {
    ks(Some(TargetSecret {
        creation_policy: policy,
        ..TargetSecret::default()
    }))
}

/// What the operator would leave on `existing` after writing `desired` with server-side apply
/// (labels and annotations merged, data merged).
fn applied(existing: &Secret, desired: &Secret) -> Secret {
    let mut out = existing.clone();
    let meta = &mut out.metadata;
    meta.labels
        .get_or_insert_default()
        .extend(desired.metadata.labels.clone().unwrap_or_default());
    meta.annotations
        .get_or_insert_default()
        .extend(desired.metadata.annotations.clone().unwrap_or_default());
    if desired.metadata.owner_references.is_some() {
        meta.owner_references = desired.metadata.owner_references.clone();
    }
    out.data
        .get_or_insert_default()
        .extend(desired.data.clone().unwrap_or_default());
    out
}

#[test]
fn merge_needs_the_targets_own_invitation() {
    let merge = with_policy(CreationPolicy::Merge);
    let refusal = ownership(&merge, Some(&hand_made(None))).unwrap_err();
    assert_eq!(refusal.reason(), "TargetNotOptedIn");
    let msg = refusal.to_string();
    assert!(msg.contains("allow-merge-from: db"), "{msg}");
    assert!(msg.contains("nothing was written"), "{msg}");
    // An invitation for another KeeperSecret is no invitation.
    let mut elsewhere = hand_made(None);
    elsewhere
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(ALLOW_MERGE_ANNOTATION.into(), "other".into());
    assert_eq!(
        ownership(&merge, Some(&elsewhere)).unwrap_err().reason(),
        "TargetNotOptedIn"
    );
    assert_eq!(
        ownership(&merge, Some(&invite(hand_made(None)))),
        Ok(Ownership::Foreign)
    );
}

#[test]
fn a_merged_into_secret_never_becomes_ours() {
    // Merge into an invited hand-made Secret, as the operator would write it.
    let merge = with_policy(CreationPolicy::Merge);
    let target = invite(hand_made(None));
    let mut desired = secret(&merge, data(&[("password", b"p")]), &key())
        .unwrap()
        .secret;
    mark(&merge, provenance(&merge, Some(&target)), &mut desired);
    let merged = applied(&target, &desired);
    assert!(!created_for(&merge, &merged));
    // The same KeeperSecret with any other policy (as if creationPolicy could change): the
    // Secret is not ours, never deletable, and no write gives it an owner reference.
    for policy in [CreationPolicy::Owner, CreationPolicy::Orphan] {
        let owner = with_policy(policy);
        assert_ne!(ownership(&owner, Some(&merged)), Ok(Ownership::Ours));
        assert!(!created_for(&owner, &merged), "{policy:?}");
        assert_eq!(provenance(&owner, Some(&merged)), Provenance::Existing);
        let mut write = secret(&owner, data(&[("password", b"p")]), &key())
            .unwrap()
            .secret;
        mark(&owner, provenance(&owner, Some(&merged)), &mut write);
        assert!(write.metadata.owner_references.is_none(), "{policy:?}");
        assert!(
            !write
                .metadata
                .annotations
                .unwrap()
                .contains_key(CREATED_FOR_ANNOTATION)
        );
    }
}

#[test]
fn only_a_secret_created_for_this_keeper_secret_carries_the_marker() {
    let owner = with_policy(CreationPolicy::Owner);
    let build = |ks: &KeeperSecret, existing: Option<&Secret>| {
        let mut s = secret(ks, data(&[("a", b"1")]), &key()).unwrap().secret;
        mark(ks, provenance(ks, existing), &mut s);
        s
    };
    // Created now: marker and owner reference.
    let created = build(&owner, None);
    assert!(created_for(&owner, &created));
    assert_eq!(created.metadata.owner_references.as_ref().unwrap().len(), 1);
    // Written again later: it keeps both.
    let again = build(&owner, Some(&created));
    assert!(created_for(&owner, &again));
    assert!(again.metadata.owner_references.is_some());
    // A KeeperSecret of the same name but another UID did not create it.
    let mut successor = with_policy(CreationPolicy::Owner);
    successor.metadata.uid = Some("uid-2".into());
    assert!(!created_for(&successor, &created));
    let rewritten = build(&successor, Some(&created));
    assert!(rewritten.metadata.owner_references.is_none());
    // Orphan: the marker, no owner reference; Merge: neither, even on a create.
    let orphan = with_policy(CreationPolicy::Orphan);
    let o = build(&orphan, None);
    assert!(created_for(&orphan, &o) && o.metadata.owner_references.is_none());
    let merge = with_policy(CreationPolicy::Merge);
    let m = build(&merge, None);
    assert!(!created_for(&merge, &m) && m.metadata.owner_references.is_none());
    // An adopted Secret is written, never created.
    let adopted = build(&owner, Some(&invite(hand_made(Some("Opaque")))));
    assert!(!created_for(&owner, &adopted));
    assert!(adopted.metadata.owner_references.is_none());
}

#[test]
fn helm_releases_and_bootstrap_tokens_are_never_targets() {
    for type_ in PROTECTED_TYPES {
        let existing = invite(hand_made(Some(type_)));
        for policy in [
            CreationPolicy::Owner,
            CreationPolicy::Orphan,
            CreationPolicy::Merge,
        ] {
            let mut ks = with_policy(policy);
            if let Some(t) = ks.spec.target.as_mut() {
                t.type_ = Some(type_.to_string());
                t.adopt = Some(true);
            }
            let refusal = ownership(&ks, Some(&existing)).unwrap_err();
            assert_eq!(refusal.reason(), "NotAllowed", "{type_} {policy:?}");
            let err = secret(&ks, data(&[("a", b"1")]), &key()).unwrap_err();
            assert_eq!(err.reason(), "NotAllowed", "{type_} {policy:?}");
        }
    }
}

#[test]
fn a_tenant_cannot_forge_provenance_or_an_invitation_through_the_target() {
    for (key_, label) in [
        (CREATED_FOR_ANNOTATION, false),
        (ALLOW_MERGE_ANNOTATION, false),
        (OWNER_ANNOTATION, false),
        (MANAGED_BY_LABEL, true),
    ] {
        let mut t = TargetSecret::default();
        let map = if label {
            &mut t.labels
        } else {
            &mut t.annotations
        };
        map.insert(key_.to_string(), "db".to_string());
        let err = secret(&ks(Some(t)), data(&[("a", b"1")]), &key()).unwrap_err();
        assert_eq!(err.reason(), "NotAllowed", "{key_}");
    }
}
