//! Fuzz targets over every parser of untrusted input: the notation parser (KeeperSecret specs),
//! the KSM config and one-time token parsers (credential Secrets), the server-response opener and
//! decoder (`transport::open_response` + `response::decode_secrets`) and the record parser (the
//! decrypted record JSON inside a response); and over what tenants write: templates
//! (`template`) and whole KeeperSecret specs (`spec`, the operator's build from allow-list to
//! the desired Secret) against a fixed vault (`vault.rs`). A target must return for every input; a panic is a crash.
//!
//! On stable, `tests/replay.rs` runs each target over its committed corpus (`corpus/<target>/`)
//! and over deterministic mutations of it. With nightly and cargo-fuzz, the same functions are
//! the bodies of libFuzzer targets (see README.md).

use std::str::FromStr;

use keeper_operator::ksm::KsmConfig;
use keeper_operator::ksm::crypto::{AesKey, aes_gcm_encrypt, b64_std};
use keeper_operator::ksm::record::notation::Notation;
use keeper_operator::ksm::response::decode_secrets;
use keeper_operator::ksm::token::OneTimeToken;
use keeper_operator::ksm::transport::open_response;

mod vault;

pub use vault::{spec, template};

/// A fuzz target: must not panic on any input.
pub type Target = fn(&[u8]);

/// Every target, by corpus directory name.
pub const TARGETS: &[(&str, Target)] = &[
    ("notation", notation),
    ("config", config),
    ("token", token),
    ("response", response),
    ("record", record),
    ("template", template),
    ("spec", spec),
];

/// A fixed key, so a corpus entry means the same thing on every run.
fn key() -> AesKey {
    AesKey::from_slice(&[7u8; 32]).expect("32 bytes")
}

pub fn notation(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(n) = Notation::from_str(text)
    {
        // What parses must print back to the same notation.
        let printed = n.to_string();
        assert!(
            Notation::from_str(&printed).is_ok_and(|again| again == n),
            "printed notation does not parse back to itself"
        );
    }
}

pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(c) = KsmConfig::parse(text)
    {
        // A parsed config round-trips through both of its serialisations.
        assert!(
            KsmConfig::parse(&c.to_json()).is_ok(),
            "to_json does not parse"
        );
        assert!(
            KsmConfig::parse(&c.to_base64()).is_ok(),
            "to_base64 does not parse"
        );
    }
}

pub fn token(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(t) = OneTimeToken::parse(text)
    {
        let _ = t.client_id();
    }
}

/// The raw body as the server sent it: first byte picks the HTTP status class, the rest is the
/// body (GCM-sealed under the transmission key for 2xx); a successful open is then decoded.
pub fn response(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let status = [200u16, 400, 401, 403, 429, 500, 503][usize::from(selector) % 7];
    let k = key();
    if let Ok(plain) = open_response(&k, status, body, Some("1")) {
        let _ = decode_secrets(&k, &plain);
    }
    // The same bytes as an already-opened plaintext: the JSON decoder on hostile input.
    let _ = decode_secrets(&k, body);
}

/// The decrypted record JSON: wrapped in a well-formed response (record key under the app key,
/// record data sealed with the record key) so the decoder reaches the record parser.
pub fn record(data: &[u8]) {
    let app = key();
    let record_key = AesKey::from_slice(&[9u8; 32]).expect("32 bytes");
    let body = serde_json::json!({
        "folders": [],
        "records": [{
            "recordUid": "fuzz-record-uid-000001",
            "recordKey": b64_std(&aes_gcm_encrypt(&app, record_key.as_bytes())),
            "data": b64_std(&aes_gcm_encrypt(&record_key, data)),
            "revision": 1,
            "files": null,
        }],
    });
    let _ = decode_secrets(&app, body.to_string().as_bytes());
}
