//! PURE: `decodingStrategy`, for values stored base64-encoded in Keeper (a binary keystore, a
//! certificate pasted as base64). Decoding only ever shrinks a value, and errors name the key and
//! the strategy, never the value.

use std::collections::BTreeMap;

use base64::Engine;
use base64::alphabet::{STANDARD, URL_SAFE};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

use crate::api::DecodingStrategy;
use crate::api::Reason;
use crate::sync::mapping::Bytes;

/// A value did not decode as its strategy says.
#[derive(Debug, thiserror::Error)]
#[error("value of key {key:?} is not valid {encoding} (decodingStrategy {strategy:?})")]
pub struct DecodingError {
    /// The Secret key.
    pub key: String,
    /// The encoding expected.
    pub encoding: &'static str,
    /// The strategy declared.
    pub strategy: DecodingStrategy,
}

impl DecodingError {
    /// Stable reason for status and metrics.
    pub fn reason(&self) -> Reason {
        Reason::DecodingFailed
    }
}

/// Padding is optional in what people paste.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64: GeneralPurpose = GeneralPurpose::new(&STANDARD, LENIENT);
const BASE64URL: GeneralPurpose = GeneralPurpose::new(&URL_SAFE, LENIENT);

/// Decodes the values of `data` whose key has a strategy in `strategies`.
pub fn apply(
    strategies: &BTreeMap<String, DecodingStrategy>,
    mut data: BTreeMap<String, Bytes>,
) -> Result<BTreeMap<String, Bytes>, DecodingError> {
    for (key, strategy) in strategies {
        let Some(value) = data.get_mut(key) else {
            continue;
        };
        if let Some(decoded) = decode(value, *strategy).map_err(|encoding| DecodingError {
            key: key.clone(),
            encoding,
            strategy: *strategy,
        })? {
            *value = decoded;
        }
    }
    Ok(data)
}

/// The decoded value (`None`: keep it as stored), or the name of the encoding it failed.
fn decode(value: &[u8], strategy: DecodingStrategy) -> Result<Option<Bytes>, &'static str> {
    // Encoded text is often wrapped at 64 or 76 columns.
    let compact: Zeroizing<Vec<u8>> = Zeroizing::new(
        value
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    let with = |engine: &GeneralPurpose| engine.decode(&compact).ok().map(Zeroizing::new);
    match strategy {
        DecodingStrategy::None => Ok(None),
        DecodingStrategy::Base64 => with(&BASE64).map(Some).ok_or("base64"),
        DecodingStrategy::Base64Url => with(&BASE64URL).map(Some).ok_or("base64url"),
        DecodingStrategy::Auto => Ok(with(&BASE64).or_else(|| with(&BASE64URL))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(strategy: DecodingStrategy, value: &[u8]) -> Result<Vec<u8>, DecodingError> {
        let data = [("k".to_string(), Zeroizing::new(value.to_vec()))].into();
        let strategies = [("k".to_string(), strategy)].into();
        Ok(apply(&strategies, data)?["k"].to_vec())
    }

    #[test]
    fn base64_with_or_without_padding_and_line_breaks() {
        for stored in ["aGVsbG8/Pz4+", "aGVs\nbG8/\r\nPz4+\n", "aGk=", "aGk"] {
            let decoded = run(DecodingStrategy::Base64, stored.as_bytes()).unwrap();
            assert!(decoded == b"hello??>>" || decoded == b"hi", "{stored}");
        }
        assert_eq!(
            run(DecodingStrategy::Base64Url, b"aGVsbG8_Pz4-").unwrap(),
            b"hello??>>"
        );
    }

    #[test]
    fn a_wrong_alphabet_is_an_error_that_shows_no_value() {
        let err = run(DecodingStrategy::Base64, b"aGVsbG8_Pz4-").unwrap_err();
        assert_eq!(err.reason(), "DecodingFailed");
        let text = err.to_string();
        assert!(text.contains("\"k\"") && text.contains("base64"), "{text}");
        assert!(!text.contains("aGVsbG8"), "{text}");
        assert!(run(DecodingStrategy::Base64Url, b"aGVsbG8/Pz4+").is_err());
        assert!(run(DecodingStrategy::Base64, b"not base64!").is_err());
    }

    #[test]
    fn auto_decodes_either_alphabet_and_keeps_anything_else() {
        assert_eq!(
            run(DecodingStrategy::Auto, b"aGVsbG8/Pz4+").unwrap(),
            b"hello??>>"
        );
        assert_eq!(
            run(DecodingStrategy::Auto, b"aGVsbG8_Pz4-").unwrap(),
            b"hello??>>"
        );
        assert_eq!(
            run(DecodingStrategy::Auto, b"p@ss word!").unwrap(),
            b"p@ss word!"
        );
        assert_eq!(run(DecodingStrategy::None, b"aGk=").unwrap(), b"aGk=");
    }

    #[test]
    fn keys_without_a_strategy_are_untouched() {
        let data = [
            ("a".to_string(), Zeroizing::new(b"aGk=".to_vec())),
            ("b".to_string(), Zeroizing::new(b"aGk=".to_vec())),
        ]
        .into();
        let strategies = [("b".to_string(), DecodingStrategy::Base64)].into();
        let out = apply(&strategies, data).unwrap();
        assert_eq!(
            (out["a"].as_slice(), out["b"].as_slice()),
            (&b"aGk="[..], &b"hi"[..])
        );
    }
}
