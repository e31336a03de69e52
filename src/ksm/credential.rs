//! What a user may store as a credential: a KSM config (JSON or base64) or a one-time token
//! that the operator redeems in-cluster (see [`crate::k8s::redeem`] and
//! docs/dev/protocol.md#binding).

use crate::ksm::config::{ConfigError, KsmConfig};
use crate::ksm::token::OneTimeToken;

/// A stored credential, told apart by content. `Debug` of both variants is redacted.
#[derive(Clone, Debug)]
pub enum CredentialValue {
    Config(Box<KsmConfig>),
    OneTimeToken(OneTimeToken),
}

impl CredentialValue {
    /// A config when the text is (base64 of) a JSON object, else a one-time token. A text that
    /// is neither reports the config error, which names what is wrong.
    pub fn parse(text: &str) -> Result<CredentialValue, ConfigError> {
        match KsmConfig::parse(text) {
            Ok(config) => Ok(CredentialValue::Config(Box::new(config))),
            Err(ConfigError::NotConfig) => OneTimeToken::parse(text)
                .map(CredentialValue::OneTimeToken)
                .map_err(|_| ConfigError::NotConfig),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ksm::crypto::AesKey;

    #[test]
    fn configs_and_tokens_are_told_apart() {
        let config = KsmConfig::unbound("h".into(), AesKey::random(), 10, None)
            .into_bound(AesKey::random(), None);
        for text in [config.to_json(), config.to_base64()] {
            assert!(matches!(
                CredentialValue::parse(&text),
                Ok(CredentialValue::Config(_))
            ));
        }
        for token in [
            "YyIhK5wXFHj36wGBAOmBsxI3v5rIruINrC8KXjyM58c",
            "US:YyIhK5wXFHj36wGBAOmBsxI3v5rIruINrC8KXjyM58c\n",
        ] {
            assert!(matches!(
                CredentialValue::parse(token),
                Ok(CredentialValue::OneTimeToken(_))
            ));
        }
        assert_eq!(
            CredentialValue::parse("hello world").unwrap_err(),
            ConfigError::NotConfig
        );
        assert_eq!(
            CredentialValue::parse(r#"{"hostname":"h"}"#).unwrap_err(),
            ConfigError::Missing("clientId")
        );
    }
}
