//! What travels on the wire: request decoding (transmission key, body, signature), the JSON
//! shapes of responses (docs/dev/protocol.md#responses) and the real server's error bodies
//! (docs/dev/protocol.md#errors).

use super::faults::{RetryAfterHeader, Throttle, ThrottleBody};
use axum::http::{HeaderMap, StatusCode};
use keeper_operator::ksm::crypto::{AesKey, EcKeyPair, aes_gcm_decrypt, b64_decode, ecies_decrypt};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A request whose transmission key and body decrypted. The signature is checked later,
/// against the device key the client id is bound to.
pub(crate) struct DecodedRequest {
    pub transmission_key: AesKey,
    /// `TransmissionKey raw bytes ‖ encrypted body`: what the device signed
    /// (docs/dev/protocol.md#signature).
    pub signed: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    pub payload: Payload,
    /// The decrypted JSON, for the write endpoints to read their own fields from.
    pub json: Zeroizing<Vec<u8>>,
}

/// The fields of a request payload the server reads; `null` and absent are the same
/// (docs/dev/protocol.md#payload).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Payload {
    pub client_version: Option<String>,
    pub client_id: Option<String>,
    pub public_key: Option<String>,
    pub requested_records: Option<Vec<String>>,
    pub requested_folders: Option<Vec<String>>,
}

/// `create_secret` (docs/dev/protocol.md#write-payloads).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreatePayload {
    pub record_uid: String,
    /// The record key wrapped for the app owner (ECIES).
    pub record_key: String,
    pub folder_uid: String,
    /// Despite the name: the record key wrapped by the shared folder's key (GCM).
    pub folder_key: String,
    pub data: String,
    pub sub_folder_uid: Option<String>,
}

/// `update_secret`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdatePayload {
    pub record_uid: String,
    pub revision: i64,
    pub data: String,
    pub transaction_type: Option<String>,
}

/// `delete_secret`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeletePayload {
    pub record_uids: Vec<String>,
}

/// `finalize_secret_update` and `rollback_secret_update`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransactionPayload {
    pub record_uid: String,
}

/// `add_file`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AddFilePayload {
    pub file_record_uid: String,
    /// The file key wrapped for the app owner (ECIES).
    pub file_record_key: String,
    /// File metadata JSON, GCM under the file key.
    pub file_record_data: String,
    pub owner_record_uid: String,
    pub owner_record_data: String,
    pub owner_record_revision: i64,
    /// The file key wrapped by the owner record's key (GCM).
    pub link_key: String,
    /// Length of the encrypted content the upload must carry.
    pub file_size: u64,
}

/// Why a request could not even be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    MissingTransmissionKey,
    TransmissionKey,
    Body,
    Json,
}

impl DecodeError {
    pub fn message(self) -> &'static str {
        match self {
            Self::MissingTransmissionKey => "Missing transmission key",
            Self::TransmissionKey => "Unable to decrypt transmission key",
            Self::Body => "Unable to decrypt payload",
            Self::Json => "Invalid payload",
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Decrypts a request with the server's private key. Never panics on hostile input.
pub(crate) fn decode_request(
    server_key: &EcKeyPair,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<DecodedRequest, DecodeError> {
    let tk_b64 = header(headers, "TransmissionKey").ok_or(DecodeError::MissingTransmissionKey)?;
    let tk_blob = b64_decode(tk_b64).map_err(|_| DecodeError::TransmissionKey)?;
    let tk_raw = ecies_decrypt(server_key.secret_key(), &tk_blob)
        .map_err(|_| DecodeError::TransmissionKey)?;
    let transmission_key = AesKey::from_slice(&tk_raw).map_err(|_| DecodeError::TransmissionKey)?;
    let plain = aes_gcm_decrypt(&transmission_key, body).map_err(|_| DecodeError::Body)?;
    let payload: Payload = serde_json::from_slice(&plain).map_err(|_| DecodeError::Json)?;
    let signature = header(headers, "Authorization")
        .and_then(|v| v.strip_prefix("Signature "))
        .and_then(|sig| b64_decode(sig).ok());
    Ok(DecodedRequest {
        transmission_key,
        signed: [tk_blob.as_slice(), body].concat(),
        signature,
        payload,
        json: plain,
    })
}

/// `get_secret` response (docs/dev/protocol.md#key-hierarchy). Both `records` and `folders` are
/// always present.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecretsResponse {
    pub app_data: String,
    pub encrypted_app_key: Option<String>,
    pub app_owner_public_key: Option<String>,
    pub folders: Option<Vec<FolderJson>>,
    pub records: Option<Vec<RecordJson>>,
    pub expires_on: i64,
    pub warnings: Option<Vec<String>>,
    pub extra: Option<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FolderJson {
    pub folder_uid: String,
    pub folder_key: String,
    pub data: Option<String>,
    pub parent: Option<String>,
    pub is_editable: bool,
    pub records: Vec<RecordJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordJson {
    pub record_uid: String,
    pub record_key: String,
    pub data: String,
    pub revision: i64,
    pub is_editable: bool,
    pub files: Option<Vec<FileJson>>,
    pub folder_uid: Option<String>,
    pub inner_folder_uid: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileJson {
    pub file_uid: String,
    pub file_key: String,
    pub data: String,
    pub url: String,
    pub thumbnail_url: Option<String>,
}

/// `get_folders` response (docs/dev/protocol.md#folder-keys). The binding fields appear only when
/// this call bound the device (only the Rust SDK binds through `get_folders`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FoldersResponse {
    pub folders: Vec<FolderListJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypted_app_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_owner_public_key: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FolderListJson {
    pub folder_uid: String,
    pub folder_key: String,
    pub data: String,
    pub parent: Option<String>,
}

/// A non-200 answer: status plus the plaintext JSON body, in the real server's field order.
pub(crate) struct ErrorReply {
    pub status: StatusCode,
    pub body: String,
    /// Short label for the outcome counters ("throttled", "key", "access_denied", ...).
    pub outcome: &'static str,
    /// `text/plain` for the throttle text form, else JSON.
    pub content_type: &'static str,
    /// A `Retry-After` header value.
    pub retry_after: Option<String>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    path: &'a str,
    additional_info: &'a str,
    location: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_code: Option<&'a str>,
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

const JSON: &str = "application/json";
const LOCATION: &str = "default exception manager - api validation exception";
pub(crate) const SIGNATURE_INVALID: &str = "Signature is invalid";
pub(crate) const UNABLE_TO_VALIDATE: &str = "Unable to validate application access";
const UPDATE_APP: &str = "Please update your Keeper app to the latest version from the App Store \
     or from KeeperSecurity.com.  If you are using a web browser, please reload the page or clear \
     your browser cache.";

fn envelope(status: StatusCode, outcome: &'static str, env: Envelope<'_>) -> ErrorReply {
    ErrorReply {
        status,
        body: serde_json::to_string(&env).unwrap_or_default(),
        outcome,
        content_type: JSON,
        retry_after: None,
    }
}

impl ErrorReply {
    /// 403 `access_denied` with one of the two messages the real server uses.
    pub fn access_denied(path: &str, message: &str) -> Self {
        envelope(
            StatusCode::FORBIDDEN,
            "access_denied",
            Envelope {
                path,
                additional_info: "",
                location: LOCATION,
                result_code: None,
                error: "access_denied",
                message,
                retry_after: None,
            },
        )
    }

    /// Throttling as recorded from production (issue external-secrets#4107): 403 by default;
    /// `retry_after` only when asked for (the SDKs honour it when present). The text form and
    /// the `Retry-After` header are what rate limiters in front of a service send
    /// (docs/dev/protocol.md#throttling).
    pub fn throttled(path: &str, endpoint: &str, throttle: &Throttle) -> Self {
        let status = StatusCode::from_u16(throttle.status).unwrap_or(StatusCode::FORBIDDEN);
        let mut reply = match throttle.body {
            ThrottleBody::Json => envelope(
                status,
                "throttled",
                Envelope {
                    path,
                    additional_info: "throttled",
                    location: LOCATION,
                    result_code: None,
                    error: "throttled",
                    message: endpoint,
                    retry_after: throttle.retry_after,
                },
            ),
            ThrottleBody::Text => ErrorReply {
                status,
                body: status.canonical_reason().unwrap_or("Throttled").to_string(),
                outcome: "throttled",
                content_type: "text/plain",
                retry_after: None,
            },
        };
        let delay = throttle.retry_after.unwrap_or(1);
        reply.retry_after = throttle.header.map(|form| match form {
            RetryAfterHeader::Seconds => delay.to_string(),
            RetryAfterHeader::HttpDate => httpdate::fmt_http_date(
                std::time::SystemTime::now() + std::time::Duration::from_secs(delay),
            ),
        });
        reply
    }

    /// 403 for an unregistered `clientVersion` (issue #820 body).
    pub fn invalid_client_version(path: &str, version: &str) -> Self {
        let info = format!("invalid client version id: 16, {version}");
        envelope(
            StatusCode::FORBIDDEN,
            "client_version",
            Envelope {
                path,
                additional_info: &info,
                location: LOCATION,
                result_code: Some("invalid_client_version"),
                error: "client_version",
                message: UPDATE_APP,
                retry_after: None,
            },
        )
    }

    /// 401 wrong transmission key id; `key_id` is a JSON number
    /// (docs/dev/protocol.md#key-rotation).
    pub fn wrong_key(key_id: u32) -> Self {
        #[derive(Serialize)]
        struct KeyError {
            key_id: u32,
            error: &'static str,
            message: &'static str,
        }
        ErrorReply {
            status: StatusCode::UNAUTHORIZED,
            body: serde_json::to_string(&KeyError {
                key_id,
                error: "key",
                message: "invalid key id",
            })
            .unwrap_or_default(),
            outcome: "key",
            content_type: JSON,
            retry_after: None,
        }
    }

    /// 400 for requests that cannot be decrypted or parsed (body shape is an inference).
    pub fn bad_request(path: &str, message: &str) -> Self {
        envelope(
            StatusCode::BAD_REQUEST,
            "bad_request",
            Envelope {
                path,
                additional_info: "",
                location: LOCATION,
                result_code: None,
                error: "bad_request",
                message,
                retry_after: None,
            },
        )
    }

    /// 500 when the server cannot build an answer (a bug in the test server, not a fault).
    pub fn internal(path: &str) -> Self {
        envelope(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            Envelope {
                path,
                additional_info: "",
                location: LOCATION,
                result_code: None,
                error: "internal_error",
                message: "Internal error",
                retry_after: None,
            },
        )
    }

    /// A refused write (docs/dev/protocol.md#write-endpoints): the envelope of the other
    /// errors, with Keeper's record-modify status (`outdated_revision`, `record_exists`, ...) as
    /// `result_code` and `error`, which every SDK reports (`Error: <code>, message=<text>`).
    pub fn refused(
        path: &str,
        status: StatusCode,
        code: &'static str,
        message: &str,
        additional_info: &str,
    ) -> Self {
        envelope(
            status,
            code,
            Envelope {
                path,
                additional_info,
                location: LOCATION,
                result_code: Some(code),
                error: code,
                message,
                retry_after: None,
            },
        )
    }

    /// 404 for endpoints this server does not implement.
    pub fn not_found(path: &str) -> Self {
        envelope(
            StatusCode::NOT_FOUND,
            "not_found",
            Envelope {
                path,
                additional_info: "",
                location: LOCATION,
                result_code: None,
                error: "not_found",
                message: "Unknown endpoint",
                retry_after: None,
            },
        )
    }
}
