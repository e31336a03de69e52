//! Cryptographic primitives of the KSM protocol (docs/dev/protocol.md#requests,
//! docs/dev/protocol.md#responses, docs/dev/protocol.md#encodings).
//!
//! Everything here is shared by the client and by the test server, so both sides of every
//! construction (wrap/unwrap, sign/verify) live together. Key material is held in types whose
//! `Debug` is redacted and which zeroize on drop.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256, Sha512};
use std::fmt;
use zeroize::{ZeroizeOnDrop, Zeroizing};

/// Errors from decoding or decrypting. Messages never include the material involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("value is not valid base64")]
    Base64,
    #[error("key has {0} bytes, expected 32")]
    KeyLength(usize),
    #[error("ciphertext failed authentication (tampered, truncated or wrong key)")]
    Decrypt,
    #[error("not a valid P-256 public key")]
    PublicKey,
    #[error("not a valid P-256 private key (PKCS#8 DER expected)")]
    PrivateKey,
}

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const CBC_IV_LEN: usize = 16;
const POINT_LEN: usize = 65;

/// Base64 decoding that accepts both alphabets, with or without padding, and surrounding
/// whitespace, because the real server mixes them (docs/dev/protocol.md#encodings).
pub fn b64_decode(text: &str) -> Result<Vec<u8>, CryptoError> {
    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const ENGINE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    let normalized: String = text
        .trim()
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    ENGINE.decode(normalized).map_err(|_| CryptoError::Base64)
}

/// Standard base64 with padding: the encoding of keys, record data and headers on the wire.
pub fn b64_std(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// URL-safe base64 without padding: UIDs, `appData`, server public keys.
pub fn b64_url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Fills a fresh array with OS randomness.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

/// A Keeper UID: 16 random bytes, base64url, never starting with `-` or `_`
/// (docs/dev/protocol.md#encodings).
pub fn generate_uid() -> String {
    let mut bytes: [u8; 16] = random_bytes();
    for _ in 0..8 {
        if bytes[0] & 0xF8 != 0xF8 {
            return b64_url(&bytes);
        }
        bytes = random_bytes();
    }
    bytes[0] &= 0x7F;
    b64_url(&bytes)
}

/// A 256-bit AES key (transmission, app, folder, record or file key).
#[derive(Clone, ZeroizeOnDrop, PartialEq, Eq)]
pub struct AesKey([u8; 32]);

impl AesKey {
    pub fn random() -> Self {
        Self(random_bytes())
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::KeyLength(bytes.len()))?;
        Ok(Self(array))
    }

    /// Decodes a base64 key, as stored in configs (`appKey`).
    pub fn from_b64(text: &str) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(b64_decode(text)?);
        Self::from_slice(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Unwraps a key that was AES-GCM encrypted under this key (record, folder, file keys).
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<AesKey, CryptoError> {
        let plain = aes_gcm_decrypt(self, wrapped)?;
        AesKey::from_slice(&plain)
    }

    /// Unwraps a key that was AES-CBC encrypted under this key (sub-folder keys).
    pub fn unwrap_key_cbc(&self, wrapped: &[u8]) -> Result<AesKey, CryptoError> {
        let plain = aes_cbc_decrypt(self, wrapped)?;
        AesKey::from_slice(&plain)
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

/// AES-256-GCM with a random 12-byte nonce: `nonce ‖ ciphertext ‖ tag`, no AAD.
pub fn aes_gcm_encrypt(key: &AesKey, plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.as_bytes().into());
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), plaintext)
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens `nonce ‖ ciphertext ‖ tag`. Any tampering, truncation or wrong key is `Decrypt`.
pub fn aes_gcm_decrypt(key: &AesKey, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if data.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, sealed) = data.split_at(NONCE_LEN);
    Aes256Gcm::new(key.as_bytes().into())
        .decrypt(Nonce::from_slice(nonce), sealed)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Decrypt)
}

type CbcEnc = cbc::Encryptor<aes::Aes256>;
type CbcDec = cbc::Decryptor<aes::Aes256>;

/// AES-256-CBC with PKCS#7 padding and a random IV: `iv ‖ ciphertext` (folder metadata only).
pub fn aes_cbc_encrypt(key: &AesKey, plaintext: &[u8]) -> Vec<u8> {
    let iv: [u8; CBC_IV_LEN] = random_bytes();
    let ct =
        CbcEnc::new(key.as_bytes().into(), &iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    [iv.as_slice(), &ct].concat()
}

/// Opens `iv ‖ ciphertext` with strict PKCS#7 unpadding. CBC is unauthenticated, so a wrong
/// key is detected only through padding; callers must validate what they decrypt.
pub fn aes_cbc_decrypt(key: &AesKey, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if data.len() < 2 * CBC_IV_LEN || !data.len().is_multiple_of(CBC_IV_LEN) {
        return Err(CryptoError::Decrypt);
    }
    let (iv, ct) = data.split_at(CBC_IV_LEN);
    let iv: [u8; CBC_IV_LEN] = iv.try_into().map_err(|_| CryptoError::Decrypt)?;
    CbcDec::new(key.as_bytes().into(), &iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ct)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Decrypt)
}

/// HMAC-SHA512, used to derive the client id from a one-time token's client key.
pub(crate) fn hmac_sha512(key: &[u8], message: &[u8]) -> [u8; 64] {
    let mut mac =
        <Hmac<Sha512> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// `clientId = base64_std(HMAC-SHA512(clientKey, "KEEPER_SECRETS_MANAGER_CLIENT_ID"))`
/// (docs/dev/protocol.md#client-id).
pub fn client_id(client_key: &[u8]) -> String {
    b64_std(&hmac_sha512(
        client_key,
        b"KEEPER_SECRETS_MANAGER_CLIENT_ID",
    ))
}

/// Derives an independent 256-bit key from `key` for one purpose (HMAC-SHA512 truncated), so a
/// key the protocol uses for one thing is never used directly for another.
pub(crate) fn derive_key(key: &AesKey, purpose: &str) -> AesKey {
    let mac = Zeroizing::new(hmac_sha512(key.as_bytes(), purpose.as_bytes()));
    AesKey::from_slice(&mac[..32]).expect("32 of 64 HMAC bytes")
}

/// Parses a 65-byte uncompressed SEC1 point (server keys, device keys, app owner keys).
pub fn parse_public_key(point: &[u8]) -> Result<PublicKey, CryptoError> {
    if point.len() != POINT_LEN {
        return Err(CryptoError::PublicKey);
    }
    PublicKey::from_sec1_bytes(point).map_err(|_| CryptoError::PublicKey)
}

/// The 65-byte uncompressed encoding `04 ‖ X ‖ Y`.
pub fn public_key_bytes(key: &PublicKey) -> [u8; 65] {
    let encoded = key.to_encoded_point(false);
    encoded
        .as_bytes()
        .try_into()
        .expect("uncompressed P-256 points are 65 bytes")
}

fn ecies_kek(secret: &p256::NonZeroScalar, public: &PublicKey) -> AesKey {
    let shared = p256::ecdh::diffie_hellman(secret, public.as_affine());
    let digest = Zeroizing::new(Sha256::digest(shared.raw_secret_bytes()));
    AesKey::from_slice(&digest).expect("SHA-256 output is 32 bytes")
}

/// ECIES to a P-256 public key: `ephemeral point(65) ‖ AES-GCM(SHA-256(ECDH x), data)`
/// (docs/dev/protocol.md#transmission-key).
pub fn ecies_encrypt(recipient: &PublicKey, data: &[u8]) -> Vec<u8> {
    let ephemeral = p256::ecdh::EphemeralSecret::random(&mut OsRng);
    let shared = ephemeral.diffie_hellman(recipient);
    let digest = Zeroizing::new(Sha256::digest(shared.raw_secret_bytes()));
    let kek = AesKey::from_slice(&digest).expect("SHA-256 output is 32 bytes");
    let ephemeral_point = public_key_bytes(&ephemeral.public_key());
    [ephemeral_point.as_slice(), &aes_gcm_encrypt(&kek, data)].concat()
}

/// Opens an ECIES blob with the recipient's private key (the test server's side of
/// docs/dev/protocol.md#transmission-key).
pub fn ecies_decrypt(
    recipient: &SecretKey,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if blob.len() < POINT_LEN + NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Decrypt);
    }
    let ephemeral = parse_public_key(&blob[..POINT_LEN])?;
    let kek = ecies_kek(&recipient.to_nonzero_scalar(), &ephemeral);
    aes_gcm_decrypt(&kek, &blob[POINT_LEN..])
}

/// Fixed PKCS#8 prefix every SDK writes for a P-256 key; the JS SDK parses by offset
/// (docs/dev/protocol.md#private-key-layout).
const PKCS8_PREFIX: [u8; 36] = [
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02,
    0x01, 0x01, 0x04, 0x20,
];
const PKCS8_PUBLIC_TAG: [u8; 5] = [0xa1, 0x44, 0x03, 0x42, 0x00];

/// A P-256 key pair: the device key that signs requests, or the test server's key.
#[derive(Clone)]
pub struct EcKeyPair {
    secret: SecretKey,
}

impl EcKeyPair {
    pub fn generate() -> Self {
        Self {
            secret: SecretKey::random(&mut OsRng),
        }
    }

    /// Reads PKCS#8 DER (the config's `privateKey`), in the SDKs' layout or any valid one.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        use p256::pkcs8::DecodePrivateKey;
        if der.len() == 138 && der[..36] == PKCS8_PREFIX {
            let secret =
                SecretKey::from_slice(&der[36..68]).map_err(|_| CryptoError::PrivateKey)?;
            return Ok(Self { secret });
        }
        SecretKey::from_pkcs8_der(der)
            .map(|secret| Self { secret })
            .map_err(|_| CryptoError::PrivateKey)
    }

    /// Writes the exact 138-byte PKCS#8 form that every official SDK writes and reads.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let scalar = Zeroizing::new(self.secret.to_bytes());
        let mut der = Zeroizing::new(Vec::with_capacity(138));
        der.extend_from_slice(&PKCS8_PREFIX);
        der.extend_from_slice(&scalar);
        der.extend_from_slice(&PKCS8_PUBLIC_TAG);
        der.extend_from_slice(&self.public_key_bytes());
        der
    }

    pub fn public_key(&self) -> PublicKey {
        self.secret.public_key()
    }

    pub fn public_key_bytes(&self) -> [u8; 65] {
        public_key_bytes(&self.public_key())
    }

    pub fn secret_key(&self) -> &SecretKey {
        &self.secret
    }

    /// ECDSA P-256 / SHA-256, ASN.1 DER encoded (docs/dev/protocol.md#signature).
    pub fn sign_der(&self, message: &[u8]) -> Vec<u8> {
        let signature: Signature = SigningKey::from(&self.secret).sign(message);
        signature.to_der().as_bytes().to_vec()
    }
}

impl fmt::Debug for EcKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EcKeyPair(<redacted>)")
    }
}

/// Verifies a DER ECDSA-SHA256 signature against a 65-byte public point.
pub fn verify_der(public_point: &[u8], message: &[u8], signature_der: &[u8]) -> bool {
    let Ok(key) = parse_public_key(public_point) else {
        return false;
    };
    let Ok(signature) = Signature::from_der(signature_der) else {
        return false;
    };
    VerifyingKey::from(&key).verify(message, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcm_round_trip_and_tamper_detection() {
        let key = AesKey::random();
        let mut sealed = aes_gcm_encrypt(&key, b"hello");
        assert_eq!(&*aes_gcm_decrypt(&key, &sealed).unwrap(), b"hello");
        sealed[14] ^= 1;
        assert_eq!(aes_gcm_decrypt(&key, &sealed), Err(CryptoError::Decrypt));
        assert_eq!(
            aes_gcm_decrypt(&key, &sealed[..20]),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn cbc_round_trip_and_key_wrap() {
        let key = AesKey::random();
        let inner = AesKey::random();
        let wrapped = aes_cbc_encrypt(&key, inner.as_bytes());
        assert_eq!(wrapped.len(), 64);
        assert_eq!(key.unwrap_key_cbc(&wrapped).unwrap(), inner);
    }

    #[test]
    fn ecies_round_trip_is_125_bytes_for_a_key() {
        let server = EcKeyPair::generate();
        let tk = AesKey::random();
        let blob = ecies_encrypt(&server.public_key(), tk.as_bytes());
        assert_eq!(blob.len(), 125);
        assert_eq!(
            &*ecies_decrypt(server.secret_key(), &blob).unwrap(),
            tk.as_bytes()
        );
        let other = EcKeyPair::generate();
        assert!(ecies_decrypt(other.secret_key(), &blob).is_err());
    }

    #[test]
    fn pkcs8_layout_matches_the_sdks() {
        let pair = EcKeyPair::generate();
        let der = pair.to_pkcs8_der();
        assert_eq!(der.len(), 138);
        assert!(b64_std(&der).starts_with("MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"));
        let back = EcKeyPair::from_pkcs8_der(&der).unwrap();
        assert_eq!(back.public_key_bytes(), pair.public_key_bytes());
        // The generic PKCS#8 reader agrees with the fixed layout.
        use p256::pkcs8::DecodePrivateKey;
        assert_eq!(SecretKey::from_pkcs8_der(&der).unwrap(), *pair.secret_key());
    }

    #[test]
    fn signatures_verify_only_for_the_signed_bytes() {
        let pair = EcKeyPair::generate();
        let sig = pair.sign_der(b"payload");
        assert!(verify_der(&pair.public_key_bytes(), b"payload", &sig));
        assert!(!verify_der(&pair.public_key_bytes(), b"payload2", &sig));
    }

    #[test]
    fn base64_is_lenient_about_alphabet_padding_and_space() {
        assert_eq!(b64_decode("+/8=").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(b64_decode("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(b64_decode(" -_8= \n").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(b64_decode("!!"), Err(CryptoError::Base64));
    }

    #[test]
    fn client_id_known_answer() {
        let key = b64_decode("YyIhK5wXFHj36wGBAOmBsxI3v5rIruINrC8KXjyM58c").unwrap();
        assert_eq!(
            client_id(&key),
            "6FSaAYix6NY+3gFbC4h3yVRgKDl1prYLTowsYcd2vWipj27jpjtaYgTz1N+XKOQgtt42RMa7GBg7sIZfnwlWVQ=="
        );
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", AesKey::random()), "AesKey(<redacted>)");
        assert_eq!(
            format!("{:?}", EcKeyPair::generate()),
            "EcKeyPair(<redacted>)"
        );
    }

    #[test]
    fn uids_are_22_chars_and_never_start_with_dash_or_underscore() {
        for _ in 0..200 {
            let uid = generate_uid();
            assert_eq!(uid.len(), 22);
            assert!(!uid.starts_with(['-', '_']));
        }
    }
}
