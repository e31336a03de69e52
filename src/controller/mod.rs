//! Wires the reconciler into a kube-runtime `Controller`.
//!
//! - KeeperSecrets are watched through a generation predicate
//!   ([`crate::controller::memo::Caches::new_generation`]), so our own status writes do not trigger another
//!   reconcile (no write loops).
//! - Secrets are watched metadata-only and only with our managed-by label: memory stays bounded
//!   however many Secrets the cluster holds, and no secret value is ever cached. A change to one
//!   maps back to its KeeperSecret through the owner annotation, which every policy (Owner,
//!   Orphan, Merge) sets — so deleted or hand-edited targets are restored promptly. Their
//!   `resourceVersion`s also spare the reconciler reading a Secret that has not changed.
//! - A shard (`--watch-label-selector`) watches only its KeeperSecrets, and only the Secrets
//!   carrying its value of [`SHARD_LABEL`], which the reconciler copies from the KeeperSecret.
//!   A Secret not (yet) labelled so, e.g. written before sharding was turned on, is seen once its
//!   KeeperSecret's next write labels it; until then only a change to the KeeperSecret, or its
//!   refresh, repairs it.

#[cfg(test)]
pub mod fixtures;
pub mod memo;
pub mod metrics;
pub mod reconcile;
pub mod renders;
pub mod stores;
pub mod target_versions;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::{
    FLUX_REQUESTED_AT_ANNOTATION, FORCE_SYNC_ANNOTATION, KeeperSecret, MANAGED_BY_LABEL,
    MANAGED_BY_VALUE, OWNER_ANNOTATION, SHARD_LABEL,
};
use crate::cli::selector::LabelSelector;
use crate::controller::memo::Writers;
use crate::controller::reconcile::{Context, error_policy, reconcile};
use crate::keeper::KeeperSource;

/// The KeeperSecrets one operator reconciles.
pub struct Scope<'a> {
    /// One namespace, or all of them.
    pub namespace: Option<&'a str>,
    /// Only those whose labels match (a shard); empty matches all.
    pub selector: &'a LabelSelector,
}

/// Runs the controller until `shutdown` resolves, feeding the reflectors of `ctx.caches`
/// through `writers`, and with `store_status` the ClusterKeeperStore status pass. The
/// KeeperSecret store is returned through `on_store` so readiness can wait for the initial list.
pub async fn run<S: KeeperSource>(
    ctx: Arc<Context<S>>,
    writers: Writers,
    scope: Scope<'_>,
    store_status: bool,
    concurrency: u16,
    on_store: impl FnOnce(Store<KeeperSecret>),
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client: Client = ctx.client.clone();
    let (keeper_secrets, secrets): (Api<KeeperSecret>, Api<PartialObjectMeta<Secret>>) =
        match scope.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
    let reader = writers.keeper_secrets.as_reader();
    on_store(reader.clone());
    // Paged initial lists (500 objects a page, as client-go's), not the "any" semantic: with
    // resourceVersion=0 the API server ignores the page size and answers the whole list at
    // once, which a restart at 50,000 KeeperSecrets would hold in memory all together.
    let mut config = watcher::Config::default();
    if !scope.selector.is_empty() {
        config = config.labels(&scope.selector.to_string());
    }
    let main = watcher(keeper_secrets, config)
        .default_backoff()
        .modify(|ks| {
            // The sync-request annotations are the only ones the reconciler reads.
            slim(
                &mut ks.metadata,
                &[FORCE_SYNC_ANNOTATION, FLUX_REQUESTED_AT_ANNOTATION],
            );
            // Unlike a Secret's, a KeeperSecret's version is never read; every copy of the
            // controller's object references (store, queue) would carry it.
            ks.metadata.resource_version = None;
            shrink(ks);
        })
        .reflect(writers.keeper_secrets)
        .inspect_ok({
            let caches = ctx.caches.clone();
            move |event| match event {
                watcher::Event::Delete(ks) => caches.forget(ks),
                // A re-list: deletions missed while the watch was down are forgotten too.
                watcher::Event::InitDone => caches.forget_unlisted(),
                _ => {}
            }
        })
        .applied_objects()
        .try_filter({
            let caches = ctx.caches.clone();
            move |ks| {
                caches.observed(ks);
                future::ready(caches.new_generation(ks))
            }
        });
    let versions = writers.targets;
    let targets = watcher(
        secrets,
        watcher::Config::default().labels(&target_selector(scope.selector)),
    )
    .default_backoff()
    .modify(|meta| slim(&mut meta.metadata, &[OWNER_ANNOTATION]))
    // The owner annotation only maps an event to its KeeperSecret; the store keeps versions.
    .inspect_ok(move |event| versions.apply_watcher_event(event))
    .touched_objects();
    // Store status runs beside the controller (so only on the leader) and stops with it.
    let stores = store_status.then(|| tokio::spawn(stores::run(ctx.clone(), reader.clone())));
    let drained = ctx.caches.clone().drained();
    let stopping = CancellationToken::new();
    Controller::for_stream(main, reader.clone())
        .reconcile_on(drained)
        .watches_stream(targets, move |meta| {
            let owner = meta.annotations().get(OWNER_ANNOTATION)?;
            let ks = ObjectRef::<KeeperSecret>::new(owner).within(&meta.namespace()?);
            // Another shard's KeeperSecret (a selector on other labels than the sharding key,
            // or one just relabelled) is not ours to reconcile.
            reader.get(&ks).map(|_| ks)
        })
        .graceful_shutdown_on({
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                stopping.cancel();
            }
        })
        .run(in_turn(concurrency, stopping, reconcile), error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(namespace = obj.namespace, name = obj.name, "reconciled"),
                // Reconcile errors are logged by error_policy; these are queue/watch errors.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => warn!(error = %e, "controller error"),
            }
        })
        .await;
    if let Some(stores) = stores {
        stores.abort();
    }
}

/// `reconcile`, `concurrency` at a time, in the order their requests fell due.
///
/// kube's own cap (`Config::concurrency`) is not used: while every worker is busy, its
/// scheduler parks each request that falls due in a hash set and a freed worker takes whichever
/// the set yields first, so with refreshes always falling due (50,000 KeeperSecrets at 10 s)
/// some objects were never reconciled. Measured against kube 5's applier alone (4 workers, 2,000
/// objects requeued every 200 ms): 404 of 2,000 reconciled in 20 s with kube's cap, all 2,000
/// within 2 s through a FIFO semaphore. Requests now wait on tokio's semaphore, which grants
/// permits first come, first served; the reconcile itself is allocated only once its turn comes,
/// so a waiting request costs a small future, not a whole reconcile. Once `stopping` is
/// cancelled (shutdown), requests still waiting end without reconciling, so a shutdown waits
/// only for the reconciles under way, as with kube's cap.
fn in_turn<K, C, E, Fut>(
    concurrency: u16,
    stopping: CancellationToken,
    reconcile: impl Fn(Arc<K>, Arc<C>) -> Fut + Clone + Send + 'static,
) -> impl FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, E>>
where
    K: Send + Sync + 'static,
    C: Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    let workers = Arc::new(Semaphore::new(usize::from(concurrency.max(1))));
    move |object, ctx| {
        let (workers, stopping, reconcile) = (workers.clone(), stopping.clone(), reconcile.clone());
        Box::pin(async move {
            // The permit is held until the reconcile ends; the semaphore is never closed.
            let _turn = tokio::select! {
                biased;
                () = stopping.cancelled() => return Ok(Action::await_change()),
                turn = workers.acquire() => turn,
            };
            Box::pin(reconcile(object, ctx)).await
        })
    }
}

/// The managed Secrets a shard watches: those carrying the selector's terms on [`SHARD_LABEL`],
/// the one label of the KeeperSecret that its Secrets carry too.
fn target_selector(selector: &LabelSelector) -> String {
    let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
    let shard = selector.on_key(SHARD_LABEL);
    if shard.is_empty() {
        managed
    } else {
        format!("{managed},{shard}")
    }
}

/// Waits until `store` holds its initial list; `false` if its reflector is gone. kube's
/// readiness latch wakes only its most recent waiter, and the Controller waits on it too, so
/// this polls instead of parking on it once.
pub async fn listed<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    loop {
        let wait = tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready());
        match wait.await {
            Ok(ready) => return ready.is_ok(),
            Err(_) => continue,
        }
    }
}

/// Gives the lists a cached KeeperSecret holds back the room they do not use. JSON carries no
/// length ahead of a list, so each was grown while it was read: two items take room for four
/// (~0.7 KB per KeeperSecret of the bench, two data items with two conditions and records).
fn shrink(ks: &mut KeeperSecret) {
    ks.spec.data.shrink_to_fit();
    ks.spec.data_from.shrink_to_fit();
    ks.spec.rollout_restart.shrink_to_fit();
    if let Some(status) = &mut ks.status {
        status.conditions.shrink_to_fit();
        status.records.shrink_to_fit();
    }
}

/// What the reflectors keep of an object's metadata: only what the operator reads. Everything
/// else — managedFields, GitOps tools' labels and annotations, kubectl's last-applied copy — is
/// dropped, which keeps memory small at scale and means a Merge-policy Secret applied with
/// kubectl never brings its values (in last-applied) into the cache. `keep` lists the
/// annotations kept; the one label kept is [`SHARD_LABEL`], which the reconciler copies.
fn slim(meta: &mut ObjectMeta, keep: &[&str]) {
    let annotations: BTreeMap<String, String> = keep
        .iter()
        .filter_map(|key| {
            let value = meta.annotations.as_mut()?.remove(*key)?;
            Some((key.to_string(), value))
        })
        .collect();
    let annotations = (!annotations.is_empty()).then_some(annotations);
    let labels = meta
        .labels
        .as_mut()
        .and_then(|l| l.remove_entry(SHARD_LABEL));
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        generation: meta.generation.take(),
        creation_timestamp: meta.creation_timestamp.take(),
        deletion_timestamp: meta.deletion_timestamp.take(),
        labels: labels.map(|shard| BTreeMap::from([shard])),
        annotations,
        ..ObjectMeta::default()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kube's applier with every worker always busy (each object requeued sooner than all can
    /// run): through `in_turn` every object still gets its turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_object_gets_a_turn_while_the_workers_are_always_busy() {
        use kube::runtime::controller::{Config, applier};
        use std::collections::HashSet;
        use std::sync::Mutex;

        const OBJECTS: usize = 500;
        let (store, mut writer) = kube::runtime::reflector::store::<Secret>();
        writer.apply_watcher_event(&watcher::Event::Init);
        let refs: Vec<_> = (0..OBJECTS)
            .map(|i| {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(format!("s-{i}")),
                        namespace: Some("ns".into()),
                        ..ObjectMeta::default()
                    },
                    ..Secret::default()
                };
                writer.apply_watcher_event(&watcher::Event::InitApply(secret.clone()));
                Ok::<_, std::convert::Infallible>(ObjectRef::from_obj(&secret))
            })
            .collect();
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
        let busy = |secret: Arc<Secret>, seen: Arc<Mutex<HashSet<String>>>| async move {
            seen.lock().unwrap().insert(secret.name_any());
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok::<_, std::io::Error>(Action::requeue(Duration::from_millis(50)))
        };
        let run = applier(
            in_turn(2, CancellationToken::new(), busy),
            |_, _, _| Action::await_change(),
            seen.clone(),
            store,
            futures::stream::iter(refs).chain(futures::stream::pending()),
            Config::default(),
        );
        let running = tokio::spawn(run.for_each(|_| async {}));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while seen.lock().unwrap().len() < OBJECTS && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        running.abort();
        assert_eq!(
            seen.lock().unwrap().len(),
            OBJECTS,
            "objects left without a turn"
        );
    }

    #[tokio::test]
    async fn requests_still_waiting_at_shutdown_end_without_reconciling() {
        let stopping = CancellationToken::new();
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let hold = Arc::new(tokio::sync::Mutex::new(Some(hold)));
        let mut one_at_a_time = in_turn(1, stopping.clone(), {
            let (ran, hold) = (ran.clone(), hold.clone());
            move |_: Arc<()>, _: Arc<()>| {
                let (ran, hold) = (ran.clone(), hold.clone());
                async move {
                    ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if let Some(hold) = hold.lock().await.take() {
                        let _ = hold.await;
                    }
                    Ok::<_, std::io::Error>(Action::requeue(Duration::from_secs(1)))
                }
            }
        });
        let under_way = tokio::spawn(one_at_a_time(Arc::new(()), Arc::new(())));
        tokio::task::yield_now().await;
        let waiting = tokio::spawn(one_at_a_time(Arc::new(()), Arc::new(())));
        tokio::task::yield_now().await;
        stopping.cancel();
        let waited = waiting.await.unwrap().unwrap();
        assert_eq!(waited, Action::await_change(), "the waiting request ended");
        release.send(()).unwrap();
        assert_eq!(
            under_way.await.unwrap().unwrap(),
            Action::requeue(Duration::from_secs(1)),
            "the reconcile under way finished"
        );
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn cached_lists_hold_no_spare_room() {
        let item =
            |k: &str| serde_json::json!({"key": k, "notation": format!("keeper://r/field/{k}")});
        let condition = |t: &str| {
            serde_json::json!({"type": t, "status": "True", "reason": "Synced", "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        let wire = serde_json::json!({
            "apiVersion": "keeper-operator.dev/v1alpha1", "kind": "KeeperSecret",
            "metadata": {"name": "db"},
            "spec": {"auth": {"secretRef": {"name": "c", "key": "config"}},
                     "data": [item("a"), item("b")]},
            "status": {"conditions": [condition("Ready"), condition("Stale")],
                       "records": [{"uid": "r1", "revision": 1}, {"uid": "r2", "revision": 2}]}
        })
        .to_string();
        // Read from the wire's text, as the watch reads it, two items took room for four.
        let mut ks: KeeperSecret = serde_json::from_str(&wire).unwrap();
        assert!(ks.spec.data.capacity() > 2);
        shrink(&mut ks);
        let status = ks.status.as_ref().unwrap();
        assert_eq!(ks.spec.data.capacity(), 2);
        assert_eq!(status.conditions.capacity(), 2);
        assert_eq!(status.records.capacity(), 2);
    }

    #[test]
    fn slim_keeps_only_what_is_read() {
        let mut meta = ObjectMeta {
            name: Some("db".into()),
            namespace: Some("apps".into()),
            uid: Some("u-1".into()),
            resource_version: Some("42".into()),
            generation: Some(3),
            managed_fields: Some(vec![Default::default()]),
            labels: Some(
                [
                    ("app".to_string(), "db".to_string()),
                    (SHARD_LABEL.to_string(), "a".to_string()),
                ]
                .into(),
            ),
            owner_references: Some(vec![Default::default()]),
            annotations: Some(
                [
                    (
                        "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                        "{\"data\":{}}".to_string(),
                    ),
                    (OWNER_ANNOTATION.to_string(), "db".to_string()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        };
        let mut keeper_secret = meta.clone();
        slim(&mut meta, &[OWNER_ANNOTATION]);
        let expected = ObjectMeta {
            name: Some("db".into()),
            namespace: Some("apps".into()),
            uid: Some("u-1".into()),
            resource_version: Some("42".into()),
            generation: Some(3),
            labels: Some([(SHARD_LABEL.to_string(), "a".to_string())].into()),
            annotations: Some([(OWNER_ANNOTATION.to_string(), "db".to_string())].into()),
            ..ObjectMeta::default()
        };
        assert_eq!(meta, expected);
        slim(&mut keeper_secret, &[FORCE_SYNC_ANNOTATION]);
        assert_eq!(
            keeper_secret,
            ObjectMeta {
                annotations: None,
                ..expected.clone()
            }
        );
        let mut asked = expected.clone();
        asked.annotations = Some([(FORCE_SYNC_ANNOTATION.to_string(), "1".to_string())].into());
        let mut kept = asked.clone();
        slim(&mut kept, &[FORCE_SYNC_ANNOTATION]);
        assert_eq!(kept, asked, "a sync request survives");
    }

    #[test]
    fn a_shard_watches_the_secrets_labelled_for_it() {
        let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
        let of = |s: &str| target_selector(&LabelSelector::parse(s).unwrap());
        assert_eq!(of(""), managed);
        assert_eq!(of("team=web"), managed, "other labels are not on Secrets");
        assert_eq!(
            of(&format!("!{SHARD_LABEL}")),
            format!("{managed},!{SHARD_LABEL}")
        );
        assert_eq!(
            of(&format!("team=web,{SHARD_LABEL}=a")),
            format!("{managed},{SHARD_LABEL}=a")
        );
    }
}
