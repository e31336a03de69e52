//! The reconciler's orchestration against a fake API server and a fake Keeper
//! ([`crate::controller::fixtures`]): which requests each situation costs, what gets written,
//! and what is refused.

use serde_json::json;

use super::*;
use crate::api::CREATED_FOR_ANNOTATION;
use crate::controller::fixtures::{
    Fixture, bound_config, keeper_secret_path as ks_path, secret_path,
};
use crate::ksm::config::KsmConfig;
use crate::ksm::error::KsmError;
use crate::ksm::record::{Field, Record, Vault};

const NS: &str = "shop";
const UID: &str = "AAAAAAAAAAAAAAAAAAAAAA";
const OTHER: &str = "BBBBBBBBBBBBBBBBBBBBBB";

fn record(uid: &str, password: &str, revision: i64) -> Record {
    Record {
        uid: uid.into(),
        title: format!("record {uid}"),
        record_type: "login".into(),
        revision,
        folder_uid: None,
        inner_folder_uid: None,
        fields: vec![Field {
            field_type: "password".into(),
            label: None,
            value: vec![json!(password)],
        }],
        custom: vec![],
        notes: None,
        files: vec![],
    }
}

/// Keeper holds `records`, and the shared data is due for a refresh.
fn keeper_has(f: &Fixture, records: Vec<Record>) {
    keeper_now_holds(f, records);
    *lock(&f.ctx.keeper.fetched) = None;
}

/// Keeper holds `records` from now on; the shared data keeps what it fetched before.
fn keeper_now_holds(f: &Fixture, records: Vec<Record>) {
    *lock(&f.ctx.keeper.vault) = Vault {
        records,
        ..Vault::default()
    };
}

/// The shared data was fetched `age` ago.
fn age_shared_data(f: &Fixture, age: Duration) {
    if let Some((_, at)) = lock(&f.ctx.keeper.fetched).as_mut() {
        *at -= age;
    }
}

/// KeeperSecret `db` mapping the password of `UID`, with `spec` merged over that.
fn keeper_secret(spec: serde_json::Value) -> KeeperSecret {
    let mut value = json!({
        "apiVersion": "keeper-operator.dev/v1alpha1",
        "kind": "KeeperSecret",
        "metadata": {"name": "db", "namespace": NS},
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

/// A fixture with a stored credential and Keeper holding `UID` with password `s3cret`.
fn fixture() -> Fixture {
    let f = Fixture::new();
    f.credential(NS, "ksm-config", &bound_config().to_json());
    keeper_has(&f, vec![record(UID, "s3cret", 1)]);
    f
}

/// A fixture after KeeperSecret `db` synced once and the watch delivered its Secret.
async fn synced() -> Fixture {
    let mut f = fixture();
    f.create(&keeper_secret(json!({})));
    f.reconcile(NS, "db").await.expect("the first sync");
    f.watch_secret(NS, "db");
    f.api.take_requests();
    f
}

fn password(f: &Fixture) -> Vec<u8> {
    let secret = f.secret(NS, "db").expect("the Secret exists");
    secret.data.unwrap_or_default()["password"].0.clone()
}

fn ready(f: &Fixture) -> (String, String) {
    let ks = f.keeper_secret(NS, "db");
    let ready = ks.ready_condition().expect("a Ready condition");
    (ready.status.clone(), ready.reason.clone())
}

fn secret_writes(requests: &[String]) -> usize {
    requests
        .iter()
        .filter(|r| r.starts_with("PATCH /api/v1/") && r.contains("/secrets/"))
        .count()
}

#[tokio::test]
async fn a_new_keeper_secret_costs_one_keeper_call_and_four_requests() {
    let f = fixture();
    f.create(&keeper_secret(json!({})));
    f.reconcile(NS, "db").await.unwrap();
    assert_eq!(
        f.api.take_requests(),
        [
            format!("GET {}", secret_path(NS, "ksm-config")),
            format!("GET {}", secret_path(NS, "db")),
            format!("PATCH {}", secret_path(NS, "db")),
            format!("PATCH {}/status", ks_path(NS, "db")),
        ]
    );
    assert_eq!(f.keeper_calls(), 1);
    assert_eq!(password(&f), b"s3cret");
    assert_eq!(ready(&f), ("True".into(), "Synced".into()));
    let status = f.keeper_secret(NS, "db").status.unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.records[0].uid, UID);
    // The Ready transition is announced once, off the reconcile's path.
    for _ in 0..100 {
        if !f.api.events().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(f.api.events(), ["Synced"]);
}

#[tokio::test]
async fn a_settled_keeper_secret_costs_no_request_and_no_keeper_call() {
    let f = synced().await;
    f.reconcile(NS, "db").await.unwrap();
    assert_eq!(f.api.take_requests(), Vec::<String>::new());
    assert_eq!(f.keeper_calls(), 1, "only the first sync read Keeper");
}

#[tokio::test]
async fn a_hand_edited_secret_is_read_and_restored_without_rewriting_status() {
    let mut f = synced().await;
    let path = secret_path(NS, "db");
    f.api
        .edit(&path, |s| s["data"]["password"] = json!("aGFja2Vk"));
    f.watch_secret(NS, "db");
    f.reconcile(NS, "db").await.unwrap();
    assert_eq!(
        f.api.take_requests(),
        [format!("GET {path}"), format!("PATCH {path}")],
        "the version moved, so the memo no longer vouches: one read, one write, and the \
         status (same data, same records) is not rewritten"
    );
    assert_eq!(password(&f), b"s3cret");
}

#[tokio::test]
async fn merge_into_a_missing_secret_is_refused_without_a_write() {
    let f = fixture();
    f.create(&keeper_secret(
        json!({"target": {"creationPolicy": "Merge"}}),
    ));
    let err = f.reconcile(NS, "db").await.unwrap_err();
    assert_eq!(err.reason(), "TargetNotFound");
    let requests = f.api.take_requests();
    assert_eq!(secret_writes(&requests), 0, "{requests:?}");
    assert_eq!(f.keeper_calls(), 0, "refused before reading Keeper");
    assert_eq!(ready(&f), ("False".into(), "TargetNotFound".into()));
}

#[tokio::test]
async fn merge_adds_keys_to_a_foreign_secret_and_keeps_its_own() {
    let f = fixture();
    f.api.put(
        &secret_path(NS, "db"),
        json!({"metadata": {"name": "db", "namespace": NS}, "type": "Opaque",
               "data": {"user": "YXBw"}}),
    );
    f.create(&keeper_secret(
        json!({"target": {"creationPolicy": "Merge"}}),
    ));
    // Without the Secret's own opt-in nothing is written, and the status says why.
    let err = f.reconcile(NS, "db").await.unwrap_err();
    assert_eq!(err.reason(), "TargetNotOptedIn");
    assert_eq!(secret_writes(&f.api.take_requests()), 0);
    assert_eq!(ready(&f), ("False".into(), "TargetNotOptedIn".into()));
    assert!(
        !f.secret(NS, "db")
            .unwrap()
            .data
            .unwrap()
            .contains_key("password")
    );

    invite(&f, "db");
    f.reconcile(NS, "db").await.unwrap();
    let secret = f.secret(NS, "db").unwrap();
    let data = secret.data.clone().unwrap();
    assert_eq!(data["password"].0, b"s3cret");
    assert_eq!(data["user"].0, b"app");
    // Marked as merged into, never as ours.
    let annotations = secret.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations[crate::api::MERGED_BY_ANNOTATION], "db");
    assert!(!annotations.contains_key(crate::api::OWNER_ANNOTATION));
    assert!(!annotations.contains_key(crate::api::CREATED_FOR_ANNOTATION));
    let labels = secret.metadata.labels.unwrap_or_default();
    assert!(!labels.contains_key(crate::api::MANAGED_BY_LABEL));
}

/// The owner of Secret `name` invites KeeperSecret `db` to merge into or adopt it.
fn invite(f: &Fixture, name: &str) {
    f.api.edit(&secret_path(NS, name), |s| {
        s["metadata"]["annotations"][crate::api::ALLOW_MERGE_ANNOTATION] = json!("db");
    });
}

/// Changes the spec of KeeperSecret `db` to `spec` (merged over the default) as a new generation.
fn respec(f: &Fixture, spec: serde_json::Value) {
    let ks = keeper_secret(spec);
    f.api.edit(&ks_path(NS, "db"), |v| {
        let generation = v["metadata"]["generation"].as_i64().unwrap_or(1);
        v["spec"] = serde_json::to_value(&ks.spec).unwrap();
        v["metadata"]["generation"] = json!(generation + 1);
    });
}

/// Asks KeeperSecret `db` for an immediate sync (a new force-sync value each time).
fn force(f: &Fixture) {
    f.api.edit(&ks_path(NS, "db"), |ks| {
        let n = ks["metadata"]["annotations"][crate::api::FORCE_SYNC_ANNOTATION]
            .as_str()
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        ks["metadata"]["annotations"][crate::api::FORCE_SYNC_ANNOTATION] =
            json!((n + 1).to_string());
    });
}

/// A forced reconcile of `db`.
async fn forced(f: &Fixture) -> Result<Action, Error> {
    force(f);
    f.reconcile(NS, "db").await
}

/// A fixture after KeeperSecret `db`, under `deletionPolicy: Delete`, synced once.
async fn synced_under_delete_policy() -> Fixture {
    let f = fixture();
    f.create(&keeper_secret(
        json!({"target": {"deletionPolicy": "Delete"}}),
    ));
    f.reconcile(NS, "db").await.unwrap();
    f
}

/// A hand-made Secret `db` of `type_` holding `data`, inviting KeeperSecret `db` to merge.
fn invited_secret(f: &Fixture, type_: &str, data: serde_json::Value) {
    f.api.put(
        &secret_path(NS, "db"),
        json!({"metadata": {"name": "db", "namespace": NS,
                            "annotations": {(crate::api::ALLOW_MERGE_ANNOTATION): "db"}},
               "type": type_, "data": data}),
    );
}

/// Keeper's record is deleted and the next two reconciles each see a new answer.
async fn delete_record_and_reconcile_twice(f: &Fixture) -> Vec<Result<Action, Error>> {
    keeper_has(f, vec![]);
    let first = forced(f).await;
    age_shared_data(f, Duration::from_secs(60));
    let second = forced(f).await;
    vec![first, second]
}

#[tokio::test]
async fn a_merged_into_secret_is_never_deleted_whatever_the_policies_become() {
    let f = fixture();
    invited_secret(&f, "Opaque", json!({"user": "YXBw"}));
    f.create(&keeper_secret(
        json!({"target": {"creationPolicy": "Merge"}}),
    ));
    f.reconcile(NS, "db").await.unwrap();
    // The tenant switches to Owner and Delete (the CRD forbids changing creationPolicy; this
    // is the operator's own line of defence), then deletes the record in Keeper.
    respec(
        &f,
        json!({"target": {"creationPolicy": "Owner", "deletionPolicy": "Delete"}}),
    );
    let _ = forced(&f).await;
    for outcome in delete_record_and_reconcile_twice(&f).await {
        let _ = outcome;
    }
    let requests = f.api.take_requests();
    assert!(
        !requests.iter().any(|r| r.starts_with("DELETE")),
        "{requests:?}"
    );
    let secret = f.secret(NS, "db").expect("the hand-made Secret survives");
    assert_eq!(secret.data.unwrap()["user"].0, b"app");
    assert!(
        secret
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty(),
        "no owner reference, so no garbage collection"
    );
}

#[tokio::test]
async fn a_created_secret_is_deleted_only_after_two_fresh_answers_lack_its_records() {
    let f = synced_under_delete_policy().await;
    let created = f.secret(NS, "db").unwrap();
    let uid = f.keeper_secret(NS, "db").metadata.uid.unwrap();
    assert_eq!(
        created.metadata.annotations.unwrap()[crate::api::CREATED_FOR_ANNOTATION],
        uid
    );
    assert_eq!(created.metadata.owner_references.unwrap()[0].uid, uid);

    keeper_has(&f, vec![]);
    let err = forced(&f).await.unwrap_err();
    assert_eq!(err.reason(), "DeletionHeld");
    assert!(err.to_string().contains("next answer"), "{err}");
    assert!(f.secret(NS, "db").is_some(), "one answer is not enough");
    assert_eq!(ready(&f), ("False".into(), "DeletionHeld".into()));

    // A later, distinct answer agrees: now it goes.
    age_shared_data(&f, Duration::from_secs(60));
    forced(&f).await.unwrap();
    assert!(f.secret(NS, "db").is_none());
}

#[tokio::test]
async fn a_record_that_comes_back_between_two_answers_is_not_deleted() {
    let f = synced_under_delete_policy().await;
    keeper_has(&f, vec![]);
    assert_eq!(forced(&f).await.unwrap_err().reason(), "DeletionHeld");
    // A glitch: the next answer has it again, the one after lacks it again.
    keeper_has(&f, vec![record(UID, "s3cret", 1)]);
    forced(&f).await.unwrap();
    keeper_has(&f, vec![]);
    assert_eq!(forced(&f).await.unwrap_err().reason(), "DeletionHeld");
    assert!(f.secret(NS, "db").is_some());
}

#[tokio::test]
async fn a_record_that_does_not_decrypt_is_never_taken_for_deleted() {
    let f = synced_under_delete_policy().await;
    // The record is in Keeper, but its key does not decrypt: it is missing from the vault.
    let broken = || {
        *lock(&f.ctx.keeper.vault) = Vault {
            records: vec![],
            skipped: crate::ksm::record::Skipped {
                records: [UID.to_string()].into(),
                ..Default::default()
            },
            ..Vault::default()
        };
        *lock(&f.ctx.keeper.fetched) = None;
    };
    for _ in 0..3 {
        broken();
        let err = forced(&f).await.unwrap_err();
        assert_eq!(err.reason(), "DeletionHeld");
        assert!(err.to_string().contains("did not decrypt"), "{err}");
    }
    assert_eq!(password(&f), b"s3cret");
}

#[tokio::test]
async fn deletion_merge_keeps_keys_of_records_missing_from_the_last_good_copy() {
    let f = fixture();
    let two = json!([
        {"key": "password", "record": {"uid": UID}, "field": "password"},
        {"key": "other", "record": {"uid": OTHER}, "field": "password"},
    ]);
    keeper_has(&f, vec![record(UID, "s3cret", 1), record(OTHER, "o", 1)]);
    f.create(&keeper_secret(
        json!({"data": two, "target": {"deletionPolicy": "Merge"}}),
    ));
    f.reconcile(NS, "db").await.unwrap();
    // Keeper is down; the sealed copy it restores lacks OTHER.
    keeper_now_holds(&f, vec![record(UID, "s3cret", 1)]);
    *lock(&f.ctx.keeper.stale) = Some(KsmError::Unavailable("down".into()));
    for _ in 0..2 {
        let err = forced(&f).await.unwrap_err();
        assert_eq!(err.reason(), "DeletionHeld");
        assert!(err.to_string().contains("last good copy"), "{err}");
    }
    let data = f.secret(NS, "db").unwrap().data.unwrap();
    assert_eq!(data["other"].0, b"o", "no key removed from a stale copy");
}

#[tokio::test]
async fn a_refused_credential_creates_nothing_and_recreates_nothing() {
    let mut f = synced().await;
    // The device is revoked; the fetcher serves the last good copy with the refusal.
    *lock(&f.ctx.keeper.stale) = Some(KsmError::AccessDenied {
        message: "Signature is invalid".into(),
    });
    f.delete_secret(NS, "db");
    let err = f.reconcile(NS, "db").await.unwrap_err();
    assert_eq!(err.reason(), "CredentialRefused");
    assert!(f.secret(NS, "db").is_none(), "not re-created from the copy");
    assert_eq!(ready(&f), ("False".into(), "CredentialRefused".into()));

    // A new KeeperSecret on the same credential: nothing is created either.
    let mut fresh = keeper_secret(json!({"target": {"name": "new"}}));
    fresh.metadata.name = Some("new".into());
    f.create(&fresh);
    let err = f.reconcile(NS, "new").await.unwrap_err();
    assert_eq!(err.reason(), "CredentialRefused");
    assert!(f.secret(NS, "new").is_none());
    let requests = f.api.take_requests();
    assert_eq!(secret_writes(&requests), 0, "{requests:?}");
}

#[tokio::test]
async fn a_refusal_after_the_last_fetch_stops_writes_from_the_copy_in_memory() {
    let mut f = synced().await;
    // Keeper refused the credential after the shared data was fetched: the data is young
    // enough to be served as fresh, but it is the last good copy all the same.
    *lock(&f.ctx.keeper.failure) = Some(KsmError::AccessDenied {
        message: "Signature is invalid".into(),
    });
    f.delete_secret(NS, "db");
    let err = f.reconcile(NS, "db").await.unwrap_err();
    assert_eq!(err.reason(), "CredentialRefused");
    assert!(f.secret(NS, "db").is_none());
}

#[tokio::test]
async fn an_outage_still_restores_a_deleted_secret_from_the_last_good_copy() {
    let mut f = synced().await;
    *lock(&f.ctx.keeper.stale) = Some(KsmError::Unavailable("down".into()));
    f.delete_secret(NS, "db");
    f.reconcile(NS, "db").await.unwrap();
    assert_eq!(password(&f), b"s3cret");
}

#[tokio::test]
async fn adopt_needs_the_secrets_invitation_and_never_makes_it_deletable() {
    let f = fixture();
    f.api.put(
        &secret_path(NS, "db"),
        json!({"metadata": {"name": "db", "namespace": NS}, "type": "Opaque",
               "data": {"user": "YXBw"}}),
    );
    f.create(&keeper_secret(
        json!({"target": {"adopt": true, "deletionPolicy": "Delete"}}),
    ));
    let err = f.reconcile(NS, "db").await.unwrap_err();
    assert_eq!(err.reason(), "TargetNotOptedIn");
    assert_eq!(secret_writes(&f.api.take_requests()), 0);
    assert!(
        f.secret(NS, "db")
            .unwrap()
            .data
            .unwrap()
            .contains_key("user")
    );

    invite(&f, "db");
    f.reconcile(NS, "db").await.unwrap();
    let adopted = f.secret(NS, "db").unwrap();
    assert_eq!(password(&f), b"s3cret");
    assert!(
        adopted
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    assert!(
        !adopted
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(crate::api::CREATED_FOR_ANNOTATION)
    );
    // Every record gone, twice: an adopted Secret is kept, and the status says why.
    let outcomes = delete_record_and_reconcile_twice(&f).await;
    let err = outcomes[1].as_ref().unwrap_err();
    assert_eq!(err.reason(), "DeletionHeld");
    assert!(err.to_string().contains("did not create"), "{err}");
    assert!(f.secret(NS, "db").is_some());
    assert_eq!(password(&f), b"s3cret");
}

#[tokio::test]
async fn a_helm_release_is_never_written() {
    let f = fixture();
    invited_secret(&f, "helm.sh/release.v1", json!({"release": "SDRzSQ=="}));
    f.create(&keeper_secret(
        json!({"target": {"creationPolicy": "Merge", "type": "helm.sh/release.v1"}}),
    ));
    let err = f.reconcile(NS, "db").await.unwrap_err();
    assert_eq!(err.reason(), "NotAllowed");
    assert_eq!(secret_writes(&f.api.take_requests()), 0);
}

#[tokio::test]
async fn a_secret_created_by_someone_else_is_never_written() {
    let f = fixture();
    let foreign =
        json!({"metadata": {"name": "db", "namespace": NS}, "data": {"password": "bWluZQ=="}});
    f.api.put(&secret_path(NS, "db"), foreign);
    f.create(&keeper_secret(json!({})));
    let err = f.reconcile(NS, "db").await.unwrap_err();
    assert_eq!(err.reason(), "SecretOwnedElsewhere");
    assert_eq!(secret_writes(&f.api.take_requests()), 0);
    assert_eq!(password(&f), b"mine");
}

#[tokio::test]
async fn a_changed_value_is_written_over_the_vouched_secret_without_reading_it() {
    let f = synced().await;
    keeper_has(&f, vec![record(UID, "rotated", 2)]);
    forced(&f).await.unwrap();
    let path = secret_path(NS, "db");
    assert_eq!(
        f.api.take_requests(),
        [
            format!("PATCH {path}"),
            format!("PATCH {}/status", ks_path(NS, "db"))
        ],
        "the watch still shows the version last written, with the same keys filled: the \
         Secret is written over as it was created, without a read"
    );
    assert_eq!(password(&f), b"rotated");
    let secret = f.secret(NS, "db").unwrap();
    assert!(
        secret.annotations().contains_key(CREATED_FOR_ANNOTATION),
        "still marked as created for the KeeperSecret"
    );
}

#[tokio::test]
async fn an_emptied_value_is_read_first_so_the_write_guard_sees_it() {
    let f = synced().await;
    // Same revision, yet the value decrypted empty: the keys filled differ from the vouched
    // Secret's, so it is read, and the guard refuses.
    keeper_has(&f, vec![record(UID, "", 1)]);
    let err = forced(&f).await.unwrap_err();
    assert_eq!(err.reason(), "WriteRefused");
    let requests = f.api.take_requests();
    assert!(requests.contains(&format!("GET {}", secret_path(NS, "db"))));
    assert_eq!(secret_writes(&requests), 0);
    assert_eq!(password(&f), b"s3cret");
}

#[tokio::test]
async fn the_write_guard_refuses_to_empty_a_value_while_keeper_is_unchanged() {
    let mut f = synced().await;
    // Same record revision, yet the value decrypted empty: a glitch, not a change in Keeper.
    keeper_has(&f, vec![record(UID, "", 1)]);
    // Someone edits the Secret, so it is synced again at once.
    let path = secret_path(NS, "db");
    f.api
        .edit(&path, |s| s["data"]["password"] = json!("ZWRpdGVk"));
    f.watch_secret(NS, "db");
    let err = f.reconcile(NS, "db").await.unwrap_err();
    assert_eq!(err.reason(), "WriteRefused");
    assert_eq!(secret_writes(&f.api.take_requests()), 0);
    assert_eq!(password(&f), b"edited", "nothing is emptied");

    // A new revision in Keeper is a real change: the same empty value is then written.
    keeper_has(&f, vec![record(UID, "", 2)]);
    f.reconcile(NS, "db").await.unwrap();
    assert_eq!(password(&f), b"");
}

#[tokio::test]
async fn a_one_time_token_is_redeemed_in_place_then_used() {
    let f = Fixture::new();
    keeper_has(&f, vec![record(UID, "s3cret", 1)]);
    let token = format!("US:{}", crate::ksm::crypto::b64_url(&[7; 32]));
    f.credential(NS, "ksm-config", &token);
    f.create(&keeper_secret(json!({})));
    f.reconcile(NS, "db").await.unwrap();
    assert_eq!(*lock(&f.ctx.keeper.redeemed), std::slice::from_ref(&token));
    let stored = f.secret(NS, "ksm-config").unwrap().data.unwrap()["config"].clone();
    let stored = String::from_utf8(stored.0).unwrap();
    assert!(
        KsmConfig::parse(&stored).is_ok_and(|c| c.is_bound()),
        "the token is replaced by the bound config"
    );
    let requests = f.api.take_requests();
    let cred = secret_path(NS, "ksm-config");
    assert_eq!(requests[0], format!("GET {cred}"));
    assert!(
        requests[1..]
            .iter()
            .take_while(|r| r.contains("ksm-config"))
            .all(|r| *r == format!("PUT {cred}")),
        "claimed and stored through conditioned updates: {requests:?}"
    );
    assert_eq!(password(&f), b"s3cret");
}

#[tokio::test]
async fn a_store_borrower_cannot_read_a_record_the_store_does_not_allow() {
    let f = Fixture::new();
    keeper_has(
        &f,
        vec![record(UID, "s3cret", 1), record(OTHER, "other", 1)],
    );
    f.credential("keeper-system", "shared", &bound_config().to_json());
    f.api.put(
        "/apis/keeper-operator.dev/v1alpha1/clusterkeeperstores/shared",
        json!({"apiVersion": "keeper-operator.dev/v1alpha1", "kind": "ClusterKeeperStore",
               "metadata": {"name": "shared"},
               "spec": {"credentialsSecretRef": {"name": "shared", "key": "config"},
                        "namespaces": [NS], "allowedRecords": [OTHER]}}),
    );
    f.api.put(
        &format!("/api/v1/namespaces/{NS}"),
        json!({"metadata": {"name": NS}}),
    );
    let store = json!({"storeRef": {"name": "shared"}});
    f.create(&keeper_secret(json!({"auth": store})));
    let err = f.reconcile(NS, "db").await.unwrap_err();
    assert_eq!(err.reason(), "NotAllowed");
    let message = err.to_string();
    assert!(!message.contains("s3cret"), "{message}");
    assert!(f.secret(NS, "db").is_none());

    // The allowed record syncs through the same store.
    let allowed = json!([{"key": "password", "record": {"uid": OTHER}, "field": "password"}]);
    let ks = keeper_secret(json!({"auth": store, "data": allowed}));
    f.api.edit(&ks_path(NS, "db"), |v| {
        v["spec"] = serde_json::to_value(&ks.spec).unwrap();
        v["metadata"]["generation"] = json!(2);
    });
    f.reconcile(NS, "db").await.unwrap();
    assert_eq!(password(&f), b"other");
}

#[tokio::test]
async fn a_record_created_after_the_last_fetch_is_read_at_once_and_only_once() {
    let f = synced().await;
    // A user creates a record in Keeper a minute after the credential's last fetch, then
    // applies a KeeperSecret for it.
    keeper_now_holds(&f, vec![record(UID, "s3cret", 1), record(OTHER, "new", 1)]);
    age_shared_data(&f, Duration::from_secs(60));
    let mapped =
        |uid: &str| json!([{"key": "password", "record": {"uid": uid}, "field": "password"}]);
    let create = |name: &str, uid: &str| {
        let mut ks = keeper_secret(json!({"data": mapped(uid), "target": {"name": name}}));
        ks.metadata.name = Some(name.into());
        f.create(&ks);
    };
    create("fresh", OTHER);
    f.reconcile(NS, "fresh").await.unwrap();
    assert_eq!(f.keeper_calls(), 2, "one more fetch, at once");
    let data = f.secret(NS, "fresh").unwrap().data.unwrap();
    assert_eq!(data["password"].0, b"new");

    // A record that does not exist: the data is seconds old, so no fetch for it yet...
    let nobody = "CCCCCCCCCCCCCCCCCCCCCC";
    create("typo", nobody);
    let action = f.reconcile(NS, "typo").await.unwrap();
    assert_eq!(f.keeper_calls(), 2);
    let wait = format!("{action:?}");
    assert!(
        wait.contains("requeue_after: Some(") && !wait.contains("Some(0ns)"),
        "{wait}"
    );
    // ...but one once the data is as old as the floor: still missing, so it fails.
    age_shared_data(&f, refresh::REFETCH_FLOOR);
    let err = f.reconcile(NS, "typo").await.unwrap_err();
    assert_eq!(err.reason(), "RecordNotFound");
    assert_eq!(f.keeper_calls(), 3);
    // Once its failure is recorded, retries wait for the normal refresh however old the data
    // gets: a reference that stays missing adds no more calls.
    age_shared_data(&f, Duration::from_secs(600));
    let err = f.reconcile(NS, "typo").await.unwrap_err();
    assert_eq!(err.reason(), "RecordNotFound");
    assert_eq!(f.keeper_calls(), 3);
}

#[tokio::test]
async fn a_miss_waits_for_data_fetched_after_it_however_young_siblings_keep_the_data() {
    let f = synced().await;
    let nobody = "CCCCCCCCCCCCCCCCCCCCCC";
    let mut ks = keeper_secret(json!({
        "data": [{"key": "password", "record": {"uid": nobody}, "field": "password"}],
        "target": {"name": "typo"},
    }));
    ks.metadata.name = Some("typo".into());
    f.create(&ks);
    // The data is young: wait for the floor, no call.
    f.reconcile(NS, "typo").await.unwrap();
    assert_eq!(f.keeper_calls(), 1);
    // A sibling reads Keeper again after the miss (asked to)...
    keeper_now_holds(&f, vec![record(UID, "rotated", 2)]);
    f.api.edit(&ks_path(NS, "db"), |ks| {
        ks["metadata"]["annotations"] = json!({(crate::api::FORCE_SYNC_ANNOTATION): "now"});
    });
    f.reconcile(NS, "db").await.unwrap();
    assert_eq!(f.keeper_calls(), 2);
    // ...and, though still young, that answer settles it: no call of its own.
    let calls = f.keeper_calls();
    let err = f.reconcile(NS, "typo").await.unwrap_err();
    assert_eq!(err.reason(), "RecordNotFound");
    assert_eq!(f.keeper_calls(), calls);
}

#[tokio::test]
async fn a_sync_request_reads_keeper_at_once_and_is_answered_in_status() {
    let mut f = synced().await;
    keeper_now_holds(&f, vec![record(UID, "rotated", 2)]);
    age_shared_data(&f, Duration::from_secs(60));
    // Nothing is due for an hour...
    f.reconcile(NS, "db").await.unwrap();
    assert_eq!(password(&f), b"s3cret");
    // ...until someone asks.
    f.api.edit(&ks_path(NS, "db"), |ks| {
        ks["metadata"]["annotations"] = json!({(crate::api::FORCE_SYNC_ANNOTATION): "now"});
    });
    f.reconcile(NS, "db").await.unwrap();
    assert_eq!(password(&f), b"rotated");
    assert_eq!(f.keeper_calls(), 2);
    let status = f.keeper_secret(NS, "db").status.unwrap();
    assert_eq!(status.last_handled_reconcile_at.as_deref(), Some("now"));
    // Answered: once the watch delivers the new Secret, the next reconcile is quiet again.
    f.watch_secret(NS, "db");
    f.api.take_requests();
    f.reconcile(NS, "db").await.unwrap();
    assert_eq!(f.api.take_requests(), Vec::<String>::new());
}

#[tokio::test]
async fn a_storm_of_sync_requests_costs_one_sync_per_spacing() {
    let mut f = Fixture::with_settings(|s| s.forced_sync_spacing = Duration::from_secs(10));
    f.credential(NS, "ksm-config", &bound_config().to_json());
    keeper_has(&f, vec![record(UID, "s3cret", 1)]);
    f.create(&keeper_secret(json!({})));
    f.reconcile(NS, "db").await.unwrap();
    f.watch_secret(NS, "db");
    f.api.take_requests();
    // A request reads data fetched after it (its value is no time: data fetched now).
    forced(&f).await.unwrap();
    assert_eq!(f.keeper_calls(), 2);
    f.api.take_requests();
    // Twenty more at once wait for the spacing, at no cost to the API server or Keeper.
    for _ in 0..20 {
        let action = forced(&f).await.unwrap();
        let wait = format!("{action:?}");
        assert!(
            wait.contains("requeue_after: Some(") && !wait.contains("Some(0ns)"),
            "{wait}"
        );
    }
    assert_eq!(f.api.take_requests(), Vec::<String>::new());
    assert_eq!(f.keeper_calls(), 2, "coalesced: no Keeper call");
}

#[tokio::test]
async fn an_unchanged_template_source_costs_a_metadata_read_not_its_content() {
    // The source cache is process-wide: a name no other test uses.
    const SOURCE: &str = "unchanged-source-is-cached";
    let path = format!("/api/v1/namespaces/{NS}/configmaps/{SOURCE}");
    let f = fixture();
    f.api.put(
        &path,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": SOURCE, "namespace": NS},
            "data": {"url": "postgres://app:{{ password }}@db"},
        }),
    );
    f.create(&keeper_secret(json!({
        "target": {"template": {"templateFrom": [{"configMap": {"name": SOURCE}}]}},
    })));
    let reads = |f: &Fixture| -> Vec<String> {
        f.api
            .take_requests()
            .into_iter()
            .filter(|r| r.contains("/configmaps/"))
            .collect()
    };
    let url = |f: &Fixture| f.secret(NS, "db").unwrap().data.unwrap()["url"].0.clone();
    f.reconcile(NS, "db").await.unwrap();
    assert_eq!(url(&f), b"postgres://app:s3cret@db");
    assert_eq!(
        reads(&f),
        [format!("GET {path} (metadata)"), format!("GET {path}")]
    );
    // Unchanged: its version is checked, its content comes from the cache.
    forced(&f).await.unwrap();
    assert_eq!(reads(&f), [format!("GET {path} (metadata)")]);
    // Edited: read whole again, and used.
    f.api.edit(&path, |cm| {
        cm["data"]["url"] = json!("postgres://app:{{ password }}@replica");
    });
    forced(&f).await.unwrap();
    assert_eq!(
        reads(&f),
        [format!("GET {path} (metadata)"), format!("GET {path}")]
    );
    assert_eq!(url(&f), b"postgres://app:s3cret@replica");
}
