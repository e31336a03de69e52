//! The test server checked with raw protocol crypto (no client library in between): binding,
//! signatures, filtering, the key hierarchy, error bodies, faults, counters and the admin API.

use keeper_e2e::ksm_server::client::{Call, Device, RawClient, all_records, field, record_uids};
use keeper_e2e::ksm_server::uids::{
    ANALYTICS, BUNDLE_FILE, CERT_FILE, DATABASES, POSTGRES, PRODUCTION, STAGING,
    STAGING_POSTGRES as STAGING_PG, STRIPE, WEB_CERT,
};
use keeper_e2e::ksm_server::{
    DownMode, FileFailure, FileSpec, RateLimit, ServerOptions, TestServer, VaultSpec,
    flat_in_folder_sample_vault, sample_file, sample_vault,
};
use keeper_operator::ksm::config::SDK_CONFIG_KEYS;
use keeper_operator::ksm::crypto::{
    AesKey, aes_gcm_decrypt, aes_gcm_encrypt, b64_decode, b64_std, b64_url, ecies_encrypt,
    parse_public_key,
};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn binding_then_full_fetch_decrypts_the_whole_key_hierarchy() {
    let server = TestServer::sample().await.unwrap();
    let raw = RawClient::new(&server);
    let token = server.issue_token("operator").unwrap();
    assert_eq!(token.len(), 43);
    let mut device = Device::from_token(&token);

    let first = raw.bind(&mut device).await;
    assert_eq!(
        b64_decode(first["appOwnerPublicKey"].as_str().unwrap())
            .unwrap()
            .len(),
        65
    );
    assert_eq!(first["encryptedAppKey"].as_str().unwrap().len(), 80);
    let app_key = device.app_key.clone().unwrap();
    let app_data = aes_gcm_decrypt(
        &app_key,
        &b64_decode(first["appData"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let app_data: Value = serde_json::from_slice(&app_data).unwrap();
    assert_eq!(
        app_data,
        json!({"title": "Kubernetes Operator", "type": "app"})
    );
    assert!(!first["appData"].as_str().unwrap().contains(['=', '+', '/']));

    // The SDKs' re-fetch after binding: no publicKey, no binding fields.
    let second = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(second.status, 200);
    let second = second.json();
    assert!(second["encryptedAppKey"].is_null());
    assert!(second["appOwnerPublicKey"].is_null());
    assert_eq!(second["expiresOn"], 0);
    let records = all_records(&second, &app_key);
    let mut expected = vec![POSTGRES, ANALYTICS, WEB_CERT, STRIPE];
    expected.sort();
    assert_eq!(record_uids(&records), expected);

    let postgres = records.iter().find(|r| r.0 == POSTGRES).unwrap();
    assert_eq!(postgres.1["title"], "Postgres");
    assert_eq!(
        field(&postgres.1, "password")["value"][0],
        "S3cure!Pa55w0rd#prod"
    );
    assert_eq!(postgres.3["innerFolderUid"], DATABASES);
    assert!(postgres.3["revision"].as_i64().unwrap() > 1_000_000);
    let analytics = records.iter().find(|r| r.0 == ANALYTICS).unwrap();
    assert_eq!(
        field(&analytics.1, "host")["value"][0],
        json!({"hostName": "analytics.db.prod.internal", "port": "5433"})
    );
    let stripe = records.iter().find(|r| r.0 == STRIPE).unwrap();
    assert!(stripe.3["innerFolderUid"].is_null());
    assert!(second["records"].as_array().unwrap().len() == 1);

    // Files: fileRef lists them, metadata and content decrypt under the file key.
    let cert = records.iter().find(|r| r.0 == WEB_CERT).unwrap();
    assert_eq!(
        field(&cert.1, "fileRef")["value"],
        json!([CERT_FILE, BUNDLE_FILE])
    );
    let file = &cert.3["files"][0];
    let file_key = cert
        .2
        .unwrap_key(&b64_decode(file["fileKey"].as_str().unwrap()).unwrap())
        .unwrap();
    let meta: Value = serde_json::from_slice(
        &aes_gcm_decrypt(
            &file_key,
            &b64_decode(file["data"].as_str().unwrap()).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["name"], "cert.pem");
    assert_eq!(meta["type"], "application/x-pem-file");
    let url = file["url"].as_str().unwrap();
    assert_eq!(
        url,
        format!("https://{}/files/{CERT_FILE}", server.hostname())
    );
    let (status, encrypted) = raw.get(url).await.unwrap();
    assert_eq!(status, 200);
    let content = aes_gcm_decrypt(&file_key, &encrypted).unwrap();
    assert_eq!(&*content, sample_file(CERT_FILE).as_slice());
    assert_eq!(meta["size"], content.len());
}

#[tokio::test]
async fn binding_through_get_folders_like_the_rust_sdk() {
    let server = TestServer::sample().await.unwrap();
    let raw = RawClient::new(&server);
    let mut device = Device::from_token(&server.issue_token("ci").unwrap());
    let reply = raw
        .send(&device, Call::binding("get_folders", &device))
        .await;
    assert_eq!(reply.status, 200);
    let json = reply.json();
    device.accept_binding(&json);
    assert_eq!(json["folders"][0]["folderUid"], STAGING);
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    let records = all_records(&reply.json(), device.app_key.as_ref().unwrap());
    assert_eq!(record_uids(&records), vec![STAGING_PG.to_string()]);
}

#[tokio::test]
async fn a_generated_vault_serves_thousands_of_records() {
    let server = TestServer::start(VaultSpec::generated(2000)).await.unwrap();
    let (raw, device) = server.raw_device("operator");
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    let records = all_records(&reply.json(), device.app_key.as_ref().unwrap());
    assert_eq!(records.len(), 2000);
    let titles: std::collections::BTreeSet<String> = records
        .iter()
        .map(|r| r.1["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(titles.len(), 2000);
    assert!(titles.contains("Record 1999"));
}

#[tokio::test]
async fn bound_config_has_every_sdk_key_and_works_without_binding() {
    let server = TestServer::sample().await.unwrap();
    let raw = RawClient::new(&server);
    let (device, config) = Device::from_config(&server.bound_config("ci").unwrap());
    let keys: Vec<&String> = config.as_object().unwrap().keys().collect();
    assert_eq!(keys, SDK_CONFIG_KEYS);
    assert!(config.as_object().unwrap().values().all(Value::is_string));
    assert_eq!(config["hostname"], server.hostname().as_str());
    assert_eq!(config["serverPublicKeyId"], "10");
    assert_eq!(config["privateKey"].as_str().unwrap().len(), 184);
    assert_eq!(config["clientId"].as_str().unwrap().len(), 88);

    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(reply.status, 200);
    let records = all_records(&reply.json(), device.app_key.as_ref().unwrap());
    assert_eq!(record_uids(&records), vec![STAGING_PG.to_string()]);
}

#[tokio::test]
async fn tokens_cannot_be_reused_expired_or_guessed() {
    let server = TestServer::sample().await.unwrap();
    let raw = RawClient::new(&server);
    let token = server.issue_token("operator").unwrap();
    let mut first = Device::from_token(&token);
    raw.bind(&mut first).await;

    // A second device with the same token: the server checks against the bound key.
    let second = Device::from_token(&token);
    let reply = raw
        .send(&second, Call::binding("get_secret", &second))
        .await;
    assert_eq!(reply.status, 403);
    let error = reply.error();
    assert_eq!(error["error"], "access_denied");
    assert_eq!(error["message"], "Signature is invalid");
    assert_eq!(
        error["location"],
        "default exception manager - api validation exception"
    );

    // The first device repeating its binding call gets the app key again (lost response).
    let again = raw.send(&first, Call::binding("get_secret", &first)).await;
    assert!(again.json()["encryptedAppKey"].is_string());

    // Unknown client id.
    let stranger = Device::from_token(&b64_url(&[7u8; 32]));
    let reply = raw
        .send(&stranger, Call::new("get_secret", &stranger))
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.error()["message"],
        "Unable to validate application access"
    );

    // Expired, never used.
    let expiring = server
        .issue_token_with_ttl("operator", Duration::from_millis(1))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let late = Device::from_token(&expiring);
    let reply = raw.send(&late, Call::binding("get_secret", &late)).await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.error()["message"],
        "Unable to validate application access"
    );

    // A revoked device.
    let device = server.bound_device("operator");
    assert!(server.revoke_device(&device.client_id));
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(reply.status, 403);
}

#[tokio::test]
async fn bad_signatures_are_rejected_with_the_real_body() {
    let server = TestServer::sample().await.unwrap();
    let (raw, device) = server.raw_device("operator");
    let mut call = Call::new("get_secret", &device);
    call.corrupt_signature = true;
    let reply = raw.send(&device, call).await;
    assert_eq!(reply.status, 403);
    let body = String::from_utf8(reply.body.clone()).unwrap();
    let expected_path = format!(
        "{{\"path\":\"https://{}/api/rest/sm/v1/get_secret, POST\",",
        server.hostname()
    );
    assert!(body.starts_with(&expected_path), "{body}");
    assert!(body.ends_with(
        "\"additional_info\":\"\",\"location\":\"default exception manager - api validation \
         exception\",\"error\":\"access_denied\",\"message\":\"Signature is invalid\"}"
    ));
}

#[tokio::test]
async fn requested_records_and_folders_filter_the_response() {
    let server = TestServer::sample().await.unwrap();
    let (raw, device) = server.raw_device("operator");
    let app_key = device.app_key.clone().unwrap();
    let fetch = |call: Call<'static>| {
        let raw = &raw;
        let device = &device;
        let app_key = &app_key;
        async move {
            let reply = raw.send(device, call).await;
            assert_eq!(reply.status, 200);
            record_uids(&all_records(&reply.json(), app_key))
        }
    };
    let client = device.client_id.clone();
    let base = move || {
        let mut call = Call {
            endpoint: "get_secret",
            payload: json!({"clientVersion": "mp17.3.0", "clientId": client}),
            key_id: None,
            corrupt_signature: false,
        };
        call.payload["requestLinks"] = Value::Null;
        call
    };
    assert_eq!(
        fetch(base().with("requestedRecords", json!([POSTGRES]))).await,
        vec![POSTGRES]
    );
    assert_eq!(
        fetch(base().with("requestedRecords", json!([STRIPE, POSTGRES]))).await,
        {
            let mut v = vec![POSTGRES, STRIPE];
            v.sort();
            v
        }
    );
    // Another app's record is invisible.
    assert!(
        fetch(base().with("requestedRecords", json!([STAGING_PG])))
            .await
            .is_empty()
    );
    // A sub-folder selects its records; direct shares are left out.
    let mut expected = vec![ANALYTICS, POSTGRES];
    expected.sort();
    assert_eq!(
        fetch(base().with("requestedFolders", json!([DATABASES]))).await,
        expected
    );
    let mut expected = vec![ANALYTICS, POSTGRES, WEB_CERT];
    expected.sort();
    assert_eq!(
        fetch(base().with("requestedFolders", json!([PRODUCTION]))).await,
        expected
    );
    // null and empty mean everything.
    assert_eq!(
        fetch(
            base()
                .with("requestedRecords", json!([]))
                .with("requestedFolders", Value::Null)
        )
        .await
        .len(),
        4
    );
}

#[tokio::test]
async fn get_folders_uses_gcm_for_shared_and_cbc_for_sub_folders() {
    let server = TestServer::sample().await.unwrap();
    let (raw, device) = server.raw_device("operator");
    let app_key = device.app_key.clone().unwrap();
    let reply = raw.send(&device, Call::new("get_folders", &device)).await;
    assert_eq!(reply.status, 200);
    let folders = reply.json()["folders"].as_array().unwrap().clone();
    assert_eq!(folders.len(), 2);
    let shared = folders
        .iter()
        .find(|f| f["folderUid"] == PRODUCTION)
        .unwrap();
    assert!(shared["parent"].is_null());
    let shared_key = app_key
        .unwrap_key(&b64_decode(shared["folderKey"].as_str().unwrap()).unwrap())
        .unwrap();
    let name = |folder: &Value, key: &AesKey| -> Value {
        let plain = keeper_operator::ksm::crypto::aes_cbc_decrypt(
            key,
            &b64_decode(folder["data"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        serde_json::from_slice(&plain).unwrap()
    };
    assert_eq!(name(shared, &shared_key)["name"], "Production");
    let sub = folders
        .iter()
        .find(|f| f["folderUid"] == DATABASES)
        .unwrap();
    assert_eq!(sub["parent"], PRODUCTION);
    let sub_key = shared_key
        .unwrap_key_cbc(&b64_decode(sub["folderKey"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(name(sub, &sub_key)["name"], "Databases");
    assert!(folders.iter().all(|f| f["folderUid"] != STAGING));
}

#[tokio::test]
async fn client_versions_key_ids_and_garbage_get_the_real_errors() {
    let server = TestServer::sample().await.unwrap();
    let (raw, device) = server.raw_device("operator");

    let reply = raw
        .send(
            &device,
            Call::new("get_secret", &device).with("clientVersion", json!("mx1.0.0")),
        )
        .await;
    assert_eq!(reply.status, 403);
    let error = reply.error();
    assert_eq!(error["result_code"], "invalid_client_version");
    assert_eq!(error["error"], "client_version");
    assert_eq!(
        error["additional_info"],
        "invalid client version id: 16, mx1.0.0"
    );

    server
        .faults()
        .reject_client_versions(vec!["mr17.3.0".into()]);
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(reply.error()["result_code"], "invalid_client_version");
    server.faults().reject_client_versions(Vec::new());

    let mut call = Call::new("get_secret", &device);
    call.key_id = Some("7");
    let reply = raw.send(&device, call).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        String::from_utf8(reply.body).unwrap(),
        r#"{"key_id":10,"error":"key","message":"invalid key id"}"#
    );

    server.faults().wrong_key_id_next(1);
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(reply.status, 401);
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(reply.status, 200);

    // Garbage: no transmission key, undecryptable body, unknown endpoint.
    let response = raw
        .http
        .post(format!(
            "https://{}/api/rest/sm/v1/get_secret",
            server.hostname()
        ))
        .header("PublicKeyId", "10")
        .body(vec![0u8; 3])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let response = raw
        .http
        .post(format!(
            "https://{}/api/rest/sm/v1/get_secret",
            server.hostname()
        ))
        .header("PublicKeyId", "10")
        .header("TransmissionKey", b64_std(&[1u8; 125]))
        .header("Authorization", "Signature !!!")
        .body(vec![0u8; 64])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    // Folder writes are not implemented; a record write without its fields is malformed.
    let reply = raw.send(&device, Call::new("create_folder", &device)).await;
    assert_eq!(reply.status, 404);
    let reply = raw.send(&device, Call::new("update_secret", &device)).await;
    assert_eq!(
        (reply.status, &reply.error()["error"]),
        (400, &json!("bad_request"))
    );
}

#[tokio::test]
async fn a_server_with_another_key_id_names_it_in_key_errors() {
    let options = ServerOptions {
        key_id: "17".into(),
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(sample_vault(), options)
        .await
        .unwrap();
    let raw = RawClient::new(&server);
    let (device, config) = Device::from_config(&server.bound_config("operator").unwrap());
    assert_eq!(config["serverPublicKeyId"], "17");
    let mut call = Call::new("get_secret", &device);
    call.key_id = Some("10");
    let reply = raw.send(&device, call).await;
    assert_eq!(reply.error()["key_id"], 17);
    assert_eq!(raw.status(&device, "get_secret").await, 200);
}

#[tokio::test]
async fn throttling_injected_and_rate_limited() {
    let server = TestServer::sample().await.unwrap();
    let (raw, device) = server.raw_device("operator");
    server
        .faults()
        .throttle_next(2, Some(Duration::from_secs(3)));
    for _ in 0..2 {
        let reply = raw.send(&device, Call::new("get_secret", &device)).await;
        assert_eq!(reply.status, 403);
        let error = reply.error();
        assert_eq!(error["error"], "throttled");
        assert_eq!(error["message"], "get_secret");
        assert_eq!(error["retry_after"], 3);
    }
    assert_eq!(raw.status(&device, "get_secret").await, 200);

    server.faults().set_throttle_status(429);
    server.faults().throttle_next(1, None);
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(reply.status, 429);
    assert!(reply.error().get("retry_after").is_none());

    server.faults().clear();
    server.faults().set_rate_limit(Some(RateLimit {
        max_requests: 3,
        window_ms: 60_000,
    }));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(raw.status(&device, "get_secret").await);
    }
    assert_eq!(statuses, [200, 200, 200, 403, 403]);
    // The limit is per client id and endpoint.
    assert_eq!(raw.status(&device, "get_folders").await, 200);
    assert_eq!(server.counters().outcome("throttled"), 5);
}

#[tokio::test]
async fn tampered_truncated_and_dropped_responses() {
    let server = TestServer::sample().await.unwrap();
    let (raw, device) = server.raw_device("operator");

    server.faults().tamper_next(1);
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(reply.status, 200);
    assert!(aes_gcm_decrypt(&reply.key, &reply.body).is_err());

    server.faults().truncate_next(1);
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(reply.status, 200);
    assert!(aes_gcm_decrypt(&reply.key, &reply.body).is_err());

    server.faults().drop_next(1);
    assert!(
        raw.try_send(&device, Call::new("get_secret", &device))
            .await
            .is_err()
    );
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(reply.status, 200);
    reply.json();
}

#[tokio::test]
async fn down_modes_refuse_connections_or_answer_503() {
    let server = TestServer::sample().await.unwrap();
    let (raw, device) = server.raw_device("operator");
    assert_eq!(raw.status(&device, "get_secret").await, 200);

    server.faults().set_down(DownMode::Refuse);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = raw
        .try_send(&device, Call::new("get_secret", &device))
        .await
        .err()
        .expect("connection fails");
    assert!(error.is_connect() || error.is_request(), "{error:?}");
    let port: u16 = server
        .hostname()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    server.faults().set_down(DownMode::Unavailable);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(reply.status, 503);
    assert!(serde_json::from_slice::<Value>(&reply.body).is_err());

    server.faults().set_down(DownMode::Up);
    assert_eq!(raw.status(&device, "get_secret").await, 200);
}

#[tokio::test]
async fn hostile_requests_get_4xx_and_the_server_keeps_working() {
    let server = TestServer::sample().await.unwrap();
    let (raw, device) = server.raw_device("operator");
    let server_key = raw.server_key;
    let garbage_payloads: [&[u8]; 5] = [
        b"",
        b"null",
        b"{\"clientId\": 5, \"requestedRecords\": \"x\"}",
        b"{\"clientId\": \"x\", \"publicKey\": \"!!\", \"requestedFolders\": [1]}",
        &[b'['; 10_000],
    ];
    for payload in garbage_payloads {
        // Correctly wrapped but meaningless payloads.
        let tk = AesKey::random();
        let blob = ecies_encrypt(&server_key, tk.as_bytes());
        let body = aes_gcm_encrypt(&tk, payload);
        for endpoint in ["get_secret", "get_folders", "../../admin", "%00"] {
            let response = raw
                .http
                .post(format!(
                    "https://{}/api/rest/sm/v1/{endpoint}",
                    server.hostname()
                ))
                .header("PublicKeyId", "10")
                .header("TransmissionKey", b64_std(&blob))
                .header("Authorization", "Signature MEUCIQ==")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert!((400..500).contains(&status), "{endpoint}: {status}");
        }
    }
    let huge_ttl = server.issue_token_with_ttl("operator", Duration::MAX);
    assert!(huge_ttl.is_ok());
    assert_eq!(raw.status(&device, "get_secret").await, 200);
    assert_eq!(server.counters().outcome("internal"), 0);
}

#[tokio::test]
async fn latency_delays_answers() {
    let server = TestServer::sample().await.unwrap();
    let (raw, device) = server.raw_device("operator");
    server.faults().set_latency(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn file_downloads_can_fail_and_change() {
    let server = TestServer::sample().await.unwrap();
    let raw = RawClient::new(&server);
    let url = format!("https://{}/files/{CERT_FILE}", server.hostname());
    let (status, good) = raw.get(&url).await.unwrap();
    assert_eq!(status, 200);

    server.faults().fail_files_next(1, FileFailure::Status500);
    assert_eq!(raw.get(&url).await.unwrap().0, 500);
    server.faults().fail_files_next(1, FileFailure::Truncate);
    let (status, short) = raw.get(&url).await.unwrap();
    assert_eq!((status, short.len()), (200, good.len() / 2));
    assert_eq!(raw.get(&url).await.unwrap(), (200, good.clone()));
    assert_eq!(
        raw.get(&format!("https://{}/files/nope", server.hostname()))
            .await
            .unwrap()
            .0,
        404
    );

    let before = server.record_revision(WEB_CERT).unwrap();
    let after = server.set_file_content(CERT_FILE, b"new content").unwrap();
    assert!(after > before);
    let (_, changed) = raw.get(&url).await.unwrap();
    assert_ne!(changed, good);
    assert_eq!(server.counters().file_downloads(), 6);
}

#[tokio::test]
async fn live_edits_bump_revisions_and_show_up() {
    let server = TestServer::sample().await.unwrap();
    let (raw, device) = server.raw_device("operator");
    let app_key = device.app_key.clone().unwrap();
    let fetch = || async {
        let reply = raw.send(&device, Call::new("get_secret", &device)).await;
        all_records(&reply.json(), &app_key)
    };
    let before = fetch().await;
    let old_revision = before.iter().find(|r| r.0 == POSTGRES).unwrap().3["revision"]
        .as_i64()
        .unwrap();

    let record = server
        .record(POSTGRES)
        .unwrap()
        .password("rotated-password");
    let revision = server.set_record(record).unwrap();
    assert!(revision > old_revision);
    let after = fetch().await;
    let postgres = after.iter().find(|r| r.0 == POSTGRES).unwrap();
    assert_eq!(postgres.3["revision"], revision);
    assert_eq!(
        field(&postgres.1, "password")["value"][0],
        "rotated-password"
    );

    // A new record in the sub-folder, then gone again.
    let new_record = server
        .record(ANALYTICS)
        .unwrap()
        .copy_as("Bq3Fz1T0aQ3mJc4oR2cR9w", "Cache")
        .file(FileSpec::from_bytes(
            "Ck4Gz2U1bR4nKd5pS3dS0x",
            "dump.bin",
            None,
            &[1, 2, 3],
        ));
    server.set_record(new_record).unwrap();
    assert_eq!(fetch().await.len(), 5);
    server.delete_record(STRIPE).unwrap();
    server.delete_record("Bq3Fz1T0aQ3mJc4oR2cR9w").unwrap();
    let left = record_uids(&fetch().await);
    let mut expected = vec![POSTGRES, ANALYTICS, WEB_CERT];
    expected.sort();
    assert_eq!(left, expected);
    assert!(server.delete_record(STRIPE).is_err());
    assert!(server.record("not-a-uid").is_err());
}

#[tokio::test]
async fn counters_split_by_client_app_endpoint_and_outcome() {
    let server = TestServer::sample().await.unwrap();
    let (raw, a) = server.raw_device("operator");
    let b = server.bound_device("ci");
    raw.send(&a, Call::new("get_secret", &a)).await;
    raw.send(&a, Call::new("get_secret", &a)).await;
    raw.send(&a, Call::new("get_folders", &a)).await;
    server.faults().throttle_next(1, None);
    raw.send(&b, Call::new("get_secret", &b)).await;

    let counters = server.counters();
    assert_eq!(counters.total(), 4);
    assert_eq!(counters.client(&a.client_id), 3);
    assert_eq!(counters.client(&b.client_id), 1);
    assert_eq!(counters.app("operator"), 3);
    assert_eq!(counters.endpoint("get_secret"), 3);
    assert_eq!(counters.endpoint("get_folders"), 1);
    assert_eq!(counters.outcome("ok"), 3);
    assert_eq!(counters.outcome("throttled"), 1);
    let snapshot = counters.snapshot();
    assert_eq!(snapshot.in_flight, 0);
    assert!(snapshot.max_concurrent >= 1);
    counters.reset();
    assert_eq!(counters.total(), 0);
    assert!(counters.snapshot().by_client.is_empty());
}

#[tokio::test]
async fn max_concurrent_counts_overlapping_requests() {
    let server = TestServer::sample().await.unwrap();
    let (raw, device) = server.raw_device("operator");
    server.faults().set_latency(Duration::from_millis(300));
    let calls = (0..5).map(|_| raw.status(&device, "get_secret"));
    let statuses = futures::future::join_all(calls).await;
    assert_eq!(statuses, [200; 5]);
    let snapshot = server.counters().snapshot();
    assert_eq!(snapshot.max_concurrent, 5);
    assert_eq!(snapshot.in_flight, 0);
    // One at a time stays at one.
    server.counters().reset();
    server.faults().set_latency(Duration::ZERO);
    for _ in 0..3 {
        raw.status(&device, "get_secret").await;
    }
    assert_eq!(server.counters().snapshot().max_concurrent, 1);
}

#[tokio::test]
async fn tls_fails_without_the_test_ca() {
    let server = TestServer::sample().await.unwrap();
    let http = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    let error = http
        .get(format!("https://{}/files/{CERT_FILE}", server.hostname()))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert!(server.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    // localhost is in the certificate too.
    let raw = RawClient::new(&server);
    let port = server.hostname().rsplit(':').next().unwrap().to_string();
    let (status, _) = raw
        .get(&format!("https://localhost:{port}/files/{CERT_FILE}"))
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn admin_api_drives_the_same_controls() {
    let server = TestServer::sample().await.unwrap();
    let admin = server
        .serve_admin("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{admin}/admin");
    let http = reqwest::Client::new();

    let info: Value = http
        .get(format!("{base}/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["hostname"], server.hostname().as_str());
    assert_eq!(
        info["serverPublicKey"],
        server.server_public_key().1.as_str()
    );

    let token: Value = http
        .post(format!("{base}/token"))
        .json(&json!({"app": "operator"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token["token"].as_str().unwrap().len(), 43);
    let config: Value = http
        .post(format!("{base}/config"))
        .json(&json!({"app": "ci"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (device, _) = Device::from_config(config["config"].as_str().unwrap());
    assert_eq!(config["clientId"], device.client_id.as_str());

    let state: Value = http
        .patch(format!("{base}/faults"))
        .json(&json!({"throttle": 1, "retryAfter": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["throttle"], 1);
    assert_eq!(state["down"], "up");
    let raw = RawClient::new(&server);
    let reply = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(reply.error()["retry_after"], 2);
    let bad = http
        .patch(format!("{base}/faults"))
        .json(&json!({"throttel": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    let counters: Value = http
        .get(format!("{base}/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["total"], 1);
    assert_eq!(counters["byOutcome"]["throttled"], 1);
    http.post(format!("{base}/counters/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(server.counters().total(), 0);

    let mut record: Value = http
        .get(format!("{base}/records/{STAGING_PG}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let old = record["revision"].as_i64().unwrap();
    record["record"]["title"] = json!("Postgres (staging)");
    let updated: Value = http
        .put(format!("{base}/records/{STAGING_PG}"))
        .json(&record["record"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(updated["revision"].as_i64().unwrap() > old);
    assert_eq!(
        server.record(STAGING_PG).unwrap().title,
        "Postgres (staging)"
    );

    let put = http
        .put(format!("{base}/files/{CERT_FILE}"))
        .body("replaced")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let deleted = http
        .delete(format!("{base}/records/{STAGING_PG}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    http.post(format!("{base}/faults/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(server.faults().state(), Default::default());
}

#[test]
fn the_binary_writes_its_state_files_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("ksm-test-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ksm-test-server"))
        .args([
            "--vault",
            concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/sample-vault.json"),
        ])
        .arg("--state-dir")
        .arg(&dir)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let info_path = dir.join("server.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !info_path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let info: Value = serde_json::from_str(&std::fs::read_to_string(&info_path).unwrap()).unwrap();
    assert!(info["hostname"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(info["app"], "operator");
    assert!(
        info["adminUrl"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    let token = std::fs::read_to_string(dir.join("token")).unwrap();
    assert_eq!(token.trim().len(), 43);
    let config = std::fs::read_to_string(dir.join("config.b64")).unwrap();
    let config: Value = serde_json::from_slice(&b64_decode(&config).unwrap()).unwrap();
    assert_eq!(config["hostname"], info["hostname"]);
    assert!(
        std::fs::read_to_string(dir.join("ca.pem"))
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("config.b64"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0);

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn flat_in_folder_records_are_top_level_and_wrapped_by_the_folder_key() {
    let server = TestServer::start(flat_in_folder_sample_vault())
        .await
        .unwrap();
    let (raw, device) = server.raw_device("operator");
    let app_key = device.app_key.clone().unwrap();
    let answer = raw.send(&device, Call::new("get_secret", &device)).await;
    assert_eq!(answer.status, 200);
    let answer = answer.json();

    let folders = answer["folders"].as_array().unwrap();
    assert_eq!(folders.len(), 1);
    assert_eq!(folders[0]["folderUid"], PRODUCTION);
    let nested: Vec<&Value> = folders[0]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["recordUid"])
        .collect();
    assert_eq!(nested, [ANALYTICS]);
    let folder_key = app_key
        .unwrap_key(&b64_decode(folders[0]["folderKey"].as_str().unwrap()).unwrap())
        .unwrap();

    let flat = answer["records"].as_array().unwrap();
    let entry = |uid: &str| flat.iter().find(|r| r["recordUid"] == uid).unwrap();
    for (uid, inner) in [(WEB_CERT, PRODUCTION), (POSTGRES, DATABASES)] {
        let record = entry(uid);
        assert_eq!(record["innerFolderUid"], inner, "{uid}");
        let wrapped = b64_decode(record["recordKey"].as_str().unwrap()).unwrap();
        assert!(
            app_key.unwrap_key(&wrapped).is_err(),
            "{uid}: not the app key"
        );
        assert!(
            folder_key.unwrap_key(&wrapped).is_ok(),
            "{uid}: the folder key"
        );
    }
    assert!(entry(STRIPE)["innerFolderUid"].is_null());

    // The raw client's reading of it is the whole vault, files included.
    let records = all_records(&answer, &app_key);
    let mut expected = vec![POSTGRES, ANALYTICS, WEB_CERT, STRIPE];
    expected.sort();
    assert_eq!(record_uids(&records), expected);
    let postgres = records.iter().find(|r| r.0 == POSTGRES).unwrap();
    assert_eq!(
        field(&postgres.1, "password")["value"][0],
        "S3cure!Pa55w0rd#prod"
    );

    // Filters still select them, and the folder whose key they need comes along.
    let only = raw
        .send(
            &device,
            Call::new("get_secret", &device).with("requestedRecords", json!([POSTGRES])),
        )
        .await
        .json();
    assert_eq!(only["folders"][0]["folderUid"], PRODUCTION);
    assert_eq!(only["folders"][0]["records"], json!([]));
    assert_eq!(record_uids(&all_records(&only, &app_key)), [POSTGRES]);
    let sub = raw
        .send(
            &device,
            Call::new("get_secret", &device).with("requestedFolders", json!([DATABASES])),
        )
        .await
        .json();
    let mut expected = vec![ANALYTICS, POSTGRES];
    expected.sort();
    assert_eq!(record_uids(&all_records(&sub, &app_key)), expected);
}

/// A bound device of `app` that writes as the SDKs do (docs/dev/protocol.md#write-endpoints),
/// holding the keys they hold: the shared folder's key and the app owner's public key.
struct Writer {
    raw: RawClient,
    device: Device,
    folder_key: AesKey,
    owner: p256::PublicKey,
}

impl Writer {
    async fn new(server: &TestServer, app: &str, folder: &str) -> Self {
        let (device, config) = Device::from_config(&server.bound_config(app).unwrap());
        let raw = RawClient::new(server);
        let answer = raw
            .send(&device, Call::new("get_secret", &device))
            .await
            .json();
        let app_key = device.app_key.clone().unwrap();
        let wrapped = answer["folders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["folderUid"] == folder)
            .map(|f| b64_decode(f["folderKey"].as_str().unwrap()).unwrap())
            .unwrap();
        let owner = b64_decode(config["appOwnerPublicKey"].as_str().unwrap()).unwrap();
        Writer {
            raw,
            device,
            folder_key: app_key.unwrap_key(&wrapped).unwrap(),
            owner: parse_public_key(&owner).unwrap(),
        }
    }

    /// A correct `create_secret` payload for a new login record in `folder`.
    fn create(&self, uid: &str, key: &AesKey, folder: &str, password: &str) -> Value {
        let record = json!({"title": "Pushed", "type": "login",
            "fields": [{"type": "password", "value": [password]}], "custom": []});
        json!({
            "recordUid": uid,
            "recordKey": b64_std(&ecies_encrypt(&self.owner, key.as_bytes())),
            "folderUid": folder,
            "folderKey": b64_std(&aes_gcm_encrypt(&self.folder_key, key.as_bytes())),
            // JS sends record data as base64url: both alphabets are accepted.
            "data": b64_url(&aes_gcm_encrypt(key, record.to_string().as_bytes())),
        })
    }

    async fn call(&self, endpoint: &str, fields: &Value) -> keeper_e2e::ksm_server::client::Reply {
        let mut call = Call::new(endpoint, &self.device);
        for (name, value) in fields.as_object().unwrap() {
            call = call.with(name, value.clone());
        }
        self.raw.send(&self.device, call).await
    }

    /// Sends `fields` and expects a refusal: `(status, error, message)`.
    async fn refused(&self, endpoint: &str, fields: &Value) -> (u16, String, String) {
        let reply = self.call(endpoint, fields).await;
        let body = reply.error();
        (
            reply.status,
            body["error"].as_str().unwrap().to_string(),
            body["message"].as_str().unwrap().to_string(),
        )
    }
}

#[tokio::test]
async fn created_records_are_served_like_keepers_and_updates_check_the_revision() {
    let server = TestServer::sample().await.unwrap();
    let writer = Writer::new(&server, "operator", PRODUCTION).await;
    let (uid, key) = (
        keeper_operator::ksm::crypto::generate_uid(),
        AesKey::random(),
    );
    let mut payload = writer.create(&uid, &key, PRODUCTION, "one");
    payload["subFolderUid"] = json!(DATABASES);
    let reply = writer.call("create_secret", &payload).await;
    assert_eq!((reply.status, reply.body.len()), (200, 0), "an empty 200");
    assert_eq!(
        server.record(&uid).unwrap().folder_uid.as_deref(),
        Some(DATABASES)
    );

    // Listed under its shared folder, key wrapped by the folder key, editable, data as sent.
    let answer = writer
        .call("get_secret", &json!({"requestedRecords": [uid]}))
        .await
        .json();
    let folder = &answer["folders"][0];
    assert_eq!(
        (&folder["folderUid"], &folder["isEditable"]),
        (&json!(PRODUCTION), &json!(true))
    );
    let listed = &folder["records"][0];
    assert_eq!(
        (&listed["innerFolderUid"], &listed["isEditable"]),
        (&json!(DATABASES), &json!(true))
    );
    let wrapped = b64_decode(listed["recordKey"].as_str().unwrap()).unwrap();
    assert!(writer.folder_key.unwrap_key(&wrapped).unwrap() == key);
    let revision = listed["revision"].as_i64().unwrap();

    let update = |revision: i64, password: &str, extra: Value| {
        let record = json!({"title": "Pushed", "type": "login",
            "fields": [{"type": "password", "value": [password]}]});
        let mut fields = json!({"recordUid": uid, "revision": revision,
            "data": b64_std(&aes_gcm_encrypt(&key, record.to_string().as_bytes()))});
        if let Value::Object(extra) = extra {
            fields.as_object_mut().unwrap().extend(extra);
        }
        fields
    };
    assert_eq!(
        writer
            .call("update_secret", &update(revision, "two", json!(null)))
            .await
            .status,
        200
    );
    let stale = writer
        .call("update_secret", &update(revision, "stale", json!(null)))
        .await;
    let body = stale.error();
    assert_eq!(
        (stale.status, &body["error"], &body["result_code"]),
        (
            400,
            &json!("outdated_revision"),
            &json!("outdated_revision")
        )
    );
    assert_eq!(
        server
            .record(&uid)
            .unwrap()
            .field_text("password")
            .as_deref(),
        Some("two")
    );

    // A rotation is kept until finalized, or undone by a rollback (as a new revision).
    let current = server.record_revision(&uid).unwrap();
    let rotation = update(current, "rotated", json!({"transactionType": "rotation"}));
    assert_eq!(writer.call("update_secret", &rotation).await.status, 200);
    assert_eq!(
        writer
            .call("rollback_secret_update", &json!({"recordUid": uid}))
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .record(&uid)
            .unwrap()
            .field_text("password")
            .as_deref(),
        Some("two")
    );
    assert!(server.record_revision(&uid).unwrap() > current + 1);
    let (status, error, _) = writer
        .refused("finalize_secret_update", &json!({"recordUid": uid}))
        .await;
    assert_eq!(
        (status, error.as_str()),
        (400, "bad_request"),
        "no transaction left"
    );
}

#[tokio::test]
async fn hostile_create_payloads_are_refused_with_specific_errors() {
    let server = TestServer::sample().await.unwrap();
    let writer = Writer::new(&server, "operator", PRODUCTION).await;
    let before = server.records().len();
    let key = AesKey::random();
    let uid = keeper_operator::ksm::crypto::generate_uid();
    let good = writer.create(&uid, &key, PRODUCTION, "x");
    let with = |name: &str, value: Value| {
        let mut payload = good.clone();
        payload[name] = value;
        payload
    };
    let other = AesKey::random();
    let cases = [
        (
            with("data", json!("%%% not base64")),
            400,
            "bad_request",
            "data is not base64",
        ),
        (
            with("data", json!(b64_std(&aes_gcm_encrypt(&other, b"{}")))),
            400,
            "bad_request",
            "data does not decrypt",
        ),
        (
            with("data", json!(b64_std(&aes_gcm_encrypt(&key, b"[1, 2]")))),
            400,
            "bad_request",
            "record data",
        ),
        (
            with(
                "folderKey",
                json!(b64_std(&aes_gcm_encrypt(&other, key.as_bytes()))),
            ),
            400,
            "bad_request",
            "folderKey does not unwrap",
        ),
        (
            with(
                "recordKey",
                json!(b64_std(&ecies_encrypt(&writer.owner, other.as_bytes()))),
            ),
            400,
            "bad_request",
            "wrap different keys",
        ),
        (
            with("recordKey", json!(b64_std(&[7; 125]))),
            400,
            "bad_request",
            "does not decrypt with the owner",
        ),
        (
            with("data", json!(b64_std(&vec![0; 40 * 1024]))),
            400,
            "size_exceeded_limit",
            "limit",
        ),
        (
            with("recordUid", json!("short")),
            400,
            "bad_request",
            "recordUid is not",
        ),
        (
            with("recordUid", json!(POSTGRES)),
            400,
            "record_exists",
            "already exists",
        ),
        (
            with("folderUid", json!(STAGING)),
            403,
            "access_denied",
            "not shared",
        ),
        (
            with("subFolderUid", json!(STAGING)),
            400,
            "bad_request",
            "is not a folder of",
        ),
        (
            with("folderKey", json!(null)),
            400,
            "bad_request",
            "payload",
        ),
    ];
    for (payload, status, error, message) in cases {
        let got = writer.refused("create_secret", &payload).await;
        assert_eq!(
            (got.0, got.1.as_str()),
            (status, error),
            "{got:?} for {payload}"
        );
        assert!(
            got.2.contains(message),
            "{got:?} should mention {message:?}"
        );
    }

    // A read-only share: app `ci` sees Staging but may not write to it.
    let ci = Writer::new(&server, "ci", STAGING).await;
    let payload = ci.create(&uid, &key, STAGING, "x");
    let (status, error, message) = ci.refused("create_secret", &payload).await;
    assert_eq!((status, error.as_str()), (403, "access_denied"));
    assert!(message.contains("read-only"), "{message}");
    assert_eq!(server.records().len(), before, "nothing was stored");
    assert_eq!(
        writer.call("create_secret", &good).await.status,
        200,
        "the good payload works"
    );
}

#[tokio::test]
async fn hostile_updates_deletes_and_uploads_are_refused() {
    let server = TestServer::sample().await.unwrap();
    let writer = Writer::new(&server, "operator", PRODUCTION).await;
    let revision = server.record_revision(POSTGRES).unwrap();
    let data = b64_std(&aes_gcm_encrypt(&AesKey::random(), b"{}"));
    let update = json!({"recordUid": POSTGRES, "revision": revision, "data": data});
    let got = writer.refused("update_secret", &update).await;
    assert_eq!((got.0, got.1.as_str()), (400, "bad_request"), "{got:?}");
    assert!(
        got.2.contains("does not decrypt with the record key"),
        "{got:?}"
    );
    let direct = json!({"recordUid": STRIPE, "revision": 1, "data": data});
    let got = writer.refused("update_secret", &direct).await;
    assert_eq!(
        (got.0, got.1.as_str()),
        (403, "access_denied"),
        "directly shared records are read-only"
    );
    let unknown = json!({"recordUid": keeper_operator::ksm::crypto::generate_uid(), "revision": 1, "data": data});
    assert_eq!(writer.refused("update_secret", &unknown).await.0, 403);
    assert_eq!(server.record_revision(POSTGRES), Some(revision));

    // delete_secret answers per record: only records the app created may go.
    let reply = writer
        .call("delete_secret", &json!({"recordUids": [POSTGRES, "bad"]}))
        .await
        .json();
    let codes: Vec<&Value> = reply["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["responseCode"])
        .collect();
    assert_eq!(codes, [&json!("access_denied"), &json!("bad_request")]);
    assert!(server.record(POSTGRES).is_ok());

    // add_file: oversize, a link key under the wrong key, then an upload that lies about its size.
    let file_key = AesKey::random();
    let file_uid = keeper_operator::ksm::crypto::generate_uid();
    let postgres_key = {
        let answer = writer
            .call("get_secret", &json!({"requestedRecords": [POSTGRES]}))
            .await
            .json();
        let wrapped = b64_decode(
            answer["folders"][0]["records"][0]["recordKey"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        writer.folder_key.unwrap_key(&wrapped).unwrap()
    };
    let mut owner = server.record(POSTGRES).unwrap();
    owner
        .fields
        .push(json!({"type": "fileRef", "value": [file_uid]}));
    let owner_json =
        json!({"title": owner.title, "type": owner.record_type, "fields": owner.fields});
    let content = aes_gcm_encrypt(&file_key, b"file content");
    let add = json!({
        "fileRecordUid": file_uid,
        "fileRecordKey": b64_std(&ecies_encrypt(&writer.owner, file_key.as_bytes())),
        "fileRecordData": b64_url(&aes_gcm_encrypt(&file_key, br#"{"name":"a.txt","size":12}"#)),
        "ownerRecordUid": POSTGRES,
        "ownerRecordData": b64_url(&aes_gcm_encrypt(&postgres_key, owner_json.to_string().as_bytes())),
        "ownerRecordRevision": revision,
        "linkKey": b64_std(&aes_gcm_encrypt(&postgres_key, file_key.as_bytes())),
        "fileSize": content.len(),
    });
    let mut oversize = add.clone();
    oversize["fileSize"] = json!(64 * 1024 * 1024);
    assert_eq!(
        writer.refused("add_file", &oversize).await.1,
        "size_exceeded_limit"
    );
    let mut bad_link = add.clone();
    bad_link["linkKey"] = json!(b64_std(&aes_gcm_encrypt(
        &AesKey::random(),
        file_key.as_bytes()
    )));
    assert!(
        writer
            .refused("add_file", &bad_link)
            .await
            .2
            .contains("linkKey")
    );
    let mut stale = add.clone();
    stale["ownerRecordRevision"] = json!(revision - 1);
    assert_eq!(
        writer.refused("add_file", &stale).await.1,
        "outdated_revision"
    );

    let answer = writer.call("add_file", &add).await.json();
    let url = answer["url"].as_str().unwrap();
    let parameters: Value = serde_json::from_str(answer["parameters"].as_str().unwrap()).unwrap();
    let form = |file: &[u8]| {
        let mut body = format!(
            "--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n{}\r\n--B\r\n\
             Content-Disposition: form-data; name=\"file\"\r\n\r\n",
            parameters["key"].as_str().unwrap()
        )
        .into_bytes();
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n--B--\r\n");
        writer
            .raw
            .http
            .post(url)
            .header("Content-Type", "multipart/form-data; boundary=B")
            .body(body)
            .send()
    };
    assert_eq!(
        form(&content[1..]).await.unwrap().status(),
        400,
        "size differs from fileSize"
    );
    assert_eq!(
        server.record_revision(POSTGRES),
        Some(revision),
        "nothing committed"
    );
    assert_eq!(form(&content).await.unwrap().status(), 204);
    let stored = server.record(POSTGRES).unwrap();
    assert_eq!(
        stored.files.last().unwrap().bytes().unwrap(),
        b"file content"
    );
    assert!(server.record_revision(POSTGRES).unwrap() > revision);
    assert_eq!(
        form(&content).await.unwrap().status(),
        403,
        "an upload is used once"
    );
}
