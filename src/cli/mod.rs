//! Command line of `keeper-operator`: every subcommand and flag, including `run`'s; every flag
//! can also be set by environment variable.

pub mod keeper;
pub mod plugin;
pub mod selector;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ksm::hosts::{AllowedHosts, HostEntryError};
use selector::LabelSelector;

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
    /// Reconcile only the KeeperSecrets this label selector matches, e.g.
    /// `sharding.keeper-operator.dev/key=a` for shard `a` and `!sharding.keeper-operator.dev/key`
    /// for the default shard; empty matches all. Each selector elects on a Lease of its own.
    #[arg(
        long,
        env = "KEEPER_OPERATOR_WATCH_LABEL_SELECTOR",
        default_value = "",
        value_name = "SELECTOR",
        value_parser = LabelSelector::parse
    )]
    pub watch_label_selector: LabelSelector,
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
    #[arg(long, env = "KEEPER_OPERATOR_KEEPER_CA_FILE", value_name = "PATH", value_parser = read_ca_file)]
    pub keeper_ca_file: Option<CaFile>,
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
    /// watching all namespaces with no --watch-label-selector]. An operator watching one
    /// namespace, or one shard, sees only some of the borrowers, so by default it leaves store
    /// status to a cluster-wide, unsharded one.
    #[arg(long, env = "KEEPER_OPERATOR_STORE_STATUS", action = clap::ArgAction::Set)]
    pub store_status: Option<bool>,
    /// KeeperSecrets reconciled in parallel.
    #[arg(long, env = "KEEPER_OPERATOR_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Refresh interval for KeeperSecrets that do not set spec.refreshInterval (Go duration).
    #[arg(
        long,
        env = "KEEPER_OPERATOR_DEFAULT_REFRESH_INTERVAL",
        default_value = "1h",
        value_parser = non_negative
    )]
    pub default_refresh_interval: Duration,
    /// Keeper requests one credential may make per --keeper-budget-window (Keeper throttles
    /// at about 100 per 10 s per client).
    #[arg(long, env = "KEEPER_OPERATOR_KEEPER_BUDGET_REQUESTS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub keeper_budget_requests: u32,
    /// Window over which the request budget refills (Go duration).
    #[arg(
        long,
        env = "KEEPER_OPERATOR_KEEPER_BUDGET_WINDOW",
        default_value = "10s",
        value_parser = positive
    )]
    pub keeper_budget_window: Duration,
    /// Keep the last good Keeper data, sealed with a key derived from each credential's
    /// application key, in Secrets of the operator namespace so a restarted operator can serve
    /// it while Keeper is down. Needs --operator-namespace.
    #[arg(long, env = "KEEPER_OPERATOR_PERSIST_LAST_GOOD", default_value_t = true, action = clap::ArgAction::Set)]
    pub persist_last_good: bool,
    /// Restarts of one workload (spec.rolloutRestart) requested within this window are
    /// coalesced into one, so a Keeper change feeding several KeeperSecrets restarts it once
    /// (Go duration). The operator waits longer when the KeeperSecrets' refresh wave is wider
    /// (a tenth of refreshInterval, at most 60 s, plus 6 s).
    #[arg(long, env = "KEEPER_OPERATOR_ROLLOUT_DEBOUNCE", default_value = "5s", value_parser = non_negative)]
    pub rollout_debounce: Duration,
    /// How long a KeeperSecret may be served from the last good copy while Keeper fails
    /// before its Ready condition turns False (reason LastGoodCopyExpired). The Secret keeps
    /// its data either way (Go duration). When Keeper refuses a credential (not an outage),
    /// its last good copy older than this is destroyed, in memory and sealed.
    #[arg(long, env = "KEEPER_OPERATOR_MAX_STALE_AGE", default_value = "24h", value_parser = non_negative)]
    pub max_stale_age: Duration,
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

/// The PEM of `--keeper-ca-file`, read when the flag is parsed.
#[derive(Debug, Clone)]
pub struct CaFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its content (certificates are public: no secret here).
    pub pem: Vec<u8>,
}

fn read_ca_file(path: &str) -> Result<CaFile, String> {
    let pem = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
    Ok(CaFile {
        path: path.into(),
        pem,
    })
}

/// A Go duration (`90s`, `1h30m`) that is not negative.
fn non_negative(text: &str) -> Result<Duration, String> {
    let d: kube::core::Duration = text.parse().map_err(|e| format!("{e}"))?;
    (!d.is_negative())
        .then(|| d.into())
        .ok_or_else(|| "must not be negative".into())
}

/// A Go duration greater than zero.
fn positive(text: &str) -> Result<Duration, String> {
    let d: kube::core::Duration = text.parse().map_err(|e| format!("{e}"))?;
    Some(d)
        .filter(|d| !d.is_negative())
        .map(Duration::from)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "must be a positive duration".into())
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
        assert_eq!(a.rollout_debounce.as_secs(), 5);
        assert_eq!(a.max_stale_age.as_secs(), 24 * 3600);
        assert_eq!(a.default_refresh_interval.as_secs(), 3600);
        assert_eq!(a.keeper_budget_window.as_secs(), 10);
        assert!(a.watch_label_selector.is_empty());
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

    /// Each refusal names the flag and why.
    fn refusal(argv: &[&str]) -> String {
        let mut full = vec!["keeper-operator", "run"];
        full.extend(argv);
        Cli::try_parse_from(full).unwrap_err().to_string()
    }

    #[test]
    fn bad_values_are_refused_at_parse_time_with_the_reason() {
        for flag in [
            "--default-refresh-interval",
            "--rollout-debounce",
            "--max-stale-age",
        ] {
            let err = refusal(&[&format!("{flag}=-1s")]);
            assert!(
                err.contains(flag) && err.contains("must not be negative"),
                "{err}"
            );
            assert!(refusal(&[flag, "soon"]).contains(flag));
        }
        for window in ["0s", "-10s"] {
            let err = refusal(&[&format!("--keeper-budget-window={window}")]);
            assert!(err.contains("positive"), "{err}");
        }
        let err = refusal(&["--keeper-ca-file", "/nonexistent/ca.pem"]);
        assert!(err.contains("reading /nonexistent/ca.pem"), "{err}");
        let err = refusal(&["--watch-label-selector", "k in (a"]);
        assert!(
            err.contains("--watch-label-selector") && err.contains("unclosed"),
            "{err}"
        );
    }

    #[test]
    fn the_watch_label_selector_and_ca_file_are_parsed() {
        let ca = std::env::temp_dir().join(format!("keeper-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let a = run_args(&[
            "keeper-operator",
            "run",
            "--watch-label-selector",
            "!sharding.keeper-operator.dev/key",
            "--keeper-ca-file",
            ca.to_str().unwrap(),
        ]);
        std::fs::remove_file(&ca).unwrap();
        assert_eq!(
            a.watch_label_selector.to_string(),
            "!sharding.keeper-operator.dev/key"
        );
        let file = a.keeper_ca_file.unwrap();
        assert_eq!(
            (file.path, file.pem),
            (ca, b"-----BEGIN CERTIFICATE-----\n".to_vec())
        );
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
