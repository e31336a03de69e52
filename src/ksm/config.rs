//! The KSM client configuration (docs/dev/protocol.md#configuration): the JSON object every
//! official SDK and External Secrets Operator read, given as JSON or as base64 of that JSON.

use crate::ksm::crypto::{
    AesKey, EcKeyPair, b64_decode, b64_std, b64_url, parse_public_key, public_key_bytes,
};
use crate::ksm::region::{DEFAULT_HOSTNAME, region_hostname};
use p256::PublicKey;
use serde_json::{Map, Value};
use std::fmt;
use zeroize::Zeroizing;

/// The key id the SDKs use when a config names none (production uses key 10,
/// docs/dev/protocol.md#server-keys).
pub(crate) const DEFAULT_SERVER_KEY_ID: u32 = 10;

/// The keys of a bound config as the official SDKs write it, sorted: what
/// [`KsmConfig::to_json`] writes for a bound config with a custom server key and owner key. One
/// list, so the operator's output and the test server's configs are checked against the same.
pub const SDK_CONFIG_KEYS: [&str; 7] = [
    "appKey",
    "appOwnerPublicKey",
    "clientId",
    "hostname",
    "privateKey",
    "serverPublicKey",
    "serverPublicKeyId",
];

/// Why a config was rejected. Names the key, never its value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config is empty")]
    Empty,
    #[error("config is neither JSON nor base64-encoded JSON")]
    NotConfig,
    #[error("config JSON is malformed ({0})")]
    Json(String),
    #[error("config JSON is not an object")]
    NotAnObject,
    #[error("config has no {0:?}")]
    Missing(&'static str),
    #[error("config key {key:?} is invalid: {reason}")]
    Invalid {
        key: &'static str,
        reason: &'static str,
    },
    #[error("config is not bound yet (it has a clientKey but no appKey); redeem it first")]
    NotBound,
}

fn invalid(key: &'static str, reason: &'static str) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

/// A parsed KSM config. Bound configs carry `appKey`; an unbound one (mid-binding) carries the
/// one-time token's `clientKey` instead. `Debug` shows only the hostname and key id.
#[derive(Clone)]
pub struct KsmConfig {
    hostname: String,
    client_id: String,
    device_key: EcKeyPair,
    app_key: Option<AesKey>,
    client_key: Option<AesKey>,
    server_public_key_id: u32,
    server_public_key: Option<PublicKey>,
    /// Kept verbatim: only needed for writes, which this client does not make.
    app_owner_public_key: Option<String>,
}

/// Normalizes a hostname as the SDKs accept it: a region code maps to its domain, an
/// `https://` prefix or trailing `/` is dropped, and a `:port` is kept
/// (docs/dev/protocol.md#hosts-and-regions).
pub(crate) fn normalize_hostname(raw: &str) -> Result<String, ConfigError> {
    let mut host = raw.trim();
    if let Some(rest) = host
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("https://"))
        .and_then(|_| host.get(8..))
    {
        host = rest;
    }
    let host = host.trim_end_matches('/');
    if host.is_empty() {
        return Err(invalid("hostname", "empty"));
    }
    if let Some(region) = region_hostname(host) {
        return Ok(region.to_string());
    }
    let bad = |c: char| c.is_whitespace() || c.is_control() || "/?#@\\".contains(c);
    if host.chars().any(bad) {
        return Err(invalid("hostname", "must be HOST or HOST:PORT"));
    }
    Ok(host.to_string())
}

/// Strings as the SDKs write them; `null` counts as absent (docs/dev/protocol.md#configuration).
fn get_str<'a>(
    obj: &'a Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a str>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim())),
        Some(_) => Err(invalid(key, "must be a string")),
    }
}

fn require<'a>(obj: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, ConfigError> {
    get_str(obj, key)?.ok_or(ConfigError::Missing(key))
}

fn parse_key_id(text: &str) -> Result<u32, ConfigError> {
    text.parse()
        .map_err(|_| invalid("serverPublicKeyId", "must be a number"))
}

pub(crate) fn parse_server_key(text: &str) -> Result<PublicKey, ConfigError> {
    let bytes = b64_decode(text).map_err(|_| invalid("serverPublicKey", "not base64"))?;
    parse_public_key(&bytes).map_err(|_| invalid("serverPublicKey", "not a P-256 point"))
}

/// Decodes the text form: JSON, or base64 (either alphabet, padded or not) of JSON.
fn decode_text(text: &str) -> Result<Zeroizing<String>, ConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ConfigError::Empty);
    }
    if text.starts_with('{') {
        return Ok(Zeroizing::new(text.to_string()));
    }
    let bytes = Zeroizing::new(b64_decode(text).map_err(|_| ConfigError::NotConfig)?);
    let decoded = std::str::from_utf8(&bytes).map_err(|_| ConfigError::NotConfig)?;
    if !decoded.trim_start().starts_with('{') {
        return Err(ConfigError::NotConfig);
    }
    Ok(Zeroizing::new(decoded.to_string()))
}

impl KsmConfig {
    /// Parses a config given as JSON or base64 of JSON, as the official SDKs take it from
    /// `KSM_CONFIG`. Unknown keys are ignored (as the Go SDK and ESO do).
    pub fn parse(text: &str) -> Result<KsmConfig, ConfigError> {
        let json = decode_text(text)?;
        // serde_json syntax errors report positions only, never the offending text.
        let value: Value =
            serde_json::from_str(&json).map_err(|e| ConfigError::Json(e.classify_text()))?;
        let Value::Object(obj) = value else {
            return Err(ConfigError::NotAnObject);
        };
        let hostname = match get_str(&obj, "hostname")? {
            Some(h) => normalize_hostname(h)?,
            None => DEFAULT_HOSTNAME.to_string(),
        };
        let client_id = require(&obj, "clientId")?.to_string();
        let der = Zeroizing::new(
            b64_decode(require(&obj, "privateKey")?)
                .map_err(|_| invalid("privateKey", "not base64"))?,
        );
        let device_key = EcKeyPair::from_pkcs8_der(&der)
            .map_err(|_| invalid("privateKey", "not a PKCS#8 P-256 private key"))?;
        let app_key = get_str(&obj, "appKey")?
            .map(|k| AesKey::from_b64(k).map_err(|_| invalid("appKey", "not a 32-byte base64 key")))
            .transpose()?;
        let client_key = match app_key {
            Some(_) => None,
            None => Some(
                get_str(&obj, "clientKey")?
                    .map(|k| {
                        AesKey::from_b64(k)
                            .map_err(|_| invalid("clientKey", "not a 32-byte base64 key"))
                    })
                    .transpose()?
                    .ok_or(ConfigError::Missing("appKey"))?,
            ),
        };
        // A number is tolerated here: hand-written configs sometimes carry one.
        let server_public_key_id = match obj.get("serverPublicKeyId") {
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or(invalid("serverPublicKeyId", "must be a number"))?,
            _ => get_str(&obj, "serverPublicKeyId")?
                .map(parse_key_id)
                .transpose()?
                .unwrap_or(DEFAULT_SERVER_KEY_ID),
        };
        let server_public_key = get_str(&obj, "serverPublicKey")?
            .map(parse_server_key)
            .transpose()?;
        let app_owner_public_key = get_str(&obj, "appOwnerPublicKey")?.map(str::to_string);
        Ok(KsmConfig {
            hostname,
            client_id,
            device_key,
            app_key,
            client_key,
            server_public_key_id,
            server_public_key,
            app_owner_public_key,
        })
    }

    /// A fresh, unbound config for a one-time token: new device key, client id from the token.
    pub(crate) fn unbound(
        hostname: String,
        client_key: AesKey,
        server_public_key_id: u32,
        server_public_key: Option<PublicKey>,
    ) -> KsmConfig {
        KsmConfig {
            hostname,
            client_id: crate::ksm::crypto::client_id(client_key.as_bytes()),
            device_key: EcKeyPair::generate(),
            app_key: None,
            client_key: Some(client_key),
            server_public_key_id,
            server_public_key,
            app_owner_public_key: None,
        }
    }

    /// The bound config: the app key replaces the client key (docs/dev/protocol.md#binding).
    pub(crate) fn into_bound(mut self, app_key: AesKey, owner_key: Option<String>) -> KsmConfig {
        self.app_key = Some(app_key);
        self.client_key = None;
        self.app_owner_public_key = owner_key;
        self
    }

    /// The JSON object with only the keys the SDK readers know, every value a string (the Rust
    /// SDK rejects anything else, docs/dev/protocol.md#configuration).
    pub fn to_json(&self) -> String {
        let mut obj = Map::new();
        let mut put = |key: &str, value: String| {
            obj.insert(key.to_string(), Value::String(value));
        };
        put("hostname", self.hostname.clone());
        put("clientId", self.client_id.clone());
        put("privateKey", b64_std(&self.device_key.to_pkcs8_der()));
        if let Some(key) = &self.app_key {
            put("appKey", b64_std(key.as_bytes()));
        }
        if let Some(key) = &self.client_key {
            put("clientKey", b64_url(key.as_bytes()));
        }
        put("serverPublicKeyId", self.server_public_key_id.to_string());
        if let Some(key) = &self.server_public_key {
            put("serverPublicKey", b64_url(&public_key_bytes(key)));
        }
        if let Some(owner) = &self.app_owner_public_key {
            put("appOwnerPublicKey", owner.clone());
        }
        Value::Object(obj).to_string()
    }

    /// Standard padded base64 of [`to_json`](Self::to_json): the Vault's "Base64" config form.
    pub fn to_base64(&self) -> String {
        b64_std(self.to_json().as_bytes())
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn is_bound(&self) -> bool {
        self.app_key.is_some()
    }

    pub fn server_public_key_id(&self) -> u32 {
        self.server_public_key_id
    }

    /// The custom server key (IL5, isolated deployments, test servers), if configured.
    pub fn server_public_key(&self) -> Option<&PublicKey> {
        self.server_public_key.as_ref()
    }

    pub(crate) fn device_key(&self) -> &EcKeyPair {
        &self.device_key
    }

    pub(crate) fn app_key(&self) -> Option<&AesKey> {
        self.app_key.as_ref()
    }

    pub(crate) fn client_key(&self) -> Option<&AesKey> {
        self.client_key.as_ref()
    }
}

impl fmt::Debug for KsmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KsmConfig")
            .field("hostname", &self.hostname)
            .field("bound", &self.is_bound())
            .field("server_public_key_id", &self.server_public_key_id)
            .field("custom_server_key", &self.server_public_key.is_some())
            .finish_non_exhaustive()
    }
}

/// `serde_json::Error`'s category and position, without its message (which can quote input).
trait ClassifyText {
    fn classify_text(&self) -> String;
}

impl ClassifyText for serde_json::Error {
    fn classify_text(&self) -> String {
        format!(
            "{:?} at line {} column {}",
            self.classify(),
            self.line(),
            self.column()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> KsmConfig {
        KsmConfig::unbound(
            "127.0.0.1:8443".into(),
            AesKey::random(),
            10,
            Some(EcKeyPair::generate().public_key()),
        )
        .into_bound(AesKey::random(), Some("BLNd".into()))
    }

    #[test]
    fn json_round_trip_writes_only_known_string_keys() {
        let config = sample();
        let json = config.to_json();
        let value: Value = serde_json::from_str(&json).unwrap();
        let obj = value.as_object().unwrap();
        let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, SDK_CONFIG_KEYS);
        assert!(obj.values().all(Value::is_string));
        assert_eq!(obj["serverPublicKeyId"], "10");
        assert_eq!(obj["hostname"], "127.0.0.1:8443");
        assert_eq!(obj["privateKey"].as_str().unwrap().len(), 184);
        let back = KsmConfig::parse(&json).unwrap();
        assert_eq!(back.to_json(), json);
        let back64 = KsmConfig::parse(&config.to_base64()).unwrap();
        assert_eq!(back64.to_json(), json);
    }

    #[test]
    fn accepts_every_base64_flavour_and_whitespace() {
        let json = sample().to_json();
        let std = config_b64(&json, base64::engine::general_purpose::STANDARD);
        let std_nopad = config_b64(&json, base64::engine::general_purpose::STANDARD_NO_PAD);
        let url = config_b64(&json, base64::engine::general_purpose::URL_SAFE);
        let url_nopad = config_b64(&json, base64::engine::general_purpose::URL_SAFE_NO_PAD);
        for text in [std, std_nopad, url, url_nopad, format!("  {json}\n")] {
            assert_eq!(
                KsmConfig::parse(&format!("{text}\n")).unwrap().to_json(),
                json
            );
        }
    }

    fn config_b64(json: &str, engine: impl base64::Engine) -> String {
        engine.encode(json.as_bytes())
    }

    #[test]
    fn region_codes_ports_and_defaults() {
        let mut obj: Map<String, Value> = serde_json::from_str(&sample().to_json()).unwrap();
        obj.insert("hostname".into(), "EU".into());
        obj.remove("serverPublicKeyId");
        obj.insert("unknownKey".into(), Value::Bool(true));
        let config = KsmConfig::parse(&Value::Object(obj.clone()).to_string()).unwrap();
        assert_eq!(config.hostname(), "keepersecurity.eu");
        assert_eq!(config.server_public_key_id(), DEFAULT_SERVER_KEY_ID);
        obj.insert("hostname".into(), "https://ksm.example.com:9443/".into());
        obj.insert("serverPublicKeyId".into(), 7.into());
        let config = KsmConfig::parse(&Value::Object(obj.clone()).to_string()).unwrap();
        assert_eq!(config.hostname(), "ksm.example.com:9443");
        assert_eq!(config.server_public_key_id(), 7);
        obj.remove("hostname");
        let config = KsmConfig::parse(&Value::Object(obj).to_string()).unwrap();
        assert_eq!(config.hostname(), "keepersecurity.com");
    }

    #[test]
    fn errors_name_the_key_but_never_the_value() {
        let good: Map<String, Value> = serde_json::from_str(&sample().to_json()).unwrap();
        let with = |key: &str, value: Value| {
            let mut obj = good.clone();
            obj.insert(key.into(), value);
            KsmConfig::parse(&Value::Object(obj).to_string()).unwrap_err()
        };
        let without = |key: &str| {
            let mut obj = good.clone();
            obj.remove(key);
            KsmConfig::parse(&Value::Object(obj).to_string()).unwrap_err()
        };
        assert_eq!(without("clientId"), ConfigError::Missing("clientId"));
        assert_eq!(without("privateKey"), ConfigError::Missing("privateKey"));
        assert_eq!(without("appKey"), ConfigError::Missing("appKey"));
        let err = with("appKey", "c2VjcmV0LXZhbHVl".into());
        assert_eq!(err, invalid("appKey", "not a 32-byte base64 key"));
        assert!(!err.to_string().contains("c2VjcmV0"));
        assert_eq!(
            with("privateKey", "AAAA".into()),
            invalid("privateKey", "not a PKCS#8 P-256 private key")
        );
        assert_eq!(
            with("clientId", 5.into()),
            invalid("clientId", "must be a string")
        );
        assert_eq!(
            with("serverPublicKey", "BAAA".into()),
            invalid("serverPublicKey", "not a P-256 point")
        );
        assert_eq!(
            with("hostname", "a b".into()),
            invalid("hostname", "must be HOST or HOST:PORT")
        );
        assert_eq!(KsmConfig::parse(" ").unwrap_err(), ConfigError::Empty);
        assert_eq!(KsmConfig::parse("[1]").unwrap_err(), ConfigError::NotConfig);
        assert_eq!(
            KsmConfig::parse("WzFd").unwrap_err(),
            ConfigError::NotConfig
        );
        let err = KsmConfig::parse(r#"{"clientId": "secret-text"#).unwrap_err();
        assert!(matches!(err, ConfigError::Json(_)));
        assert!(!err.to_string().contains("secret-text"));
    }

    #[test]
    fn unbound_config_keeps_the_client_key() {
        let unbound = KsmConfig::unbound("US".into(), AesKey::random(), 10, None);
        let json = unbound.to_json();
        assert!(json.contains("clientKey") && !json.contains("appKey"));
        let back = KsmConfig::parse(&json).unwrap();
        assert!(!back.is_bound());
        assert!(back.client_key().is_some());
    }

    #[test]
    fn debug_is_redacted() {
        let config = sample();
        let text = format!("{config:?}");
        assert!(text.contains("127.0.0.1:8443"));
        assert!(!text.contains(config.client_id()));
        assert!(!text.contains("BLNd"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC*") {
            let _ = KsmConfig::parse(&text);
        }

        #[test]
        fn parse_never_panics_on_json_objects(
            entries in proptest::collection::vec(
                (prop_oneof![Just("hostname"), Just("clientId"), Just("privateKey"), Just("appKey"),
                             Just("clientKey"), Just("serverPublicKeyId"), Just("serverPublicKey")],
                 prop_oneof![Just(Value::Null), any::<i64>().prop_map(Value::from),
                             "[A-Za-z0-9+/=_-]{0,200}".prop_map(Value::from)]),
                0..8)
        ) {
            let obj: Map<String, Value> =
                entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let text = Value::Object(obj).to_string();
            let _ = KsmConfig::parse(&text);
            let _ = KsmConfig::parse(&b64_std(text.as_bytes()));
        }
    }
}
