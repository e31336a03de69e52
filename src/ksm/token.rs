//! One-time access tokens (docs/dev/protocol.md#token-format) and their redemption, i.e. device
//! binding (docs/dev/protocol.md#binding).

use crate::ksm::client::{ClientOptions, KsmClient};
use crate::ksm::config::{DEFAULT_SERVER_KEY_ID, KsmConfig, normalize_hostname, parse_server_key};
use crate::ksm::crypto::{AesKey, b64_decode};
use crate::ksm::error::{KsmError, TokenError};
use crate::ksm::region::region_hostname;
use p256::PublicKey;
use std::fmt;
use zeroize::Zeroizing;

/// A parsed `[prefix:]clientKey` token. `Debug` is redacted.
#[derive(Clone)]
pub struct OneTimeToken {
    /// From the prefix: a region's domain, or the prefix itself as a hostname.
    pub hostname: Option<String>,
    client_key: AesKey,
    /// The IL5 extended form carries the server key to use (id, point).
    pub server_key: Option<(u32, PublicKey)>,
}

impl OneTimeToken {
    /// Parses a token as the SDKs split it: on `:`, prefix looked up case-insensitively in the
    /// region table (an unknown prefix is a hostname), and the IL5 4-part form.
    pub fn parse(text: &str) -> Result<OneTimeToken, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        let parts: Vec<&str> = text.split(':').collect();
        let (prefix, key, server_key) = match parts.as_slice() {
            [key] => (None, *key, None),
            [prefix, key] => (Some(*prefix), *key, None),
            [prefix, key, id, point] if prefix.eq_ignore_ascii_case("IL5") => {
                let id: u32 = id.parse().map_err(|_| TokenError::KeyId)?;
                let point = parse_server_key(point).map_err(|_| TokenError::ServerKey)?;
                (Some(*prefix), *key, Some((id, point)))
            }
            other => return Err(TokenError::Parts(other.len())),
        };
        let key_bytes = Zeroizing::new(b64_decode(key).map_err(|_| TokenError::ClientKey)?);
        let client_key = AesKey::from_slice(&key_bytes).map_err(|_| TokenError::ClientKey)?;
        let hostname = match prefix {
            None => None,
            Some(p) => Some(match region_hostname(p) {
                Some(host) => host.to_string(),
                None => normalize_hostname(p).map_err(|e| TokenError::Hostname(e.to_string()))?,
            }),
        };
        Ok(OneTimeToken {
            hostname,
            client_key,
            server_key,
        })
    }

    /// The client id the server knows this token by (docs/dev/protocol.md#client-id).
    pub fn client_id(&self) -> String {
        crate::ksm::crypto::client_id(self.client_key.as_bytes())
    }
}

impl fmt::Debug for OneTimeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimeToken")
            .field("hostname", &self.hostname)
            .field("server_key_id", &self.server_key.as_ref().map(|(id, _)| id))
            .finish_non_exhaustive()
    }
}

/// Redeems a one-time token: generates a device key, binds it with a first `get_secret` that
/// carries the public key, decrypts the app key with the token's client key, then fetches
/// again with the bound config as every SDK does (docs/dev/protocol.md#binding) and returns that
/// config.
///
/// `hostname` overrides the token prefix (needed for a `HOST:PORT`); `server_key` (id,
/// base64url point) overrides both the IL5 token key and the built-in key table.
pub async fn redeem_token(
    token: &str,
    hostname: Option<&str>,
    server_key: Option<(String, String)>,
    options: &ClientOptions,
) -> Result<KsmConfig, KsmError> {
    let token = OneTimeToken::parse(token)?;
    let hostname = match hostname {
        Some(h) => normalize_hostname(h)?,
        None => token.hostname.clone().ok_or(TokenError::NoHostname)?,
    };
    let (key_id, key) = match server_key {
        Some((id, point)) => (
            id.trim().parse().map_err(|_| TokenError::KeyId)?,
            Some(parse_server_key(&point)?),
        ),
        None => match token.server_key {
            Some((id, point)) => (id, Some(point)),
            None => (DEFAULT_SERVER_KEY_ID, None),
        },
    };
    let unbound = KsmConfig::unbound(hostname, token.client_key, key_id, key);
    let bound = KsmClient::bind(unbound, options).await?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ksm::crypto::{EcKeyPair, b64_url, public_key_bytes};
    use proptest::prelude::*;

    const KEY: &str = "YyIhK5wXFHj36wGBAOmBsxI3v5rIruINrC8KXjyM58c";
    const CLIENT_ID: &str =
        "6FSaAYix6NY+3gFbC4h3yVRgKDl1prYLTowsYcd2vWipj27jpjtaYgTz1N+XKOQgtt42RMa7GBg7sIZfnwlWVQ==";

    #[test]
    fn bare_and_region_prefixed_tokens() {
        let bare = OneTimeToken::parse(KEY).unwrap();
        assert_eq!(bare.hostname, None);
        assert_eq!(bare.client_id(), CLIENT_ID);
        for (prefix, host) in [
            ("US", "keepersecurity.com"),
            ("eu", "keepersecurity.eu"),
            ("AU", "keepersecurity.com.au"),
            ("GOV", "govcloud.keepersecurity.us"),
            ("JP", "keepersecurity.jp"),
            ("ca", "keepersecurity.ca"),
            ("IL5", "il5.keepersecurity.us"),
            ("ksm.company.com", "ksm.company.com"),
        ] {
            let token = OneTimeToken::parse(&format!("{prefix}:{KEY}")).unwrap();
            assert_eq!(token.hostname.as_deref(), Some(host));
            assert_eq!(token.client_id(), CLIENT_ID);
            assert!(token.server_key.is_none());
        }
    }

    #[test]
    fn il5_extended_form_carries_the_server_key() {
        let server = EcKeyPair::generate();
        let point = b64_url(&server.public_key_bytes());
        let token = OneTimeToken::parse(&format!("IL5:{KEY}:18:{point}")).unwrap();
        assert_eq!(token.hostname.as_deref(), Some("il5.keepersecurity.us"));
        let (id, key) = token.server_key.unwrap();
        assert_eq!(id, 18);
        assert_eq!(public_key_bytes(&key), server.public_key_bytes());
        assert_eq!(
            OneTimeToken::parse(&format!("IL5:{KEY}:x:{point}")).unwrap_err(),
            TokenError::KeyId
        );
        assert_eq!(
            OneTimeToken::parse(&format!("IL5:{KEY}:18:AAAA")).unwrap_err(),
            TokenError::ServerKey
        );
        // Only IL5 has the 4-part form; a host with a port cannot be a prefix
        // (docs/dev/protocol.md#token-format).
        assert_eq!(
            OneTimeToken::parse(&format!("US:{KEY}:18:{point}")).unwrap_err(),
            TokenError::Parts(4)
        );
        assert_eq!(
            OneTimeToken::parse(&format!("127.0.0.1:8443:{KEY}")).unwrap_err(),
            TokenError::Parts(3)
        );
    }

    #[test]
    fn bad_tokens_are_rejected_without_echo() {
        assert_eq!(OneTimeToken::parse("  ").unwrap_err(), TokenError::Empty);
        let err = OneTimeToken::parse("US:c2hvcnQ").unwrap_err();
        assert_eq!(err, TokenError::ClientKey);
        assert!(!err.to_string().contains("c2hvcnQ"));
        assert!(!format!("{:?}", OneTimeToken::parse(KEY).unwrap()).contains(KEY));
        assert!(matches!(
            OneTimeToken::parse(&format!("bad host:{KEY}")).unwrap_err(),
            TokenError::Hostname(_)
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC*") {
            let _ = OneTimeToken::parse(&text);
        }

        #[test]
        fn parse_never_panics_on_token_like_text(text in "([A-Za-z0-9.]{0,5}:){0,4}[A-Za-z0-9_-]{0,90}") {
            let _ = OneTimeToken::parse(&text);
        }
    }
}
