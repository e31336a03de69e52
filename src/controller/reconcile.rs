//! The reconciler. One KeeperSecret's sync is a pipeline (see [`sync`]):
//!
//! observe (credential, target Secret, memo) → decide (is anything due?) → fetch (the
//! credential's shared snapshot) → build ([`crate::sync::build`], the checks `kubectl keeper
//! render` runs too) → guard and apply (Secret, then rollout restarts) → report (status, event).
//!
//! Every decision is a pure function in its own module (`refresh`, `mapping`, `template`,
//! `desired`, `guard`, `status`); this file sequences them and does the I/O. On any failure the
//! existing Secret is left untouched (the last good copy stays), the Ready condition says why,
//! and `error_policy` retries with backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::api::{CreationPolicy, KeeperSecret, KeeperSecretStatus, Reason, Template};
use crate::controller::memo::Caches;
use crate::controller::metrics::ReconcileMetrics;
use crate::error::{Error, SpecError};
use crate::k8s::Events;
use crate::k8s::credentials::Credential;
use crate::k8s::rollout::{RolloutMetrics, Rollouts};
use crate::keeper::KeeperSource;
use crate::keeper::fetcher::{Origin, Served, Snapshot};
use crate::ksm::record::{KeeperFile, Vault};
use crate::sync::build::{self, Built, Write};
use crate::sync::desired::{self, HashKey, Ownership, TargetRefusal};
use crate::sync::mapping::Bytes;
use crate::sync::refresh::{self, Decision, OnMiss, Target};
use crate::sync::status::{self, Synced};
use crate::sync::{hold, write_guard};
use crate::{k8s, lock};
use zeroize::Zeroizing;

/// Operator-wide settings the reconciler needs (parsed once from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Refresh interval for KeeperSecrets that do not set one.
    pub default_refresh_interval: Duration,
    /// Where ClusterKeeperStore credentials live.
    pub operator_namespace: Option<String>,
    /// Least time a rollout restart waits for more requests (see [`crate::k8s::rollout::window`]).
    pub rollout_debounce: Duration,
    /// How long the last good copy keeps a KeeperSecret Ready while Keeper is unreachable.
    pub max_stale_age: Duration,
    /// Least time between two requested syncs of one KeeperSecret
    /// ([`refresh::FORCED_SYNC_SPACING`]).
    pub forced_sync_spacing: Duration,
}

/// Shared state of all reconciles.
pub struct Context<S> {
    /// Kubernetes client.
    pub client: Client,
    /// Keeper access.
    pub keeper: S,
    /// Event publisher.
    pub events: Events,
    /// Reconcile outcomes and durations.
    pub metrics: ReconcileMetrics,
    /// Settings.
    pub settings: Settings,
    /// Debounced rollout restarts (`spec.rolloutRestart`).
    pub rollouts: Rollouts,
    /// Reflectors and what earlier reconciles learned.
    pub caches: Arc<Caches>,
    /// Consecutive failures per KeeperSecret UID, for backoff; cleared on success.
    failures: Mutex<HashMap<String, u32>>,
}

impl<S> Context<S> {
    /// A context for the controller.
    pub fn new(
        client: Client,
        keeper: S,
        events: Events,
        metrics: ReconcileMetrics,
        rollout_metrics: RolloutMetrics,
        settings: Settings,
        caches: Arc<Caches>,
    ) -> Self {
        let rollouts = Rollouts::new(
            client.clone(),
            events.clone(),
            rollout_metrics,
            settings.rollout_debounce,
        );
        Context {
            client,
            keeper,
            events,
            metrics,
            settings,
            rollouts,
            caches,
            failures: Mutex::default(),
        }
    }
}

enum Outcome {
    /// Nothing was due.
    Wait(Duration),
    /// Keeper was read and the Secret is current.
    Synced(KeeperSecretStatus, Duration),
}

/// Reconciles one KeeperSecret.
#[tracing::instrument(skip_all, fields(namespace = ks.namespace().unwrap_or_default(), name = ks.name_any()))]
pub async fn reconcile<S: KeeperSource>(
    ks: Arc<KeeperSecret>,
    ctx: Arc<Context<S>>,
) -> Result<Action, Error> {
    let timer = ctx.metrics.reconcile();
    // The clock is read once: every decision of this reconcile is made as of the same instant.
    let now = Timestamp::now();
    let mut ks = (*ks).clone();
    ctx.caches.with_latest_status(&mut ks);
    // Parsed once, for the sync and the status-time resolution. An invalid interval fails the
    // sync, and that failure's status is compared at the default interval's resolution.
    let interval = refresh::interval(&ks, ctx.settings.default_refresh_interval)
        .map_err(|e| SpecError::RefreshInterval(e).into());
    let resolution = refresh::status_time_resolution(
        *interval
            .as_ref()
            .unwrap_or(&ctx.settings.default_refresh_interval),
    );
    let result = match interval {
        Ok(interval) => sync(&ks, &ctx, interval, now).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(Outcome::Wait(after)) => {
            debug!(requeue_after = ?after, "nothing due");
            timer.finish("skipped", "");
            Ok(Action::requeue(after))
        }
        Ok(Outcome::Synced(new, after)) => {
            lock(&ctx.failures).remove(ks.uid().as_deref().unwrap_or_default());
            report(&ctx, &ks, new, resolution).await?;
            timer.finish("synced", Reason::Synced.as_str());
            Ok(Action::requeue(after))
        }
        Err(e) => {
            let new = status::failed(&ks, now, e.reason(), &e.to_string());
            if let Err(report_err) = report(&ctx, &ks, new, resolution).await {
                warn!(error = %report_err, "could not record the failure in status");
            }
            timer.finish("error", e.reason().as_str());
            Err(e)
        }
    }
}

/// Retries failures with per-object exponential backoff.
pub fn error_policy<S>(ks: Arc<KeeperSecret>, err: &Error, ctx: Arc<Context<S>>) -> Action {
    let attempt = {
        let mut failures = lock(&ctx.failures);
        let n = failures.entry(ks.uid().unwrap_or_default()).or_insert(0);
        *n = n.saturating_add(1);
        *n - 1
    };
    let delay = err.backoff(attempt);
    warn!(namespace = ks.namespace().unwrap_or_default(), name = ks.name_any(), reason = err.reason().as_str(),
          error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Syncs `ks`, whose refresh interval is `interval`, as of `now`: a pipeline whose steps are
/// each one function. Steps marked API or Keeper do I/O; the others are pure.
async fn sync<S: KeeperSource>(
    ks: &KeeperSecret,
    ctx: &Context<S>,
    interval: Duration,
    now: Timestamp,
) -> Result<Outcome, Error> {
    // Coalesce (pure): a sync request soon after the last one waits for the spacing, before any
    // API request, so a storm of force-sync annotations costs one sync per spacing.
    let last_forced = ctx.caches.forced_at(ks);
    let spacing = ctx.settings.forced_sync_spacing;
    if let Some(after) = refresh::coalesce_request(ks, last_forced, now, spacing) {
        return Ok(Outcome::Wait(after));
    }
    // Observe (API: the credential; the target, unless the memo vouches for it).
    let seen = observe(ctx, ks).await?;
    // Decide (pure).
    let target = match &seen.target {
        Seen::Vouched(hash) => Target::Present(Some(hash)),
        Seen::Read(existing) => Target::of(existing.as_deref(), &seen.hash_key),
    };
    let synced_at = ctx.caches.synced_at(ks);
    let backlog = ctx.caches.never_attempted();
    let why = match refresh::due(ks, target, synced_at, backlog, now, interval) {
        Decision::Wait(after) => return Ok(Outcome::Wait(after)),
        Decision::Sync(why) => why,
    };
    debug!(?why, "syncing from Keeper");
    if let Seen::Read(existing) = &seen.target {
        check_target(ks, existing.as_deref())?;
    }
    if why == refresh::Why::Requested {
        ctx.caches.forced(ks, now);
    }
    // Fetch (Keeper: the credential's shared snapshot, or its last good copy).
    let seen_at = ctx.caches.requested_at(ks);
    let max_age = refresh::max_age(why, ks, seen_at, interval, now);
    let (mut snapshot, stale) = match ctx
        .keeper
        .vault(&seen.cred.key, &seen.cred.config, max_age)
        .await?
    {
        Served::Fresh(snapshot) => (snapshot, None),
        Served::Stale(snapshot, staleness) => (snapshot, Some(staleness)),
        Served::Unavailable(staleness) => return Err(Error::Keeper((*staleness.error).clone())),
        // Keeper is slow to answer: free this worker and pick the answer up later.
        Served::Pending(after) => return Ok(Outcome::Wait(after)),
    };
    // A refused credential (not an outage) stops every write: the Secret keeps what it holds,
    // and nothing is created or re-created from the last good copy.
    let latest = match &stale {
        Some(_) => None,
        None => ctx
            .keeper
            .health(&seen.cred.key)
            .await
            .and_then(|h| h.failure.map(|(e, _)| e)),
    };
    if let Some(refused) = hold::refusal(stale.as_ref().map(|s| &*s.error), latest.as_deref()) {
        return Err(Error::CredentialRefused(refused.clone()));
    }
    // Build (pure, but for file attachments and a record missing from older data: Keeper).
    let fresh = stale.is_none();
    let mut built = match build(ctx, ks, &seen, &snapshot.vault).await {
        Err(e) if fresh && e.reason().is_missing_reference() => {
            let missed_at = ctx.caches.first_miss(ks, now);
            match refresh::on_miss(ks, fetched_at(&snapshot, now), missed_at, now) {
                OnMiss::Fail => return Err(e),
                OnMiss::Wait(after) => {
                    debug!(
                        ?after,
                        "not in the shared data; reading Keeper again when it is older"
                    );
                    return Ok(Outcome::Wait(after));
                }
                OnMiss::Refetch(max_age) => {
                    snapshot = refetch(ctx, &seen, max_age).await?.ok_or(e)?;
                    build(ctx, ks, &seen, &snapshot.vault).await?
                }
            }
        }
        built => built?,
    };
    // A record a deletion policy leaves out may be new rather than deleted.
    if fresh
        && !built.gone.is_empty()
        && let OnMiss::Refetch(max_age) =
            refresh::on_miss(ks, fetched_at(&snapshot, now), None, now)
        && let Some(fresher) = refetch(ctx, &seen, max_age).await?
    {
        snapshot = fresher;
        built = build(ctx, ks, &seen, &snapshot.vault).await?;
    }
    // Deletions follow only records absent from two clean, fresh answers (one more is read
    // at once when the shared data is old enough).
    if !deletion_may_proceed(ctx, ks, &snapshot, &built, fresh)? {
        if let Some(fresher) = refetch(ctx, &seen, refresh::REFETCH_FLOOR).await?
            && fresher.fetched_at != snapshot.fetched_at
        {
            snapshot = fresher;
            built = build(ctx, ks, &seen, &snapshot.vault).await?;
        }
        if !deletion_may_proceed(ctx, ks, &snapshot, &built, fresh)? {
            return Err(Error::DeletionHeld {
                why: hold::HoldReason::AwaitingSecondAnswer,
                gone: list(&built.gone),
            });
        }
    }
    // Guard and apply (API: the target, if not read yet; the Secret; rollout restarts).
    if apply(ctx, ks, seen, &built, interval).await? {
        let wrote = match built.write {
            Write::Apply(_) => "wrote Secret",
            Write::Delete { .. } => "deleted Secret: every record it maps is gone from Keeper",
        };
        info!(
            secret = ks.target_name(),
            keys = built.keys,
            ?why,
            stale = stale.is_some(),
            "{wrote}"
        );
    }
    // Report (pure): the status to write and when to come back.
    let fetched_at = fetched_at(&snapshot, now);
    let max_stale_age = ctx.settings.max_stale_age;
    let next = refresh::next(
        ks,
        fetched_at,
        now,
        interval,
        stale.as_ref().map(|s| s.retry_in),
        max_stale_age,
    );
    let data_hash = match built.write {
        Write::Apply(desired) => desired.hash,
        Write::Delete { hash } => hash,
    };
    let synced = Synced {
        records: built.records.into_iter().collect(),
        data_hash,
        keys: built.keys,
        gone: built.gone.into_iter().collect(),
        fetched_at,
        stale: stale.map(|s| status::Stale {
            reason: s.error.reason(),
            error: s.error.to_string(),
            since: Timestamp::try_from(s.since).unwrap_or(fetched_at),
            outage: s.error.is_outage(),
            max_age: max_stale_age,
        }),
    };
    Ok(Outcome::Synced(status::synced(ks, now, &synced), next))
}

/// Whether what `built` would remove from the Secret may go (`Ok(true)`, also when nothing
/// would), or waits for a second fresh answer (`Ok(false)`, the first one remembered); an
/// error when the answer cannot prove anything (stale, or not everything decrypted).
fn deletion_may_proceed<S>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    snapshot: &Snapshot,
    built: &Built,
    fresh: bool,
) -> Result<bool, Error> {
    let source = if fresh && snapshot.origin == Origin::Keeper {
        hold::Source::Fresh
    } else {
        hold::Source::LastGood
    };
    let previous = ctx.caches.gone_sighting(ks);
    match hold::deletion(
        &built.gone,
        source,
        snapshot.vault.skipped.is_empty(),
        snapshot.fetched_at,
        previous.as_ref(),
    ) {
        hold::Deletion::NothingGone => {
            if previous.is_some() {
                ctx.caches.set_gone_sighting(ks, None);
            }
            Ok(true)
        }
        hold::Deletion::Confirmed => Ok(true),
        hold::Deletion::Held(hold::HoldReason::AwaitingSecondAnswer, sighting) => {
            ctx.caches.set_gone_sighting(ks, sighting);
            Ok(false)
        }
        hold::Deletion::Held(why, _) => Err(Error::DeletionHeld {
            why,
            gone: list(&built.gone),
        }),
    }
}

/// At most five names, comma-separated.
fn list(names: &BTreeSet<String>) -> String {
    const SHOWN: usize = 5;
    let mut shown: Vec<&str> = names.iter().map(String::as_str).take(SHOWN).collect();
    if names.len() > SHOWN {
        shown.push("...");
    }
    shown.join(", ")
}

/// When `snapshot` was fetched (`now` if its clock reading is out of range).
fn fetched_at(snapshot: &Snapshot, now: Timestamp) -> Timestamp {
    Timestamp::try_from(snapshot.fetched_at).unwrap_or(now)
}

/// Reads Keeper again for data at most `max_age` old (`None` if none comes).
async fn refetch<S: KeeperSource>(
    ctx: &Context<S>,
    seen: &Observed,
    max_age: Duration,
) -> Result<Option<Arc<Snapshot>>, Error> {
    debug!("not in the shared data; reading Keeper again");
    match ctx
        .keeper
        .vault(&seen.cred.key, &seen.cred.config, max_age)
        .await?
    {
        Served::Fresh(fresher) => Ok(Some(fresher)),
        _ => Ok(None),
    }
}

/// What a reconcile starts from: the credential, and the target Secret as far as it is known.
struct Observed {
    cred: Arc<Credential>,
    hash_key: HashKey,
    secrets: Api<Secret>,
    target: Seen,
}

impl Observed {
    /// The target Secret as observe read it (sync has checked it), or, when the memo only
    /// vouched for it, read and checked now. Takes it out of `self.target`.
    async fn take_existing<S>(
        &mut self,
        ctx: &Context<S>,
        ks: &KeeperSecret,
    ) -> Result<Option<Secret>, Error> {
        match std::mem::replace(&mut self.target, Seen::Read(None)) {
            Seen::Read(existing) => Ok(existing.map(|e| *e)),
            Seen::Vouched(_) => {
                let existing =
                    read_target(ctx, ks, &self.cred, &self.hash_key, &self.secrets).await?;
                check_target(ks, existing.as_ref())?;
                Ok(existing)
            }
        }
    }
}

/// How the target Secret is known.
enum Seen {
    /// The memo vouches that it still holds data with this hash (it was not read).
    Vouched(String),
    /// Read from the API server (`None`: it does not exist).
    Read(Option<Box<Secret>>),
}

/// Observe: loads the credential and learns what the target holds, reading it only when the
/// managed-Secret reflector cannot vouch that it is still the version whose data we last wrote
/// or verified (values are never cached).
async fn observe<S: KeeperSource>(ctx: &Context<S>, ks: &KeeperSecret) -> Result<Observed, Error> {
    let cred = ctx
        .caches
        .credentials
        .load(
            &ctx.client,
            &ctx.keeper,
            ks,
            ctx.settings.operator_namespace.as_deref(),
        )
        .await?;
    let hash_key = cred.hash_key(ks.metadata.uid.as_deref().unwrap_or_default());
    let secrets =
        Api::<Secret>::namespaced(ctx.client.clone(), &ks.namespace().unwrap_or_default());
    let target = match ctx.caches.target_hash(ks, &cred.key) {
        Some(hash) => Seen::Vouched(hash),
        None => Seen::Read(
            read_target(ctx, ks, &cred, &hash_key, &secrets)
                .await?
                .map(Box::new),
        ),
    };
    Ok(Observed {
        cred,
        hash_key,
        secrets,
        target,
    })
}

/// What a build reads through the operator: files from the credential's shared fetcher
/// (cached per record revision), templates on the render pool with `templateFrom` from the API.
struct Sources<'a, S> {
    ctx: &'a Context<S>,
    ks: &'a KeeperSecret,
    cred: &'a Credential,
}

impl<S: KeeperSource> build::Inputs for Sources<'_, S> {
    async fn file(&self, file: &KeeperFile, revision: i64, room: usize) -> Result<Bytes, Error> {
        let (cred, keeper) = (self.cred, &self.ctx.keeper);
        let bytes = keeper
            .file(&cred.key, &cred.config, revision, file, room as u64)
            .await?;
        Ok(Zeroizing::new(bytes.to_vec()))
    }

    /// Reads the templates `templateFrom` names (API: one read each) and renders on the
    /// render pool, off the async workers: `htpasswd` spends CPU time by design.
    async fn render(
        &self,
        template: &Template,
        values: BTreeMap<String, Bytes>,
        key: &HashKey,
    ) -> Result<BTreeMap<String, Bytes>, Error> {
        let namespace = self.ks.namespace().unwrap_or_default();
        let from =
            k8s::templates::read(&self.ctx.client, &namespace, &template.template_from).await?;
        let renders = crate::controller::renders::shared();
        let rendered = renders.render(&namespace, template.clone(), from, values, key.clone());
        Ok(rendered.await?)
    }
}

/// Build: the desired Secret from `vault` through the checks every caller runs
/// ([`build::build`]).
async fn build<S: KeeperSource>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    seen: &Observed,
    vault: &Vault,
) -> Result<Built, Error> {
    let cred = &seen.cred;
    let sources = Sources { ctx, ks, cred };
    build::build(ks, cred.allow.as_ref(), vault, &seen.hash_key, &sources).await
}

/// Guard and apply: writes the desired Secret unless the target already holds it (`true` when
/// it wrote). A vouched-for
/// target with the same hash (same data, same spec) needs no read; otherwise the target is read
/// (if observe did not), checked for ownership, compared, and the write guard has the last word.
async fn apply<S: KeeperSource>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    mut seen: Observed,
    built: &Built,
    interval: Duration,
) -> Result<bool, Error> {
    let desired = match &built.write {
        Write::Apply(desired) => desired,
        Write::Delete { .. } => return delete(ctx, ks, seen, &built.gone).await,
    };
    if matches!(&seen.target, Seen::Vouched(hash) if *hash == desired.hash) {
        return Ok(false);
    }
    let existing = seen.take_existing(ctx, ks).await?;
    // Only a Secret created here (now, or before for this KeeperSecret) gets the created-for
    // marker and an owner reference.
    let mut secret = desired.secret.clone();
    desired::mark(ks, desired::provenance(ks, existing.as_ref()), &mut secret);
    // An unmanaged Secret is replaced whole (adopted), or refused with the keys it would touch.
    let unmanaged = existing
        .as_ref()
        .filter(|e| desired::ownership(ks, Some(e)) == Ok(Ownership::Unmanaged));
    if let Some(e) = unmanaged {
        desired::adoption(ks, e, &secret)?;
    } else if existing
        .as_ref()
        .is_some_and(|e| desired::is_up_to_date(e, &secret))
    {
        return Ok(false);
    }
    write_guard::check(ks, existing.as_ref(), &secret, &built.records)?;
    let written = match unmanaged {
        Some(e) => {
            info!(secret = ks.target_name(), "adopting an existing Secret");
            k8s::replace_secret(&seen.secrets, e, &secret).await?
        }
        None if existing.is_some() => k8s::apply_secret(&seen.secrets, &secret).await?,
        None => match k8s::create_secret(&seen.secrets, &secret).await? {
            k8s::Created::Created(written) => *written,
            k8s::Created::Raced => {
                return Err(TargetRefusal::Appeared {
                    name: ks.target_name(),
                }
                .into());
            }
        },
    };
    ctx.caches
        .verified_target(ks, &seen.cred.key, &written, &desired.hash);
    ctx.rollouts
        .after_write(ks, interval, existing.as_ref(), &secret, &desired.hash);
    Ok(true)
}

/// Deletes the target Secret if it exists and the operator created it for `ks` (`true` when it
/// did); any other Secret is kept whole, and the status says why.
async fn delete<S>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    mut seen: Observed,
    gone: &BTreeSet<String>,
) -> Result<bool, Error> {
    let Some(existing) = seen.take_existing(ctx, ks).await? else {
        return Ok(false);
    };
    // Only a Secret the operator created for this KeeperSecret is ever deleted.
    if desired::ownership(ks, Some(&existing)) != Ok(Ownership::Ours)
        || !desired::created_for(ks, &existing)
    {
        return Err(Error::DeletionHeld {
            why: hold::HoldReason::NotCreatedHere,
            gone: list(gone),
        });
    }
    Ok(k8s::delete_secret(&seen.secrets, &existing).await?)
}

/// Reads the target Secret, remembering its version when its data checks out against its own
/// hash annotation.
async fn read_target<S>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    cred: &Credential,
    hash_key: &HashKey,
    secrets: &Api<Secret>,
) -> Result<Option<Secret>, Error> {
    let existing = secrets.get_opt(&ks.target_name()).await?;
    if let Some(secret) = &existing
        && let Some(hash) = desired::verified_hash(secret, hash_key)
    {
        ctx.caches.verified_target(ks, &cred.key, secret, hash);
    }
    Ok(existing)
}

/// Refuses a target owned by someone else, or a missing one that Merge was meant to add to.
fn check_target(ks: &KeeperSecret, existing: Option<&Secret>) -> Result<(), Error> {
    let ownership = desired::ownership(ks, existing)?;
    if ownership == Ownership::Absent && ks.creation_policy() == CreationPolicy::Merge {
        return Err(Error::TargetNotFound {
            name: ks.target_name(),
        });
    }
    Ok(())
}

/// Writes the status if it changed (beyond `lastSyncTime` moving less than `resolution`) and
/// publishes an event if Ready transitioned.
async fn report<S>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    new: KeeperSecretStatus,
    resolution: Duration,
) -> Result<(), Error> {
    if !status::worth_writing(ks.status.as_ref(), &new, resolution) {
        if let Some(at) = &new.last_sync_time {
            ctx.caches.synced_without_status(ks, at.0);
        }
        return Ok(());
    }
    let api =
        Api::<KeeperSecret>::namespaced(ctx.client.clone(), &ks.namespace().unwrap_or_default());
    let written = k8s::apply_status(&api, &ks.name_any(), &new).await?;
    if let Some(status) = written.status {
        ctx.caches.wrote_status(ks, status);
    }
    if let Some(t) = status::transition(ks.status.as_ref(), &new) {
        let type_ = if t.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.events
            .publish(&ks.object_ref(&()), type_, "Sync", t.reason, t.note)
            .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
