//! The async KSM client: HTTPS (rustls, verification always on) to
//! `https://HOST/api/rest/sm/v1/ENDPOINT`, with key-id rotation and throttle handling
//! (docs/dev/protocol.md#key-rotation, docs/dev/protocol.md#throttling).

use crate::backoff;
use crate::ksm::config::{ConfigError, KsmConfig};
use crate::ksm::crypto::{aes_gcm_decrypt, b64_std};
use crate::ksm::error::{KsmError, sanitize};
use crate::ksm::hosts::AllowedHosts;
use crate::ksm::record::{KeeperFile, SharedFolder, Vault};
use crate::ksm::response::{decode_binding, decode_folders, decode_secrets};
use crate::ksm::transport::{MAX_RETRY_AFTER, SealedRequest, builtin_server_key, open_response};
use p256::PublicKey;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use zeroize::Zeroizing;

/// The `clientVersion` of the Rust SDK 17.3.0, a string the real backend accepts
/// (docs/dev/protocol.md#payload).
pub(crate) const DEFAULT_CLIENT_VERSION: &str = "mr17.3.0";

/// The largest API reply body read (16 MiB). A `get_secret` for thousands of records with long
/// notes is a few MiB; anything bigger is refused while streaming, before it is buffered. Sized
/// for the chart's memory limit: a fetch holds the body about three times (read, decrypted,
/// decoded), beside the 32 MiB attachment cache and the operator's own working set.
pub(crate) const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// What AES-GCM adds to a file's content on the wire: a 12-byte nonce and a 16-byte tag.
const GCM_OVERHEAD: u64 = 28;

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// PEM bundle trusted in addition to the webpki roots (private endpoints, tests).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Whole-request timeout (connect, send, and reading the whole body).
    pub timeout: Duration,
    pub client_version: String,
    /// How often to follow the server's "use key id N" answer before giving up
    /// (docs/dev/protocol.md#key-rotation).
    pub max_key_rotations: u32,
    /// How often to sleep and retry when throttled. `0` surfaces `Throttled { retry_after }`
    /// at once, so a caller with its own scheduler (the operator) never blocks.
    pub throttle_retries: u32,
    /// The longest single throttle wait; a longer `retry_after` is surfaced instead.
    pub max_throttle_wait: Duration,
    /// The largest API reply body read ([`MAX_RESPONSE_BYTES`]).
    pub max_response_bytes: u64,
    /// The API hosts requests may go to; `None` allows any (the command line, where the user
    /// picks the host). The operator always sets a list, since tenants pick credentials.
    pub allowed_hosts: Option<AllowedHosts>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            extra_ca_pem: None,
            timeout: Duration::from_secs(30),
            client_version: DEFAULT_CLIENT_VERSION.to_string(),
            max_key_rotations: 3,
            throttle_retries: 3,
            max_throttle_wait: Duration::from_secs(60),
            max_response_bytes: MAX_RESPONSE_BYTES,
            allowed_hosts: None,
        }
    }
}

/// Which records / folders a `get_secret` asks for; empty means everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub records: Vec<String>,
    pub folders: Vec<String>,
}

struct Inner {
    config: KsmConfig,
    http: reqwest::Client,
    options: ClientOptions,
    /// The key id in use; moves when the server names another one (shared by all clones).
    key_id: AtomicU32,
}

/// A KSM client for one bound config. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct KsmClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KsmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KsmClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The HTTP client for `options` (timeouts, trusted roots; redirects are never followed, so
/// whoever answers cannot send the request elsewhere). One can serve any number of
/// [`KsmClient`]s ([`KsmClient::with_http`]): each client built here holds its own root store and
/// connection pool.
pub fn http_client(options: &ClientOptions) -> Result<reqwest::Client, KsmError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(options.timeout)
        .connect_timeout(options.timeout.min(Duration::from_secs(10)));
    if let Some(pem) = &options.extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|_| KsmError::InvalidCa("not a PEM certificate bundle".into()))?;
        if certs.is_empty() {
            return Err(KsmError::InvalidCa(
                "no certificate in the PEM bundle".into(),
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| KsmError::InvalidCa(format!("HTTP client setup failed: {e}")))
}

/// Finds a rustls error in a source chain. rustls errors arrive wrapped in (possibly nested)
/// `io::Error`s, whose `source()` skips the wrapped error, so those are opened with `get_ref`.
fn find_tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    for _ in 0..16 {
        let e = current?;
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Maps a transport failure to timeout, TLS or unavailable.
fn transport_error(err: reqwest::Error) -> KsmError {
    let err = err.without_url(); // download URLs are pre-signed: never log them
    if err.is_timeout() {
        return KsmError::Timeout;
    }
    if let Some(tls) = find_tls_error(&err) {
        return KsmError::Tls(tls.to_string());
    }
    KsmError::Unavailable(error_chain(&err))
}

/// Reads a body chunk by chunk, refusing it with `over(announced length)` as soon as it would
/// pass `limit` bytes, or at once when its `Content-Length` says it will: a hostile or broken
/// endpoint cannot make the client buffer more than `limit`.
async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
    over: impl FnOnce(Option<u64>) -> KsmError,
) -> Result<Vec<u8>, KsmError> {
    let announced = response.content_length();
    if announced.is_some_and(|len| len > limit) {
        return Err(over(announced));
    }
    // Sized from the announcement (trusted only up to 1 MiB) to spare reallocations.
    let capacity = announced.unwrap_or(0).min(limit).min(1 << 20);
    let mut body = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(over(None));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Refuses a 3xx: the client does not follow redirects (see [`http_client`]).
fn refuse_redirect(status: reqwest::StatusCode) -> Result<(), KsmError> {
    if status.is_redirection() {
        return Err(KsmError::Redirect {
            status: status.as_u16(),
        });
    }
    Ok(())
}

/// How a file is named in errors: UID and name (metadata, never content).
fn file_label(file: &KeeperFile) -> String {
    format!(
        "file {:?} (uid {})",
        sanitize(&file.name),
        sanitize(&file.uid)
    )
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The longest throttle delay before jitter: the SDKs' last backoff step (11·2^4 s), which also
/// caps a server-supplied `retry_after` (KSM-1035, docs/dev/protocol.md#throttling).
const MAX_THROTTLE_DELAY: Duration = MAX_RETRY_AFTER;

/// Key ids a "use key id N" answer may move to: the bundled table's distinct keys
/// (docs/dev/protocol.md#key-rotation). Ids 1–6 name the same key as 7 and are not followed.
const ROTATION_KEY_IDS: std::ops::RangeInclusive<u32> = 7..=18;

/// Delay before throttle retry `attempt` (0-based): the server's `retry_after` (capped at
/// [`MAX_THROTTLE_DELAY`]), else 11·2^n s as the SDKs do; then up to +25 % jitter so many
/// clients do not retry in lockstep. One-sided: never sooner than the server asked.
fn throttle_delay(retry_after: Option<Duration>, attempt: u32) -> Duration {
    let floor = retry_after.map_or_else(
        || backoff::exponential(attempt, Duration::from_secs(11), MAX_THROTTLE_DELAY),
        |delay| delay.min(MAX_THROTTLE_DELAY),
    );
    floor + floor.mul_f64(rand::random::<f64>() * 0.25)
}

impl KsmClient {
    /// A client for a bound config. Fails if the config is not bound yet.
    pub fn new(config: KsmConfig, options: &ClientOptions) -> Result<KsmClient, KsmError> {
        Self::with_http(config, options, http_client(options)?)
    }

    /// A client for a bound config that sends through `http`, an [`http_client`] built for
    /// the same `options`.
    pub fn with_http(
        config: KsmConfig,
        options: &ClientOptions,
        http: reqwest::Client,
    ) -> Result<KsmClient, KsmError> {
        if !config.is_bound() {
            return Err(ConfigError::NotBound.into());
        }
        Ok(Self::build(config, options, http))
    }

    fn build(config: KsmConfig, options: &ClientOptions, http: reqwest::Client) -> KsmClient {
        // Like the SDKs: an id outside the table without a custom key falls back to 10.
        let key_id = match config.server_public_key() {
            Some(_) => config.server_public_key_id(),
            None if builtin_server_key(config.server_public_key_id()).is_some() => {
                config.server_public_key_id()
            }
            None => crate::ksm::config::DEFAULT_SERVER_KEY_ID,
        };
        KsmClient {
            inner: Arc::new(Inner {
                http,
                options: ClientOptions {
                    extra_ca_pem: None,
                    ..options.clone()
                },
                key_id: AtomicU32::new(key_id),
                config,
            }),
        }
    }

    pub fn config(&self) -> &KsmConfig {
        &self.inner.config
    }

    /// Binds an unbound config (the one-time token flow, docs/dev/protocol.md#binding) and returns
    /// the bound config.
    pub(crate) async fn bind(
        unbound: KsmConfig,
        options: &ClientOptions,
    ) -> Result<KsmConfig, KsmError> {
        let Some(client_key) = unbound.client_key().cloned() else {
            return Err(KsmError::Binding("config is already bound".into()));
        };
        let client = Self::build(unbound, options, http_client(options)?);
        let public_key = b64_std(&client.inner.config.device_key().public_key_bytes());
        let plaintext = client
            .post("get_secret", json!({ "publicKey": public_key }))
            .await?;
        let (app_key, owner_key) = decode_binding(&client_key, &plaintext)?;
        let bound = client.inner.config.clone().into_bound(app_key, owner_key);
        // Every SDK fetches again right after binding. The token is spent by now, so a failed
        // re-fetch must not lose the bound config: it is reported, and the config returned.
        let bound_client = Self::new(bound, options)?;
        if let Err(err) = bound_client.get_secrets(&Query::default()).await {
            tracing::warn!(reason = err.reason().as_str(), error = %err, "first fetch after binding failed");
        }
        Ok(bound_client.inner.config.clone())
    }

    fn server_key(&self, key_id: u32) -> Result<PublicKey, KsmError> {
        match self.inner.config.server_public_key() {
            Some(key) => Ok(*key),
            None => builtin_server_key(key_id).ok_or(KsmError::WrongServerKey {
                key_id: Some(key_id),
                custom_key: false,
            }),
        }
    }

    /// The endpoint's URL, if its host is allowed. Checked on the parsed URL, i.e. the host
    /// the request would really reach, before anything is sent.
    fn url(&self, endpoint: &str) -> Result<reqwest::Url, KsmError> {
        let text = format!(
            "https://{}/api/rest/sm/v1/{endpoint}",
            self.inner.config.hostname()
        );
        let url = reqwest::Url::parse(&text).map_err(|_| ConfigError::Invalid {
            key: "hostname",
            reason: "not a valid HOST[:PORT]",
        })?;
        if let Some(allowed) = &self.inner.options.allowed_hosts {
            allowed.check(&url)?;
        }
        Ok(url)
    }

    async fn send_once(
        &self,
        endpoint: &str,
        payload: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KsmError> {
        let url = self.url(endpoint)?;
        let key_id = self.inner.key_id.load(Ordering::Relaxed);
        let sealed = SealedRequest::seal(
            payload,
            &self.server_key(key_id)?,
            key_id,
            self.inner.config.device_key(),
        );
        let mut request = self
            .inner
            .http
            .post(url)
            .header("Content-Type", "application/octet-stream");
        for (name, value) in sealed.headers() {
            request = request.header(name, value);
        }
        let response = request
            .body(sealed.body.clone())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        refuse_redirect(status)?;
        let retry_after = response
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let limit = self.inner.options.max_response_bytes;
        let body = read_capped(response, limit, |size| KsmError::TooLarge {
            what: format!("the Keeper reply to {endpoint}"),
            size,
            limit,
        })
        .await?;
        let status = status.as_u16();
        open_response(
            &sealed.transmission_key,
            status,
            &body,
            retry_after.as_deref(),
        )
    }

    /// POSTs a payload (plus `clientVersion` and `clientId`), following key-id rotation and
    /// throttling within the configured budgets. Returns the decrypted response body.
    async fn post(
        &self,
        endpoint: &str,
        mut payload: Value,
    ) -> Result<Zeroizing<Vec<u8>>, KsmError> {
        if let Value::Object(obj) = &mut payload {
            obj.insert(
                "clientVersion".into(),
                self.inner.options.client_version.clone().into(),
            );
            obj.insert("clientId".into(), self.inner.config.client_id().into());
        }
        let payload = Zeroizing::new(payload.to_string().into_bytes());
        let (mut rotations, mut throttled) = (0u32, 0u32);
        loop {
            match self.send_once(endpoint, &payload).await {
                Err(KsmError::WrongServerKey { key_id, .. }) => {
                    if self.inner.config.server_public_key().is_some() {
                        return Err(KsmError::WrongServerKey {
                            key_id,
                            custom_key: true,
                        });
                    }
                    let usable = key_id.filter(|id| ROTATION_KEY_IDS.contains(id));
                    let (Some(id), true) =
                        (usable, rotations < self.inner.options.max_key_rotations)
                    else {
                        return Err(KsmError::WrongServerKey {
                            key_id,
                            custom_key: false,
                        });
                    };
                    rotations += 1;
                    tracing::info!(key_id = id, "Keeper asked for another server key id");
                    self.inner.key_id.store(id, Ordering::Relaxed);
                }
                Err(KsmError::Throttled { retry_after }) => {
                    let delay = throttle_delay(retry_after, throttled);
                    if throttled >= self.inner.options.throttle_retries
                        || delay > self.inner.options.max_throttle_wait
                    {
                        return Err(KsmError::Throttled { retry_after });
                    }
                    throttled += 1;
                    tracing::info!(delay_ms = delay.as_millis() as u64, "throttled by Keeper");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    fn app_key(&self) -> Result<&crate::ksm::crypto::AesKey, KsmError> {
        self.inner
            .config
            .app_key()
            .ok_or(KsmError::Config(ConfigError::NotBound))
    }

    /// `get_secret`: the records (and shared folders) the application may read.
    pub async fn get_secrets(&self, query: &Query) -> Result<Vault, KsmError> {
        let body = self.get_secrets_body(query).await?;
        self.decode_secrets_body(&body)
    }

    /// `get_secret`, returning the response body with only the transmission layer removed:
    /// records are still encrypted under the application key, so the body may be kept (the
    /// last-good cache) and unwrapped later with [`KsmClient::decode_secrets_body`].
    pub async fn get_secrets_body(&self, query: &Query) -> Result<Zeroizing<Vec<u8>>, KsmError> {
        let mut payload = serde_json::Map::new();
        if !query.records.is_empty() {
            payload.insert("requestedRecords".into(), json!(query.records));
        }
        if !query.folders.is_empty() {
            payload.insert("requestedFolders".into(), json!(query.folders));
        }
        self.post("get_secret", Value::Object(payload)).await
    }

    /// Unwraps a body from [`KsmClient::get_secrets_body`] with the application key.
    pub fn decode_secrets_body(&self, body: &[u8]) -> Result<Vault, KsmError> {
        decode_secrets(self.app_key()?, body)
    }

    /// `get_folders`: shared folders and sub-folders with their names.
    pub async fn get_folders(&self) -> Result<Vec<SharedFolder>, KsmError> {
        let plaintext = self.post("get_folders", json!({})).await?;
        decode_folders(self.app_key()?, &plaintext)
    }

    /// Downloads a file (plain GET of its pre-signed URL, https only) and decrypts it with the
    /// file key. `budget` is the most content the caller can use (what the Secret can still
    /// hold): a file whose metadata declares more is refused before any request, and the
    /// download stops as soon as it passes the declared size or the budget.
    pub async fn download_file(
        &self,
        file: &KeeperFile,
        budget: u64,
    ) -> Result<Zeroizing<Vec<u8>>, KsmError> {
        let url = file.url.as_deref().ok_or_else(|| {
            KsmError::Download(format!("{} has no download URL", file_label(file)))
        })?;
        let url = reqwest::Url::parse(url).map_err(|_| {
            KsmError::InvalidResponse(format!(
                "{}: the download URL does not parse",
                file_label(file)
            ))
        })?;
        if url.scheme() != "https" {
            return Err(KsmError::InsecureDownload {
                file: file_label(file),
                scheme: sanitize(url.scheme()),
            });
        }
        let too_large = |size| KsmError::TooLarge {
            what: file_label(file),
            size,
            limit: budget,
        };
        if let Some(size) = file.size.filter(|size| *size > budget) {
            return Err(too_large(Some(size)));
        }
        let response = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        refuse_redirect(status)?;
        if !status.is_success() {
            return Err(KsmError::Download(format!(
                "{}: HTTP {}",
                file_label(file),
                status.as_u16()
            )));
        }
        // The declared size (within budget) or else the budget, plus what encryption adds.
        let content_limit = file.size.unwrap_or(budget).min(budget);
        let body = read_capped(
            response,
            content_limit.saturating_add(GCM_OVERHEAD),
            |wire| match file.size {
                Some(declared) => KsmError::InvalidResponse(format!(
                    "{}: the server sends more than the {declared} bytes its metadata declares",
                    file_label(file)
                )),
                None => too_large(wire.map(|n| n.saturating_sub(GCM_OVERHEAD))),
            },
        )
        .await?;
        aes_gcm_decrypt(&file.key, &body).map_err(|_| {
            KsmError::Download(format!("{} content does not decrypt", file_label(file)))
        })
    }
}

#[cfg(test)]
mod tests;
