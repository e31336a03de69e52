//! The reconciler: credential → refresh gate → Keeper → mapping → template → apply → status.
//!
//! Every pure step lives in its own module; this file only sequences them and does the I/O.
//! On any failure the existing Secret is left untouched (the last good copy stays), the
//! Ready condition says why, and `error_policy` retries with backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::cache::Caches;
use crate::crd::{CreationPolicy, KeeperSecret, KeeperSecretStatus};
use crate::credentials::Credential;
use crate::desired::{self, HashKey, Ownership};
use crate::error::Error;
use crate::fetcher::Served;
use crate::k8s::Events;
use crate::keeper_source::KeeperSource;
use crate::ksm::record::Vault;
use crate::mapping::{self, Bytes, Source};
use crate::metrics::Metrics;
use crate::refresh::{self, Decision, Target};
use crate::rollout::Rollouts;
use crate::status::{self, Synced};
use crate::{allowlist, guard, incomplete, k8s, lock, template};
use zeroize::Zeroizing;

/// Operator-wide settings the reconciler needs (parsed once from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Refresh interval for KeeperSecrets that do not set one.
    pub default_refresh_interval: Duration,
    /// Where ClusterKeeperStore credentials live.
    pub operator_namespace: Option<String>,
    /// Least time a rollout restart waits for more requests (see [`crate::rollout::window`]).
    pub rollout_debounce: Duration,
    /// How long the last good copy keeps a KeeperSecret Ready while Keeper is unreachable.
    pub max_stale_age: Duration,
}

/// Shared state of all reconciles.
pub struct Context<S> {
    /// Kubernetes client.
    pub client: Client,
    /// Keeper access.
    pub keeper: S,
    /// Event publisher.
    pub events: Events,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
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
        metrics: Arc<Metrics>,
        settings: Settings,
        caches: Arc<Caches>,
    ) -> Self {
        let rollouts = Rollouts::new(
            client.clone(),
            events.clone(),
            metrics.clone(),
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
    let mut ks = (*ks).clone();
    ctx.caches.with_latest_status(&mut ks);
    // Parsed once, for the sync and the status-time resolution. An invalid interval fails the
    // sync, and that failure's status is compared at the default interval's resolution.
    let interval =
        refresh::interval(&ks, ctx.settings.default_refresh_interval).map_err(Error::InvalidSpec);
    let resolution = refresh::status_time_resolution(
        *interval
            .as_ref()
            .unwrap_or(&ctx.settings.default_refresh_interval),
    );
    let result = match interval {
        Ok(interval) => sync(&mut ks, &ctx, interval).await,
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
            timer.finish("synced", status::SYNCED);
            Ok(Action::requeue(after))
        }
        Err(e) => {
            let new = status::failed(&ks, Timestamp::now(), e.reason(), &e.to_string());
            if let Err(report_err) = report(&ctx, &ks, new, resolution).await {
                warn!(error = %report_err, "could not record the failure in status");
            }
            timer.finish("error", e.reason());
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
    warn!(namespace = ks.namespace().unwrap_or_default(), name = ks.name_any(), reason = err.reason(),
          error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Syncs `ks`, whose refresh interval is `interval`.
async fn sync<S: KeeperSource>(
    ks: &mut KeeperSecret,
    ctx: &Context<S>,
    interval: Duration,
) -> Result<Outcome, Error> {
    let ns = ks.namespace().unwrap_or_default();
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
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    // The target is read only when the managed-Secret reflector cannot vouch that it is still
    // the version whose data we last wrote or verified (values are never cached).
    let known = ctx.caches.target_hash(ks, &cred.key);
    let synced_at = ctx.caches.synced_at(ks);
    let mut read: Option<Option<Secret>> = None;
    let decision = match &known {
        Some(hash) => refresh::decide(
            ks,
            Target::Present(Some(hash)),
            synced_at,
            Timestamp::now(),
            interval,
        ),
        None => {
            let existing = read_target(ctx, ks, &cred, &hash_key, &secrets).await?;
            let target = Target::of(existing.as_ref(), &hash_key);
            let decision = refresh::decide(ks, target, synced_at, Timestamp::now(), interval);
            read = Some(existing);
            decision
        }
    };
    let why = match decision {
        Decision::Wait(after) => return Ok(Outcome::Wait(after)),
        Decision::Sync(why) => why,
    };
    if let Some(after) = refresh::defer(
        why,
        ctx.caches.never_attempted(),
        ks,
        synced_at,
        Timestamp::now(),
        interval,
    ) {
        return Ok(Outcome::Wait(after));
    }
    debug!(?why, "syncing from Keeper");

    if let Some(existing) = &read {
        check_target(ks, existing.as_ref())?;
    }
    let (snapshot, stale) = match ctx.keeper.vault(&cred.key, &cred.config, interval).await? {
        Served::Fresh(snapshot) => (snapshot, None),
        Served::Stale(snapshot, staleness) => (snapshot, Some(staleness)),
        Served::Unavailable(staleness) => return Err(Error::Keeper((*staleness.error).clone())),
        // Keeper is slow to answer: free this worker and pick the answer up later.
        Served::Pending(after) => return Ok(Outcome::Wait(after)),
    };
    let vault = allowlist::restrict(cred.allow.as_ref(), &ks.spec, &snapshot.vault)?;
    let plan = incomplete::check(&ks.spec, &vault, mapping::plan(&ks.spec, &vault))?;
    let data = resolve_files(ctx, &cred, &vault, plan.entries).await?;
    let data = template::apply(
        ks.spec.target.as_ref().and_then(|t| t.template.as_ref()),
        data,
    )?;
    let keys = data.len();
    let desired = desired::secret(ks, data, &hash_key)?;
    // A vouched-for Secret that already holds this data (same hash, same spec) needs no read.
    if known.as_deref() != Some(desired.hash.as_str()) {
        let existing = match read {
            Some(existing) => existing,
            None => {
                let existing = read_target(ctx, ks, &cred, &hash_key, &secrets).await?;
                check_target(ks, existing.as_ref())?;
                existing
            }
        };
        let current = existing
            .as_ref()
            .is_some_and(|e| desired::is_up_to_date(e, &desired.secret));
        if !current {
            guard::check(ks, existing.as_ref(), &desired.secret, &plan.records)?;
            let written = k8s::apply_secret(&secrets, &desired.secret).await?;
            ctx.caches
                .verified_target(ks, &cred.key, &written, &desired.hash);
            ctx.rollouts.after_write(
                ks,
                interval,
                existing.as_ref(),
                &desired.secret,
                &desired.hash,
            );
            info!(
                secret = ks.target_name(),
                keys,
                ?why,
                stale = stale.is_some(),
                "wrote Secret"
            );
        }
    }
    let fetched_at = Timestamp::try_from(snapshot.fetched_at).unwrap_or_else(|_| Timestamp::now());
    // The next refresh is due one interval after the data was fetched, not after this
    // reconcile: every KeeperSecret on a credential then falls due in the same wave and the
    // wave costs one Keeper call. While Keeper fails, retry when the fetcher will.
    let next = match &stale {
        Some(s) => {
            // Also come back when the copy expires, so Ready turns False on time.
            let expires_in = until(fetched_at, ctx.settings.max_stale_age);
            let retry_in = if expires_in.is_zero() {
                s.retry_in
            } else {
                s.retry_in.min(expires_in)
            };
            retry_in.max(refresh::MIN_INTERVAL)
        }
        None => {
            until(fetched_at, interval).max(refresh::MIN_INTERVAL) + refresh::jitter(ks, interval)
        }
    };
    let synced = Synced {
        records: plan.records.into_iter().collect(),
        data_hash: desired.hash,
        keys,
        fetched_at,
        stale: stale.map(|s| status::Stale {
            reason: s.error.reason(),
            error: s.error.to_string(),
            since: Timestamp::try_from(s.since).unwrap_or(fetched_at),
            outage: s.error.is_outage(),
            max_age: ctx.settings.max_stale_age,
        }),
    };
    let new = status::synced(ks, Timestamp::now(), &synced);
    Ok(Outcome::Synced(new, next))
}

/// Time left until `age` has passed since `since` (zero if it already has).
fn until(since: Timestamp, age: Duration) -> Duration {
    let elapsed = Timestamp::now().duration_since(since);
    jiff::SignedDuration::try_from(age)
        .map(|a| a - elapsed)
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(Duration::ZERO)
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
    let ownership = desired::ownership(ks, existing).map_err(Error::OwnedElsewhere)?;
    if ownership == Ownership::Absent && ks.creation_policy() == CreationPolicy::Merge {
        return Err(Error::TargetNotFound(format!(
            "creationPolicy Merge adds keys to an existing Secret, and Secret {} does not exist; create it or use Owner",
            ks.target_name()
        )));
    }
    Ok(())
}

/// Downloads file attachments (shared, once per record revision); a failed download fails the
/// sync, so a file never becomes an empty value. Each download may use only what the Secret
/// can still hold after the keys, the inline values and the files before it.
async fn resolve_files<S: KeeperSource>(
    ctx: &Context<S>,
    cred: &Credential,
    vault: &Vault,
    entries: BTreeMap<String, Source>,
) -> Result<BTreeMap<String, Bytes>, Error> {
    let inline: usize = entries
        .iter()
        .map(|(key, source)| match source {
            Source::Value(v) => key.len() + v.len(),
            Source::File(_) => key.len(),
        })
        .sum();
    let mut room = desired::MAX_SECRET_BYTES.saturating_sub(inline);
    let mut out = BTreeMap::new();
    for (key, source) in entries {
        let bytes = match source {
            Source::Value(v) => v,
            Source::File(file) => {
                let revision = vault
                    .records
                    .iter()
                    .find(|r| r.files.iter().any(|f| f.uid == file.uid))
                    .map_or(0, |r| r.revision);
                let bytes = ctx
                    .keeper
                    .file(&cred.key, &cred.config, revision, &file, room as u64)
                    .await?;
                room = room.saturating_sub(bytes.len());
                Zeroizing::new(bytes.to_vec())
            }
        };
        out.insert(key, bytes);
    }
    Ok(out)
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
