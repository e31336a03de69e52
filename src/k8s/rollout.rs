//! Rollout restarts of the workloads named in `spec.rolloutRestart`.
//!
//! - [`needed`] (pure) says whether a write changed the data a workload consumes: only when this
//!   KeeperSecret had synced before and the values really differ. A first sync, a restored
//!   Secret with the same data or a status-only change never restarts, so nothing can loop.
//! - [`Rollouts`] debounces: restarts of one workload requested within the [`window`] (several
//!   KeeperSecrets fed by one Keeper change) become one patch of the pod template annotation
//!   [`RESTARTED_AT_ANNOTATION`], as `kubectl rollout restart` does with its own.
//! - A missing workload or a refused patch is a Warning event on the KeeperSecrets that asked,
//!   never a failed sync: their Secret was written.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::api::{
    FIELD_MANAGER, KEYS_ANNOTATION, KeeperSecret, RESTARTED_AT_ANNOTATION, Reason, WorkloadKind,
};
use crate::k8s::Events;
use crate::lock;
use crate::sync::refresh;

/// PURE: whether writing `desired` over `existing` changes the data consumers see.
///
/// `previous_hash` is the data hash of this KeeperSecret's last sync (status). Without one this
/// is the first sync: consumers are starting with this data anyway. The hash is keyed by the
/// credential, so a rotated credential changes it with equal values; when the Secret exists its
/// values decide.
pub fn needed(
    previous_hash: Option<&str>,
    new_hash: &str,
    existing: Option<&Secret>,
    desired: &Secret,
) -> bool {
    match previous_hash {
        None => false,
        Some(previous) if previous == new_hash => false,
        Some(_) => !existing.is_some_and(|e| same_data(e, desired)),
    }
}

/// Our keys (per the keys annotation) and their values are equal; other keys (Merge) ignored.
fn same_data(existing: &Secret, desired: &Secret) -> bool {
    let keys = |s: &Secret| s.annotations().get(KEYS_ANNOTATION).cloned();
    let value = |s: &Secret, k: &str| -> Option<ByteString> { s.data.as_ref()?.get(k).cloned() };
    keys(existing) == keys(desired)
        && desired
            .data
            .iter()
            .flatten()
            .all(|(k, v)| value(existing, k).as_ref() == Some(v))
}

/// PURE: how long a restart waits for more requests. KeeperSecrets on one credential see a
/// Keeper change in the same refresh wave, but their refreshes are spread by the jitter, and one
/// whose reconcile failed transiently (a conflict, an API hiccup) retries up to `MIN_INTERVAL`
/// later. Restarting before the last of them has written would restart twice, the second time
/// for the same change.
pub fn window(debounce: Duration, interval: Duration) -> Duration {
    let wave = refresh::jitter_span(interval) + refresh::MIN_INTERVAL + Duration::from_secs(1);
    debounce.max(wave)
}

/// One workload, in the KeeperSecret's namespace.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Workload {
    namespace: String,
    kind: WorkloadKind,
    name: String,
}

/// Label set of a rollout restart.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    kind: &'static str,
    /// `restarted`, `not_found`, `forbidden` or `error`.
    outcome: &'static str,
}

/// Restart attempts by kind and outcome; clones share the series.
#[derive(Clone)]
pub struct RolloutMetrics {
    restarts: Family<RolloutLabels, Counter>,
}

impl RolloutMetrics {
    /// Rollout metrics that `registry` exports.
    pub fn register(registry: &mut Registry) -> Self {
        let restarts = Family::<RolloutLabels, Counter>::default();
        registry.register(
            "rollout_restarts",
            "Workload restarts after synced data changed (spec.rolloutRestart), by kind and outcome",
            restarts.clone(),
        );
        RolloutMetrics { restarts }
    }

    /// Counts one rollout restart attempt.
    pub fn restart(&self, kind: &'static str, outcome: &'static str) {
        self.restarts
            .get_or_create(&RolloutLabels { kind, outcome })
            .inc();
    }
}

/// Debounced restarts; cheap to share (clones share the pending set).
#[derive(Clone)]
pub struct Rollouts {
    client: Client,
    events: Events,
    metrics: RolloutMetrics,
    debounce: Duration,
    /// Workloads with a restart scheduled, and the KeeperSecrets that asked for it.
    pending: Arc<Mutex<HashMap<Workload, Vec<ObjectReference>>>>,
}

impl Rollouts {
    /// Restarts happen at least `debounce` after the first request for a workload.
    pub fn new(
        client: Client,
        events: Events,
        metrics: RolloutMetrics,
        debounce: Duration,
    ) -> Self {
        Rollouts {
            client,
            events,
            metrics,
            debounce,
            pending: Arc::default(),
        }
    }

    /// Called after `ks` (refreshed every `interval`) wrote `desired` over `existing`:
    /// schedules restarts if [`needed`].
    pub fn after_write(
        &self,
        ks: &KeeperSecret,
        interval: Duration,
        existing: Option<&Secret>,
        desired: &Secret,
        new_hash: &str,
    ) {
        let previous = ks.status.as_ref().and_then(|s| s.data_hash.as_deref());
        if ks.spec.rollout_restart.is_empty() || !needed(previous, new_hash, existing, desired) {
            return;
        }
        let namespace = ks.namespace().unwrap_or_default();
        let requester = ks.object_ref(&());
        for target in &ks.spec.rollout_restart {
            let workload = Workload {
                namespace: namespace.clone(),
                kind: target.kind,
                name: target.name.clone(),
            };
            let mut pending = lock(&self.pending);
            match pending.entry(workload.clone()) {
                Entry::Occupied(mut asked) => {
                    if !asked.get().contains(&requester) {
                        asked.get_mut().push(requester.clone());
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(vec![requester.clone()]);
                    let (this, wait) = (self.clone(), window(self.debounce, interval));
                    tokio::spawn(async move { this.restart_later(workload, wait).await });
                }
            }
        }
    }

    async fn restart_later(self, workload: Workload, wait: Duration) {
        tokio::time::sleep(wait).await;
        let requesters = lock(&self.pending).remove(&workload).unwrap_or_default();
        let result = patch(&self.client, &workload, Timestamp::now()).await;
        let kind = kind_name(workload.kind);
        let (name, ns) = (&workload.name, &workload.namespace);
        let (outcome, event) = match &result {
            Ok(()) => {
                info!(namespace = ns, kind, name, "rollout restart");
                let note = format!("Restarted {kind} {name}: the synced data changed");
                (
                    "restarted",
                    (EventType::Normal, Reason::RolloutRestarted, note),
                )
            }
            Err(e) => {
                let (outcome, why) = match e {
                    kube::Error::Api(s) if s.code == 404 => ("not_found", "it does not exist"),
                    kube::Error::Api(s) if s.code == 403 => (
                        "forbidden",
                        "the operator may not patch it (chart value rbac.rolloutRestart)",
                    ),
                    _ => ("error", "the Kubernetes API failed"),
                };
                warn!(namespace = ns, kind, name, error = %e, "rollout restart failed");
                let note = format!("Could not restart {kind} {name}: {why}");
                (
                    outcome,
                    (EventType::Warning, Reason::RolloutRestartFailed, note),
                )
            }
        };
        self.metrics.restart(kind, outcome);
        let (type_, reason, note) = event;
        for requester in requesters {
            self.events
                .publish(
                    &requester,
                    type_,
                    "RolloutRestart",
                    reason.as_str().into(),
                    note.clone(),
                )
                .await;
        }
    }
}

/// Metric label and event wording for a kind.
fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::DaemonSet => "DaemonSet",
    }
}

/// A JSON merge patch of just our annotation: it cannot touch fields other managers own, and a
/// missing workload is a 404 (an apply would try to create it).
async fn patch(client: &Client, w: &Workload, at: Timestamp) -> Result<(), kube::Error> {
    let body = Patch::Merge(serde_json::json!({
        "spec": { "template": { "metadata": { "annotations": {
            RESTARTED_AT_ANNOTATION: at.to_string(),
        } } } }
    }));
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let ns = &w.namespace;
    match w.kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(&w.name, &params, &body)
            .await
            .map(drop),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch(&w.name, &params, &body)
            .await
            .map(drop),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .patch(&w.name, &params, &body)
            .await
            .map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(keys: &str, data: &[(&str, &str)]) -> Secret {
        let mut s = Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        s.annotations_mut()
            .insert(KEYS_ANNOTATION.into(), keys.into());
        s
    }

    #[test]
    fn restarts_only_when_synced_data_really_changes() {
        let old = secret("password", &[("password", "old")]);
        let new = secret("password", &[("password", "new")]);
        // First sync: never, whatever the Secret looks like.
        assert!(!needed(None, "h2", None, &new));
        assert!(!needed(None, "h2", Some(&old), &new));
        // Same hash: status-only change, or a deleted Secret restored with the same data.
        assert!(!needed(Some("h1"), "h1", Some(&new), &new));
        assert!(!needed(Some("h1"), "h1", None, &new));
        // A value changed.
        assert!(needed(Some("h1"), "h2", Some(&old), &new));
        // Hash changed but the values did not (the credential was rotated): no restart.
        assert!(!needed(Some("h1"), "h2", Some(&new), &new));
        // The Secret is gone and the hash moved: the consumers' data changes.
        assert!(needed(Some("h1"), "h2", None, &new));
    }

    #[test]
    fn the_window_covers_one_refresh_wave() {
        let s = Duration::from_secs;
        // 5 s interval: 0.5 s jitter + 5 s retry + 1 s rounding.
        assert_eq!(window(s(3), s(5)), Duration::from_millis(6500));
        // 1 h interval: the jitter is capped at a minute.
        assert_eq!(window(s(5), s(3600)), s(66));
        // A longer debounce wins.
        assert_eq!(window(s(120), s(3600)), s(120));
    }

    #[test]
    fn a_removed_key_is_a_change_and_foreign_keys_are_not() {
        let two = secret("a,b", &[("a", "1"), ("b", "2")]);
        let one = secret("a", &[("a", "1")]);
        assert!(needed(Some("h1"), "h2", Some(&two), &one));
        // Merge: the existing Secret has someone else's key too; ours are unchanged.
        let merged = secret("a", &[("a", "1"), ("theirs", "x")]);
        assert!(!needed(Some("h1"), "h2", Some(&merged), &one));
    }
}
