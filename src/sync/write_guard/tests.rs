use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use super::*;
use crate::api::{KeeperSecretStatus, TargetSecret};

fn ks(
    policy: CreationPolicy,
    generation: i64,
    observed: i64,
    synced: &[(&str, i64)],
) -> KeeperSecret {
    let mut ks = crate::api::test_keeper_secret();
    ks.spec.target = Some(TargetSecret {
        creation_policy: policy,
        ..TargetSecret::default()
    });
    ks.metadata.generation = Some(generation);
    ks.status = Some(KeeperSecretStatus {
        observed_generation: Some(observed),
        records: revisions(synced).into_iter().collect(),
        ..KeeperSecretStatus::default()
    });
    ks
}

fn revisions(r: &[(&str, i64)]) -> BTreeSet<RecordRevision> {
    r.iter()
        .map(|(uid, revision)| RecordRevision {
            uid: uid.to_string(),
            revision: *revision,
        })
        .collect()
}

fn secret(data: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

#[test]
fn same_revisions_never_empty_or_drop_a_value() {
    let ks = ks(CreationPolicy::Owner, 2, 2, &[("r", 7)]);
    let before = secret(&[("user", "app"), ("password", "s3cret")]);
    let emptied = check(
        &ks,
        Some(&before),
        &secret(&[("user", "app"), ("password", "")]),
        &revisions(&[("r", 7)]),
    );
    let err = emptied.unwrap_err();
    assert_eq!((err.key.as_str(), err.what), ("password", "empty"));
    assert!(!err.to_string().contains("s3cret"));
    let dropped = check(
        &ks,
        Some(&before),
        &secret(&[("user", "app")]),
        &revisions(&[("r", 7)]),
    );
    assert_eq!(dropped.unwrap_err().what, "drop");
}

#[test]
fn a_real_change_in_keeper_is_applied() {
    let ks = ks(CreationPolicy::Owner, 2, 2, &[("r", 7)]);
    let before = secret(&[("user", "app"), ("password", "s3cret")]);
    let after = secret(&[("user", "app"), ("password", "")]);
    assert!(check(&ks, Some(&before), &after, &revisions(&[("r", 8)])).is_ok());
}

#[test]
fn a_spec_change_is_applied() {
    let ks = ks(CreationPolicy::Owner, 3, 2, &[("r", 7)]);
    let before = secret(&[("user", "app"), ("password", "s3cret")]);
    assert!(
        check(
            &ks,
            Some(&before),
            &secret(&[("user", "app")]),
            &revisions(&[("r", 7)])
        )
        .is_ok()
    );
}

#[test]
fn merge_does_not_own_keys_it_does_not_send_but_never_empties_its_own() {
    let ks = ks(CreationPolicy::Merge, 1, 1, &[("r", 7)]);
    let before = secret(&[("theirs", "x"), ("password", "s3cret")]);
    assert!(
        check(
            &ks,
            Some(&before),
            &secret(&[("password", "s3cret")]),
            &revisions(&[("r", 7)])
        )
        .is_ok()
    );
    assert!(
        check(
            &ks,
            Some(&before),
            &secret(&[("password", "")]),
            &revisions(&[("r", 7)])
        )
        .is_err()
    );
}

#[test]
fn first_sync_and_missing_secret_are_not_guarded() {
    let mut fresh = ks(CreationPolicy::Owner, 1, 1, &[]);
    fresh.status = None;
    let before = secret(&[("password", "s3cret")]);
    assert!(check(&fresh, Some(&before), &secret(&[]), &revisions(&[("r", 1)])).is_ok());
    let synced = ks(CreationPolicy::Owner, 1, 1, &[("r", 7)]);
    assert!(check(&synced, None, &secret(&[]), &revisions(&[("r", 7)])).is_ok());
}
