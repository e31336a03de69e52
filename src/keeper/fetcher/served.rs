//! What a fetcher hands its callers: the data, how fresh it is, and what it knows of Keeper.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use crate::ksm::error::KsmError;
use crate::ksm::record::Vault;

/// A downloaded, decrypted file, shared by every Secret that maps it.
pub type FileBytes = Arc<Zeroizing<Vec<u8>>>;

/// Where a served snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Keeper,
    /// Restored from the persisted last-good store (Keeper not reachable since start).
    Store,
}

/// A decrypted vault and when Keeper returned it.
#[derive(Debug)]
pub struct Snapshot {
    pub vault: Vault,
    pub fetched_at: SystemTime,
    pub origin: Origin,
}

/// Why the data being served is not fresh.
#[derive(Debug, Clone)]
pub struct Staleness {
    pub error: Arc<KsmError>,
    /// When fetching started failing.
    pub since: SystemTime,
    /// When the fetcher will try Keeper again.
    pub retry_in: Duration,
}

/// What a credential's fetcher knows of Keeper's recent answers, learned without asking it.
#[derive(Debug, Clone, Default)]
pub struct KeeperHealth {
    /// When Keeper last answered with data (a copy restored from the sealed store does not count).
    pub fetched_at: Option<SystemTime>,
    /// The failure of the latest attempts, and since when they fail.
    pub failure: Option<(Arc<KsmError>, SystemTime)>,
    /// The latest answer was too large to persist as the last good copy.
    pub persist_refused: bool,
}

/// The answer to "give me this credential's data".
#[derive(Debug, Clone)]
pub enum Served {
    Fresh(Arc<Snapshot>),
    /// Keeper failed; this is the last good copy.
    Stale(Arc<Snapshot>, Staleness),
    /// Keeper failed and there is no copy at all.
    Unavailable(Staleness),
    /// A fetch is still running past [`super::PATIENCE`]; ask again after this long.
    Pending(Duration),
}
