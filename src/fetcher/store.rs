//! The last good Keeper response, persisted so a restarted or failed-over operator can serve it.
//!
//! What is stored is the decrypted `get_secret` body: its records, folder and file keys are still
//! encrypted under the application key. That body is sealed again with AES-GCM under a key
//! derived from the application key, so the stored blob is unreadable at rest and useless
//! without the credential. The blob also carries when it was fetched, so staleness survives a
//! restart.

use crate::ksm::crypto::{AesKey, CryptoError, aes_gcm_decrypt, aes_gcm_encrypt, derive_key};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

const CACHE_KEY_PURPOSE: &str = "keeper-operator/last-good-cache/v1";

/// Where sealed snapshots live, keyed by credential id (a hash, never the client id itself).
pub trait SnapshotStore: Send + Sync + 'static {
    fn load<'a>(&'a self, credential: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Vec<u8>>>>;
    fn save<'a>(
        &'a self,
        credential: &'a str,
        sealed: Vec<u8>,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// The key that seals a credential's snapshots.
pub fn cache_key(app_key: &AesKey) -> AesKey {
    derive_key(app_key, CACHE_KEY_PURPOSE)
}

/// `GCM(cache key, fetched_at millis (8 bytes, big endian) ‖ body)`.
pub fn seal(key: &AesKey, fetched_at: SystemTime, body: &[u8]) -> Vec<u8> {
    let millis = fetched_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut plain = Zeroizing::new(Vec::with_capacity(8 + body.len()));
    plain.extend_from_slice(&millis.to_be_bytes());
    plain.extend_from_slice(body);
    aes_gcm_encrypt(key, &plain)
}

/// Opens a sealed snapshot: when it was fetched, and the body.
pub fn open(key: &AesKey, sealed: &[u8]) -> Result<(SystemTime, Zeroizing<Vec<u8>>), CryptoError> {
    let plain = aes_gcm_decrypt(key, sealed)?;
    if plain.len() < 8 {
        return Err(CryptoError::Decrypt);
    }
    let millis = u64::from_be_bytes(plain[..8].try_into().map_err(|_| CryptoError::Decrypt)?);
    let fetched_at = UNIX_EPOCH + Duration::from_millis(millis);
    Ok((fetched_at, Zeroizing::new(plain[8..].to_vec())))
}

/// A process-local store, for tests and for running without persistence.
#[derive(Default)]
pub struct MemoryStore {
    blobs: Mutex<HashMap<String, Vec<u8>>>,
}

impl SnapshotStore for MemoryStore {
    fn load<'a>(&'a self, credential: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Vec<u8>>>> {
        let blob = self
            .blobs
            .lock()
            .expect("store lock")
            .get(credential)
            .cloned();
        Box::pin(async move { Ok(blob) })
    }

    fn save<'a>(
        &'a self,
        credential: &'a str,
        sealed: Vec<u8>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        self.blobs
            .lock()
            .expect("store lock")
            .insert(credential.to_string(), sealed);
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_snapshots_round_trip_and_need_the_app_key() {
        let app_key = AesKey::random();
        let key = cache_key(&app_key);
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let sealed = seal(&key, at, b"{\"records\":[]}");
        assert!(
            !sealed.windows(7).any(|w| w == b"records"),
            "nothing readable at rest"
        );
        let (when, body) = open(&key, &sealed).unwrap();
        assert_eq!(when, at);
        assert_eq!(&*body, b"{\"records\":[]}");
        assert!(open(&cache_key(&AesKey::random()), &sealed).is_err());
        assert!(
            open(&app_key, &sealed).is_err(),
            "the app key itself is not the cache key"
        );
    }
}
