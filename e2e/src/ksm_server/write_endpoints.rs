//! The write endpoints (docs/dev/protocol.md#write-endpoints): parse the payload, apply it to
//! the vault, answer as Keeper does, and the upload that completes `add_file`.

use super::handlers::Shared;
use super::vault::{MAX_FILE, WriteError};
use super::wire::{
    AddFilePayload, CreatePayload, DeletePayload, ErrorReply, TransactionPayload, UpdatePayload,
};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::json;

pub(crate) const WRITE_ENDPOINTS: [&str; 6] = [
    "create_secret",
    "update_secret",
    "delete_secret",
    "finalize_secret_update",
    "rollback_secret_update",
    "add_file",
];

/// What Keeper's S3-style upload answers on success; JS requires exactly this status.
pub(crate) const UPLOAD_STATUS: StatusCode = StatusCode::NO_CONTENT;

pub(crate) fn refusal(path: &str, error: WriteError) -> ErrorReply {
    match error {
        WriteError::BadRequest(message) => ErrorReply::bad_request(path, &message),
        WriteError::AccessDenied(message) => ErrorReply::access_denied(path, &message),
        // Keeper's records API answers a stale revision with the status `outdated_revision`;
        // no SDK special-cases it, so they all surface "Error: outdated_revision, ...".
        WriteError::OutdatedRevision { uid, current } => ErrorReply::refused(
            path,
            StatusCode::BAD_REQUEST,
            "outdated_revision",
            "Record revision is out of date",
            &format!("record {uid} is at revision {current}"),
        ),
        WriteError::Exists(message) => {
            ErrorReply::refused(path, StatusCode::BAD_REQUEST, "record_exists", &message, "")
        }
        WriteError::TooLarge(message) => ErrorReply::refused(
            path,
            StatusCode::BAD_REQUEST,
            "size_exceeded_limit",
            &message,
            "",
        ),
    }
}

fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, WriteError> {
    serde_json::from_slice(json).map_err(|e| WriteError::BadRequest(format!("payload: {e}")))
}

/// Runs write `endpoint` for `app`. `Ok(None)` is an empty 200, as Keeper answers the writes
/// whose body the SDKs ignore; `Ok(Some(json))` is encrypted like any other answer.
pub(crate) fn handle(
    shared: &Shared,
    endpoint: &str,
    app: &str,
    json: &[u8],
) -> Result<Option<Vec<u8>>, WriteError> {
    let mut vault = shared.vault();
    match endpoint {
        "create_secret" => vault
            .create(app, &parse::<CreatePayload>(json)?)
            .map(|_| None),
        "update_secret" => vault
            .update(app, &parse::<UpdatePayload>(json)?)
            .map(|_| None),
        "finalize_secret_update" | "rollback_secret_update" => {
            let payload: TransactionPayload = parse(json)?;
            let rollback = endpoint == "rollback_secret_update";
            vault
                .complete_transaction(app, &payload.record_uid, rollback)
                .map(|()| None)
        }
        "delete_secret" => {
            let payload: DeletePayload = parse(json)?;
            let records: Vec<_> = vault
                .delete_created(app, &payload.record_uids)
                .into_iter()
                .map(|(uid, outcome)| match outcome {
                    Ok(()) => json!({ "recordUid": uid, "responseCode": "ok", "errorMessage": "" }),
                    Err(error) => {
                        let (code, message) = per_record(error);
                        json!({ "recordUid": uid, "responseCode": code, "errorMessage": message })
                    }
                })
                .collect();
            Ok(Some(json!({ "records": records }).to_string().into_bytes()))
        }
        "add_file" => {
            let payload: AddFilePayload = parse(json)?;
            vault.reserve_upload(app, &payload)?;
            let uid = &payload.file_record_uid;
            // Parameters are form fields the client posts back verbatim (all strings, as the
            // Rust SDK requires); the upload checks `key` names the reserved file.
            let parameters = json!({ "key": uid }).to_string();
            let answer = json!({
                "url": format!("https://{}/upload/{uid}", shared.hostname),
                "parameters": parameters,
                "successStatusCode": UPLOAD_STATUS.as_u16(),
            });
            Ok(Some(answer.to_string().into_bytes()))
        }
        other => Err(WriteError::BadRequest(format!(
            "not a write endpoint: {other}"
        ))),
    }
}

/// `responseCode` and `errorMessage` of one record `delete_secret` could not delete.
fn per_record(error: WriteError) -> (&'static str, String) {
    match error {
        WriteError::BadRequest(m) => ("bad_request", m),
        WriteError::AccessDenied(m) => ("access_denied", m),
        WriteError::OutdatedRevision { uid, .. } => ("outdated_revision", uid),
        WriteError::Exists(m) => ("record_exists", m),
        WriteError::TooLarge(m) => ("size_exceeded_limit", m),
    }
}

/// The upload body's form fields: `(name, content)` for each part of a `multipart/form-data`
/// body. Hand-rolled because both SDKs send one simple shape (JS even leads with a CRLF).
pub(crate) fn form_parts<'a>(
    content_type: &str,
    body: &'a [u8],
) -> Option<Vec<(String, &'a [u8])>> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    if boundary.is_empty() || boundary.len() > 200 {
        return None;
    }
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    // A delimiter is CRLF + "--" + boundary; the first one may open the body without the CRLF.
    let start = if body.starts_with(&delimiter[2..]) {
        0
    } else {
        find(body, &delimiter)? + 2
    };
    let mut rest = &body[start + delimiter.len() - 2..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        let rest_after_crlf = rest.strip_prefix(b"\r\n")?;
        let end = find(rest_after_crlf, &delimiter)?;
        let part = &rest_after_crlf[..end];
        let split = find(part, b"\r\n\r\n")?;
        let headers = std::str::from_utf8(&part[..split]).ok()?;
        let name = headers
            .split("\r\n")
            .find(|h| h.to_ascii_lowercase().starts_with("content-disposition:"))?
            .split(';')
            .map(str::trim)
            .find_map(|p| p.strip_prefix("name="))?
            .trim_matches('"')
            .to_string();
        parts.push((name, &part[split + 4..]));
        rest = &rest_after_crlf[end + delimiter.len()..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The largest upload body: the file plus room for the form's other parts.
pub(crate) const MAX_UPLOAD_BODY: usize = MAX_FILE as usize + 64 * 1024;

#[cfg(test)]
mod tests {
    use super::form_parts;

    #[test]
    fn reads_the_forms_of_both_sdks() {
        let python = b"--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nK\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"file\"\r\n\r\n\x00\r\n\x01\r\n--B--\r\n";
        let js = b"\r\n--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nK\r\n--B\r\nContent-Disposition: form-data; name=\"file\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\r\n\x01\r\n--B--\r\n";
        for body in [&python[..], &js[..]] {
            let parts = form_parts("multipart/form-data; boundary=B", body).unwrap();
            assert_eq!(parts.len(), 2);
            assert_eq!(parts[0], ("key".to_string(), &b"K"[..]));
            assert_eq!(parts[1], ("file".to_string(), &b"\x00\r\n\x01"[..]));
        }
    }

    #[test]
    fn refuses_broken_forms() {
        for (content_type, body) in [
            ("multipart/form-data", &b"--B\r\n\r\n--B--"[..]),
            ("multipart/form-data; boundary=B", b"no delimiter"),
            (
                "multipart/form-data; boundary=B",
                b"--B\r\nno headers end--B--",
            ),
            (
                "multipart/form-data; boundary=B",
                b"--B\r\nX: y\r\n\r\nunterminated",
            ),
        ] {
            assert!(form_parts(content_type, body).is_none(), "{body:?}");
        }
    }
}
