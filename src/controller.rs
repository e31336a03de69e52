//! Wires the reconciler into a kube-runtime `Controller`.
//!
//! - KeeperSecrets are watched through a generation predicate, so our own status writes do not
//!   trigger another reconcile (no write loops).
//! - Secrets are watched metadata-only and only with our managed-by label: memory stays bounded
//!   however many Secrets the cluster holds, and no secret value is ever cached. A change to one
//!   maps back to its KeeperSecret through the owner annotation, which every policy (Owner,
//!   Orphan, Merge) sets — so deleted or hand-edited targets are restored promptly. Their
//!   `resourceVersion`s also spare the reconciler reading a Secret that has not changed.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{debug, warn};

use crate::cache::Writers;
use crate::crd::{KeeperSecret, MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_ANNOTATION};
use crate::keeper_source::KeeperSource;
use crate::reconcile::{Context, error_policy, reconcile};

/// Runs the controller until `shutdown` resolves, feeding the reflectors of `ctx.caches`
/// through `writers`. The KeeperSecret store is returned through `on_store` so readiness can
/// wait for the initial list.
pub async fn run<S: KeeperSource>(
    ctx: Arc<Context<S>>,
    writers: Writers,
    watch_namespace: Option<&str>,
    concurrency: u16,
    on_store: impl FnOnce(Store<KeeperSecret>),
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client: Client = ctx.client.clone();
    let (keeper_secrets, secrets): (Api<KeeperSecret>, Api<PartialObjectMeta<Secret>>) =
        match watch_namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
    let reader = writers.keeper_secrets.as_reader();
    on_store(reader.clone());
    let main = watcher(keeper_secrets, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|ks| slim(&mut ks.metadata))
        .reflect(writers.keeper_secrets)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
    let targets = watcher(
        secrets,
        watcher::Config::default().labels(&managed).any_semantic(),
    )
    .default_backoff()
    .modify(|meta| slim(&mut meta.metadata))
    .reflect(writers.targets)
    .touched_objects();
    Controller::for_stream(main, reader)
        .watches_stream(targets, |meta| {
            let owner = meta.annotations().get(OWNER_ANNOTATION)?;
            Some(ObjectRef::<KeeperSecret>::new(owner).within(&meta.namespace()?))
        })
        .with_config(kube::runtime::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(namespace = obj.namespace, name = obj.name, "reconciled"),
                // Reconcile errors are logged by error_policy; these are queue/watch errors.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => warn!(error = %e, "controller error"),
            }
        })
        .await;
}

/// kubectl's copy of the whole object as last applied (for a Secret applied with kubectl, its
/// data).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the reflectors keep of an object's metadata: managedFields and kubectl's last-applied
/// copy are never read, so dropping them keeps memory small at scale, and a Merge-policy Secret
/// applied with kubectl never brings its values into the metadata cache.
fn slim(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slim_drops_only_what_is_never_read() {
        let mut meta = ObjectMeta {
            name: Some("db".into()),
            managed_fields: Some(vec![Default::default()]),
            annotations: Some(
                [
                    (LAST_APPLIED.to_string(), "{\"data\":{}}".to_string()),
                    (OWNER_ANNOTATION.to_string(), "db".to_string()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        };
        slim(&mut meta);
        assert_eq!(meta.managed_fields, None);
        let annotations = meta.annotations.unwrap();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations[OWNER_ANNOTATION], "db");
        assert_eq!(meta.name.as_deref(), Some("db"));
    }
}
