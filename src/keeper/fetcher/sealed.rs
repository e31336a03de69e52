//! The last good Keeper response, persisted so a restarted or failed-over operator can serve it.
//!
//! What is stored is the decrypted `get_secret` body: its records, folder and file keys are still
//! encrypted under the application key. That body is sealed again with AES-GCM under a key
//! derived from the application key, so the stored blob is unreadable at rest and useless
//! without the credential. The blob also carries when it was fetched, so staleness survives a
//! restart.

use crate::ksm::crypto::{AesKey, CryptoError, aes_gcm_decrypt, aes_gcm_encrypt, derive_key};
use futures::future::BoxFuture;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

const CACHE_KEY_PURPOSE: &str = "keeper-operator/last-good-cache/v1";

/// The sealed blobs kept per credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// The last good `get_secret` body ([`seal`]).
    Snapshot,
    /// The attachments KeeperSecrets map, by file UID and record revision ([`seal_files`]).
    Files,
}

/// Where sealed blobs live, keyed by credential id (a hash, never the client id itself).
pub trait SnapshotStore: Send + Sync + 'static {
    fn load<'a>(
        &'a self,
        credential: &'a str,
        part: Part,
    ) -> BoxFuture<'a, anyhow::Result<Option<Vec<u8>>>>;
    fn save<'a>(
        &'a self,
        credential: &'a str,
        part: Part,
        sealed: Vec<u8>,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Destroys every sealed blob of `credential` (nothing stored is fine).
    fn destroy<'a>(&'a self, credential: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// Room for one credential's sealed blobs together: they share one Secret, and the API server
/// refuses a Secret over 1 MiB. Attachments get what the snapshot leaves (see [`files_budget`]).
pub const MAX_STORED_BYTES: usize = 1024 * 1024 - 16 * 1024;

/// Bytes the sealed attachments may take next to a sealed snapshot of `snapshot_len` bytes.
pub fn files_budget(snapshot_len: usize) -> usize {
    MAX_STORED_BYTES.saturating_sub(snapshot_len)
}

/// An attachment kept in the sealed copy: its content as of a record revision.
pub struct StoredFile {
    pub uid: String,
    pub revision: i64,
    pub content: Zeroizing<Vec<u8>>,
}

/// `GCM(cache key, entries)`, each entry `uid length (u16) ‖ uid ‖ revision (i64) ‖ content
/// length (u32) ‖ content`, all big endian. Entries are taken in order while they fit
/// `budget` sealed bytes; the UIDs of those that did not fit are returned beside the blob.
pub fn seal_files<'a>(
    key: &AesKey,
    files: impl IntoIterator<Item = (&'a str, i64, &'a [u8])>,
    budget: usize,
) -> (Vec<u8>, Vec<String>) {
    const GCM_OVERHEAD: usize = 28;
    let mut plain = Zeroizing::new(Vec::new());
    let mut left_out = Vec::new();
    for (uid, revision, content) in files {
        let entry_len = 2 + uid.len() + 8 + 4 + content.len();
        let fits = uid.len() <= usize::from(u16::MAX)
            && u32::try_from(content.len()).is_ok()
            && plain.len() + entry_len + GCM_OVERHEAD <= budget;
        if !fits {
            left_out.push(uid.to_string());
            continue;
        }
        plain.extend_from_slice(&(uid.len() as u16).to_be_bytes());
        plain.extend_from_slice(uid.as_bytes());
        plain.extend_from_slice(&revision.to_be_bytes());
        plain.extend_from_slice(&(content.len() as u32).to_be_bytes());
        plain.extend_from_slice(content);
    }
    (aes_gcm_encrypt(key, &plain), left_out)
}

/// Opens [`seal_files`]' blob. A blob that does not authenticate or parse is refused whole.
pub fn open_files(key: &AesKey, sealed: &[u8]) -> Result<Vec<StoredFile>, CryptoError> {
    let plain = aes_gcm_decrypt(key, sealed)?;
    let mut rest: &[u8] = &plain;
    let mut files = Vec::new();
    fn take<'b>(rest: &mut &'b [u8], n: usize) -> Result<&'b [u8], CryptoError> {
        if rest.len() < n {
            return Err(CryptoError::Decrypt);
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    while !rest.is_empty() {
        let uid_len = u16::from_be_bytes(
            take(&mut rest, 2)?
                .try_into()
                .map_err(|_| CryptoError::Decrypt)?,
        );
        let uid = std::str::from_utf8(take(&mut rest, usize::from(uid_len))?)
            .map_err(|_| CryptoError::Decrypt)?
            .to_string();
        let revision = i64::from_be_bytes(
            take(&mut rest, 8)?
                .try_into()
                .map_err(|_| CryptoError::Decrypt)?,
        );
        let len = u32::from_be_bytes(
            take(&mut rest, 4)?
                .try_into()
                .map_err(|_| CryptoError::Decrypt)?,
        );
        let content = Zeroizing::new(take(&mut rest, len as usize)?.to_vec());
        files.push(StoredFile {
            uid,
            revision,
            content,
        });
    }
    Ok(files)
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

/// A process-local store, for tests.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryStore {
    blobs: std::sync::Mutex<std::collections::HashMap<(String, Part), Vec<u8>>>,
}

#[cfg(test)]
impl SnapshotStore for MemoryStore {
    fn load<'a>(
        &'a self,
        credential: &'a str,
        part: Part,
    ) -> BoxFuture<'a, anyhow::Result<Option<Vec<u8>>>> {
        let blob = self
            .blobs
            .lock()
            .expect("store lock")
            .get(&(credential.to_string(), part))
            .cloned();
        Box::pin(async move { Ok(blob) })
    }

    fn save<'a>(
        &'a self,
        credential: &'a str,
        part: Part,
        sealed: Vec<u8>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        self.blobs
            .lock()
            .expect("store lock")
            .insert((credential.to_string(), part), sealed);
        Box::pin(async { Ok(()) })
    }

    fn destroy<'a>(&'a self, credential: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        self.blobs
            .lock()
            .expect("store lock")
            .retain(|(c, _), _| c != credential);
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

    #[test]
    fn sealed_files_round_trip_within_their_budget() {
        let key = cache_key(&AesKey::random());
        let big = vec![7u8; 600];
        let files = [
            ("file-a", 3, &b"-----BEGIN CERTIFICATE-----"[..]),
            ("file-big", 1, &big[..]),
            ("file-c", 9, &b"tls key"[..]),
        ];
        let (sealed, left_out) = seal_files(&key, files, 200);
        assert_eq!(left_out, ["file-big"]);
        assert!(
            !sealed.windows(11).any(|w| w == b"BEGIN CERTI"),
            "nothing readable at rest"
        );
        let opened = open_files(&key, &sealed).unwrap();
        let got: Vec<_> = opened
            .iter()
            .map(|f| (f.uid.as_str(), f.revision, f.content.as_slice()))
            .collect();
        assert_eq!(got, [files[0], files[2]]);
        assert!(open_files(&cache_key(&AesKey::random()), &sealed).is_err());
        // A blob that authenticates but does not parse is refused, never half-read.
        let garbage = aes_gcm_encrypt(&key, &[0, 9, b'x']);
        assert!(open_files(&key, &garbage).is_err());
        let (empty, _) = seal_files(&key, [], 100);
        assert!(open_files(&key, &empty).unwrap().is_empty());
    }
}
