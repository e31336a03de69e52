//! PURE: should this reconcile read Keeper, or is everything current?
//!
//! Skipping is what keeps Keeper traffic at one read per interval and makes status writes
//! converge: a KeeperSecret is left alone only when its spec was synced (generation), the last
//! sync is younger than the refresh interval, and the Secret still carries exactly the data we
//! wrote (verified against the keyed hash, so deleted or hand-edited Secrets resync at once).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};

use crate::api::conditions;
use crate::api::{
    ConditionStatus, ConditionType, FLUX_REQUESTED_AT_ANNOTATION, FORCE_SYNC_ANNOTATION,
    KeeperSecret, RefreshPolicy,
};
use crate::sync::desired::{self, HashKey};

/// Precision of times in status (RFC 3339 with whole seconds).
const STATUS_TIME_PRECISION: jiff::SignedDuration = jiff::SignedDuration::from_secs(1);

/// Refresh intervals below this are raised to it.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// What a reconcile should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Read Keeper and write what changed, for this reason.
    Sync(Why),
    /// Nothing to do until the refresh is due.
    Wait(Duration),
    /// The refresh is due but waits for KeeperSecrets never reconciled (see [`defer`]): until
    /// they are, or for this long at most.
    Defer(Duration),
}

/// Why a sync is needed (for logs).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Why {
    /// Never synced, or the last attempt failed.
    NotSynced,
    /// The Secret holds the last good copy because Keeper failed: keep trying (the shared
    /// fetcher's backoff decides when a request is really sent).
    Stale,
    /// The spec changed since the last sync.
    SpecChanged,
    /// The refresh interval has elapsed.
    Due,
    /// The target Secret is gone.
    SecretMissing,
    /// The target Secret no longer holds the data we wrote.
    SecretChanged,
    /// Someone asked for a sync (the force-sync or Flux's requestedAt annotation).
    Requested,
}

/// What is known about the target Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// It does not exist.
    Missing,
    /// It exists and its data matches this data-hash annotation; `None` when it does not
    /// (hand-edited, keys deleted, or hashed with another credential).
    Present(Option<&'a str>),
}

impl<'a> Target<'a> {
    /// Verifies a Secret as read from the API server.
    pub fn of(secret: Option<&'a Secret>, key: &HashKey) -> Self {
        match secret {
            None => Target::Missing,
            Some(s) => Target::Present(desired::verified_hash(s, key)),
        }
    }
}

/// The refresh interval of `ks`, falling back to `default` (also for `0`, which turns periodic
/// refreshes off but still bounds the age of the data a change is synced with); an unparsable
/// value yields an error message (admission validates the format, so this only guards old
/// objects).
pub fn interval(ks: &KeeperSecret, default: Duration) -> Result<Duration, String> {
    let Some(text) = ks.spec.refresh_interval.as_deref() else {
        return Ok(default.max(MIN_INTERVAL));
    };
    let parsed: kube::core::Duration = text.parse().map_err(|e| {
        format!("refreshInterval {text:?} is not a duration like 30s, 5m or 1h: {e}")
    })?;
    if parsed.is_negative() {
        return Err(format!("refreshInterval {text:?} must not be negative"));
    }
    let d: Duration = parsed.into();
    if d.is_zero() {
        return Ok(default.max(MIN_INTERVAL));
    }
    Ok(d.max(MIN_INTERVAL))
}

/// The refresh policy `ks` follows: its `refreshPolicy`, where `refreshInterval: 0` turns
/// Periodic into OnChange.
pub fn policy(ks: &KeeperSecret) -> RefreshPolicy {
    let declared = ks.spec.refresh_policy.unwrap_or_default();
    let zero = ks
        .spec
        .refresh_interval
        .as_deref()
        .and_then(|t| t.parse::<kube::core::Duration>().ok())
        .is_some_and(|d| Duration::from(d).is_zero());
    match declared {
        RefreshPolicy::Periodic if zero => RefreshPolicy::OnChange,
        declared => declared,
    }
}

/// Decides whether to sync now.
/// `synced_at` is a sync newer than `status.lastSyncTime` shows (see
/// [`crate::sync::status::worth_writing`]).
pub fn decide(
    ks: &KeeperSecret,
    target: Target,
    synced_at: Option<Timestamp>,
    now: Timestamp,
    interval: Duration,
) -> Decision {
    let status = ks.status.as_ref();
    let ready = ks
        .ready_condition()
        .is_some_and(|c| c.status == ConditionStatus::True.as_str());
    let (Some(status), true) = (status, ready) else {
        return Decision::Sync(Why::NotSynced);
    };
    if requested_sync(ks).is_some() {
        return Decision::Sync(Why::Requested);
    }
    if conditions::has(
        &status.conditions,
        ConditionType::Stale,
        ConditionStatus::True,
    ) {
        return Decision::Sync(Why::Stale);
    }
    if status.observed_generation != ks.metadata.generation {
        return Decision::Sync(Why::SpecChanged);
    }
    let Some(last) = status.last_sync_time.as_ref() else {
        return Decision::Sync(Why::NotSynced);
    };
    let policy = policy(ks);
    match target {
        Target::Missing => return Decision::Sync(Why::SecretMissing),
        Target::Present(Some(h)) if Some(h) == status.data_hash.as_deref() => {}
        // CreatedOnce keeps whatever the Secret holds now.
        Target::Present(_) if policy == RefreshPolicy::CreatedOnce => {}
        Target::Present(_) => return Decision::Sync(Why::SecretChanged),
    }
    if policy != RefreshPolicy::Periodic {
        // Only a change wakes this object; looking again after an interval costs no call.
        return Decision::Wait(interval);
    }
    // lastSyncTime has whole seconds and the fetch it records was up to a second later: counting
    // from the start of that second would find the refresh due while the credential's shared
    // snapshot is still fresh, so the reconcile would get the old data and miss the wave.
    let recorded = last.0 + STATUS_TIME_PRECISION;
    let last = synced_at.map_or(recorded, |s| s.max(recorded));
    let elapsed = now.duration_since(last);
    let remaining =
        jiff::SignedDuration::try_from(interval).unwrap_or(jiff::SignedDuration::MAX) - elapsed;
    match Duration::try_from(remaining) {
        Ok(left) if !left.is_zero() => Decision::Wait(left + jitter(ks, interval)),
        _ => Decision::Sync(Why::Due),
    }
}

/// The value of the sync-request annotations of `ks` (`keeper-operator.dev/force-sync`, Flux's
/// `reconcile.fluxcd.io/requestedAt`; both joined by `,` when both are set), if any.
pub fn sync_request(ks: &KeeperSecret) -> Option<String> {
    let annotations = ks.metadata.annotations.as_ref()?;
    let values: Vec<&str> = [FORCE_SYNC_ANNOTATION, FLUX_REQUESTED_AT_ANNOTATION]
        .iter()
        .filter_map(|a| annotations.get(*a).map(String::as_str))
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// A sync request of `ks` its status has not answered yet.
pub fn requested_sync(ks: &KeeperSecret) -> Option<String> {
    let request = sync_request(ks)?;
    let handled = ks.status.as_ref()?.last_handled_reconcile_at.as_deref();
    (handled != Some(request.as_str())).then_some(request)
}

/// How far apart [`jitter`] spreads the refreshes of KeeperSecrets with this interval.
pub fn jitter_span(interval: Duration) -> Duration {
    (interval / 10).min(Duration::from_secs(60))
}

/// The least a due refresh may be deferred for a backlog (see [`defer`]): a cold start of
/// thousands of objects takes minutes, longer than short refresh intervals.
pub const MAX_DEFERRAL: Duration = Duration::from_secs(300);

/// Cold objects first: while some KeeperSecrets were never reconciled, a refresh that is merely
/// due waits until they are (the controller wakes deferred refreshes when the backlog drains),
/// so a cold start converges even when the refresh interval is shorter than one pass over
/// everything. Corrections (spec changed, Secret edited or deleted, Keeper failing) never
/// wait, and no refresh waits beyond one extra interval (at least [`MAX_DEFERRAL`]), so a
/// backlog that cannot drain never starves refreshes. Returns that longest wait.
pub fn defer(
    why: Why,
    never_attempted: usize,
    ks: &KeeperSecret,
    synced_at: Option<Timestamp>,
    now: Timestamp,
    interval: Duration,
) -> Option<Duration> {
    if why != Why::Due || never_attempted == 0 {
        return None;
    }
    let last = ks.status.as_ref()?.last_sync_time.as_ref()?.0;
    let last = synced_at.map_or(last, |s| s.max(last));
    let age = Duration::try_from(now.duration_since(last)).unwrap_or(Duration::ZERO);
    let allowance = interval + interval.max(MAX_DEFERRAL);
    allowance.checked_sub(age).filter(|left| !left.is_zero())
}

/// [`decide`], then [`defer`]: whether this reconcile reads Keeper, given what is known of the
/// target, an unrecorded later sync, and how many KeeperSecrets were never reconciled.
pub fn due(
    ks: &KeeperSecret,
    target: Target,
    synced_at: Option<Timestamp>,
    never_attempted: usize,
    now: Timestamp,
    interval: Duration,
) -> Decision {
    match decide(ks, target, synced_at, now, interval) {
        Decision::Sync(why) => match defer(why, never_attempted, ks, synced_at, now, interval) {
            Some(at_most) => Decision::Defer(at_most),
            None => Decision::Sync(why),
        },
        wait => wait,
    }
}

/// How old the shared data this sync may use can be: one interval, or, for a requested sync,
/// no older than the request ([`requested_max_age`]; `seen_at` is when the watch first showed
/// it), so many requests made together still share one call.
pub fn max_age(
    why: Why,
    ks: &KeeperSecret,
    seen_at: Option<Timestamp>,
    interval: Duration,
    now: Timestamp,
) -> Duration {
    match why {
        Why::Requested => sync_request(ks)
            .map_or(Duration::ZERO, |request| {
                requested_max_age(&request, seen_at, now)
            })
            .min(interval),
        _ => interval,
    }
}

/// Whether a sync request of `ks` waits, and how long, because a requested sync ran less than
/// `spacing` ago: requests made meanwhile coalesce into one later sync. Only while its spec is
/// synced: a spec change never waits for the spacing.
pub fn coalesce_request(
    ks: &KeeperSecret,
    last_forced: Option<Timestamp>,
    now: Timestamp,
    spacing: Duration,
) -> Option<Duration> {
    requested_sync(ks)?;
    let spec_synced = ks
        .status
        .as_ref()
        .is_some_and(|s| s.observed_generation == ks.metadata.generation);
    if !spec_synced {
        return None;
    }
    forced_sync_wait(last_forced, now, spacing)
}

/// Forced syncs of one KeeperSecret run at most this often; requests made in between are
/// answered together by the next one, so a burst of annotation changes costs one sync.
pub const FORCED_SYNC_SPACING: Duration = Duration::from_secs(10);

/// How long a sync request must wait so forced syncs of one KeeperSecret stay `spacing` apart
/// (normally [`FORCED_SYNC_SPACING`]), given when the last one ran (`None`: run it now).
pub fn forced_sync_wait(
    last_forced: Option<Timestamp>,
    now: Timestamp,
    spacing: Duration,
) -> Option<Duration> {
    let last = last_forced?;
    let since = Duration::try_from(now.duration_since(last)).unwrap_or(Duration::ZERO);
    spacing.checked_sub(since).filter(|left| !left.is_zero())
}

/// The oldest data a requested sync may use: data fetched after the request was made, so a
/// change made in Keeper before someone asked for a sync is always picked up. The request's
/// time is the annotation's value (`kubectl keeper refresh` and Flux write RFC 3339 times; the
/// latest counts when both annotations are set), or else `seen_at`, when the watch first showed
/// the request (later than it was made). A time in the future, or no time at all, asks for
/// data fetched now.
pub fn requested_max_age(request: &str, seen_at: Option<Timestamp>, now: Timestamp) -> Duration {
    let times: Option<Vec<Timestamp>> = request.split(',').map(|v| v.trim().parse().ok()).collect();
    times
        .and_then(|t| t.into_iter().max())
        .or(seen_at)
        .and_then(|asked| Duration::try_from(now.duration_since(asked)).ok())
        .unwrap_or(Duration::ZERO)
}

/// How old the shared data must be before a missing record or field reads Keeper again: the
/// most one credential's misses cost is one Keeper call per floor.
pub const REFETCH_FLOOR: Duration = Duration::from_secs(10);

/// What a sync does when a record or field its spec names is missing from the shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMiss {
    /// The reference is missing: fail, and retry at the normal pace.
    Fail,
    /// Read Keeper again for data at most this old (fetched after the miss was first seen).
    Refetch(Duration),
    /// The data is younger than the floor: come back when it is not (the miss is remembered,
    /// so the wait ends even when siblings keep the shared data young).
    Wait(Duration),
}

/// PURE: whether a miss of `ks` in data fetched at `fetched_at` reads Keeper again. A user who
/// creates a record and then applies a KeeperSecret for it should not wait for the
/// credential's next refresh. Only a generation not synced or attempted yet qualifies (a new or
/// changed spec): the failure is recorded for that generation, so retries of a reference that
/// stays missing wait for the refresh and cost no extra call. `missed_at` is when this
/// generation first missed (none yet: now); data fetched after it settles the question.
/// Otherwise Keeper is read again once the data is [`REFETCH_FLOOR`] old, so misses on one
/// credential coalesce into one call per floor.
pub fn on_miss(
    ks: &KeeperSecret,
    fetched_at: Timestamp,
    missed_at: Option<Timestamp>,
    now: Timestamp,
) -> OnMiss {
    let new_generation = ks
        .status
        .as_ref()
        .is_none_or(|s| s.observed_generation != ks.metadata.generation);
    let missed_at = missed_at.unwrap_or(now);
    if !new_generation || fetched_at > missed_at {
        return OnMiss::Fail;
    }
    let since = |t: Timestamp| Duration::try_from(now.duration_since(t)).unwrap_or(Duration::ZERO);
    let age = since(fetched_at);
    if age >= REFETCH_FLOOR {
        OnMiss::Refetch(since(missed_at))
    } else {
        OnMiss::Wait(REFETCH_FLOOR - age)
    }
}

/// When to reconcile again after a sync of data fetched at `fetched_at`. Fresh data: one
/// interval after the fetch, not after this reconcile, so every KeeperSecret on a credential
/// falls due in the same wave and the wave costs one Keeper call. The last good copy (Keeper
/// failing): when the fetcher retries (`retry_in`), or when the copy turns older than
/// `max_stale_age` if that is sooner, so Ready turns False on time.
pub fn next(
    ks: &KeeperSecret,
    fetched_at: Timestamp,
    now: Timestamp,
    interval: Duration,
    retry_in: Option<Duration>,
    max_stale_age: Duration,
) -> Duration {
    match retry_in {
        Some(retry_in) => {
            let expires_in = until(fetched_at, max_stale_age, now);
            let retry_in = if expires_in.is_zero() {
                retry_in
            } else {
                retry_in.min(expires_in)
            };
            retry_in.max(MIN_INTERVAL)
        }
        None if policy(ks) != RefreshPolicy::Periodic => interval,
        None => until(fetched_at, interval, now).max(MIN_INTERVAL) + jitter(ks, interval),
    }
}

/// Time left at `now` until `age` has passed since `since` (zero if it already has).
fn until(since: Timestamp, age: Duration, now: Timestamp) -> Duration {
    let elapsed = now.duration_since(since);
    jiff::SignedDuration::try_from(age)
        .map(|a| a - elapsed)
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(Duration::ZERO)
}

/// Below this, a status that only moves `lastSyncTime` is not rewritten (see
/// [`crate::sync::status::worth_writing`]): at least one interval, and at least this long.
pub const STATUS_TIME_RESOLUTION: Duration = Duration::from_secs(300);

/// The resolution of `lastSyncTime` in status for `interval`: every wave at long intervals,
/// every few minutes at short ones.
pub fn status_time_resolution(interval: Duration) -> Duration {
    interval.max(STATUS_TIME_RESOLUTION)
}

/// A stable per-object offset (up to a tenth of the interval, at most a minute) so many
/// KeeperSecrets created together do not all refresh in the same instant.
pub fn jitter(ks: &KeeperSecret, interval: Duration) -> Duration {
    let span = jitter_span(interval).as_millis() as u64;
    if span == 0 {
        return Duration::ZERO;
    }
    let seed = ks
        .metadata
        .uid
        .as_deref()
        .or(ks.metadata.name.as_deref())
        .unwrap_or_default();
    let digest = Sha256::digest(seed.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
    Duration::from_millis(n % span)
}

#[cfg(test)]
mod tests;
