//! The HTTPS endpoints: `POST /api/rest/sm/v1/{endpoint}` (docs/dev/protocol.md#the-test-server)
//! the pre-signed-style file downloads `GET /files/{uid}` and the uploads `POST /upload/{uid}`
//! that `add_file` hands out.

use super::counters::Counters;
use super::faults::{DownMode, FaultHandle, FileFailure, ResponseFault};
use super::vault::WriteError;
use super::vault::{Auth, Filter, Vault};
use super::wire::{self, DecodedRequest, ErrorReply, UNABLE_TO_VALIDATE};
use super::write_endpoints::{self, MAX_UPLOAD_BODY, UPLOAD_STATUS, WRITE_ENDPOINTS, form_parts};
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use keeper_operator::ksm::crypto::{AesKey, EcKeyPair, aes_gcm_encrypt};
use std::sync::{Mutex, MutexGuard};

/// Everything the handlers share: vault, faults, counters and the server's identity.
pub(crate) struct Shared {
    pub vault: Mutex<Vault>,
    pub faults: FaultHandle,
    pub counters: Counters,
    pub server_key: EcKeyPair,
    pub key_id: String,
    pub key_id_number: u32,
    /// `127.0.0.1:PORT`, used for file URLs and error `path`s.
    pub hostname: String,
}

impl Shared {
    pub fn vault(&self) -> MutexGuard<'_, Vault> {
        self.vault.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn router(shared: std::sync::Arc<Shared>) -> Router {
    Router::new()
        .route("/api/rest/sm/v1/{endpoint}", post(api))
        .route("/files/{uid}", get(file))
        .route(
            "/upload/{uid}",
            post(upload).layer(DefaultBodyLimit::max(MAX_UPLOAD_BODY)),
        )
        .with_state(shared)
}

type AppState = State<std::sync::Arc<Shared>>;

const READ_ENDPOINTS: [&str; 2] = ["get_secret", "get_folders"];

fn is_endpoint(endpoint: &str) -> bool {
    READ_ENDPOINTS.contains(&endpoint) || WRITE_ENDPOINTS.contains(&endpoint)
}
/// `clientVersion` prefixes of the official SDKs (docs/dev/protocol.md#payload): Python,
/// JavaScript, Rust, Go, Java, .NET, Ruby.
const CLIENT_PREFIXES: [&str; 7] = ["mp", "ms", "mr", "mg", "mj", "mn", "mb"];
const UNAVAILABLE_BODY: &str =
    "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>";

/// A `clientVersion` the backend's registry would know: an SDK prefix and `major.minor.patch`.
fn known_client_version(version: &str) -> bool {
    let Some(number) = CLIENT_PREFIXES
        .iter()
        .find_map(|prefix| version.strip_prefix(prefix))
    else {
        return false;
    };
    let parts: Vec<&str> = number.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn error_response(reply: &ErrorReply) -> Response {
    let mut response = (
        reply.status,
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body.clone(),
    )
        .into_response();
    if let Some(value) = reply
        .retry_after
        .as_deref()
        .and_then(|v| header::HeaderValue::from_str(v).ok())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/html")],
        UNAVAILABLE_BODY,
    )
        .into_response()
}

fn octets(status: StatusCode, body: Body, len: usize) -> Response {
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::SERVER, "keeper"),
        ],
        body,
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, len.into());
    response
}

/// A body that sends half of `bytes` and then fails, so the connection is cut mid-response
/// while the advertised `Content-Length` promises more.
fn cut_body(bytes: Vec<u8>) -> Body {
    let half = Bytes::from(bytes[..bytes.len() / 2].to_vec());
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fault injection: connection dropped",
        )),
    ];
    Body::from_stream(futures::stream::iter(chunks))
}

/// A body sent one byte per `every`, after the headers went out at once.
fn trickle_body(bytes: Vec<u8>, every: std::time::Duration) -> Body {
    let chunks = futures::stream::unfold((bytes, 0usize), move |(bytes, at)| async move {
        let byte = *bytes.get(at)?;
        tokio::time::sleep(every).await;
        Some((
            Ok::<_, std::io::Error>(Bytes::copy_from_slice(&[byte])),
            (bytes, at + 1),
        ))
    });
    Body::from_stream(chunks)
}

fn encrypted_response(key: &AesKey, plaintext: &[u8], fault: Option<ResponseFault>) -> Response {
    let mut body = aes_gcm_encrypt(key, plaintext);
    let full_len = body.len();
    match fault {
        None => octets(StatusCode::OK, Body::from(body), full_len),
        Some(ResponseFault::Tamper) => {
            let middle = body.len() / 2;
            body[middle] ^= 0x5a;
            octets(StatusCode::OK, Body::from(body), full_len)
        }
        Some(ResponseFault::Truncate) => {
            body.truncate(full_len / 2);
            octets(StatusCode::OK, Body::from(body), full_len / 2)
        }
        Some(ResponseFault::Drop) => octets(StatusCode::OK, cut_body(body), full_len),
        Some(ResponseFault::Trickle(every)) => {
            octets(StatusCode::OK, trickle_body(body, every), full_len)
        }
    }
}

async fn apply_latency(faults: &FaultHandle) {
    let latency = faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

async fn api(
    State(shared): AppState,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = shared.counters.enter();
    apply_latency(&shared.faults).await;

    let decoded = wire::decode_request(&shared.server_key, &headers, &body);
    // Only registered client ids and real endpoints become counter (and rate limit) keys, so
    // hostile requests cannot grow the maps.
    let client_id = decoded
        .as_ref()
        .ok()
        .and_then(|d| d.payload.client_id.as_deref());
    let known = client_id.and_then(|c| {
        let vault = shared.vault();
        vault.app_of(c).map(|app| (c.to_string(), app.to_string()))
    });
    let counted_endpoint = if is_endpoint(&endpoint) {
        endpoint.as_str()
    } else {
        "unknown"
    };
    shared.counters.record_request(
        counted_endpoint,
        known.as_ref().map(|(c, _)| c.as_str()),
        known.as_ref().map(|(_, a)| a.as_str()),
    );
    let client = known.map(|(c, _)| c);

    if shared.faults.down_mode() == DownMode::Unavailable {
        shared.counters.record_outcome("unavailable");
        return unavailable();
    }
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let path = match user_agent {
        Some(ua) => format!(
            "https://{}/api/rest/sm/v1/{endpoint}, POST, {ua}",
            shared.hostname
        ),
        None => format!(
            "https://{}/api/rest/sm/v1/{endpoint}, POST",
            shared.hostname
        ),
    };
    let key_id = headers
        .get("PublicKeyId")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match handle(
        &shared,
        &endpoint,
        &path,
        client.as_deref(),
        key_id,
        decoded,
    ) {
        Ok((key, Some(plaintext))) => {
            shared.counters.record_outcome("ok");
            encrypted_response(&key, &plaintext, shared.faults.take_response_fault())
        }
        Ok((_, None)) => {
            shared.counters.record_outcome("ok");
            octets(StatusCode::OK, Body::empty(), 0)
        }
        Err(reply) => {
            shared.counters.record_outcome(reply.outcome);
            error_response(&reply)
        }
    }
}

/// The checks of docs/dev/protocol.md#the-test-server, in order: throttle, key id, decryption,
/// client id and signature, client version, then the endpoint. Returns the transmission key and the
/// response JSON to encrypt with it (none for an empty answer).
fn handle(
    shared: &Shared,
    endpoint: &str,
    path: &str,
    client: Option<&str>,
    key_id: Option<&str>,
    decoded: Result<DecodedRequest, wire::DecodeError>,
) -> Result<(AesKey, Option<Vec<u8>>), ErrorReply> {
    if !is_endpoint(endpoint) {
        return Err(ErrorReply::not_found(path));
    }
    let throttle = shared.faults.take_throttle().or_else(|| {
        shared
            .faults
            .rate_limited(&format!("{} {endpoint}", client.unwrap_or("-")))
    });
    if let Some(throttle) = throttle {
        return Err(ErrorReply::throttled(path, endpoint, &throttle));
    }
    if shared.faults.take_wrong_key() || key_id != Some(shared.key_id.as_str()) {
        return Err(ErrorReply::wrong_key(shared.key_id_number));
    }
    let request = decoded.map_err(|e| ErrorReply::bad_request(path, e.message()))?;
    let Some(client_id) = request.payload.client_id.as_deref() else {
        return Err(ErrorReply::access_denied(path, UNABLE_TO_VALIDATE));
    };
    let auth = shared.vault().authenticate(
        client_id,
        request.payload.public_key.as_deref(),
        &request.signed,
        request.signature.as_deref(),
    );
    let (app, just_bound) = match auth {
        Auth::Ok { app, just_bound } => (app, just_bound),
        Auth::Denied(message) => return Err(ErrorReply::access_denied(path, message)),
    };
    let version = request.payload.client_version.as_deref().unwrap_or("");
    if !known_client_version(version) || shared.faults.is_version_rejected(version) {
        return Err(ErrorReply::invalid_client_version(path, version));
    }
    if WRITE_ENDPOINTS.contains(&endpoint) {
        return write_endpoints::handle(shared, endpoint, &app, &request.json)
            .map(|answer| (request.transmission_key, answer))
            .map_err(|error| write_endpoints::refusal(path, error));
    }
    let binding = just_bound.then_some(client_id);
    let vault = shared.vault();
    let json = if endpoint == "get_secret" {
        let filter = Filter::new(
            request.payload.requested_records.clone(),
            request.payload.requested_folders.clone(),
        );
        let files_base = format!("https://{}/files", shared.hostname);
        vault
            .secrets_response(&app, &filter, binding, &files_base)
            .and_then(|r| Ok(serde_json::to_vec(&r)?))
    } else {
        vault
            .folders_response(&app, binding)
            .and_then(|r| Ok(serde_json::to_vec(&r)?))
    };
    match json {
        Ok(json) => Ok((request.transmission_key, Some(json))),
        Err(_) => Err(ErrorReply::internal(path)),
    }
}

async fn file(State(shared): AppState, Path(uid): Path<String>) -> Response {
    apply_latency(&shared.faults).await;
    if shared.faults.down_mode() == DownMode::Unavailable {
        return unavailable();
    }
    shared.counters.record_file_download();
    let Some(content) = shared.vault().file_content(&uid) else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    match shared.faults.take_file_failure() {
        None => octets(StatusCode::OK, Body::from(content.to_vec()), content.len()),
        Some(FileFailure::Status500) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
        }
        Some(FileFailure::Truncate) => {
            let half = content[..content.len() / 2].to_vec();
            let len = half.len();
            octets(StatusCode::OK, Body::from(half), len)
        }
    }
}

/// The upload `add_file` reserved: a `multipart/form-data` POST of the `key` field handed out
/// and the encrypted `file`, answered as a storage service would (plain text errors).
async fn upload(
    State(shared): AppState,
    Path(uid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    apply_latency(&shared.faults).await;
    if shared.faults.down_mode() == DownMode::Unavailable {
        return unavailable();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(parts) = form_parts(content_type, &body) else {
        return (
            StatusCode::BAD_REQUEST,
            "malformed multipart/form-data body",
        )
            .into_response();
    };
    let field = |name: &str| parts.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    if field("key") != Some(uid.as_bytes()) {
        return (
            StatusCode::FORBIDDEN,
            "the key field does not match the upload",
        )
            .into_response();
    }
    let Some(file) = field("file") else {
        return (StatusCode::BAD_REQUEST, "no file part").into_response();
    };
    match shared.vault().complete_upload(&uid, file.to_vec()) {
        Ok(_) => UPLOAD_STATUS.into_response(),
        Err(WriteError::AccessDenied(message)) => (StatusCode::FORBIDDEN, message).into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error:?}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::known_client_version;

    #[test]
    fn client_versions_need_a_known_prefix_and_three_numbers() {
        for ok in ["mp17.3.0", "ms17.5.0", "mr17.3.0", "mg16.6.4", "mb17.0.0"] {
            assert!(known_client_version(ok), "{ok}");
        }
        for bad in [
            "",
            "mx17.3.0",
            "mp17.3",
            "mp17.3.0.1",
            "mp17.a.0",
            "mp",
            "17.3.0",
        ] {
            assert!(!known_client_version(bad), "{bad}");
        }
    }
}
