//! Request sealing and response opening (docs/dev/protocol.md#requests,
//! docs/dev/protocol.md#responses, docs/dev/protocol.md#errors), independent of HTTP so that
//! recorded traffic can be fed straight in: `open_response(transmission_key, status, body)`.

use crate::ksm::crypto::{
    AesKey, CryptoError, EcKeyPair, aes_gcm_decrypt, aes_gcm_encrypt, b64_decode, b64_std,
    ecies_encrypt, parse_public_key,
};
use crate::ksm::error::{KsmError, sanitize};
use p256::PublicKey;
use serde_json::Value;
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// Keeper's server public keys by id (docs/dev/protocol.md#server-keys): ids 1–7 share one key.
const SERVER_KEYS: [(u32, &str); 12] = [
    (
        7,
        "BK9w6TZFxE6nFNbMfIpULCup2a8xc6w2tUTABjxny7yFmxW0dAEojwC6j6zb5nTlmb1dAx8nwo3qF7RPYGmloRM",
    ),
    (
        8,
        "BKnhy0obglZJK-igwthNLdknoSXRrGB-mvFRzyb_L-DKKefWjYdFD2888qN1ROczz4n3keYSfKz9Koj90Z6w_tQ",
    ),
    (
        9,
        "BAsPQdCpLIGXdWNLdAwx-3J5lNqUtKbaOMV56hUj8VzxE2USLHuHHuKDeno0ymJt-acxWV1xPlBfNUShhRTR77g",
    ),
    (
        10,
        "BNYIh_Sv03nRZUUJveE8d2mxKLIDXv654UbshaItHrCJhd6cT7pdZ_XwbdyxAOCWMkBb9AZ4t1XRCsM8-wkEBRg",
    ),
    (
        11,
        "BA6uNfeYSvqagwu4TOY6wFK4JyU5C200vJna0lH4PJ-SzGVXej8l9dElyQ58_ljfPs5Rq6zVVXpdDe8A7Y3WRhk",
    ),
    (
        12,
        "BMjTIlXfohI8TDymsHxo0DqYysCy7yZGJ80WhgOBR4QUd6LBDA6-_318a-jCGW96zxXKMm8clDTKpE8w75KG-FY",
    ),
    (
        13,
        "BJBDU1P1H21IwIdT2brKkPqbQR0Zl0TIHf7Bz_OO9jaNgIwydMkxt4GpBmkYoprZ_DHUGOrno2faB7pmTR7HhuI",
    ),
    (
        14,
        "BJFF8j-dH7pDEw_U347w2CBM6xYM8Dk5fPPAktjib-opOqzvvbsER-WDHM4ONCSBf9O_obAHzCyygxmtpktDuiE",
    ),
    (
        15,
        "BDKyWBvLbyZ-jMueORl3JwJnnEpCiZdN7yUvT0vOyjwpPBCDf6zfL4RWzvSkhAAFnwOni_1tQSl8dfXHbXqXsQ8",
    ),
    (
        16,
        "BDXyZZnrl0tc2jdC5I61JjwkjK2kr7uet9tZjt8StTiJTAQQmnVOYBgbtP08PWDbecxnHghx3kJ8QXq1XE68y8c",
    ),
    (
        17,
        "BFX68cb97m9_sweGdOVavFM3j5ot6gveg6xT4BtGahfGhKib-zdZyO9pwvv1cBda9ahkSzo1BQ4NVXp9qRyqVGU",
    ),
    (
        18,
        "BNhngQqTT1bPKxGuB6FhbPTAeNVFl8PKGGSGo5W06xWIReutm6ix6JPivqnbvkydY-1uDQTr-5e6t70G01Bb5JA",
    ),
];

/// The built-in Keeper server key with this id (1–18), if any.
pub(crate) fn builtin_server_key(id: u32) -> Option<PublicKey> {
    let id = if (1..=7).contains(&id) { 7 } else { id };
    let (_, text) = SERVER_KEYS.iter().find(|(k, _)| *k == id)?;
    parse_public_key(&b64_decode(text).ok()?).ok()
}

/// One encrypted, signed request, ready to POST. The transmission key is fresh per request
/// (including every retry) and is needed to open the response.
pub(crate) struct SealedRequest {
    pub transmission_key: AesKey,
    pub key_id: u32,
    encrypted_key: Vec<u8>,
    pub body: Vec<u8>,
    signature: Vec<u8>,
}

impl SealedRequest {
    /// Wraps a fresh transmission key to the server key (ECIES), encrypts the payload with it
    /// (AES-GCM) and signs `encrypted_key ‖ body` with the device key (ECDSA, DER).
    pub fn seal(payload: &[u8], server_key: &PublicKey, key_id: u32, device: &EcKeyPair) -> Self {
        let transmission_key = AesKey::random();
        let encrypted_key = ecies_encrypt(server_key, transmission_key.as_bytes());
        let body = aes_gcm_encrypt(&transmission_key, payload);
        let signature = device.sign_der(&[encrypted_key.as_slice(), &body].concat());
        SealedRequest {
            transmission_key,
            key_id,
            encrypted_key,
            body,
            signature,
        }
    }

    /// `PublicKeyId`, `TransmissionKey` and `Authorization` headers
    /// (docs/dev/protocol.md#url-and-headers).
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("PublicKeyId", self.key_id.to_string()),
            ("TransmissionKey", b64_std(&self.encrypted_key)),
            (
                "Authorization",
                format!("Signature {}", b64_std(&self.signature)),
            ),
        ]
    }
}

/// Opens a response: a 2xx body is `AES-GCM(transmission key, JSON)` (empty is allowed); any
/// other status carries a plaintext JSON error body, classified per
/// docs/dev/protocol.md#errors.
pub fn open_response(
    transmission_key: &AesKey,
    status: u16,
    body: &[u8],
    retry_after_header: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, KsmError> {
    if !(200..300).contains(&status) {
        return Err(classify_error(status, body, retry_after_header));
    }
    if body.is_empty() {
        return Ok(Zeroizing::new(Vec::new()));
    }
    aes_gcm_decrypt(transmission_key, body).map_err(|_: CryptoError| KsmError::Tampered)
}

fn string_field(obj: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Seconds as a JSON number (integer or fraction) or numeric string.
fn seconds(value: &Value) -> Option<Duration> {
    let secs = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

fn key_id(value: &Value) -> Option<u32> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `Retry-After`: delay-seconds, or an HTTP-date (all three RFC 9110 forms) measured from `now`.
/// A date in the past means "now"; anything unreadable is ignored.
pub(crate) fn parse_retry_after(header: &str, now: SystemTime) -> Option<Duration> {
    let header = header.trim();
    if let Some(delay) = seconds(&Value::from(header)) {
        return Some(delay);
    }
    let at = httpdate::parse_http_date(header).ok()?;
    let delay = at.duration_since(now).unwrap_or(Duration::ZERO);
    Some(delay.min(Duration::from_secs(86_400)))
}

/// Classifies a non-2xx response. The code is `result_code`, falling back to `error`
/// (docs/dev/protocol.md#errors).
///
/// Throttling (docs/dev/protocol.md#throttling): a 403 or 429 whose code is `throttled` (the JSON
/// `retry_after` wins over the header), any other 429 whatever its body, and a 503 carrying
/// `Retry-After`. A `throttled` body on another status (e.g. 500) is a server error, as the SDKs
/// treat it.
///
/// A server-supplied delay is capped at [`MAX_RETRY_AFTER`] (KSM-1035): whoever answers cannot
/// park the client, or the operator's schedule for the credential, for longer.
pub(crate) fn classify_error(
    status: u16,
    body: &[u8],
    retry_after_header: Option<&str>,
) -> KsmError {
    match classify_uncapped(status, body, retry_after_header) {
        KsmError::Throttled { retry_after } => KsmError::Throttled {
            retry_after: retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
        },
        other => other,
    }
}

/// The longest delay a throttle answer can ask for (the SDKs' largest backoff step, 11·2^4 s).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(176);

fn classify_uncapped(status: u16, body: &[u8], retry_after_header: Option<&str>) -> KsmError {
    let header_delay = || retry_after_header.and_then(|h| parse_retry_after(h, SystemTime::now()));
    let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_slice(body).ok();
    let Some(obj) = parsed else {
        return if status == 429 || (status == 503 && retry_after_header.is_some()) {
            KsmError::Throttled {
                retry_after: header_delay(),
            }
        } else if status >= 500 {
            KsmError::Unavailable(format!("HTTP {status} with a non-JSON body"))
        } else {
            KsmError::InvalidResponse(format!("HTTP {status} with a non-JSON body"))
        };
    };
    let code = string_field(&obj, "result_code")
        .or_else(|| string_field(&obj, "error"))
        .unwrap_or_default();
    let error = string_field(&obj, "error").unwrap_or_default();
    let message = string_field(&obj, "message").unwrap_or_default();
    let throttled_body = code == "throttled" || error == "throttled";
    if status == 429
        || (throttled_body && status == 403)
        || (status == 503 && retry_after_header.is_some())
    {
        let retry_after = obj
            .get("retry_after")
            .and_then(seconds)
            .or_else(header_delay);
        return KsmError::Throttled { retry_after };
    }
    if code == "key" || error == "key" {
        return KsmError::WrongServerKey {
            key_id: obj.get("key_id").and_then(key_id),
            custom_key: false,
        };
    }
    if code == "invalid_client_version" || error == "client_version" {
        let info = string_field(&obj, "additional_info").unwrap_or(message);
        return KsmError::InvalidClientVersion {
            info: sanitize(&info),
        };
    }
    if code == "access_denied" || error == "access_denied" {
        return KsmError::AccessDenied {
            message: sanitize(&message),
        };
    }
    KsmError::Server {
        status,
        code: sanitize(&code),
        message: sanitize(&message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ksm::crypto::{ecies_decrypt, verify_der};
    use proptest::prelude::*;

    #[test]
    fn builtin_keys_cover_ids_1_to_18() {
        for id in 1..=18 {
            assert!(builtin_server_key(id).is_some(), "key {id}");
        }
        assert_eq!(builtin_server_key(1), builtin_server_key(7));
        assert_ne!(builtin_server_key(9), builtin_server_key(10));
        assert!(builtin_server_key(0).is_none());
        assert!(builtin_server_key(19).is_none());
    }

    #[test]
    fn sealed_request_is_what_a_server_can_open_and_verify() {
        let server = EcKeyPair::generate();
        let device = EcKeyPair::generate();
        let sealed = SealedRequest::seal(br#"{"a":1}"#, &server.public_key(), 10, &device);
        let [(_, id), (_, tk), (_, auth)] = sealed.headers();
        assert_eq!(id, "10");
        assert_eq!(tk.len(), 168);
        let tk_raw = b64_decode(&tk).unwrap();
        let key = ecies_decrypt(server.secret_key(), &tk_raw).unwrap();
        assert_eq!(&*key, sealed.transmission_key.as_bytes());
        let payload = aes_gcm_decrypt(&sealed.transmission_key, &sealed.body).unwrap();
        assert_eq!(&*payload, br#"{"a":1}"#);
        let sig = b64_decode(auth.strip_prefix("Signature ").unwrap()).unwrap();
        let signed = [tk_raw.as_slice(), &sealed.body].concat();
        assert!(verify_der(&device.public_key_bytes(), &signed, &sig));
    }

    #[test]
    fn responses_open_or_fail_as_tampered() {
        let tk = AesKey::random();
        let body = aes_gcm_encrypt(&tk, b"{}");
        assert_eq!(&*open_response(&tk, 200, &body, None).unwrap(), b"{}");
        assert!(open_response(&tk, 200, b"", None).unwrap().is_empty());
        let mut bad = body.clone();
        bad[13] ^= 0x40;
        assert!(matches!(
            open_response(&tk, 200, &bad, None),
            Err(KsmError::Tampered)
        ));
        assert!(matches!(
            open_response(&tk, 200, &body[..body.len() - 1], None),
            Err(KsmError::Tampered)
        ));
        assert!(matches!(
            open_response(&AesKey::random(), 200, &body, None),
            Err(KsmError::Tampered)
        ));
    }

    #[test]
    fn real_error_bodies_are_classified() {
        let cases: [(u16, &str, Option<&str>, &str); 9] = [
            (
                403,
                r#"{"path":"https://dev.keepersecurity.com/api/rest/sm/v1/get_secret, POST","additional_info":"","location":"default exception manager - api validation exception","error":"access_denied","message":"Signature is invalid"}"#,
                None,
                "AuthFailed",
            ),
            (
                403,
                r#"{"error":"access_denied","message":"Unable to validate application access"}"#,
                None,
                "AuthFailed",
            ),
            (
                403,
                r#"{"result_code":"invalid_client_version","error":"client_version","additional_info":"invalid client version id: 16, mp17.0.2","message":"Please update your Keeper app"}"#,
                None,
                "InvalidClientVersion",
            ),
            (
                401,
                r#"{"key_id":9,"error":"key","message":"invalid key id"}"#,
                None,
                "WrongServerKey",
            ),
            (
                403,
                r#"{"error":"throttled","retry_after":12}"#,
                None,
                "Throttled",
            ),
            (
                403,
                r#"{"result_code":"throttled"}"#,
                Some("7"),
                "Throttled",
            ),
            (502, "Bad Gateway", None, "KeeperUnavailable"),
            (400, "<html>nope</html>", None, "InvalidResponse"),
            (
                400,
                r#"{"error":"bad_request","message":"x"}"#,
                None,
                "KeeperError",
            ),
        ];
        for (status, body, header, reason) in cases {
            let err = classify_error(status, body.as_bytes(), header);
            assert_eq!(err.reason(), reason, "{body}");
        }
        assert!(matches!(
            classify_error(401, br#"{"key_id":"12","error":"key"}"#, None),
            KsmError::WrongServerKey {
                key_id: Some(12),
                custom_key: false
            }
        ));
        assert!(matches!(
            classify_error(403, br#"{"error":"throttled","retry_after":12}"#, Some("3")),
            KsmError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(12)
        ));
        assert!(matches!(
            classify_error(403, br#"{"error":"throttled"}"#, Some("3")),
            KsmError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify_error(403, br#"{"error":"throttled"}"#, None),
            KsmError::Throttled { retry_after: None }
        ));
        match classify_error(
            403,
            br#"{"result_code":"invalid_client_version","error":"client_version","additional_info":"invalid client version id: 16, mp17.0.2"}"#,
            None,
        ) {
            KsmError::InvalidClientVersion { info } => {
                assert_eq!(info, "invalid client version id: 16, mp17.0.2")
            }
            other => panic!("{other:?}"),
        }
    }

    fn throttled_after(err: KsmError) -> Option<Duration> {
        match err {
            KsmError::Throttled { retry_after } => retry_after,
            other => panic!("not throttling: {other:?}"),
        }
    }

    #[test]
    fn throttling_is_403_or_429_with_the_body_any_429_or_a_503_with_retry_after() {
        let secs = Duration::from_secs;
        // Keeper's 429 (since 2026) and the older 403, JSON `retry_after` first.
        let body = br#"{"error":"throttled","retry_after":12}"#;
        assert_eq!(
            throttled_after(classify_error(429, body, Some("3"))),
            Some(secs(12))
        );
        assert_eq!(
            throttled_after(classify_error(403, body, None)),
            Some(secs(12))
        );
        assert_eq!(
            throttled_after(classify_error(
                429,
                br#"{"result_code":"throttled"}"#,
                Some("4")
            )),
            Some(secs(4))
        );
        // Any 429, whatever the body, with or without the header.
        assert_eq!(
            throttled_after(classify_error(429, b"Too Many Requests", Some("5"))),
            Some(secs(5))
        );
        assert_eq!(throttled_after(classify_error(429, b"", None)), None);
        assert_eq!(
            throttled_after(classify_error(429, br#"{"error":"slow_down"}"#, Some("6"))),
            Some(secs(6))
        );
        // A 503 carrying Retry-After is throttling; a bare 503 is an outage.
        assert_eq!(
            throttled_after(classify_error(503, b"<html>busy</html>", Some("30"))),
            Some(secs(30))
        );
        assert_eq!(
            classify_error(503, b"<html>busy</html>", None).reason(),
            "KeeperUnavailable"
        );
        // The throttle body on a 500 is not throttling.
        let err = classify_error(500, br#"{"error":"throttled","retry_after":1}"#, Some("1"));
        assert_eq!(err.reason(), "KeeperError", "{err:?}");
    }

    #[test]
    fn server_supplied_delays_are_capped_at_176_seconds() {
        let cap = Some(MAX_RETRY_AFTER);
        assert_eq!(MAX_RETRY_AFTER, Duration::from_secs(176));
        let body = br#"{"error":"throttled","retry_after":86400}"#;
        assert_eq!(throttled_after(classify_error(429, body, None)), cap);
        assert_eq!(throttled_after(classify_error(429, b"", Some("3600"))), cap);
        let far = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(7200));
        assert_eq!(throttled_after(classify_error(503, b"x", Some(&far))), cap);
        // At or under the cap: kept as sent.
        let body = br#"{"error":"throttled","retry_after":176}"#;
        assert_eq!(throttled_after(classify_error(403, body, None)), cap);
        assert_eq!(
            throttled_after(classify_error(429, b"", Some("175"))),
            Some(Duration::from_secs(175))
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let secs = Duration::from_secs;
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(
            parse_retry_after(" 2.5 ", now),
            Some(Duration::from_millis(2500))
        );
        // IMF-fixdate, RFC 850 and asctime forms.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(secs(30))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:50:37 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:47 1994", now),
            Some(secs(10))
        );
        // A date already past: retry now. Far future: capped at a day.
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Fri, 06 Nov 2026 08:49:37 GMT", now),
            Some(secs(86_400))
        );
        for junk in ["", "soon", "-5", "Sun, 32 Nov 1994 08:49:37 GMT"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk}");
        }
        // Through classify_error, against the real clock.
        let later = httpdate::fmt_http_date(SystemTime::now() + secs(100));
        let delay = throttled_after(classify_error(429, b"", Some(&later))).unwrap();
        assert!(delay > secs(90) && delay <= secs(100), "{delay:?}");
    }

    proptest! {
        #[test]
        fn open_response_never_panics(status in 0u16..1000, body in proptest::collection::vec(any::<u8>(), 0..200),
                                      header in proptest::option::of("\\PC{0,10}")) {
            let _ = open_response(&AesKey::random(), status, &body, header.as_deref());
        }

        #[test]
        fn classify_never_panics_on_json(code in "[a-z_]{0,12}", retry in any::<f64>(), id in any::<i64>()) {
            let body = serde_json::json!({"error": code, "retry_after": retry, "key_id": id}).to_string();
            let _ = classify_error(403, body.as_bytes(), Some("-1"));
        }
    }
}
