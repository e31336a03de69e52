//! The operator's KSM client (`keeper_operator::ksm`) against the test server, through token
//! redemption, every read path and every error path the operator has to tell apart.

use keeper_e2e::ksm_server::uids::{
    ANALYTICS, CERT_FILE, DATABASES, POSTGRES, PRODUCTION, STRIPE, WEB_CERT,
};
use keeper_e2e::ksm_server::{
    AppSpec, DownMode, FileFailure, Listing, RateLimit, RetryAfterHeader, ServerOptions,
    TestServer, ThrottleBody, flat_in_folder_sample_vault, sample_file, sample_vault,
};
use keeper_operator::ksm::crypto::{b64_decode, public_key_bytes};
use keeper_operator::ksm::record::notation::{Notation, NotationValue, resolve};
use keeper_operator::ksm::{KsmClient, KsmConfig, KsmError, Query, redeem_token};
use std::time::{Duration, Instant};

/// What a Secret can hold.
const BUDGET: u64 = 1 << 20;

fn cert_pem() -> Vec<u8> {
    sample_file(CERT_FILE)
}

fn text(values: Vec<NotationValue>) -> Vec<String> {
    values.iter().filter_map(NotationValue::to_text).collect()
}

#[tokio::test]
async fn redeems_a_token_like_the_sdks() {
    let server = TestServer::sample().await.unwrap();
    let token = server.issue_token("operator").unwrap();
    let config = server.redeem(&token).await.unwrap();
    assert!(config.is_bound());
    assert_eq!(config.hostname(), server.hostname());
    // Bind, then the re-fetch every SDK makes.
    assert_eq!(server.counters().client(config.client_id()), 2);
    assert_eq!(server.counters().endpoint("get_secret"), 2);

    // The produced config round-trips and works on its own.
    let reparsed = KsmConfig::parse(&config.to_base64()).unwrap();
    let vault = KsmClient::new(reparsed, &server.client_options())
        .unwrap()
        .get_secrets(&Query::default())
        .await
        .unwrap();
    assert_eq!(vault.records.len(), 4);

    // A used token is refused: the server checks the second device against the bound key.
    let err = server.redeem(&token).await.unwrap_err();
    assert!(
        matches!(&err, KsmError::AccessDenied { message } if message == "Signature is invalid"),
        "{err:?}"
    );
    assert_eq!(err.reason(), "AuthFailed");
}

/// The IL5 extended token `IL5:clientKey:keyId:serverPublicKey` carries the server key: it is
/// kept (not the built-in key of the same id) through binding, the stored config, and a
/// key-rotation answer.
#[tokio::test]
async fn an_il5_token_binds_with_the_server_key_it_carries() {
    let server = TestServer::start_with(
        sample_vault(),
        ServerOptions {
            key_id: "18".into(),
            ..ServerOptions::default()
        },
    )
    .await
    .unwrap();
    let il5 = server.issue_il5_token("operator").unwrap();
    // The IL5 prefix names il5.keepersecurity.us: the test server's host is passed instead.
    let config = redeem_token(
        &il5,
        Some(&server.hostname()),
        None,
        &server.client_options(),
    )
    .await
    .unwrap();
    let pinned = b64_decode(&server.server_public_key().1).unwrap();
    let check = |config: &KsmConfig| {
        assert!(config.is_bound());
        assert_eq!(config.server_public_key_id(), 18);
        assert_eq!(
            config
                .server_public_key()
                .map(|k| public_key_bytes(k).to_vec()),
            Some(pinned.clone())
        );
    };
    check(&config);
    let stored = KsmConfig::parse(&config.to_base64()).unwrap();
    check(&stored);
    let ksm = KsmClient::new(stored, &server.client_options()).unwrap();
    assert_eq!(
        ksm.get_secrets(&Query::default())
            .await
            .unwrap()
            .records
            .len(),
        4
    );
    // A key-rotation answer cannot replace a pinned key.
    server.faults().wrong_key_id_next(1);
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            KsmError::WrongServerKey {
                custom_key: true,
                ..
            }
        ),
        "{err:?}"
    );
    check(ksm.config());
    assert_eq!(
        ksm.get_secrets(&Query::default())
            .await
            .unwrap()
            .records
            .len(),
        4
    );
}

#[tokio::test]
async fn expired_unknown_and_interrupted_redemptions_fail_clearly() {
    let server = TestServer::sample().await.unwrap();
    let expired = server
        .issue_token_with_ttl("operator", Duration::from_millis(1))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let err = server.redeem(&expired).await.unwrap_err();
    assert!(
        matches!(&err, KsmError::AccessDenied { message } if message == "Unable to validate application access"),
        "{err:?}"
    );
    let unknown = keeper_operator::ksm::crypto::b64_url(&[9u8; 32]);
    let err = server.redeem(&unknown).await.unwrap_err();
    assert_eq!(err.reason(), "AuthFailed");

    // The binding response is lost: the server has bound a device key that died with the
    // failed call, so the token is spent, as with the real service. The operator has to ask
    // for a new token rather than retry.
    let token = server.issue_token("operator").unwrap();
    server.faults().drop_next(1);
    let err = server.redeem(&token).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = server.redeem(&token).await.unwrap_err();
    assert_eq!(err.reason(), "AuthFailed", "{err:?}");
}

#[tokio::test]
async fn reads_records_folders_files_and_notations() {
    let server = TestServer::sample().await.unwrap();
    let ksm = server.ksm_client("operator");
    let vault = ksm.get_secrets(&Query::default()).await.unwrap();
    let mut titles: Vec<&str> = vault.records.iter().map(|r| r.title.as_str()).collect();
    titles.sort();
    assert_eq!(
        titles,
        ["Analytics DB", "Postgres", "Stripe API", "Web Certificate"]
    );
    let postgres = vault.records.iter().find(|r| r.uid == POSTGRES).unwrap();
    assert_eq!(postgres.password(), Some("S3cure!Pa55w0rd#prod"));
    assert_eq!(postgres.folder_uid.as_deref(), Some(PRODUCTION));
    assert_eq!(postgres.inner_folder_uid.as_deref(), Some(DATABASES));
    assert_eq!(postgres.revision, server.record_revision(POSTGRES).unwrap());
    let stripe = vault.records.iter().find(|r| r.uid == STRIPE).unwrap();
    assert_eq!(stripe.folder_uid, None);

    let resolve_text = |n: &str| -> Vec<String> {
        let notation: Notation = n.parse().unwrap();
        text(resolve(&vault.records, &notation).unwrap())
    };
    assert_eq!(
        resolve_text(&format!("keeper://{POSTGRES}/field/password")),
        ["S3cure!Pa55w0rd#prod"]
    );
    assert_eq!(
        resolve_text("keeper://Postgres/field/password"),
        ["S3cure!Pa55w0rd#prod"]
    );
    assert_eq!(
        resolve_text("keeper://Postgres/custom_field/Environment"),
        ["production"]
    );
    assert_eq!(
        resolve_text("keeper://Analytics DB/field/host[0][hostName]"),
        ["analytics.db.prod.internal"]
    );

    // The file, by notation, downloaded and decrypted.
    let notation: Notation = "keeper://Web Certificate/file/cert.pem".parse().unwrap();
    let Some(NotationValue::File(file)) = resolve(&vault.records, &notation)
        .unwrap()
        .into_iter()
        .next()
    else {
        panic!("a file")
    };
    assert_eq!(file.mime_type.as_deref(), Some("application/x-pem-file"));
    assert_eq!(file.size, Some(cert_pem().len() as u64));
    let content = ksm.download_file(&file, BUDGET).await.unwrap();
    assert_eq!(&*content, cert_pem().as_slice());

    // Filters.
    let only = ksm
        .get_secrets(&Query {
            records: vec![STRIPE.into()],
            folders: vec![],
        })
        .await
        .unwrap();
    assert_eq!(only.records.len(), 1);
    let in_folder = ksm
        .get_secrets(&Query {
            records: vec![],
            folders: vec![DATABASES.into()],
        })
        .await
        .unwrap();
    assert_eq!(in_folder.records.len(), 2);

    let mut folders = ksm.get_folders().await.unwrap();
    folders.sort_by(|a, b| a.uid.cmp(&b.uid));
    let databases = folders.iter().find(|f| f.uid == DATABASES).unwrap();
    assert_eq!(databases.name.as_deref(), Some("Databases"));
    assert_eq!(databases.parent_uid.as_deref(), Some(PRODUCTION));
    let production = folders.iter().find(|f| f.uid == PRODUCTION).unwrap();
    assert_eq!(production.name.as_deref(), Some("Production"));
    assert_eq!(production.parent_uid, None);
}

/// Keeper lists records created in a shared folder by Commander or the Vault UI flat, with
/// `innerFolderUid`, their keys wrapped by the shared folder's key. They read like nested ones.
#[tokio::test]
async fn flat_records_in_shared_folders_and_sub_folders_are_read() {
    let server = TestServer::start(flat_in_folder_sample_vault())
        .await
        .unwrap();
    let ksm = server.ksm_client("operator");
    let vault = ksm.get_secrets(&Query::default()).await.unwrap();
    assert!(vault.skipped.is_empty(), "{:?}", vault.warnings);
    assert!(vault.warnings.is_empty(), "{:?}", vault.warnings);
    let mut titles: Vec<&str> = vault.records.iter().map(|r| r.title.as_str()).collect();
    titles.sort();
    assert_eq!(
        titles,
        ["Analytics DB", "Postgres", "Stripe API", "Web Certificate"]
    );

    // By UID: placed in their shared folder, like nested records.
    let by_uid = |uid: &str| vault.records.iter().find(|r| r.uid == uid).unwrap();
    let postgres = by_uid(POSTGRES);
    assert_eq!(postgres.password(), Some("S3cure!Pa55w0rd#prod"));
    assert_eq!(postgres.folder_uid.as_deref(), Some(PRODUCTION));
    assert_eq!(postgres.inner_folder_uid.as_deref(), Some(DATABASES));
    let cert = by_uid(WEB_CERT);
    assert_eq!(cert.folder_uid.as_deref(), Some(PRODUCTION));
    assert_eq!(cert.files.len(), 2);

    // By title and by notation, file included.
    let resolve_text = |n: &str| -> Vec<String> {
        let notation: Notation = n.parse().unwrap();
        text(resolve(&vault.records, &notation).unwrap())
    };
    assert_eq!(
        resolve_text("keeper://Postgres/field/password"),
        ["S3cure!Pa55w0rd#prod"]
    );
    assert_eq!(
        resolve_text(&format!("keeper://{POSTGRES}/custom_field/Environment")),
        ["production"]
    );
    let notation: Notation = "keeper://Web Certificate/file/cert.pem".parse().unwrap();
    let Some(NotationValue::File(file)) = resolve(&vault.records, &notation)
        .unwrap()
        .into_iter()
        .next()
    else {
        panic!("a file")
    };
    let content = ksm.download_file(&file, BUDGET).await.unwrap();
    assert_eq!(&*content, cert_pem().as_slice());

    // Folder and record filters reach them too.
    let sub = ksm
        .get_secrets(&Query {
            records: vec![],
            folders: vec![DATABASES.into()],
        })
        .await
        .unwrap();
    let mut uids: Vec<&str> = sub.records.iter().map(|r| r.uid.as_str()).collect();
    uids.sort();
    let mut expected = [ANALYTICS, POSTGRES];
    expected.sort();
    assert_eq!(uids, expected);
    let one = ksm
        .get_secrets(&Query {
            records: vec![POSTGRES.into()],
            folders: vec![],
        })
        .await
        .unwrap();
    assert_eq!(one.records.len(), 1);
    assert_eq!(one.records[0].folder_uid.as_deref(), Some(PRODUCTION));
}

/// Shapes from the conformance table (docs/dev/protocol.md#response-shapes) served for real: one
/// record reachable twice (shared directly and through its folder, once nested and once flat)
/// is read once; an app with nothing shared gets an empty vault, not an error.
#[tokio::test]
async fn a_record_reachable_twice_is_read_once_and_an_empty_app_is_empty() {
    let mut spec = sample_vault();
    spec.apps[0].records.push(POSTGRES.into());
    spec.apps.push(AppSpec {
        name: "empty".into(),
        title: None,
        shared_folders: vec![],
        records: vec![],
    });
    for listing in [Listing::Nested, Listing::FlatInFolder] {
        let mut spec = spec.clone();
        for record in spec.records.iter_mut().filter(|r| r.uid == POSTGRES) {
            record.listing = listing;
        }
        let server = TestServer::start(spec).await.unwrap();
        let vault = server
            .ksm_client("operator")
            .get_secrets(&Query::default())
            .await
            .unwrap();
        let postgres: Vec<_> = vault.records.iter().filter(|r| r.uid == POSTGRES).collect();
        assert_eq!(postgres.len(), 1, "{listing:?}");
        assert_eq!(postgres[0].password(), Some("S3cure!Pa55w0rd#prod"));
        assert!(
            vault.skipped.is_empty() && vault.warnings.is_empty(),
            "{listing:?}"
        );
        let empty = server
            .ksm_client("empty")
            .get_secrets(&Query::default())
            .await
            .unwrap();
        assert!(empty.records.is_empty() && empty.folders.is_empty());
    }
}

#[tokio::test]
async fn live_edits_are_seen_with_new_revisions() {
    let server = TestServer::sample().await.unwrap();
    let ksm = server.ksm_client("operator");
    let before = ksm.get_secrets(&Query::default()).await.unwrap();
    let record = server.record(POSTGRES).unwrap().password("rotated");
    let revision = server.set_record(record).unwrap();
    server.delete_record(STRIPE).unwrap();
    let after = ksm.get_secrets(&Query::default()).await.unwrap();
    let postgres = after.records.iter().find(|r| r.uid == POSTGRES).unwrap();
    assert_eq!(postgres.password(), Some("rotated"));
    assert_eq!(postgres.revision, revision);
    assert!(
        revision
            > before
                .records
                .iter()
                .find(|r| r.uid == POSTGRES)
                .unwrap()
                .revision
    );
    assert_eq!(after.records.len(), 3);
}

#[tokio::test]
async fn throttling_surfaces_retry_after_or_is_retried() {
    let server = TestServer::sample().await.unwrap();
    let ksm = server.ksm_client("operator");
    server
        .faults()
        .throttle_next(1, Some(Duration::from_secs(7)));
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert!(
        matches!(err, KsmError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(7)),
        "{err:?}"
    );
    assert_eq!(err.reason(), "Throttled");

    // 429 and the real rate limit (no retry_after in the body).
    server.faults().set_throttle_status(429);
    server.faults().throttle_next(1, None);
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert!(
        matches!(err, KsmError::Throttled { retry_after: None }),
        "{err:?}"
    );
    server.faults().clear();
    server.faults().set_rate_limit(Some(RateLimit {
        max_requests: 2,
        window_ms: 60_000,
    }));
    ksm.get_folders().await.unwrap();
    ksm.get_folders().await.unwrap();
    let err = ksm.get_folders().await.unwrap_err();
    assert_eq!(err.reason(), "Throttled");
    server.faults().clear();

    // With a retry budget the client waits retry_after (±25 %) and succeeds.
    let patient = server.ksm_client_with("operator", |o| o.throttle_retries = 2);
    server
        .faults()
        .throttle_next(1, Some(Duration::from_secs(1)));
    let started = Instant::now();
    patient.get_secrets(&Query::default()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(700));
}

#[tokio::test]
async fn throttling_in_every_form_keeper_and_rate_limiters_send() {
    let server = TestServer::sample().await.unwrap();
    let ksm = server.ksm_client("operator");
    let faults = server.faults();
    let secs = Duration::from_secs;
    let retry_after = |err: KsmError| match err {
        KsmError::Throttled { retry_after } => retry_after,
        other => panic!("not throttling: {other:?}"),
    };
    // Keeper's current form: JSON 429 with retry_after.
    faults.set_throttle_status(429);
    faults.throttle_next(1, Some(secs(7)));
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert_eq!(retry_after(err), Some(secs(7)));
    // A plain-text 429 from a rate limiter, Retry-After in seconds, then as an HTTP-date.
    faults.set_throttle_form(ThrottleBody::Text, Some(RetryAfterHeader::Seconds));
    faults.throttle_next(1, Some(secs(9)));
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert_eq!(retry_after(err), Some(secs(9)));
    faults.set_throttle_form(ThrottleBody::Text, Some(RetryAfterHeader::HttpDate));
    faults.throttle_next(1, Some(secs(30)));
    let delay = retry_after(ksm.get_folders().await.unwrap_err()).unwrap();
    assert!(delay > secs(27) && delay <= secs(30), "{delay:?}");
    // A 503 carrying Retry-After is throttling; without it, an outage.
    faults.set_throttle_status(503);
    faults.set_throttle_form(ThrottleBody::Text, Some(RetryAfterHeader::Seconds));
    faults.throttle_next(1, Some(secs(5)));
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert_eq!(retry_after(err), Some(secs(5)));
    faults.set_throttle_form(ThrottleBody::Text, None);
    faults.throttle_next(1, Some(secs(5)));
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert_eq!(err.reason(), "KeeperUnavailable", "{err:?}");
    // The throttle body on a 500 is a server error.
    faults.set_throttle_status(500);
    faults.set_throttle_form(ThrottleBody::Json, None);
    faults.throttle_next(1, Some(secs(5)));
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert_eq!(err.reason(), "KeeperError", "{err:?}");

    // A client with a retry budget waits out a plain-text 429 and succeeds.
    let patient = server.ksm_client_with("operator", |o| o.throttle_retries = 2);
    faults.set_throttle_status(429);
    faults.set_throttle_form(ThrottleBody::Text, Some(RetryAfterHeader::Seconds));
    faults.throttle_next(1, Some(secs(1)));
    let before = server.counters().endpoint("get_secret");
    let started = Instant::now();
    patient.get_secrets(&Query::default()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(server.counters().endpoint("get_secret"), before + 2);
}

#[tokio::test]
async fn wrong_key_id_with_a_custom_server_key_is_reported_not_looped() {
    let server = TestServer::sample().await.unwrap();
    let ksm = server.ksm_client("operator");
    server.faults().wrong_key_id_next(1);
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            KsmError::WrongServerKey {
                key_id: Some(10),
                custom_key: true
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.reason(), "WrongServerKey");
    assert_eq!(server.counters().outcome("key"), 1);
    // One answer, no retry loop; the next call works.
    assert_eq!(server.counters().total(), 1);
    ksm.get_secrets(&Query::default()).await.unwrap();

    // A config naming another key id gets the server's id in the error.
    let mut json: serde_json::Value =
        serde_json::from_str(&server.bound_config_json("operator").unwrap()).unwrap();
    json["serverPublicKeyId"] = "7".into();
    let config = KsmConfig::parse(&json.to_string()).unwrap();
    let err = KsmClient::new(config, &server.client_options())
        .unwrap()
        .get_secrets(&Query::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            KsmError::WrongServerKey {
                key_id: Some(10),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn access_denied_for_revoked_devices_and_foreign_keys() {
    let server = TestServer::sample().await.unwrap();
    let config_json = server.bound_config_json("operator").unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&config_json).unwrap();
    let ksm = KsmClient::new(
        KsmConfig::parse(&config_json).unwrap(),
        &server.client_options(),
    )
    .unwrap();
    ksm.get_secrets(&Query::default()).await.unwrap();

    // Same client id, another device key: the signature does not verify.
    let mut forged = parsed.clone();
    let other: serde_json::Value =
        serde_json::from_str(&server.bound_config_json("operator").unwrap()).unwrap();
    forged["privateKey"] = other["privateKey"].clone();
    let err = KsmClient::new(
        KsmConfig::parse(&forged.to_string()).unwrap(),
        &server.client_options(),
    )
    .unwrap()
    .get_secrets(&Query::default())
    .await
    .unwrap_err();
    assert!(
        matches!(&err, KsmError::AccessDenied { message } if message == "Signature is invalid"),
        "{err:?}"
    );

    assert!(server.revoke_device(parsed["clientId"].as_str().unwrap()));
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert!(
        matches!(&err, KsmError::AccessDenied { message } if message == "Unable to validate application access"),
        "{err:?}"
    );
    assert_eq!(err.reason(), "AuthFailed");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn invalid_client_versions_are_their_own_error() {
    let server = TestServer::sample().await.unwrap();
    server
        .faults()
        .reject_client_versions(vec!["mr17.3.0".into()]);
    let err = server
        .ksm_client("operator")
        .get_secrets(&Query::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KsmError::InvalidClientVersion { info } if info == "invalid client version id: 16, mr17.3.0"),
        "{err:?}"
    );
    assert_eq!(err.reason(), "InvalidClientVersion");
    server.faults().reject_client_versions(Vec::new());
    let odd = server.ksm_client_with("operator", |o| {
        o.client_version = "rust-operator/0.1".into()
    });
    let err = odd.get_secrets(&Query::default()).await.unwrap_err();
    assert_eq!(err.reason(), "InvalidClientVersion");
}

#[tokio::test]
async fn slow_servers_time_out() {
    let server = TestServer::sample().await.unwrap();
    let ksm = server.ksm_client_with("operator", |o| o.timeout = Duration::from_millis(400));
    server.faults().set_latency(Duration::from_secs(2));
    let started = Instant::now();
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert!(matches!(err, KsmError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(err.reason(), "KeeperUnavailable");
}

/// Headers at once, then the body a byte every 50 ms: never quiet for long, but the whole
/// exchange has one deadline, so the client gives up at it.
#[tokio::test]
async fn a_trickled_body_ends_at_the_request_deadline() {
    let server = TestServer::sample().await.unwrap();
    let deadline = Duration::from_millis(1200);
    let ksm = server.ksm_client_with("operator", |o| o.timeout = deadline);
    server.faults().trickle_next(1, Duration::from_millis(50));
    let started = Instant::now();
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, KsmError::Timeout), "{err:?}");
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(800),
        "gave up after {took:?}"
    );
    assert_eq!(server.counters().endpoint("get_secret"), 1, "not retried");
    // The fault is spent: the next call is whole.
    assert_eq!(
        ksm.get_secrets(&Query::default())
            .await
            .unwrap()
            .records
            .len(),
        4
    );
}

#[tokio::test]
async fn tls_fails_with_an_untrusted_ca() {
    let server = TestServer::sample().await.unwrap();
    let other = TestServer::sample().await.unwrap();
    for extra_ca_pem in [None, Some(other.ca_pem().as_bytes().to_vec())] {
        let ksm = server.ksm_client_with("operator", |o| o.extra_ca_pem = extra_ca_pem);
        let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
        assert!(matches!(err, KsmError::Tls(_)), "{err:?}");
        assert_eq!(err.reason(), "TlsError");
    }
    assert_eq!(server.counters().total(), 0);
}

#[tokio::test]
async fn tampered_truncated_and_dropped_responses_are_errors() {
    let server = TestServer::sample().await.unwrap();
    let ksm = server.ksm_client("operator");
    server.faults().tamper_next(1);
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert!(matches!(err, KsmError::Tampered), "{err:?}");
    assert_eq!(err.reason(), "InvalidResponse");

    server.faults().truncate_next(1);
    let err = ksm.get_folders().await.unwrap_err();
    assert!(matches!(err, KsmError::Tampered), "{err:?}");

    server.faults().drop_next(1);
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.reason(), "KeeperUnavailable");

    // And healthy again.
    assert_eq!(
        ksm.get_secrets(&Query::default())
            .await
            .unwrap()
            .records
            .len(),
        4
    );
}

#[tokio::test]
async fn down_servers_are_unavailable() {
    let server = TestServer::sample().await.unwrap();
    let ksm = server.ksm_client("operator");
    ksm.get_folders().await.unwrap();
    server.faults().set_down(DownMode::Refuse);
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert!(matches!(err, KsmError::Unavailable(_)), "{err:?}");
    server.faults().set_down(DownMode::Unavailable);
    let err = ksm.get_secrets(&Query::default()).await.unwrap_err();
    assert!(matches!(err, KsmError::Unavailable(_)), "{err:?}");
    server.faults().set_down(DownMode::Up);
    ksm.get_secrets(&Query::default()).await.unwrap();
}

#[tokio::test]
async fn failed_downloads_are_reported() {
    let server = TestServer::sample().await.unwrap();
    let ksm = server.ksm_client("operator");
    let vault = ksm.get_secrets(&Query::default()).await.unwrap();
    let file = vault
        .records
        .iter()
        .flat_map(|r| r.files.iter())
        .find(|f| f.uid == CERT_FILE)
        .unwrap()
        .clone();
    for failure in [FileFailure::Status500, FileFailure::Truncate] {
        server.faults().fail_files_next(1, failure);
        let err = ksm.download_file(&file, BUDGET).await.unwrap_err();
        assert!(matches!(err, KsmError::Download(_)), "{failure:?}: {err:?}");
        assert_eq!(err.reason(), "DownloadFailed");
    }
    assert_eq!(
        &*ksm.download_file(&file, BUDGET).await.unwrap(),
        cert_pem().as_slice()
    );
    server.set_file_content(CERT_FILE, b"renewed").unwrap();
    let vault = ksm.get_secrets(&Query::default()).await.unwrap();
    let file = vault
        .records
        .iter()
        .flat_map(|r| r.files.iter())
        .find(|f| f.uid == CERT_FILE)
        .unwrap();
    assert_eq!(&*ksm.download_file(file, BUDGET).await.unwrap(), b"renewed");

    // Over the caller's budget: refused from the metadata, before any download.
    let before = server.counters().file_downloads();
    let err = ksm.download_file(file, 3).await.unwrap_err();
    assert_eq!(err.reason(), "TooLarge", "{err:?}");
    assert_eq!(server.counters().file_downloads(), before);
}
