//! A raw KSM client for driving the test server at the protocol level, with no client library in
//! between: devices, hand-built (and deliberately broken) calls, and decryption of the answers.
//! It panics on anything unexpected, as the tests that use it want.

use std::time::Duration;

use keeper_operator::ksm::crypto::{
    AesKey, EcKeyPair, aes_gcm_decrypt, aes_gcm_encrypt, b64_decode, b64_std, client_id,
    ecies_encrypt, parse_public_key,
};
use serde_json::{Value, json};

use super::ServerHandle;

/// A device as a client holds it: its key, client id, and (once bound) the app key.
pub struct Device {
    pub key: EcKeyPair,
    pub client_id: String,
    pub client_key: Vec<u8>,
    pub app_key: Option<AesKey>,
}

impl Device {
    /// Unwraps `encryptedAppKey` of a binding answer with the token's client key.
    pub fn accept_binding(&mut self, answer: &Value) {
        let wrapped = b64_decode(answer["encryptedAppKey"].as_str().unwrap()).unwrap();
        let client_key = AesKey::from_slice(&self.client_key).unwrap();
        self.app_key = Some(client_key.unwrap_key(&wrapped).unwrap());
    }

    pub fn from_token(token: &str) -> Self {
        let client_key = b64_decode(token).unwrap();
        Device {
            key: EcKeyPair::generate(),
            client_id: client_id(&client_key),
            client_key,
            app_key: None,
        }
    }

    pub fn from_config(config_b64: &str) -> (Self, Value) {
        let config: Value = serde_json::from_slice(&b64_decode(config_b64).unwrap()).unwrap();
        let key =
            EcKeyPair::from_pkcs8_der(&b64_decode(config["privateKey"].as_str().unwrap()).unwrap())
                .unwrap();
        let device = Device {
            key,
            client_id: config["clientId"].as_str().unwrap().to_string(),
            client_key: Vec::new(),
            app_key: Some(AesKey::from_b64(config["appKey"].as_str().unwrap()).unwrap()),
        };
        (device, config)
    }
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub key: AesKey,
}

impl Reply {
    pub fn json(&self) -> Value {
        let plain = aes_gcm_decrypt(&self.key, &self.body).expect("response decrypts");
        serde_json::from_slice(&plain).expect("response is JSON")
    }

    pub fn error(&self) -> Value {
        serde_json::from_slice(&self.body).expect("error body is JSON")
    }
}

/// What to send; defaults produce a correct request.
pub struct Call<'a> {
    pub endpoint: &'a str,
    pub payload: Value,
    pub key_id: Option<&'a str>,
    pub corrupt_signature: bool,
}

impl<'a> Call<'a> {
    pub fn new(endpoint: &'a str, device: &Device) -> Self {
        Call {
            endpoint,
            payload: json!({ "clientVersion": "mr17.3.0", "clientId": device.client_id }),
            key_id: None,
            corrupt_signature: false,
        }
    }
    /// A first call that carries the device public key, as every SDK binds.
    pub fn binding(endpoint: &'a str, device: &Device) -> Self {
        let public = b64_std(&device.key.public_key_bytes());
        Self::new(endpoint, device).with("publicKey", json!(public))
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.payload[key] = value;
        self
    }
}

pub struct RawClient {
    pub http: reqwest::Client,
    pub hostname: String,
    pub server_key: p256::PublicKey,
    pub key_id: String,
}

impl RawClient {
    pub fn new(server: &ServerHandle) -> Self {
        let (key_id, key) = server.server_public_key();
        RawClient {
            http: reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(
                    reqwest::Certificate::from_pem(server.ca_pem().as_bytes()).unwrap(),
                )
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            hostname: server.hostname(),
            server_key: parse_public_key(&b64_decode(&key).unwrap()).unwrap(),
            key_id,
        }
    }

    pub async fn try_send(&self, device: &Device, call: Call<'_>) -> reqwest::Result<Reply> {
        let tk = AesKey::random();
        let tk_blob = ecies_encrypt(&self.server_key, tk.as_bytes());
        let body = aes_gcm_encrypt(&tk, &serde_json::to_vec(&call.payload).unwrap());
        let mut signed = [tk_blob.as_slice(), &body].concat();
        if call.corrupt_signature {
            signed.push(0);
        }
        let signature = device.key.sign_der(&signed);
        let response = self
            .http
            .post(format!(
                "https://{}/api/rest/sm/v1/{}",
                self.hostname, call.endpoint
            ))
            .header("Content-Type", "application/octet-stream")
            .header("PublicKeyId", call.key_id.unwrap_or(&self.key_id))
            .header("TransmissionKey", b64_std(&tk_blob))
            .header(
                "Authorization",
                format!("Signature {}", b64_std(&signature)),
            )
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?.to_vec();
        Ok(Reply {
            status,
            body,
            key: tk,
        })
    }

    /// The status of a correct request.
    pub async fn status(&self, device: &Device, endpoint: &str) -> u16 {
        self.send(device, Call::new(endpoint, device)).await.status
    }

    pub async fn send(&self, device: &Device, call: Call<'_>) -> Reply {
        self.try_send(device, call)
            .await
            .expect("request completes")
    }

    /// Binds a token-created device: get_secret with publicKey; returns the binding answer.
    pub async fn bind(&self, device: &mut Device) -> Value {
        let reply = self.send(device, Call::binding("get_secret", device)).await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let json = reply.json();
        device.accept_binding(&json);
        json
    }

    pub async fn get(&self, url: &str) -> reqwest::Result<(u16, Vec<u8>)> {
        let response = self.http.get(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?.to_vec()))
    }
}

/// A decrypted record: `(uid, record JSON, record key, files JSON)`.
pub fn decrypt_record(record: &Value, wrapping: &AesKey) -> (String, Value, AesKey) {
    let key = wrapping
        .unwrap_key(&b64_decode(record["recordKey"].as_str().unwrap()).unwrap())
        .unwrap();
    let data =
        aes_gcm_decrypt(&key, &b64_decode(record["data"].as_str().unwrap()).unwrap()).unwrap();
    let text = std::str::from_utf8(&data).unwrap();
    assert!(text.len().is_multiple_of(128), "space padded to 128 bytes");
    (
        record["recordUid"].as_str().unwrap().to_string(),
        serde_json::from_str(text).unwrap(),
        key,
    )
}

/// Every record in a get_secret response, decrypted: uid → (record JSON, key, raw record).
pub fn all_records(response: &Value, app_key: &AesKey) -> Vec<(String, Value, AesKey, Value)> {
    let mut out = Vec::new();
    let mut folder_keys = Vec::new();
    for folder in response["folders"].as_array().into_iter().flatten() {
        let folder_key = app_key
            .unwrap_key(&b64_decode(folder["folderKey"].as_str().unwrap()).unwrap())
            .unwrap();
        for record in folder["records"].as_array().unwrap() {
            let (uid, json, key) = decrypt_record(record, &folder_key);
            out.push((uid, json, key, record.clone()));
        }
        folder_keys.push(folder_key);
    }
    for record in response["records"].as_array().into_iter().flatten() {
        // A flat record of a shared folder is wrapped by that folder's key, not the app key.
        let wrapping = if record["innerFolderUid"].is_string() {
            let wrapped = b64_decode(record["recordKey"].as_str().unwrap()).unwrap();
            folder_keys
                .iter()
                .find(|k| k.unwrap_key(&wrapped).is_ok())
                .unwrap_or(app_key)
        } else {
            app_key
        };
        let (uid, json, key) = decrypt_record(record, wrapping);
        out.push((uid, json, key, record.clone()));
    }
    out
}

pub fn record_uids(records: &[(String, Value, AesKey, Value)]) -> Vec<String> {
    let mut uids: Vec<String> = records.iter().map(|r| r.0.clone()).collect();
    uids.sort();
    uids
}

pub fn field<'a>(record: &'a Value, kind: &str) -> &'a Value {
    record["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["type"] == kind)
        .unwrap()
}
