//! The local control plane (`e2e/cluster.sh`), seen as its admin: connecting (starting it once
//! per test process if needed), kubectl and helm, namespaces and an API server restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::E2E_LABEL;
use super::process::{CommandOutput, last_line, run, script_output, unique_name, workspace_root};

/// Paths shared by every test in the process; resolved once.
#[derive(Clone, Debug)]
struct Paths {
    admin_kubeconfig: PathBuf,
    bin_dir: PathBuf,
}

fn paths() -> Result<Paths> {
    static PATHS: OnceLock<std::result::Result<Paths, String>> = OnceLock::new();
    PATHS
        .get_or_init(|| resolve_paths().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("the e2e control plane is not available: {e}"))
}

fn resolve_paths() -> Result<Paths> {
    let admin_kubeconfig = match std::env::var_os("E2E_KUBECONFIG") {
        Some(p) => PathBuf::from(p),
        // The same dedicated test cluster e2e/test.sh uses, never the demo's.
        None => start_cluster(&state_dir("E2E_TEST_STATE_DIR", "test-cluster"), &[])?,
    };
    Ok(Paths {
        bin_dir: bin_dir()?,
        admin_kubeconfig,
    })
}

/// The directory of the e2e tools (`e2e/build-tools.sh`), built once per process.
fn bin_dir() -> Result<PathBuf> {
    static BIN_DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN_DIR
        .get_or_init(|| {
            script_output(&workspace_root().join("e2e/build-tools.sh"), &[])
                .map(PathBuf::from)
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!("the e2e tools are not available: {e}"))
}

/// A cluster state directory: `$var`, else `<cache>/keeper-operator-e2e/<default>`.
pub(super) fn state_dir(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join("keeper-operator-e2e")
            .join(default)
    })
}

/// `e2e/cluster.sh up` (with `args`) in state directory `state`; returns the admin kubeconfig.
pub(super) fn start_cluster(state: &Path, args: &[&str]) -> Result<PathBuf> {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("e2e/cluster.sh"))
        .arg("up")
        .args(args)
        .env("E2E_STATE_DIR", state);
    let admin_kubeconfig = PathBuf::from(last_line(&mut cmd)?);
    ensure!(
        admin_kubeconfig.is_file(),
        "admin kubeconfig {} does not exist",
        admin_kubeconfig.display()
    );
    Ok(admin_kubeconfig)
}

/// The local control plane, seen as its admin.
pub struct Cluster {
    paths: Paths,
    client: Client,
}

impl Cluster {
    /// Connects to the control plane, starting it once per process if needed.
    pub async fn connect() -> Result<Cluster> {
        let paths = tokio::task::spawn_blocking(paths).await??;
        let client = client_from_kubeconfig(&paths.admin_kubeconfig).await?;
        Ok(Cluster { paths, client })
    }

    /// Connects to the control plane whose admin kubeconfig is `admin_kubeconfig`.
    pub(super) async fn connect_to(admin_kubeconfig: PathBuf) -> Result<Cluster> {
        let bin_dir = tokio::task::spawn_blocking(bin_dir).await??;
        let client = client_from_kubeconfig(&admin_kubeconfig).await?;
        let paths = Paths {
            admin_kubeconfig,
            bin_dir,
        };
        Ok(Cluster { paths, client })
    }

    /// An admin (system:masters) client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn admin_kubeconfig(&self) -> &Path {
        &self.paths.admin_kubeconfig
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(self.paths.bin_dir.join("kubectl"));
        c.arg("--kubeconfig").arg(&self.paths.admin_kubeconfig);
        c
    }

    /// `gitops-check` (`e2e/tools/gitops-check`): what kstatus and Argo CD's Lua engine make of
    /// an object.
    pub fn gitops_check(&self) -> Command {
        Command::new(self.paths.bin_dir.join("gitops-check"))
    }

    /// `helm` with the admin kubeconfig.
    pub fn helm(&self) -> Command {
        let mut c = Command::new(self.paths.bin_dir.join("helm"));
        c.env("KUBECONFIG", &self.paths.admin_kubeconfig);
        c
    }

    /// Stops kube-apiserver, keeps it down for `down`, and starts it again at the same address
    /// (`e2e/cluster.sh restart-apiserver`; etcd and its data stay). Only for clusters the
    /// harness or `e2e/cluster.sh up` started, whose state dir holds the admin kubeconfig.
    pub async fn restart_apiserver(&self, down: Duration) -> Result<()> {
        let state = self
            .paths
            .admin_kubeconfig
            .parent()
            .context("admin kubeconfig has no directory")?
            .to_path_buf();
        let mut cmd = Command::new("bash");
        cmd.arg(workspace_root().join("e2e/cluster.sh"))
            .args(["restart-apiserver", &down.as_secs().to_string()])
            .env("E2E_STATE_DIR", state);
        tokio::task::spawn_blocking(move || run(&mut cmd, None)).await??;
        Ok(())
    }

    /// Creates a namespace with a unique name starting with `prefix`.
    pub async fn fresh_namespace(&self, prefix: &str) -> Result<String> {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(E2E_LABEL.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(name)
    }

    /// Applies a manifest as admin (server-side apply, so concurrent tests may apply shared CRDs).
    pub fn apply(&self, manifest: &str, extra: &[&str]) -> Result<CommandOutput> {
        let mut cmd = self.kubectl();
        cmd.args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
            .args(extra);
        run(&mut cmd, Some(manifest))
    }
}

pub(super) async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}
