//! Test-only: a tiny in-process KSM responder over real HTTPS (rustls, its own self-signed
//! certificate and server key), just enough to exercise the client's own request and retry
//! logic and the `keeper` CLI. The full test server with fault injection lives in the e2e crate.

use crate::ksm::client::{ClientOptions, KsmClient};
use crate::ksm::crypto::{
    AesKey, EcKeyPair, aes_gcm_decrypt, aes_gcm_encrypt, b64_decode, b64_std, b64_url, client_id,
    ecies_decrypt, verify_der,
};
use crate::ksm::token::redeem_token;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const TOKEN: &str = "YyIhK5wXFHj36wGBAOmBsxI3v5rIruINrC8KXjyM58c";
pub(crate) const FILE_CONTENT: &[u8] = b"-----BEGIN CERTIFICATE-----\nfake\n";

pub(crate) enum Fault {
    Throttle(f64),
    WrongKey(u32),
    Tamper,
    BadGateway,
}

pub(crate) struct State {
    pub(crate) server: EcKeyPair,
    pub(crate) client_key: AesKey,
    pub(crate) app_key: AesKey,
    pub(crate) device: Option<[u8; 65]>,
    pub(crate) vault: Value,
    pub(crate) file: Vec<u8>,
    pub(crate) faults: VecDeque<Fault>,
    /// (endpoint, PublicKeyId header) of every API request.
    pub(crate) seen: Vec<(String, String)>,
}

pub(crate) struct FakeKsm {
    pub(crate) host: String,
    pub(crate) ca_pem: Vec<u8>,
    pub(crate) state: Arc<Mutex<State>>,
}

pub(crate) fn vault(app_key: &AesKey, port: u16) -> (Value, Vec<u8>) {
    let (folder_key, record_key, file_key) = (AesKey::random(), AesKey::random(), AesKey::random());
    let data = json!({"title": "Web", "type": "login",
        "fields": [{"type": "login", "value": ["admin"]}, {"type": "password", "value": ["s3cr3t"]}],
        "custom": [], "notes": "n"});
    let meta = json!({"name": "cert.pem", "title": "Cert", "type": "text/plain", "size": FILE_CONTENT.len()});
    let record = json!({
        "recordUid": "6ya_fdc6XTsZ7i7x9Jcodg",
        "recordKey": b64_std(&aes_gcm_encrypt(&folder_key, record_key.as_bytes())),
        "data": b64_std(&aes_gcm_encrypt(&record_key, data.to_string().as_bytes())),
        "revision": 5, "isEditable": false, "folderUid": null, "innerFolderUid": null,
        "files": [{"fileUid": "f1", "url": format!("https://127.0.0.1:{port}/files/f1"),
                   "fileKey": b64_std(&aes_gcm_encrypt(&record_key, file_key.as_bytes())),
                   "data": b64_std(&aes_gcm_encrypt(&file_key, meta.to_string().as_bytes()))}]});
    let value = json!({"appData": null, "encryptedAppKey": null, "appOwnerPublicKey": null,
        "expiresOn": 0, "warnings": null, "extra": null, "records": null,
        "folders": [{"folderUid": "y6FBhg7C-wy2zaM0-ouI-Q", "data": null, "parent": null,
                     "folderKey": b64_std(&aes_gcm_encrypt(app_key, folder_key.as_bytes())),
                     "records": [record]}]});
    (value, aes_gcm_encrypt(&file_key, FILE_CONTENT))
}

pub(crate) fn error(status: u16, body: Value) -> (u16, Vec<u8>) {
    (status, body.to_string().into_bytes())
}

/// One API request, answered as the test server does (docs/dev/protocol.md#the-test-server).
pub(crate) fn handle_api(
    state: &mut State,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    match state.faults.pop_front() {
        Some(Fault::Throttle(secs)) => {
            return error(403, json!({"error": "throttled", "retry_after": secs}));
        }
        Some(Fault::WrongKey(id)) => {
            return error(
                401,
                json!({"key_id": id, "error": "key", "message": "invalid key id"}),
            );
        }
        Some(Fault::BadGateway) => return (502, b"Bad Gateway".to_vec()),
        Some(Fault::Tamper) | None => {}
    }
    let denied = |message: &str| error(403, json!({"error": "access_denied", "message": message}));
    let Some(tk_raw) = header("TransmissionKey").and_then(|t| b64_decode(t).ok()) else {
        return error(400, json!({"error": "bad_request"}));
    };
    let Ok(tk) = ecies_decrypt(state.server.secret_key(), &tk_raw) else {
        return error(
            400,
            json!({"error": "bad_request", "message": "transmission key"}),
        );
    };
    let tk = AesKey::from_slice(&tk).unwrap();
    let payload: Value = serde_json::from_slice(&aes_gcm_decrypt(&tk, body).unwrap()).unwrap();
    if payload["clientVersion"] != "mr17.3.0" {
        return error(
            403,
            json!({"result_code": "invalid_client_version", "error": "client_version",
                   "additional_info": format!("invalid client version id: {}", payload["clientVersion"])}),
        );
    }
    if payload["clientId"] != client_id(state.client_key.as_bytes()) {
        return denied("Unable to validate application access");
    }
    let mut just_bound = false;
    if state.device.is_none() {
        let Some(point) = payload["publicKey"]
            .as_str()
            .and_then(|p| b64_decode(p).ok())
        else {
            return denied("Unable to validate application access");
        };
        state.device = Some(point.try_into().unwrap());
        just_bound = true;
    }
    let signature = header("Authorization")
        .and_then(|a| a.strip_prefix("Signature "))
        .and_then(|s| b64_decode(s).ok())
        .unwrap_or_default();
    let signed = [tk_raw.as_slice(), body].concat();
    if !verify_der(&state.device.unwrap(), &signed, &signature) {
        return denied("Signature is invalid");
    }
    let mut response = state.vault.clone();
    if just_bound {
        response["encryptedAppKey"] = json!(b64_std(&aes_gcm_encrypt(
            &state.client_key,
            state.app_key.as_bytes()
        )));
        response["appOwnerPublicKey"] = json!(b64_std(&EcKeyPair::generate().public_key_bytes()));
    }
    (200, aes_gcm_encrypt(&tk, response.to_string().as_bytes()))
}

/// A TLS acceptor with a fresh self-signed certificate for 127.0.0.1, and that certificate.
pub(crate) fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, Vec<u8>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        cert.cert.pem().into_bytes(),
    )
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body); returns (head, body).
pub(crate) async fn read_request<S: tokio::io::AsyncRead + Unpin>(
    tls: &mut S,
) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = tls.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = tls.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((head, buf[head_end..head_end + length].to_vec()))
}

pub(crate) async fn serve(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<Mutex<State>>,
) -> Option<()> {
    let mut tls = acceptor.accept(stream).await.ok()?;
    let (head, body) = read_request(&mut tls).await?;
    let body = body.as_slice();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let path = request_line.split(' ').nth(1)?.to_string();
    let (status, response) = {
        let mut state = state.lock().unwrap();
        if path == "/files/f1" {
            (200, state.file.clone())
        } else {
            let endpoint = path.rsplit('/').next().unwrap_or_default().to_string();
            let key_id = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("PublicKeyId"))
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            state.seen.push((endpoint, key_id));
            let tamper = matches!(state.faults.front(), Some(Fault::Tamper));
            let (status, mut body) = handle_api(&mut state, &headers, body);
            if tamper && status == 200 {
                body[20] ^= 1;
            }
            (status, body)
        }
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        response.len()
    );
    tls.write_all(head.as_bytes()).await.ok()?;
    tls.write_all(&response).await.ok()?;
    tls.shutdown().await.ok()
}

impl FakeKsm {
    pub(crate) async fn start() -> FakeKsm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (acceptor, ca_pem) = tls_acceptor();
        let app_key = AesKey::random();
        let (vault, file) = vault(&app_key, port);
        let state = Arc::new(Mutex::new(State {
            server: EcKeyPair::generate(),
            client_key: AesKey::from_b64(TOKEN).unwrap(),
            app_key,
            device: None,
            vault,
            file,
            faults: VecDeque::new(),
            seen: Vec::new(),
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, acceptor.clone(), shared.clone()));
            }
        });
        FakeKsm {
            host: format!("127.0.0.1:{port}"),
            ca_pem,
            state,
        }
    }

    pub(crate) fn server_key(&self) -> (String, String) {
        let point = self.state.lock().unwrap().server.public_key_bytes();
        ("10".to_string(), b64_url(&point))
    }

    pub(crate) fn options(&self) -> ClientOptions {
        ClientOptions {
            extra_ca_pem: Some(self.ca_pem.clone()),
            timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        }
    }

    pub(crate) fn fault(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push_back(fault);
    }

    pub(crate) fn seen(&self) -> Vec<(String, String)> {
        std::mem::take(&mut self.state.lock().unwrap().seen)
    }

    pub(crate) async fn bound_client(&self) -> KsmClient {
        let config = redeem_token(
            TOKEN,
            Some(&self.host),
            Some(self.server_key()),
            &self.options(),
        )
        .await
        .unwrap();
        self.seen();
        KsmClient::new(config, &self.options()).unwrap()
    }
}
