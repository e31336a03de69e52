//! `keeper-operator run`: the controller plus the health/metrics server, one shutdown signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use keeper_operator::cli::keeper::run_keeper_command;
use keeper_operator::config::{Cli, Command, RunArgs};
use keeper_operator::fetcher::FetchSettings;
use keeper_operator::fetcher::secret_store::SecretStore;
use keeper_operator::fetcher::store::SnapshotStore;
use keeper_operator::keeper_source::SharedKeeper;
use keeper_operator::metrics::Metrics;
use keeper_operator::reconcile::{Context, Settings};
use keeper_operator::{controller, http, telemetry};
use kube::runtime::events::{Recorder, Reporter};
use std::process::ExitCode;
use tokio::sync::watch;
use tracing::info;

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Keeper(args) => {
            // The CLI prints values on stdout; diagnostics go to stderr, quiet by default.
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
                )
                .init();
            run_keeper_command(args).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes joined by ": ".
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level: {e}"))?;
    if args.leader_elect {
        bail!("--leader-elect is not implemented yet; run a single replica (the chart's default)");
    }
    if args.default_refresh_interval.is_negative() {
        bail!("--default-refresh-interval must not be negative");
    }
    let default_refresh_interval: Duration = args.default_refresh_interval.into();
    let extra_ca_pem = match &args.keeper_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading --keeper-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or in-cluster)")?;
    let metrics = Arc::new(Metrics::default());
    let options = keeper_operator::keeper_source::client_options(extra_ca_pem);
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
        ..FetchSettings::default()
    };
    let keeper = SharedKeeper::new(options, fetch_settings, store, metrics.clone());
    let reporter = Reporter {
        controller: "keeper-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let settings = Settings {
        default_refresh_interval,
        operator_namespace: args.operator_namespace.clone(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        keeper,
        Recorder::new(client, reporter),
        metrics.clone(),
        settings,
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested");
        let _ = stop_tx.send(true);
    });

    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.metrics_bind_address)
        .await
        .with_context(|| {
            format!(
                "binding --metrics-bind-address {}",
                args.metrics_bind_address
            )
        })?;
    info!(address = %args.metrics_bind_address, "serving /metrics, /healthz, /readyz");
    let server = axum::serve(
        listener,
        http::router(http::Health {
            ready: ready.clone(),
            metrics,
        }),
    )
    .with_graceful_shutdown(stopped());

    let watch_namespace = Some(args.watch_namespace.as_str()).filter(|ns| !ns.is_empty());
    let ready_flag = ready.clone();
    let on_store = move |store: kube::runtime::reflector::Store<_>| {
        tokio::spawn(async move {
            // kube's readiness latch wakes only its most recent waiter, and the Controller
            // waits on it too: re-poll instead of parking on it once.
            loop {
                match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready())
                    .await
                {
                    Ok(Ok(())) => {
                        ready_flag.store(true, Ordering::Relaxed);
                        info!("KeeperSecret cache synced; ready");
                        break;
                    }
                    Ok(Err(_)) => break,
                    Err(_) => continue,
                }
            }
        });
    };
    let shutdown = stopped();
    let ready_off = ready.clone();
    let ctrl = controller::run(
        ctx,
        watch_namespace,
        args.concurrency,
        on_store,
        async move {
            shutdown.await;
            ready_off.store(false, Ordering::Relaxed);
        },
    );
    let (server_result, ()) = tokio::join!(server.into_future(), ctrl);
    server_result.context("health/metrics server")?;
    info!("stopped");
    Ok(())
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
