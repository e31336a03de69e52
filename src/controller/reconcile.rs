//! The reconciler. One KeeperSecret's sync runs through stages, one module each:
//!
//! [`observe`] (API: credential, target) → [`decide`] (pure: is anything due?) → [`fetch`]
//! (Keeper: the credential's shared snapshot) → [`build`] (the checks `kubectl keeper render`
//! runs too, read again from Keeper while `decide` says so) → [`plan`] (pure: skip, apply,
//! adopt, delete or refuse) → [`apply`] (API) → [`report`] (status, event).
//!
//! The memo is read once at the start ([`Caches::recall`]) and updated once at the end
//! ([`Caches::learn`]), whatever the outcome. On any failure the existing Secret is left
//! untouched (the last good copy stays), the Ready condition says why, and `error_policy`
//! retries with backoff.

mod apply;
mod build;
mod decide;
mod fetch;
mod observe;
mod plan;
mod report;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

use crate::api::{KeeperSecret, KeeperSecretStatus, Reason};
use crate::controller::memo::{Caches, Learned, Recall};
use crate::controller::metrics::ReconcileMetrics;
use crate::error::{Error, SpecError};
use crate::k8s::Events;
use crate::k8s::rollout::{RolloutMetrics, Rollouts};
use crate::keeper::KeeperSource;
use crate::lock;
use crate::sync::refresh::{self, Why};
use crate::sync::status;
use build::Settled;
use decide::Start;
use fetch::Fetch;

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
    let mut recall = ctx.caches.recall(&ks);
    let mut ks = (*ks).clone();
    if let Some(status) = recall.status.take() {
        ks.status = Some(status);
    }
    let mut learned = Learned::default();
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
        Ok(interval) => sync(&ks, &ctx, &recall, &mut learned, interval, now).await,
        Err(e) => Err(e),
    };
    let action = match result {
        Ok(Outcome::Wait(after)) => {
            debug!(requeue_after = ?after, "nothing due");
            timer.finish("skipped", "");
            Ok(Action::requeue(after))
        }
        Ok(Outcome::Synced(new, after)) => {
            lock(&ctx.failures).remove(ks.uid().as_deref().unwrap_or_default());
            let reported = report::report(&ctx, &ks, new, resolution, &mut learned).await;
            reported.map(|()| {
                timer.finish("synced", Reason::Synced.as_str());
                Action::requeue(after)
            })
        }
        Err(e) => {
            let new = status::failed(&ks, now, e.reason(), &e.to_string());
            if let Err(report_err) = report::report(&ctx, &ks, new, resolution, &mut learned).await
            {
                warn!(error = %report_err, "could not record the failure in status");
            }
            timer.finish("error", e.reason().as_str());
            Err(e)
        }
    };
    ctx.caches.learn(&ks, learned);
    action
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

/// Syncs `ks`, whose refresh interval is `interval`, as of `now`: the stages in order.
async fn sync<S: KeeperSource>(
    ks: &KeeperSecret,
    ctx: &Context<S>,
    recall: &Recall,
    learned: &mut Learned,
    interval: Duration,
    now: Timestamp,
) -> Result<Outcome, Error> {
    // A sync request soon after the last one waits for the spacing, before any API request,
    // so a storm of force-sync annotations costs one sync per spacing.
    let spacing = ctx.settings.forced_sync_spacing;
    if let Some(after) = refresh::coalesce_request(ks, recall.forced_at, now, spacing) {
        return Ok(Outcome::Wait(after));
    }
    let seen = observe::observe(ctx, ks, recall, learned).await?;
    let backlog = ctx.caches.backlog();
    let due = match decide::due(ks, &seen, recall, backlog, now, interval)? {
        Start::Wait(after) => return Ok(Outcome::Wait(after)),
        Start::Defer(at_most) => {
            ctx.caches.defer(ks);
            return Ok(Outcome::Wait(at_most));
        }
        Start::Sync(due) => due,
    };
    debug!(why = ?due.why, "syncing from Keeper");
    if due.why == Why::Requested {
        learned.forced_at = Some(now);
    }
    let fetched = match fetch::fetch(ctx, &seen.cred, due.max_age).await? {
        Fetch::Served(fetched) => fetched,
        Fetch::Later(after) => return Ok(Outcome::Wait(after)),
    };
    let (built, fetched) =
        match build::settle(ctx, ks, &seen, fetched, recall, learned, now).await? {
            Settled::Built(built, fetched) => (built, fetched),
            Settled::Wait(after) => return Ok(Outcome::Wait(after)),
        };
    let credential = seen.cred.key.clone();
    let existing = observe::existing(ctx, ks, seen, &built, learned).await?;
    let plan = plan::plan(ks, &built, existing);
    if let Some(did) = apply::apply(ctx, ks, plan, &credential, interval, learned).await? {
        let (secret, keys, stale) = (ks.target_name(), built.keys, fetched.stale.is_some());
        info!(secret, keys, why = ?due.why, stale, "{did}");
    }
    let (status, next) = report::synced(ks, built, &fetched, &ctx.settings, interval, now);
    Ok(Outcome::Synced(status, next))
}

#[cfg(test)]
mod tests;
