//! What a fetcher needs of Keeper: the seam between the fetcher's caching and the client.

use futures::future::BoxFuture;
use zeroize::Zeroizing;

use crate::ksm::crypto::AesKey;
use crate::ksm::error::KsmError;
use crate::ksm::record::{KeeperFile, Vault};

/// What a fetcher needs from Keeper for one credential (the real one wraps `KsmClient`).
pub trait Upstream: Send + Sync + 'static {
    /// One `get_secret` for everything the application can read: the decrypted response body,
    /// whose record data is still encrypted under the application key.
    fn fetch(&self) -> BoxFuture<'_, Result<Zeroizing<Vec<u8>>, KsmError>>;
    /// Unwraps a body returned by `fetch` (or restored from the store).
    fn decode(&self, body: &[u8]) -> Result<Vault, KsmError>;
    /// A file's content; refused (`TooLarge`) beyond `budget` bytes.
    fn download<'a>(
        &'a self,
        file: &'a KeeperFile,
        budget: u64,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KsmError>>;
    /// The key sealing this credential's persisted snapshots.
    fn cache_key(&self) -> AesKey;
}
