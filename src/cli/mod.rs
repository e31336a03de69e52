//! Command line of `keeper-operator`: every subcommand and flag, including `run`'s; every flag
//! can also be set by environment variable.

pub mod keeper;
pub mod plugin;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ksm::hosts::{AllowedHosts, HostEntryError};

/// Syncs Keeper Secrets Manager records into native Kubernetes Secrets.
#[derive(Debug, Parser)]
#[command(name = "keeper-operator", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator (controller, health and metrics endpoints).
    Run(RunArgs),
    /// Check and debug Keeper Secrets Manager credentials.
    Keeper(crate::cli::keeper::KeeperArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log pipelines).
    Json,
    /// Human-readable text.
    Plain,
}

/// Flags of `keeper-operator run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Namespace to watch; empty watches all namespaces.
    #[arg(long, env = "KEEPER_OPERATOR_WATCH_NAMESPACE", default_value = "")]
    pub watch_namespace: String,
    /// Address serving /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "KEEPER_OPERATOR_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_bind_address: SocketAddr,
    /// Serve /metrics only to callers whose bearer token passes a TokenReview and whose user
    /// may `get` the non-resource URL /metrics (SubjectAccessReview). Turn off only where the
    /// port is protected otherwise. /healthz and /readyz are always open.
    #[arg(long, env = "KEEPER_OPERATOR_METRICS_AUTH", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_auth: bool,
    /// Log format.
    #[arg(
        long,
        env = "KEEPER_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
    /// Log filter in RUST_LOG syntax, e.g. `info` or `info,keeper_operator=debug`.
    #[arg(long, env = "KEEPER_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// PEM file with extra CA certificates to trust for Keeper endpoints (private CA or a
    /// TLS-inspecting proxy). Verification always stays on.
    #[arg(long, env = "KEEPER_OPERATOR_KEEPER_CA_FILE")]
    pub keeper_ca_file: Option<PathBuf>,
    /// Keeper API hosts the operator sends requests to, comma-separated: HOST (any port) or
    /// HOST:PORT (that port only; IPv6 in brackets). A credential naming another host fails
    /// with HostNotAllowed before anything is sent. Setting it replaces the default.
    /// [default: Keeper's regions: keepersecurity.com, keepersecurity.eu, keepersecurity.com.au,
    /// govcloud.keepersecurity.us, keepersecurity.jp, keepersecurity.ca, il5.keepersecurity.us]
    #[arg(
        long,
        env = "KEEPER_OPERATOR_KEEPER_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOST[:PORT],..."
    )]
    pub keeper_allowed_hosts: Vec<String>,
    /// Use a coordination.k8s.io Lease so only one replica reconciles.
    #[arg(long, env = "KEEPER_OPERATOR_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace the operator runs in (holds ClusterKeeperStore credentials).
    #[arg(long, env = "POD_NAMESPACE")]
    pub operator_namespace: Option<String>,
    /// Keep ClusterKeeperStore status (health, borrowers) up to date [default: true when
    /// watching all namespaces]. An operator watching one namespace sees only that namespace's
    /// borrowers, so by default it leaves store status to a cluster-wide one.
    #[arg(long, env = "KEEPER_OPERATOR_STORE_STATUS", action = clap::ArgAction::Set)]
    pub store_status: Option<bool>,
    /// KeeperSecrets reconciled in parallel.
    #[arg(long, env = "KEEPER_OPERATOR_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Refresh interval for KeeperSecrets that do not set spec.refreshInterval (Go duration).
    #[arg(
        long,
        env = "KEEPER_OPERATOR_DEFAULT_REFRESH_INTERVAL",
        default_value = "1h"
    )]
    pub default_refresh_interval: kube::core::Duration,
    /// Keeper requests one credential may make per --keeper-budget-window (Keeper throttles
    /// at about 100 per 10 s per client).
    #[arg(long, env = "KEEPER_OPERATOR_KEEPER_BUDGET_REQUESTS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub keeper_budget_requests: u32,
    /// Window over which the request budget refills (Go duration).
    #[arg(
        long,
        env = "KEEPER_OPERATOR_KEEPER_BUDGET_WINDOW",
        default_value = "10s"
    )]
    pub keeper_budget_window: kube::core::Duration,
    /// Keep the last good Keeper data, sealed with a key derived from each credential's
    /// application key, in Secrets of the operator namespace so a restarted operator can serve
    /// it while Keeper is down. Needs --operator-namespace.
    #[arg(long, env = "KEEPER_OPERATOR_PERSIST_LAST_GOOD", default_value_t = true, action = clap::ArgAction::Set)]
    pub persist_last_good: bool,
    /// Restarts of one workload (spec.rolloutRestart) requested within this window are
    /// coalesced into one, so a Keeper change feeding several KeeperSecrets restarts it once
    /// (Go duration). The operator waits longer when the KeeperSecrets' refresh wave is wider
    /// (a tenth of refreshInterval, at most 60 s, plus 6 s).
    #[arg(long, env = "KEEPER_OPERATOR_ROLLOUT_DEBOUNCE", default_value = "5s")]
    pub rollout_debounce: kube::core::Duration,
    /// How long a KeeperSecret may be served from the last good copy while Keeper fails
    /// before its Ready condition turns False (reason LastGoodCopyExpired). The Secret keeps
    /// its data either way (Go duration). When Keeper refuses a credential (not an outage),
    /// its last good copy older than this is destroyed, in memory and sealed.
    #[arg(long, env = "KEEPER_OPERATOR_MAX_STALE_AGE", default_value = "24h")]
    pub max_stale_age: kube::core::Duration,
}

impl RunArgs {
    /// `--keeper-allowed-hosts`, or Keeper's regions when it is empty.
    pub fn allowed_hosts(&self) -> Result<AllowedHosts, HostEntryError> {
        if self
            .keeper_allowed_hosts
            .iter()
            .all(|h| h.trim().is_empty())
        {
            return Ok(AllowedHosts::keeper_regions());
        }
        AllowedHosts::parse(&self.keeper_allowed_hosts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> RunArgs {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults_and_flags_parse() {
        let a = run_args(&["keeper-operator", "run"]);
        assert_eq!(a.metrics_bind_address.to_string(), "0.0.0.0:8080");
        assert_eq!(a.concurrency, 4);
        assert!(a.metrics_auth, "metrics are protected by default");
        assert_eq!(std::time::Duration::from(a.rollout_debounce).as_secs(), 5);
        assert_eq!(
            std::time::Duration::from(a.max_stale_age).as_secs(),
            24 * 3600
        );
        assert_eq!(
            std::time::Duration::from(a.default_refresh_interval).as_secs(),
            3600
        );
        let a = run_args(&[
            "keeper-operator",
            "run",
            "--watch-namespace",
            "apps",
            "--log-format",
            "plain",
            "--default-refresh-interval",
            "5m",
            "--concurrency",
            "8",
            "--leader-elect",
            "--metrics-auth=false",
        ]);
        assert!(!a.metrics_auth);
        assert_eq!(
            (
                a.watch_namespace.as_str(),
                a.log_format,
                a.concurrency,
                a.leader_elect
            ),
            ("apps", LogFormat::Plain, 8, true)
        );
        assert!(Cli::try_parse_from(["keeper-operator", "run", "--concurrency", "0"]).is_err());
    }

    #[test]
    fn allowed_hosts_default_to_keepers_regions_and_are_validated() {
        let default = run_args(&["keeper-operator", "run"])
            .allowed_hosts()
            .unwrap();
        assert_eq!(default, AllowedHosts::keeper_regions());
        let a = run_args(&[
            "keeper-operator",
            "run",
            "--keeper-allowed-hosts",
            "keepersecurity.eu, 127.0.0.1:8443",
        ]);
        assert_eq!(
            a.allowed_hosts().unwrap(),
            AllowedHosts::parse(["keepersecurity.eu", "127.0.0.1:8443"]).unwrap()
        );
        let a = run_args(&["keeper-operator", "run", "--keeper-allowed-hosts=a/b"]);
        assert!(a.allowed_hosts().is_err());
    }
}
