//! `keeper-operator run`: the controller plus the health/metrics server, one shutdown token,
//! and (with `--leader-elect`) a Lease so only one replica reconciles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::Store;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::RunArgs;
use crate::controller;
use crate::controller::memo::Caches;
use crate::controller::reconcile::{Context, Settings};
use crate::k8s::Events;
use crate::keeper::fetcher::FetchSettings;
use crate::keeper::fetcher::sealed::SnapshotStore;
use crate::keeper::fetcher::secret_store::SecretStore;
use crate::keeper::{SharedKeeper, client_options};
use crate::runtime::leader::{Elector, LEASE_NAME};
use crate::runtime::metrics::Metrics;
use crate::runtime::metrics_auth::{KubeReviewer, MetricsAuth};
use crate::runtime::{http, telemetry};

/// Runs the operator until SIGTERM/SIGINT (or, with leader election, until the Lease is lost,
/// which is an error so a fresh candidate takes over).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level: {e}"))?;
    if args.default_refresh_interval.is_negative() {
        bail!("--default-refresh-interval must not be negative");
    }
    if args.rollout_debounce.is_negative() {
        bail!("--rollout-debounce must not be negative");
    }
    if args.max_stale_age.is_negative() {
        bail!("--max-stale-age must not be negative");
    }
    let extra_ca_pem = match &args.keeper_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading --keeper-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let client = kube_client().await?;
    let Metrics {
        registry,
        reconcile: reconcile_metrics,
        keeper: keeper_metrics,
        rollouts: rollout_metrics,
        leader,
        data_ages,
    } = Metrics::default();
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("keeper-operator-{}", std::process::id()));
    let elector = match (args.leader_elect, &args.operator_namespace) {
        (false, _) => None,
        (true, Some(ns)) => Some(Arc::new(Elector::new(
            client.clone(),
            ns,
            LEASE_NAME,
            identity.clone(),
        ))),
        (true, None) => {
            bail!("--leader-elect needs --operator-namespace (or POD_NAMESPACE) for its Lease")
        }
    };

    // Cancelled on SIGTERM/SIGINT; every task's shutdown hangs off it.
    let shutdown = shutdown_token();
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.metrics_bind_address)
        .await
        .with_context(|| {
            format!(
                "binding --metrics-bind-address {}",
                args.metrics_bind_address
            )
        })?;
    info!(
        address = %args.metrics_bind_address,
        metrics_auth = args.metrics_auth,
        "serving /metrics, /healthz, /readyz"
    );
    let metrics_auth = args.metrics_auth.then(|| {
        Arc::new(MetricsAuth::new(Box::new(KubeReviewer::new(
            client.clone(),
        ))))
    });
    let server = tokio::spawn(
        axum::serve(
            listener,
            http::router(http::Health {
                ready: ready.clone(),
                metrics: Arc::new(registry),
                metrics_auth,
            }),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future(),
    );

    if let Some(elector) = &elector {
        // A standby is healthy: it is ready to take over.
        ready.store(true, Ordering::Relaxed);
        tokio::select! {
            () = elector.acquire() => ready.store(false, Ordering::Relaxed),
            () = shutdown.cancelled() => return finish(server).await,
        }
    }
    leader.set(true);

    let settings = Settings {
        default_refresh_interval: args.default_refresh_interval.into(),
        operator_namespace: args.operator_namespace.clone(),
        rollout_debounce: args.rollout_debounce.into(),
        max_stale_age: args.max_stale_age.into(),
        forced_sync_spacing: crate::sync::refresh::FORCED_SYNC_SPACING,
    };
    let reporter = Reporter {
        controller: "keeper-operator".into(),
        instance: Some(identity),
    };
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
        budget_window: Some(args.keeper_budget_window)
            .filter(|w| !w.is_negative())
            .map(Duration::from)
            .filter(|w| !w.is_zero())
            .context("--keeper-budget-window must be a positive duration")?,
        max_refused_age: args.max_stale_age.into(),
        ..FetchSettings::default()
    };
    let allowed_hosts = args.allowed_hosts().context("--keeper-allowed-hosts")?;
    let keeper = SharedKeeper::new(
        client_options(extra_ca_pem, allowed_hosts),
        fetch_settings,
        store,
        keeper_metrics,
    )
    .context("--keeper-ca-file")?;
    let events = Events::start(client.clone(), reporter);
    let (caches, writers) = Caches::new();
    let caches = Arc::new(caches);
    data_ages.watch(caches.clone());
    let ctx = Arc::new(Context::new(
        client,
        keeper,
        events,
        reconcile_metrics,
        rollout_metrics,
        settings,
        caches,
    ));

    // Losing the Lease stops the controller like a shutdown does, but the process then fails.
    let controller_stop = shutdown.child_token();
    let lost = Arc::new(AtomicBool::new(false));
    if let Some(elector) = elector.clone() {
        let (stop, lost) = (controller_stop.clone(), lost.clone());
        tokio::spawn(async move {
            elector.keep().await;
            lost.store(true, Ordering::Relaxed);
            stop.cancel();
        });
    }
    let until = {
        let ready = ready.clone();
        async move {
            controller_stop.cancelled().await;
            ready.store(false, Ordering::Relaxed);
            leader.set(false);
        }
    };
    let watch_namespace = Some(args.watch_namespace.as_str()).filter(|ns| !ns.is_empty());
    let store_status = args.store_status.unwrap_or(watch_namespace.is_none());
    controller::run(
        ctx,
        writers,
        watch_namespace,
        store_status,
        args.concurrency,
        {
            let mark_ready = mark_ready_when_synced(ready);
            move |store| mark_ready(store)
        },
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

async fn finish(server: tokio::task::JoinHandle<std::io::Result<()>>) -> anyhow::Result<()> {
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
