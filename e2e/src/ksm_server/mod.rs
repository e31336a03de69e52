//! A KSM-compatible test server (docs/dev/protocol.md#the-test-server).
//!
//! It speaks the protocol of docs/dev/protocol.md byte for byte: HTTPS on loopback with its own CA,
//! its own P-256 server key and key id, one-time tokens and device binding, signed requests,
//! `clientVersion` checks, `get_secret` / `get_folders` encrypted exactly as Keeper does, file
//! downloads, the real error bodies, fault injection and request counters. The official Python and
//! JavaScript SDKs run against it in `e2e/interop/`.
//!
//! Behaviour where the real service is not fully documented (docs/dev/protocol.md#open-questions):
//! - A one-time token already bound to one device, presented by another: 403 `access_denied`
//!   "Signature is invalid" (what Keeper's recorded traffic shows for a reused token). An
//!   unknown client id or an expired, never-used token: 403 `access_denied` "Unable to
//!   validate application access". The same device repeating its binding request (it lost the
//!   answer) gets `encryptedAppKey` again; a client that lost its device key cannot recover.
//! - Throttling: 403 (configurable 429, or any status) with the production body, or a plain
//!   text body; `retry_after` and a `Retry-After` header (seconds or HTTP-date) only when a
//!   test asks for them. The optional rate limit keys on client id + endpoint, window restarting
//!   on every request, as the SDK comments describe.
//! - Undecryptable requests: 400 `bad_request`; endpoints not listed in
//!   docs/dev/protocol.md#write-endpoints: 404 (folder writes are not implemented).
//! - Writes (docs/dev/protocol.md#write-endpoints): a stale revision is 400
//!   `outdated_revision`, the status name of Keeper's records API; a read-only share, or a
//!   record the app cannot see, 403 `access_denied`; malformed payloads 400 `bad_request`.
//! - Plaintexts (record JSON, `appData`) are space-padded to a multiple of 128 bytes.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use keeper_e2e::ksm_server::{TestServer, sample_vault};
//! let server = TestServer::start(sample_vault()).await?;
//! let config_b64 = server.bound_config("operator")?;
//! server.faults().throttle_next(1, None);
//! # Ok(()) }
//! ```

mod admin;
pub mod client;
mod counters;
mod faults;
mod fixture;
mod handlers;
mod listener;
mod sample;
mod spec;
mod tls;
mod vault;
mod wire;
mod write_endpoints;

pub use counters::{CounterSnapshot, Counters};
pub use faults::{
    DownMode, FaultHandle, FaultState, FileFailure, RateLimit, RetryAfterHeader, Throttle,
    ThrottleBody,
};
pub use sample::{SAMPLE_VAULT_JSON, flat_in_folder_sample_vault, sample_file, sample_vault, uids};
pub use spec::{
    AppSpec, EditableShare, FileSpec, FolderSpec, Listing, RecordSpec, VaultSpec, is_valid_uid,
};

use anyhow::{Context, anyhow};
use handlers::Shared;
use keeper_operator::ksm::crypto::{b64_std, b64_url};
use serde::Serialize;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use vault::Vault;

/// How to start a server. The defaults match production: key id "10", a random loopback port.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    /// Numeric id of the server key, sent back in 401 key errors as a JSON number.
    pub key_id: String,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            key_id: "10".to_string(),
        }
    }
}

/// A running test server. Dropping it stops the server (and its admin API, if started).
pub struct TestServer {
    handle: ServerHandle,
    shutdown: watch::Sender<bool>,
}

/// Everything one can do with a running server; `TestServer` derefs to it, and the admin API
/// holds a clone.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
    ca_pem: Arc<str>,
    shutdown: watch::Receiver<bool>,
}

/// The config JSON the SDKs write, with only the keys every SDK reads
/// (docs/dev/protocol.md#configuration).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigJson<'a> {
    hostname: &'a str,
    client_id: &'a str,
    private_key: &'a str,
    app_key: &'a str,
    app_owner_public_key: &'a str,
    server_public_key_id: &'a str,
    server_public_key: &'a str,
}

impl TestServer {
    pub async fn start(vault: VaultSpec) -> anyhow::Result<TestServer> {
        Self::start_with(vault, ServerOptions::default()).await
    }

    pub async fn start_with(vault: VaultSpec, options: ServerOptions) -> anyhow::Result<Self> {
        let key_id_number: u32 = options
            .key_id
            .parse()
            .context("the server key id must be a number")?;
        let vault = Vault::new(&vault)?;
        let tls = tls::generate()?;
        let listener = TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("binding {}", options.listen))?;
        let addr = listener.local_addr()?;
        let faults = FaultHandle::default();
        let shared = Arc::new(Shared {
            vault: Mutex::new(vault),
            faults: faults.clone(),
            counters: Counters::default(),
            server_key: keeper_operator::ksm::crypto::EcKeyPair::generate(),
            key_id: options.key_id,
            key_id_number,
            hostname: format!("{}:{}", addr.ip(), addr.port()),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept_loop = listener::Listener {
            addr,
            acceptor: tls.acceptor,
            router: handlers::router(shared.clone()),
            down: faults.subscribe_down(),
            shutdown: shutdown_rx.clone(),
        };
        tokio::spawn(accept_loop.run(listener));
        Ok(TestServer {
            handle: ServerHandle {
                shared,
                ca_pem: tls.ca_pem.into(),
                shutdown: shutdown_rx,
            },
            shutdown,
        })
    }

    /// A cloneable handle (for tasks that outlive a borrow of the server).
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }
}

impl Deref for TestServer {
    type Target = ServerHandle;
    fn deref(&self) -> &ServerHandle {
        &self.handle
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

impl ServerHandle {
    /// `127.0.0.1:PORT`: what goes into a config's `hostname`.
    pub fn hostname(&self) -> String {
        self.shared.hostname.clone()
    }

    /// PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// `(key id, base64url of the 65-byte point)`, for the SDKs' custom server key option.
    pub fn server_public_key(&self) -> (String, String) {
        (
            self.shared.key_id.clone(),
            b64_url(&self.shared.server_key.public_key_bytes()),
        )
    }

    pub fn app_names(&self) -> Vec<String> {
        self.shared.vault().app_names()
    }

    /// A fresh one-time token for `app` (43 characters, no region prefix).
    pub fn issue_token(&self, app: &str) -> anyhow::Result<String> {
        self.shared.vault().issue_token(app, None)
    }

    /// A one-time token that can no longer be redeemed after `ttl`.
    pub fn issue_token_with_ttl(&self, app: &str, ttl: Duration) -> anyhow::Result<String> {
        self.shared.vault().issue_token(app, Some(ttl))
    }

    /// Base64 config of a device already bound to `app`, as the Keeper vault's "Add Device →
    /// Base64" gives it, plus the server key and the hostname with port.
    pub fn bound_config(&self, app: &str) -> anyhow::Result<String> {
        Ok(b64_std(self.bound_config_json(app)?.as_bytes()))
    }

    /// The same config as JSON text.
    pub fn bound_config_json(&self, app: &str) -> anyhow::Result<String> {
        let (device, owner) = {
            let mut vault = self.shared.vault();
            (vault.bind_new_device(app)?, vault.owner_public_key())
        };
        let (key_id, server_key) = self.server_public_key();
        let private_key = zeroize::Zeroizing::new(b64_std(&device.device_key.to_pkcs8_der()));
        let app_key = zeroize::Zeroizing::new(b64_std(device.app_key.as_bytes()));
        Ok(serde_json::to_string(&ConfigJson {
            hostname: &self.shared.hostname,
            client_id: &device.client_id,
            private_key: &private_key,
            app_key: &app_key,
            app_owner_public_key: &b64_std(&owner),
            server_public_key_id: &key_id,
            server_public_key: &server_key,
        })?)
    }

    /// Deletes a device: its config then gets `access_denied`.
    pub fn revoke_device(&self, client_id: &str) -> bool {
        self.shared.vault().revoke_device(client_id)
    }

    /// Adds or replaces a record (bumping its revision); returns the new revision.
    pub fn set_record(&self, record: RecordSpec) -> anyhow::Result<i64> {
        self.shared.vault().set_record(record)
    }

    /// Fault injection: changes a record's content without moving its revision.
    pub fn glitch_record(&self, record: RecordSpec) -> anyhow::Result<i64> {
        self.shared.vault().set_record_keeping_revision(record)
    }

    pub fn delete_record(&self, uid: &str) -> anyhow::Result<()> {
        self.shared.vault().delete_record(uid)
    }

    /// The current plaintext of a record.
    pub fn record(&self, uid: &str) -> anyhow::Result<RecordSpec> {
        self.shared.vault().record(uid).cloned()
    }

    /// The current plaintext of every record (what a leak scan looks for).
    pub fn records(&self) -> Vec<RecordSpec> {
        self.shared.vault().records()
    }

    pub fn record_revision(&self, uid: &str) -> Option<i64> {
        self.shared.vault().revision(uid)
    }

    /// Adds a file to a record or replaces the one with the same UID; returns the revision.
    pub fn set_file(&self, record_uid: &str, file: FileSpec) -> anyhow::Result<i64> {
        self.shared.vault().set_file(record_uid, file)
    }

    /// Replaces the content of an existing file, keeping its name and type.
    pub fn set_file_content(&self, file_uid: &str, content: &[u8]) -> anyhow::Result<i64> {
        let mut vault = self.shared.vault();
        let record_uid = vault
            .file_owner(file_uid)
            .ok_or_else(|| anyhow!("unknown file {file_uid}"))?
            .to_string();
        let mut file = vault
            .record(&record_uid)?
            .files
            .iter()
            .find(|f| f.uid == file_uid)
            .cloned()
            .ok_or_else(|| anyhow!("unknown file {file_uid}"))?;
        file.content = Some(b64_std(content));
        file.text = None;
        vault.set_file(&record_uid, file)
    }

    pub fn faults(&self) -> FaultHandle {
        self.shared.faults.clone()
    }

    pub fn counters(&self) -> Counters {
        self.shared.counters.clone()
    }

    /// Serves the JSON admin API on plain HTTP (loopback only); returns its address.
    pub async fn serve_admin(&self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the admin API only listens on loopback"
        );
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding admin {addr}"))?;
        let local = listener.local_addr()?;
        let router = admin::router(self.clone());
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::warn!(%error, "admin API stopped");
            }
        });
        Ok(local)
    }
}
