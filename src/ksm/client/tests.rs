//! The client: its pure helpers, and over real HTTPS against the in-process responder in
//! [`crate::ksm::fixtures`]: binding, fetch, download and every error path.

use crate::ksm::crypto::AesKey;
use crate::ksm::fixtures::*;
use crate::ksm::record::KeeperFile;
use crate::ksm::record::notation::{NotationValue, resolve};
use crate::ksm::token::redeem_token;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::io::AsyncWriteExt;

use super::*;

#[test]
fn throttle_delay_is_never_below_its_floor_and_at_most_a_quarter_above() {
    let secs = Duration::from_secs;
    let within = |d: Duration, floor: Duration| d >= floor && d <= floor.mul_f64(1.25);
    let (mut lowest, mut highest) = (Duration::MAX, Duration::ZERO);
    for _ in 0..200 {
        let d = throttle_delay(Some(secs(8)), 0);
        assert!(within(d, secs(8)), "{d:?}");
        (lowest, highest) = (lowest.min(d), highest.max(d));
        // 11·2^n: 11, 22, 44, 88, 176, then capped.
        for (attempt, floor) in [(0, 11), (1, 22), (4, 176), (9, 176)] {
            let d = throttle_delay(None, attempt);
            assert!(within(d, secs(floor)), "attempt {attempt}: {d:?}");
        }
        // A server asking for more than 176 s gets 176 s (plus jitter).
        let d = throttle_delay(Some(secs(86_400)), 0);
        assert!(within(d, secs(176)), "{d:?}");
    }
    // The jitter spreads (it is not a constant offset).
    assert!(
        highest - lowest > Duration::from_millis(500),
        "{lowest:?}..{highest:?}"
    );
}

#[test]
fn unbound_configs_are_refused() {
    let unbound = KsmConfig::unbound(
        "localhost".into(),
        crate::ksm::crypto::AesKey::random(),
        10,
        None,
    );
    let err = KsmClient::new(unbound, &ClientOptions::default()).unwrap_err();
    assert_eq!(err.reason(), "InvalidConfig");
}

fn client_for(hostname: String, timeout: Duration) -> KsmClient {
    let config = KsmConfig::unbound(hostname, crate::ksm::crypto::AesKey::random(), 10, None)
        .into_bound(crate::ksm::crypto::AesKey::random(), None);
    let options = ClientOptions {
        timeout,
        ..ClientOptions::default()
    };
    KsmClient::new(config, &options).unwrap()
}

/// A loopback listener that answers every connection with `reply` (or nothing).
async fn listener(reply: Option<&'static [u8]>) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Some(reply) = reply {
                    let _ = socket.write_all(reply).await;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    addr.to_string()
}

#[tokio::test]
async fn transport_failures_are_classified() {
    // Plain HTTP where TLS is expected: the handshake fails inside rustls.
    let host = listener(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
    let err = client_for(host, Duration::from_secs(5))
        .get_secrets(&Query::default())
        .await
        .unwrap_err();
    assert!(matches!(err, KsmError::Tls(_)), "{err:?}");
    assert_eq!(err.reason(), "TlsError");

    // A server that accepts and never answers.
    let host = listener(None).await;
    let err = client_for(host, Duration::from_millis(300))
        .get_folders()
        .await
        .unwrap_err();
    assert!(matches!(err, KsmError::Timeout), "{err:?}");

    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = client_for(format!("127.0.0.1:{port}"), Duration::from_secs(5))
        .get_secrets(&Query::default())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "KeeperUnavailable", "{err:?}");
}

#[test]
fn bad_extra_ca_is_a_config_error() {
    let options = ClientOptions {
        extra_ca_pem: Some(b"not a pem".to_vec()),
        ..ClientOptions::default()
    };
    let err = http_client(&options).unwrap_err();
    assert_eq!(err.reason(), "InvalidConfig");
}

#[tokio::test]
async fn redeem_fetch_resolve_and_download() {
    let ksm = FakeKsm::start().await;
    let config = redeem_token(
        TOKEN,
        Some(&ksm.host),
        Some(ksm.server_key()),
        &ksm.options(),
    )
    .await
    .unwrap();
    // Binding plus the SDKs' immediate re-fetch.
    assert_eq!(
        ksm.seen(),
        [
            ("get_secret".into(), "10".into()),
            ("get_secret".into(), "10".into())
        ]
    );
    let json: Value = serde_json::from_str(&config.to_json()).unwrap();
    assert_eq!(json["hostname"], ksm.host.as_str());
    assert!(json.get("clientKey").is_none());
    assert!(json["appKey"].is_string() && json["appOwnerPublicKey"].is_string());
    // The config survives its own base64 round trip and works.
    let config = KsmConfig::parse(&config.to_base64()).unwrap();
    let client = KsmClient::new(config, &ksm.options()).unwrap();
    let vault = client.get_secrets(&Query::default()).await.unwrap();
    assert_eq!(vault.records.len(), 1);
    let values = resolve(&vault.records, &"Web/field/password".parse().unwrap()).unwrap();
    assert_eq!(values, [NotationValue::Text("s3cr3t".into())]);
    let files = resolve(&vault.records, &"Web/file/cert.pem".parse().unwrap()).unwrap();
    let [NotationValue::File(file)] = files.as_slice() else {
        panic!("expected one file");
    };
    assert_eq!(
        &*client.download_file(file, 1 << 20).await.unwrap(),
        FILE_CONTENT
    );

    // The token is spent: a second device with the same token is refused.
    let err = redeem_token(
        TOKEN,
        Some(&ksm.host),
        Some(ksm.server_key()),
        &ksm.options(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, KsmError::AccessDenied { ref message } if message == "Signature is invalid"),
        "{err:?}"
    );
}

#[tokio::test]
async fn throttling_is_retried_or_surfaced_per_options() {
    let ksm = FakeKsm::start().await;
    let client = ksm.bound_client().await;
    ksm.fault(Fault::Throttle(0.05));
    assert!(client.get_secrets(&Query::default()).await.is_ok());
    assert_eq!(ksm.seen().len(), 2);

    let options = ClientOptions {
        throttle_retries: 0,
        ..ksm.options()
    };
    let no_wait = KsmClient::new(client.config().clone(), &options).unwrap();
    ksm.fault(Fault::Throttle(7.0));
    let err = no_wait.get_secrets(&Query::default()).await.unwrap_err();
    assert!(
        matches!(err, KsmError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(7)),
        "{err:?}"
    );
    // A retry_after beyond the longest allowed wait is surfaced, not slept on.
    ksm.fault(Fault::Throttle(3600.0));
    let err = client.get_secrets(&Query::default()).await.unwrap_err();
    assert_eq!(err.reason(), "Throttled");
}

#[tokio::test]
async fn key_id_errors_tampering_gateways_and_versions() {
    let ksm = FakeKsm::start().await;
    let client = ksm.bound_client().await;

    ksm.fault(Fault::WrongKey(9));
    let err = client.get_folders().await.unwrap_err();
    assert!(
        matches!(
            err,
            KsmError::WrongServerKey {
                key_id: Some(9),
                custom_key: true
            }
        ),
        "{err:?}"
    );

    ksm.fault(Fault::Tamper);
    let err = client.get_secrets(&Query::default()).await.unwrap_err();
    assert!(matches!(err, KsmError::Tampered), "{err:?}");

    ksm.fault(Fault::BadGateway);
    let err = client.get_secrets(&Query::default()).await.unwrap_err();
    assert_eq!(err.reason(), "KeeperUnavailable");

    let options = ClientOptions {
        client_version: "mr0.0.1".into(),
        ..ksm.options()
    };
    let old = KsmClient::new(client.config().clone(), &options).unwrap();
    let err = old.get_secrets(&Query::default()).await.unwrap_err();
    assert!(
        matches!(err, KsmError::InvalidClientVersion { .. }),
        "{err:?}"
    );
    ksm.seen();
}

#[tokio::test]
async fn built_in_keys_rotate_to_the_id_the_server_names_a_bounded_number_of_times() {
    let ksm = FakeKsm::start().await;
    // No custom key: the client uses the built-in table, which the responder cannot open,
    // but it can still answer "use key 9" — the rotation loop is what is under test.
    let config = KsmConfig::unbound(ksm.host.clone(), AesKey::random(), 10, None)
        .into_bound(AesKey::random(), None);
    let client = KsmClient::new(config, &ksm.options()).unwrap();
    for _ in 0..4 {
        ksm.fault(Fault::WrongKey(9));
    }
    let err = client.get_secrets(&Query::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            KsmError::WrongServerKey {
                key_id: Some(9),
                custom_key: false
            }
        ),
        "{err:?}"
    );
    let ids: Vec<String> = ksm.seen().into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, ["10", "9", "9", "9"]);
    // An id outside the table is not followed.
    ksm.fault(Fault::WrongKey(99));
    let err = client.get_secrets(&Query::default()).await.unwrap_err();
    assert!(matches!(
        err,
        KsmError::WrongServerKey {
            key_id: Some(99),
            ..
        }
    ));
    assert_eq!(ksm.seen().len(), 1);
    // Nor one of the ids 1–6 (the same key as 7), nor 0: only 7–18 are rotation targets.
    for id in [0, 3, 6] {
        ksm.fault(Fault::WrongKey(id));
        let err = client.get_secrets(&Query::default()).await.unwrap_err();
        assert!(
            matches!(err, KsmError::WrongServerKey { key_id: Some(k), .. } if k == id),
            "{id}: {err:?}"
        );
        assert_eq!(ksm.seen().len(), 1, "{id}: not followed");
    }
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error() {
    let ksm = FakeKsm::start().await;
    let options = ClientOptions {
        extra_ca_pem: None,
        ..ksm.options()
    };
    let err = redeem_token(TOKEN, Some(&ksm.host), Some(ksm.server_key()), &options)
        .await
        .unwrap_err();
    assert!(matches!(err, KsmError::Tls(_)), "{err:?}");
    assert_eq!(err.reason(), "TlsError");
}

/// What the raw responder answers every request with.
#[derive(Clone)]
enum Reply {
    /// A status line and headers (no blank line), then the body.
    Fixed(String, Vec<u8>),
    /// `200`, chunked, up to `total` bytes in 16 KiB chunks, until the client hangs up.
    Endless { total: u64 },
    /// `200` announcing 1000 bytes, then one byte every 100 ms.
    Drip,
}

/// A TLS responder that ignores the protocol: for size, redirect and host tests.
struct RawServer {
    host: String,
    ca_pem: Vec<u8>,
    /// TCP connections accepted.
    connections: Arc<AtomicUsize>,
    /// Requests read completely.
    requests: Arc<AtomicUsize>,
    /// Body bytes written so far.
    sent: Arc<AtomicU64>,
}

impl RawServer {
    async fn start(reply: Reply) -> RawServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let (acceptor, ca_pem) = tls_acceptor();
        let server = RawServer {
            host,
            ca_pem,
            connections: Arc::default(),
            requests: Arc::default(),
            sent: Arc::default(),
        };
        let (connections, requests, sent) = (
            server.connections.clone(),
            server.requests.clone(),
            server.sent.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, reply) = (acceptor.clone(), reply.clone());
                let (requests, sent) = (requests.clone(), sent.clone());
                tokio::spawn(async move {
                    let mut tls = acceptor.accept(stream).await.ok()?;
                    read_request(&mut tls).await?;
                    requests.fetch_add(1, Ordering::SeqCst);
                    match reply {
                        Reply::Fixed(head, body) => {
                            tls.write_all(format!("{head}\r\n\r\n").as_bytes())
                                .await
                                .ok()?;
                            tls.write_all(&body).await.ok()?;
                            sent.fetch_add(body.len() as u64, Ordering::SeqCst);
                        }
                        Reply::Endless { total } => {
                            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                            tls.write_all(head.as_bytes()).await.ok()?;
                            let chunk = vec![b'x'; 16 << 10];
                            while sent.load(Ordering::SeqCst) < total {
                                let frame =
                                    [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"]
                                        .concat();
                                tls.write_all(&frame).await.ok()?;
                                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                            }
                            tls.write_all(b"0\r\n\r\n").await.ok()?;
                        }
                        Reply::Drip => {
                            tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
                                .await
                                .ok()?;
                            for _ in 0..1000 {
                                tls.write_all(b"x").await.ok()?;
                                tls.flush().await.ok()?;
                                sent.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                    tls.shutdown().await.ok()
                });
            }
        });
        server
    }

    fn options(&self) -> ClientOptions {
        ClientOptions {
            extra_ca_pem: Some(self.ca_pem.clone()),
            timeout: Duration::from_secs(20),
            throttle_retries: 0,
            ..ClientOptions::default()
        }
    }

    fn client(&self, options: ClientOptions) -> KsmClient {
        let config = KsmConfig::unbound(self.host.clone(), AesKey::random(), 10, None)
            .into_bound(AesKey::random(), None);
        KsmClient::new(config, &options).unwrap()
    }

    fn file(&self, url: &str, size: Option<u64>) -> KeeperFile {
        KeeperFile {
            uid: "fileUid1".into(),
            name: "big.bin".into(),
            title: "Big".into(),
            mime_type: None,
            size,
            url: Some(url.replace("HOST", &self.host)),
            key: AesKey::random(),
        }
    }

    /// Body bytes written once the server has noticed the client hung up.
    async fn sent_after_hangup(&self) -> u64 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.sent.load(Ordering::SeqCst)
    }
}

const ENDLESS: u64 = 256 << 20;
/// Loopback socket buffers hold a few MiB: far below what an endless sender would push.
const READ_AT_MOST: u64 = 16 << 20;

#[tokio::test]
async fn an_oversize_reply_is_refused_while_streaming() {
    let server = RawServer::start(Reply::Endless { total: ENDLESS }).await;
    let client = server.client(ClientOptions {
        max_response_bytes: 64 << 10,
        ..server.options()
    });
    let err = client.get_secrets(&Query::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            KsmError::TooLarge {
                size: None,
                limit: 65536,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.reason(), "TooLarge");
    assert!(!err.is_transient());
    let sent = server.sent_after_hangup().await;
    assert!(sent < READ_AT_MOST, "the server pushed {sent} bytes");

    // An announced length over the cap is refused before reading any of it.
    let server = RawServer::start(Reply::Fixed(
        "HTTP/1.1 200 OK\r\ncontent-length: 1073741824".into(),
        Vec::new(),
    ))
    .await;
    let err = server
        .client(server.options())
        .get_folders()
        .await
        .unwrap_err();
    assert!(
        matches!(err, KsmError::TooLarge { size: Some(1073741824), limit, .. } if limit == MAX_RESPONSE_BYTES),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_request_deadline_covers_a_slowly_dripped_body() {
    let server = RawServer::start(Reply::Drip).await;
    let client = server.client(ClientOptions {
        timeout: Duration::from_millis(800),
        ..server.options()
    });
    let started = std::time::Instant::now();
    let err = client.get_secrets(&Query::default()).await.unwrap_err();
    assert!(matches!(err, KsmError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let file = server.file("https://HOST/files/f", Some(1000));
    let err = client.download_file(&file, 1 << 20).await.unwrap_err();
    assert!(matches!(err, KsmError::Timeout), "{err:?}");
    // The headers arrived: the deadline fired while the body was being read.
    assert!(server.sent.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn a_download_stops_at_the_declared_size_or_the_budget() {
    let server = RawServer::start(Reply::Endless { total: ENDLESS }).await;
    let client = server.client(server.options());
    // Declares 3 bytes and keeps sending.
    let liar = server.file("https://HOST/files/f", Some(3));
    let err = client.download_file(&liar, 1 << 20).await.unwrap_err();
    assert!(matches!(err, KsmError::InvalidResponse(_)), "{err:?}");
    assert!(err.to_string().contains("3 bytes"), "{err}");
    assert!(server.sent_after_hangup().await < READ_AT_MOST);

    // No declared size: the budget is the limit.
    let server = RawServer::start(Reply::Endless { total: ENDLESS }).await;
    let client = server.client(server.options());
    let unsized_file = server.file("https://HOST/files/f", None);
    let err = client.download_file(&unsized_file, 1000).await.unwrap_err();
    assert!(
        matches!(err, KsmError::TooLarge { limit: 1000, .. }),
        "{err:?}"
    );
    assert!(server.sent_after_hangup().await < READ_AT_MOST);

    // A Content-Length beyond the declared size is refused up front.
    let server = RawServer::start(Reply::Fixed(
        "HTTP/1.1 200 OK\r\ncontent-length: 5000".into(),
        Vec::new(),
    ))
    .await;
    let file = server.file("https://HOST/files/f", Some(3));
    let err = server
        .client(server.options())
        .download_file(&file, 1 << 20)
        .await
        .unwrap_err();
    assert!(matches!(err, KsmError::InvalidResponse(_)), "{err:?}");
}

#[tokio::test]
async fn a_file_over_budget_is_refused_without_a_request() {
    let server = RawServer::start(Reply::Fixed(
        "HTTP/1.1 200 OK\r\ncontent-length: 0".into(),
        Vec::new(),
    ))
    .await;
    let file = server.file("https://HOST/files/f", Some(2 << 20));
    let err = server
        .client(server.options())
        .download_file(&file, 1 << 20)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "TooLarge");
    assert!(!err.is_transient());
    let text = err.to_string();
    for part in ["big.bin", "fileUid1", "2097152", "1048576"] {
        assert!(text.contains(part), "{text}");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = RawServer::start(Reply::Fixed(
        "HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0".into(),
        Vec::new(),
    ))
    .await;
    let client = server.client(server.options());
    let err = client.get_secrets(&Query::default()).await.unwrap_err();
    assert!(matches!(err, KsmError::Redirect { status: 302 }), "{err:?}");
    assert!(!err.is_transient());
    let file = server.file("https://HOST/files/f", Some(3));
    let err = client.download_file(&file, 1 << 20).await.unwrap_err();
    assert!(matches!(err, KsmError::Redirect { status: 302 }), "{err:?}");
    // One request each: the redirect target was never asked for.
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn downloads_are_https_only() {
    let server = RawServer::start(Reply::Fixed(
        "HTTP/1.1 200 OK\r\ncontent-length: 0".into(),
        Vec::new(),
    ))
    .await;
    let client = server.client(server.options());
    for url in [
        "http://HOST/files/f",
        "ftp://HOST/f",
        "file:///etc/passwd",
        "HTTP://HOST/files/f",
    ] {
        let err = client
            .download_file(&server.file(url, Some(3)), 1 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(err, KsmError::InsecureDownload { .. }),
            "{url}: {err:?}"
        );
        assert_eq!(err.reason(), "InsecureDownload");
        assert!(!err.to_string().contains("/files/f"), "{err}");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn only_allowed_hosts_are_contacted() {
    use crate::ksm::hosts::AllowedHosts;
    let server = RawServer::start(Reply::Fixed(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0".into(),
        Vec::new(),
    ))
    .await;
    let port = server.host.rsplit_once(':').unwrap().1.to_string();
    let with = |list: &[&str]| ClientOptions {
        allowed_hosts: Some(AllowedHosts::parse(list).unwrap()),
        ..server.options()
    };
    for list in [
        vec!["keepersecurity.com"],
        vec!["127.0.0.2", "localhost"],
        vec!["127.0.0.1:1"],
    ] {
        let err = server
            .client(with(&list))
            .get_secrets(&Query::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, KsmError::HostNotAllowed { host } if *host == server.host),
            "{list:?}: {err:?}"
        );
        assert!(!err.is_transient());
        // Redeeming a token goes through the same check.
        let err = redeem_token(TOKEN, Some(&server.host), None, &with(&list))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "HostNotAllowed");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);

    for list in [vec!["127.0.0.1"], vec!["127.0.0.1:PORT"]] {
        let list: Vec<String> = list.iter().map(|e| e.replace("PORT", &port)).collect();
        let options = ClientOptions {
            allowed_hosts: Some(AllowedHosts::parse(&list).unwrap()),
            ..server.options()
        };
        let err = server
            .client(options)
            .get_secrets(&Query::default())
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "KeeperUnavailable", "{err:?}");
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
}
