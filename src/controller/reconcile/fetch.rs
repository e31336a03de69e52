//! Fetch (Keeper): the credential's shared snapshot, or its last good copy while Keeper fails.

use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::Context;
use crate::error::Error;
use crate::k8s::credentials::Credential;
use crate::keeper::KeeperSource;
use crate::keeper::fetcher::{Served, Snapshot, Staleness};
use crate::sync::hold;

/// The data a sync builds from.
pub(super) struct Fetched {
    pub snapshot: Arc<Snapshot>,
    /// Set when Keeper fails and `snapshot` is the last good copy.
    pub stale: Option<Staleness>,
}

/// What the fetch stage hands on.
pub(super) enum Fetch {
    Served(Fetched),
    /// Keeper is slow to answer: free this worker and pick the answer up after this long.
    Later(Duration),
}

/// Data at most `max_age` old. A refused credential (not an outage) stops every write: the
/// Secret keeps what it holds, and nothing is created or re-created from the last good copy.
pub(super) async fn fetch<S: KeeperSource>(
    ctx: &Context<S>,
    cred: &Credential,
    max_age: Duration,
) -> Result<Fetch, Error> {
    let (snapshot, stale) = match ctx.keeper.vault(&cred.key, &cred.config, max_age).await? {
        Served::Fresh(snapshot) => (snapshot, None),
        Served::Stale(snapshot, staleness) => (snapshot, Some(staleness)),
        Served::Unavailable(staleness) => return Err(Error::Keeper((*staleness.error).clone())),
        Served::Pending(after) => return Ok(Fetch::Later(after)),
    };
    let latest = match &stale {
        Some(_) => None,
        None => ctx
            .keeper
            .health(&cred.key)
            .await
            .and_then(|h| h.failure.map(|(e, _)| e)),
    };
    if let Some(refused) = hold::refusal(stale.as_ref().map(|s| &*s.error), latest.as_deref()) {
        return Err(Error::CredentialRefused(refused.clone()));
    }
    Ok(Fetch::Served(Fetched { snapshot, stale }))
}

/// Reads Keeper again for data at most `max_age` old (`None` if none comes).
pub(super) async fn refetch<S: KeeperSource>(
    ctx: &Context<S>,
    cred: &Credential,
    max_age: Duration,
) -> Result<Option<Arc<Snapshot>>, Error> {
    debug!(?max_age, "reading Keeper again");
    match ctx.keeper.vault(&cred.key, &cred.config, max_age).await? {
        Served::Fresh(fresher) => Ok(Some(fresher)),
        _ => Ok(None),
    }
}
