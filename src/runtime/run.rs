//! `keeper-operator run`: the controller plus the health/metrics server, one shutdown token,
//! and (with `--leader-elect`) a Lease so only one replica reconciles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::Store;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::RunArgs;
use crate::controller::memo::{Caches, Writers};
use crate::controller::metrics::{DataAges, ReconcileMetrics};
use crate::controller::reconcile::{Context, Settings};
use crate::controller::{self, Scope};
use crate::k8s::Events;
use crate::k8s::rollout::RolloutMetrics;
use crate::keeper::KeeperMetrics;
use crate::keeper::fetcher::FetchSettings;
use crate::keeper::fetcher::sealed::SnapshotStore;
use crate::keeper::fetcher::secret_store::SecretStore;
use crate::keeper::{SharedKeeper, client_options};
use crate::runtime::leader::{Elector, LeaderGauge, lease_name};
use crate::runtime::metrics::Metrics;
use crate::runtime::metrics_auth::{KubeReviewer, MetricsAuth};
use crate::runtime::{http, telemetry};

/// Runs the operator until SIGTERM/SIGINT (or, with leader election, until the Lease is lost,
/// which is an error so a fresh candidate takes over).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level: {e}"))?;
    let client = kube_client().await?;
    let Metrics {
        registry,
        reconcile,
        keeper: keeper_metrics,
        rollouts,
        leader,
        data_ages,
    } = Metrics::default();
    let identity = identity();
    let elector = elector(&args, &client, &identity)?;
    let keeper = shared_keeper(&args, &client, keeper_metrics)?;

    // Cancelled on SIGTERM/SIGINT; every task's shutdown hangs off it.
    let shutdown = shutdown_token();
    let ready = Arc::new(AtomicBool::new(false));
    let server = serve(&args, &client, registry, ready.clone(), &shutdown).await?;
    if let Some(elector) = &elector {
        // A standby is healthy: it is ready to take over.
        ready.store(true, Ordering::Relaxed);
        tokio::select! {
            () = elector.acquire() => ready.store(false, Ordering::Relaxed),
            () = shutdown.cancelled() => return finish(server).await,
        }
    }
    leader.set(true);

    let (ctx, writers) = context(
        &args,
        client,
        keeper,
        identity,
        (reconcile, rollouts),
        &data_ages,
    );

    // Losing the Lease stops the controller like a shutdown does, but the process then fails.
    let controller_stop = shutdown.child_token();
    let lost = stop_when_lost(elector.clone(), controller_stop.clone());
    let until = stepped_down(controller_stop, ready.clone(), leader);
    let (scope, store_status) = scope(&args);
    let on_store = mark_ready_when_synced(ready.clone());
    controller::run(
        ctx,
        writers,
        scope,
        store_status,
        args.concurrency,
        on_store,
        until,
    )
    .await;

    if lost.load(Ordering::Relaxed) {
        bail!("lost leadership; exiting so a fresh candidate takes its place");
    }
    if let Some(elector) = &elector {
        elector.release().await;
    }
    finish(server).await
}

/// Names this replica in its Lease and its Events: the Pod's name.
fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| format!("keeper-operator-{}", std::process::id()))
}

/// The reconciler's context, and the writers of the caches its controller's reflectors fill.
fn context(
    args: &RunArgs,
    client: kube::Client,
    keeper: SharedKeeper,
    identity: String,
    (reconcile, rollouts): (ReconcileMetrics, RolloutMetrics),
    data_ages: &DataAges,
) -> (Arc<Context<SharedKeeper>>, Writers) {
    let (caches, writers) = Caches::new();
    let caches = Arc::new(caches);
    data_ages.watch(caches.clone());
    let reporter = Reporter {
        controller: "keeper-operator".into(),
        instance: Some(identity),
    };
    let events = Events::start(client.clone(), reporter);
    let ctx = Context::new(
        client,
        keeper,
        events,
        reconcile,
        rollouts,
        settings(args),
        caches,
    );
    (Arc::new(ctx), writers)
}

/// What the controller watches, and whether it keeps ClusterKeeperStore status: by default only
/// when it sees every KeeperSecret, since a namespaced operator or a shard sees only some of a
/// store's borrowers.
fn scope(args: &RunArgs) -> (Scope<'_>, bool) {
    let namespace = Some(args.watch_namespace.as_str()).filter(|ns| !ns.is_empty());
    let everything = namespace.is_none() && args.watch_label_selector.is_empty();
    let scope = Scope {
        namespace,
        selector: &args.watch_label_selector,
    };
    (scope, args.store_status.unwrap_or(everything))
}

/// With `--leader-elect`, the elector on this selector's Lease (one per shard).
fn elector(
    args: &RunArgs,
    client: &kube::Client,
    identity: &str,
) -> anyhow::Result<Option<Arc<Elector>>> {
    if !args.leader_elect {
        return Ok(None);
    }
    let Some(namespace) = &args.operator_namespace else {
        bail!("--leader-elect needs --operator-namespace (or POD_NAMESPACE) for its Lease");
    };
    let lease = lease_name(&args.watch_label_selector);
    info!(%lease, selector = %args.watch_label_selector, "electing a leader");
    let elector = Elector::new(client.clone(), namespace, &lease, identity.to_string());
    Ok(Some(Arc::new(elector)))
}

/// The shared Keeper fetchers, with the last good copy sealed in the operator namespace.
fn shared_keeper(
    args: &RunArgs,
    client: &kube::Client,
    metrics: KeeperMetrics,
) -> anyhow::Result<SharedKeeper> {
    let store: Option<Arc<dyn SnapshotStore>> =
        match (&args.operator_namespace, args.persist_last_good) {
            (Some(ns), true) => Some(Arc::new(SecretStore::new(client.clone(), ns))),
            (None, true) => {
                tracing::warn!(
                    "no --operator-namespace: the last good copy is kept in memory only"
                );
                None
            }
            (_, false) => None,
        };
    let fetch_settings = FetchSettings {
        budget_requests: args.keeper_budget_requests,
        budget_window: args.keeper_budget_window,
        max_refused_age: args.max_stale_age,
        ..FetchSettings::default()
    };
    let allowed_hosts = args.allowed_hosts().context("--keeper-allowed-hosts")?;
    let extra_ca_pem = args.keeper_ca_file.as_ref().map(|ca| ca.pem.clone());
    SharedKeeper::new(
        client_options(extra_ca_pem, allowed_hosts),
        fetch_settings,
        store,
        metrics,
    )
    .context("--keeper-ca-file")
}

fn settings(args: &RunArgs) -> Settings {
    Settings {
        default_refresh_interval: args.default_refresh_interval,
        operator_namespace: args.operator_namespace.clone(),
        rollout_debounce: args.rollout_debounce,
        max_stale_age: args.max_stale_age,
        forced_sync_spacing: crate::sync::refresh::FORCED_SYNC_SPACING,
    }
}

/// Binds `--metrics-bind-address` and serves /metrics, /healthz and /readyz until shutdown.
async fn serve(
    args: &RunArgs,
    client: &kube::Client,
    registry: Registry,
    ready: Arc<AtomicBool>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Server> {
    let address = args.metrics_bind_address;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding --metrics-bind-address {address}"))?;
    info!(%address, metrics_auth = args.metrics_auth, "serving /metrics, /healthz, /readyz");
    let metrics_auth = args.metrics_auth.then(|| {
        Arc::new(MetricsAuth::new(Box::new(KubeReviewer::new(
            client.clone(),
        ))))
    });
    let router = http::router(http::Health {
        ready,
        metrics: Arc::new(registry),
        metrics_auth,
    });
    Ok(tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    ))
}

/// Cancels `stop` once `elector` (if any) loses its Lease; the flag tells that from a shutdown.
fn stop_when_lost(elector: Option<Arc<Elector>>, stop: CancellationToken) -> Arc<AtomicBool> {
    let lost = Arc::new(AtomicBool::new(false));
    if let Some(elector) = elector {
        let lost = lost.clone();
        tokio::spawn(async move {
            elector.keep().await;
            lost.store(true, Ordering::Relaxed);
            stop.cancel();
        });
    }
    lost
}

/// A client from KUBECONFIG or the in-cluster config that names itself in the User-Agent, so API
/// server logs and audit events tell the operator's requests from other users of its token.
async fn kube_client() -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::infer()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or in-cluster)")?;
    config.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_static(concat!(
            "keeper-operator/",
            env!("CARGO_PKG_VERSION")
        )),
    ));
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Resolves when `stop` is cancelled, marking this replica neither ready nor leading.
async fn stepped_down(stop: CancellationToken, ready: Arc<AtomicBool>, leader: LeaderGauge) {
    stop.cancelled().await;
    ready.store(false, Ordering::Relaxed);
    leader.set(false);
}

/// The health/metrics server's task.
type Server = tokio::task::JoinHandle<std::io::Result<()>>;

async fn finish(server: Server) -> anyhow::Result<()> {
    server
        .await
        .context("health/metrics server task")?
        .context("health/metrics server")?;
    info!("stopped");
    Ok(())
}

/// Flips `ready` once the KeeperSecret cache holds the initial list.
fn mark_ready_when_synced<K>(ready: Arc<AtomicBool>) -> impl FnOnce(Store<K>)
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    move |store| {
        tokio::spawn(async move {
            if controller::listed(&store).await {
                ready.store(true, Ordering::Relaxed);
                info!("KeeperSecret cache synced; ready");
            }
        });
    }
}

/// A token cancelled on the first SIGTERM or SIGINT.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested");
        cancel.cancel();
    });
    token
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
