//! End-to-end harness over the real local control plane (`e2e/cluster.sh`).
//!
//! The admin kubeconfig comes from `E2E_KUBECONFIG`, or from `e2e/cluster.sh up` run once per
//! test process on the dedicated test cluster (state in `E2E_TEST_STATE_DIR`, default
//! `~/.cache/keeper-operator-e2e/test-cluster`, as `e2e/test.sh` uses), never the demo's. The chart is rendered with helm and applied as admin; the operator then runs as a
//! child process with a kubeconfig holding a TokenRequest token of the chart's ServiceAccount, so
//! every request it makes goes through the real RBAC authorizer.
//!
//! A control plane that cannot start is an error, never a skip.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ksm_server::TestServer;
use crate::leak_scan::SecretValues;

/// Label put on every namespace the harness creates, so leftovers are easy to find.
pub const E2E_LABEL: &str = "keeper-operator.dev/e2e";
/// Kubernetes version the control plane is built at (helm renders capabilities for it).
pub const KUBE_VERSION: &str = "1.35.4";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Workspace root (the e2e crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e crate has a parent directory")
        .to_path_buf()
}

/// Where harness artefacts (operator logs, kubeconfigs) go: `target/e2e/`.
pub fn artefact_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("e2e")
}

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
    let root = workspace_root();
    let bin_dir = PathBuf::from(script_output(&root.join("e2e/build-tools.sh"), &[])?);
    let admin_kubeconfig = match std::env::var_os("E2E_KUBECONFIG") {
        Some(p) => PathBuf::from(p),
        None => {
            // The same dedicated test cluster e2e/test.sh uses, never the demo's.
            let state = std::env::var_os("E2E_TEST_STATE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let cache = std::env::var_os("XDG_CACHE_HOME")
                        .map(PathBuf::from)
                        .or_else(|| {
                            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                        })
                        .unwrap_or_else(|| PathBuf::from("/tmp"));
                    cache.join("keeper-operator-e2e/test-cluster")
                });
            let mut cmd = Command::new("bash");
            cmd.arg(root.join("e2e/cluster.sh"))
                .arg("up")
                .env("E2E_STATE_DIR", state);
            PathBuf::from(last_line(&mut cmd)?)
        }
    };
    ensure!(
        admin_kubeconfig.is_file(),
        "admin kubeconfig {} does not exist",
        admin_kubeconfig.display()
    );
    Ok(Paths {
        admin_kubeconfig,
        bin_dir,
    })
}

/// Runs a script, passing its stderr through, and returns the last line of its stdout.
fn script_output(script: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("bash");
    cmd.arg(script).args(args);
    last_line(&mut cmd)
}

fn last_line(cmd: &mut Command) -> Result<String> {
    let desc = format!("{cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {desc}"))?;
    ensure!(out.status.success(), "{desc} failed: {}", out.status);
    let stdout = String::from_utf8(out.stdout)?;
    stdout
        .lines()
        .last()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| anyhow!("{desc} printed nothing"))
}

/// A unique, DNS-1123 name: `<prefix>-<time><pid><counter>` (at most 63 characters).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        % 1_000_000_000;
    let mut name = format!("{prefix}-{t:x}{:x}{n:x}", std::process::id());
    name.truncate(63);
    name.trim_end_matches('-').to_string()
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

    /// `helm template` of the chart with `--set` values; returns the rendered manifest.
    pub fn render_chart(
        &self,
        release: &str,
        namespace: &str,
        set: &[(&str, &str)],
    ) -> Result<String> {
        let mut cmd = self.helm();
        cmd.args(["template", release])
            .arg(workspace_root().join("helm/keeper-operator"))
            .args(["--namespace", namespace, "--kube-version", KUBE_VERSION]);
        for (k, v) in set {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        let out = run(&mut cmd, None)?;
        Ok(out.stdout)
    }

    /// Applies a manifest as admin (server-side apply, so concurrent tests may apply shared CRDs).
    pub fn apply(&self, manifest: &str, extra: &[&str]) -> Result<CommandOutput> {
        let mut cmd = self.kubectl();
        cmd.args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
            .args(extra);
        run(&mut cmd, Some(manifest))
    }

    /// Installs the chart (rendered, then applied as admin) into `namespace` and waits for its
    /// CRDs to be established. Use a distinct `release` per install: cluster-scoped RBAC objects
    /// are named after it.
    pub async fn install_chart(
        &self,
        release: &str,
        namespace: &str,
        set: &[(&str, &str)],
    ) -> Result<ChartInstall> {
        let manifest = self.render_chart(release, namespace, set)?;
        self.apply(&manifest, &[])?;
        let crds = crd_names(&manifest);
        for crd in &crds {
            self.wait_crd_established(crd, DEFAULT_TIMEOUT)?;
        }
        Ok(ChartInstall {
            release: release.to_string(),
            namespace: namespace.to_string(),
            service_account: chart_fullname(release),
            crds,
        })
    }

    /// `kubectl wait --for=condition=Established` on a CRD.
    pub fn wait_crd_established(&self, crd: &str, timeout: Duration) -> Result<()> {
        let mut cmd = self.kubectl();
        cmd.args(["wait", "--for=condition=Established"])
            .arg(format!("--timeout={}s", timeout.as_secs()))
            .arg(format!("crd/{crd}"));
        run(&mut cmd, None).map(|_| ())
    }

    /// Mints a token for a ServiceAccount through the TokenRequest API, exactly as a pod gets one.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        sa: &str,
        ttl: Duration,
    ) -> Result<SaToken> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(ttl.as_secs() as i64),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = api
            .create_token_request(sa, &PostParams::default(), &req)
            .await
            .with_context(|| format!("TokenRequest for {namespace}/{sa}"))?;
        let token = resp.status.and_then(|s| s.token).filter(|t| !t.is_empty());
        token
            .map(|value| SaToken { value })
            .ok_or_else(|| anyhow!("TokenRequest for {namespace}/{sa} returned no token"))
    }

    /// Writes a kubeconfig for the same cluster that authenticates with `token`.
    pub fn write_token_kubeconfig(
        &self,
        path: &Path,
        token: &SaToken,
        namespace: &str,
    ) -> Result<()> {
        let admin = Kubeconfig::read_from(&self.paths.admin_kubeconfig)?;
        let cluster = admin
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| anyhow!("admin kubeconfig has no cluster"))?;
        // JSON is valid YAML, and every kubeconfig reader accepts it.
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {
                "server": cluster.server,
                "certificate-authority-data": cluster.certificate_authority_data,
            }}],
            "users": [{"name": "operator", "user": {"token": token.value}}],
            "contexts": [{"name": "operator", "context": {"cluster": "e2e", "user": "operator", "namespace": namespace}}],
            "current-context": "operator",
        });
        write_private(path, &serde_json::to_vec_pretty(&doc)?)
    }

    /// A client authenticating with a ServiceAccount token (subject to RBAC).
    pub async fn token_client(&self, token: &SaToken, namespace: &str) -> Result<Client> {
        let dir = artefact_dir().join("kubeconfigs");
        let path = dir.join(format!("{}.json", unique_name("token")));
        self.write_token_kubeconfig(&path, token, namespace)?;
        let client = client_from_kubeconfig(&path).await;
        let _ = fs::remove_file(&path);
        client
    }
}

/// The chart's `keeper-operator.fullname` (and default ServiceAccount name) for a release.
pub fn chart_fullname(release: &str) -> String {
    let mut name = if release.contains("keeper-operator") {
        release.to_string()
    } else {
        format!("{release}-keeper-operator")
    };
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// What `install_chart` created.
#[derive(Clone, Debug)]
pub struct ChartInstall {
    pub release: String,
    pub namespace: String,
    pub service_account: String,
    pub crds: Vec<String>,
}

/// A ServiceAccount bearer token. `Debug` is redacted.
pub struct SaToken {
    value: String,
}

impl SaToken {
    /// The bearer token itself (for an `Authorization` header; never print it).
    pub fn secret(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for SaToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SaToken(<redacted>)")
    }
}

async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// Output of a finished command.
#[derive(Debug)]
pub struct CommandOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion (optionally feeding stdin); fails with its stderr if it fails.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<CommandOutput> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {desc}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("{desc} failed ({}):\n{stderr}", out.status);
    }
    Ok(CommandOutput { stdout, stderr })
}

/// Names of the CustomResourceDefinitions in a rendered manifest.
pub fn crd_names(manifest: &str) -> Vec<String> {
    manifest
        .split("\n---")
        .filter(|doc| {
            doc.lines()
                .any(|l| l.trim_end() == "kind: CustomResourceDefinition")
        })
        .filter_map(|doc| {
            let mut in_metadata = false;
            doc.lines().find_map(|l| {
                if l == "metadata:" {
                    in_metadata = true;
                } else if in_metadata && !l.starts_with(' ') {
                    in_metadata = false;
                }
                l.strip_prefix("  name: ")
                    .filter(|_| in_metadata)
                    .map(|n| n.trim().to_string())
            })
        })
        .collect()
}

/// Asks the API server whether the client's user may do `verb` on `resource` (SelfSubjectAccessReview).
pub async fn can_i(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    self_review(client, &review).await
}

/// Sends a SelfSubjectAccessReview; true when the API server allows it.
async fn self_review(client: &Client, review: &SelfSubjectAccessReview) -> Result<bool> {
    let resp = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), review)
        .await?;
    Ok(resp.status.map(|s| s.allowed).unwrap_or(false))
}

/// Asks the API server whether the client's user may `get` the non-resource URL `path`.
pub async fn may_get_url(client: &Client, path: &str) -> Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(path.into()),
                verb: Some("get".into()),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    self_review(client, &review).await
}

/// Polls `check` every 200 ms until it yields a value or `timeout` passes.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            let detail = last_err
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default();
            bail!("timed out after {timeout:?} waiting for {what}{detail}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `status.conditions[type]` entry of any object, as JSON.
pub fn condition<K: Serialize>(obj: &K, type_: &str) -> Option<serde_json::Value> {
    let v = serde_json::to_value(obj).ok()?;
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some(type_))
        .cloned()
}

/// Waits until `name` has condition `type_` with status "True"; returns the object.
pub async fn wait_for_condition<K>(
    api: &Api<K>,
    name: &str,
    type_: &str,
    timeout: Duration,
) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + fmt::Debug,
{
    wait_for_condition_status(api, name, type_, "True", timeout).await
}

/// Waits until `name` has condition `type_` with the given status ("True", "False", "Unknown").
pub async fn wait_for_condition_status<K>(
    api: &Api<K>,
    name: &str,
    type_: &str,
    status: &str,
    timeout: Duration,
) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + fmt::Debug,
{
    wait_until(
        &format!("{name} condition {type_}={status}"),
        timeout,
        || async {
            let obj = api.get_opt(name).await?;
            Ok(obj.filter(|o| {
                condition(o, type_).and_then(|c| {
                    c.get("status")
                        .and_then(|s| s.as_str())
                        .map(|s| s == status)
                }) == Some(true)
            }))
        },
    )
    .await
}

/// Waits until the Secret exists (and, if given, `accept` approves it); returns it.
pub async fn wait_for_secret(
    api: &Api<Secret>,
    name: &str,
    timeout: Duration,
    accept: impl Fn(&Secret) -> bool,
) -> Result<Secret> {
    wait_until(&format!("Secret {name}"), timeout, || async {
        Ok(api.get_opt(name).await?.filter(|s| accept(s)))
    })
    .await
}

/// Waits until the object is gone.
pub async fn wait_for_deletion<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug,
{
    wait_until(&format!("deletion of {name}"), timeout, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// The decoded `data` of a Secret as UTF-8 strings (lossy; test vault values are text).
pub fn secret_strings(secret: &Secret) -> std::collections::BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// Creates an Opaque Secret `name` with these keys and byte values, as admin.
pub async fn create_secret(
    api: &Api<Secret>,
    name: &str,
    pairs: &[(&str, &[u8])],
) -> Result<Secret> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    Ok(api.create(&PostParams::default(), &secret).await?)
}

/// A complete test environment: an operator namespace with the chart installed (RBAC scoped to
/// an app namespace) and a token kubeconfig for the chart's ServiceAccount.
pub struct TestEnv {
    pub cluster: Cluster,
    pub chart: ChartInstall,
    /// Namespace the operator watches and tests put KeeperSecrets in.
    pub app_namespace: String,
    /// Kubeconfig authenticating as the chart's ServiceAccount.
    pub operator_kubeconfig: PathBuf,
    dir: PathBuf,
    metrics_reader: tokio::sync::OnceCell<SaToken>,
}

impl TestEnv {
    /// Chart installed with `watchNamespace` = a fresh app namespace, so parallel tests'
    /// operators never see each other's objects.
    pub async fn new(name: &str) -> Result<TestEnv> {
        Self::with_values(name, &[]).await
    }

    /// Like [`TestEnv::new`] with extra chart values.
    pub async fn with_values(name: &str, set: &[(&str, &str)]) -> Result<TestEnv> {
        let cluster = Cluster::connect().await?;
        let op_ns = cluster.fresh_namespace(&format!("{name}-op")).await?;
        let app_ns = cluster.fresh_namespace(name).await?;
        let mut values = vec![("watchNamespace", app_ns.as_str())];
        values.extend_from_slice(set);
        let chart = cluster.install_chart(&op_ns, &op_ns, &values).await?;
        let dir = artefact_dir().join(&app_ns);
        let token = cluster
            .service_account_token(&op_ns, &chart.service_account, Duration::from_secs(7200))
            .await?;
        let operator_kubeconfig = dir.join("operator.kubeconfig");
        cluster.write_token_kubeconfig(&operator_kubeconfig, &token, &op_ns)?;
        Ok(TestEnv {
            cluster,
            chart,
            app_namespace: app_ns,
            operator_kubeconfig,
            dir,
            metrics_reader: tokio::sync::OnceCell::new(),
        })
    }

    /// A token of ServiceAccount `metrics-reader` in the operator namespace, bound to the
    /// chart's `<fullname>-metrics-reader` ClusterRole, as a Prometheus would be: what
    /// [`Operator::scrape_metrics`] needs. Made once per environment; returns once the API
    /// server's authorizer allows it (a fresh binding takes a moment).
    pub async fn metrics_reader_token(&self) -> Result<&SaToken> {
        self.metrics_reader
            .get_or_try_init(|| async {
                let ns = &self.chart.namespace;
                let sa = "metrics-reader";
                let account = ServiceAccount {
                    metadata: ObjectMeta {
                        name: Some(sa.into()),
                        ..ObjectMeta::default()
                    },
                    ..ServiceAccount::default()
                };
                Api::<ServiceAccount>::namespaced(self.cluster.client(), ns)
                    .create(&PostParams::default(), &account)
                    .await
                    .with_context(|| format!("creating ServiceAccount {ns}/{sa}"))?;
                let binding = ClusterRoleBinding {
                    metadata: ObjectMeta {
                        name: Some(format!("{ns}-metrics-reader")),
                        labels: Some([(E2E_LABEL.to_string(), "true".to_string())].into()),
                        ..ObjectMeta::default()
                    },
                    role_ref: RoleRef {
                        api_group: Some("rbac.authorization.k8s.io".into()),
                        kind: "ClusterRole".into(),
                        name: format!("{}-metrics-reader", chart_fullname(&self.chart.release)),
                    },
                    subjects: Some(vec![Subject {
                        kind: "ServiceAccount".into(),
                        name: sa.into(),
                        namespace: Some(ns.clone()),
                        ..Subject::default()
                    }]),
                };
                Api::<ClusterRoleBinding>::all(self.cluster.client())
                    .create(&PostParams::default(), &binding)
                    .await
                    .context("binding the metrics-reader ClusterRole")?;
                let token = self
                    .cluster
                    .service_account_token(ns, sa, Duration::from_secs(7200))
                    .await?;
                let client = self.cluster.token_client(&token, ns).await?;
                wait_until("the metrics reader's binding", DEFAULT_TIMEOUT, || async {
                    Ok(may_get_url(&client, "/metrics").await?.then_some(()))
                })
                .await?;
                Ok::<_, anyhow::Error>(token)
            })
            .await
    }

    /// Directory for this test's artefacts (operator logs, kubeconfig).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An operator (not yet started) configured for this environment.
    pub fn operator(&self) -> OperatorBuilder {
        OperatorBuilder::new(&self.operator_kubeconfig, &self.chart.namespace)
            .arg(format!("--watch-namespace={}", self.app_namespace))
            .log_file(self.dir.join(format!("{}.log", unique_name("operator"))))
    }

    /// An operator that trusts the KSM test server's CA (`--keeper-ca-file`).
    pub fn operator_for(&self, server: &TestServer) -> Result<OperatorBuilder> {
        let ca = self.dir.join("keeper-ca.pem");
        write_private(&ca, server.ca_pem().as_bytes())?;
        Ok(self
            .operator()
            .arg(format!("--keeper-ca-file={}", ca.display())))
    }

    /// Creates Secret `name` in the app namespace holding a KSM config or one-time token under
    /// key `config` (what `spec.auth.secretRef` points at).
    pub async fn create_credential_secret(&self, name: &str, config: &str) -> Result<Secret> {
        create_secret(&self.api(), name, &[("config", config.as_bytes())])
            .await
            .with_context(|| format!("creating credential Secret {name}"))
    }

    /// Everything the operator exposes besides Secret `data`, as `(where, text)`: its log files
    /// in [`TestEnv::dir`], every Event in the app and operator namespaces, the status and
    /// metadata of every KeeperSecret, the metadata of every Secret in the app namespace, the
    /// sealed cache Secrets in the operator namespace (ClusterKeeperStore has no status).
    pub async fn leak_haystacks(&self) -> Result<Vec<(String, String)>> {
        use k8s_openapi::api::core::v1::Event;
        use keeper_operator::api::KeeperSecret;
        use kube::api::ListParams;

        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = String::from_utf8_lossy(&fs::read(&path)?).into_owned();
                out.push((format!("log {}", path.display()), text));
            }
        }
        let lp = ListParams::default();
        let client = self.cluster.client();
        for ns in [&self.app_namespace, &self.chart.namespace] {
            for ev in Api::<Event>::namespaced(client.clone(), ns)
                .list(&lp)
                .await?
                .items
            {
                let name = ev.metadata.name.clone().unwrap_or_default();
                out.push((format!("Event {ns}/{name}"), serde_json::to_string(&ev)?));
            }
        }
        for ks in self.api::<KeeperSecret>().list(&lp).await?.items {
            let name = ks.metadata.name.clone().unwrap_or_default();
            let text = serde_json::to_string(&(&ks.metadata, &ks.status))?;
            out.push((format!("KeeperSecret {name} status/metadata"), text));
        }
        for s in self.api::<Secret>().list(&lp).await?.items {
            let name = s.metadata.name.clone().unwrap_or_default();
            out.push((
                format!("Secret {name} metadata"),
                serde_json::to_string(&s.metadata)?,
            ));
        }
        let caches = ListParams::default().labels("app.kubernetes.io/component=last-good-cache");
        let op_secrets: Api<Secret> = Api::namespaced(client, &self.chart.namespace);
        for s in op_secrets.list(&caches).await?.items {
            let name = s.metadata.name.clone().unwrap_or_default();
            for (key, value) in s.data.iter().flatten() {
                out.push((
                    format!("sealed cache Secret {name} key {key}"),
                    String::from_utf8_lossy(&value.0).into_owned(),
                ));
            }
        }
        Ok(out)
    }

    /// Fails, naming each leak (never the value), if any of `secrets` appears in what
    /// [`TestEnv::leak_haystacks`] collects. Call it at the end of every scenario.
    pub async fn assert_no_leaks(&self, secrets: &SecretValues) -> Result<()> {
        ensure!(!secrets.is_empty(), "leak scan with no secret values");
        let haystacks = self.leak_haystacks().await?;
        let leaks = secrets.find(&haystacks);
        ensure!(
            leaks.is_empty(),
            "{} secret value(s) leaked:\n{}",
            leaks.len(),
            leaks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        eprintln!(
            "leak scan: {} values over {} places ({} bytes): clean",
            secrets.len(),
            haystacks.len(),
            haystacks.iter().map(|h| h.1.len()).sum::<usize>()
        );
        Ok(())
    }

    /// The end of a scenario with a KSM test server: stops `operators` (so their logs are
    /// complete) and runs the leak scan for the original sample vault, the server's current
    /// records and the key material of `configs`.
    pub async fn finish(
        &self,
        server: &TestServer,
        configs: &[&str],
        operators: &mut [&mut Operator],
    ) -> Result<()> {
        for op in operators.iter_mut() {
            op.kill();
        }
        let mut secrets = SecretValues::default();
        secrets.add_vault(&crate::ksm_server::sample_vault());
        for record in server.records() {
            secrets.add_record(&record);
        }
        for config in configs {
            secrets.add_config(config);
        }
        self.assert_no_leaks(&secrets).await
    }

    /// Typed API in the app namespace, as admin.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.cluster.client(), &self.app_namespace)
    }
}

/// Path of the operator binary: `KEEPER_OPERATOR_BIN`, else `target/debug/keeper-operator`,
/// (re)built once per process with `cargo build --bin keeper-operator`.
pub fn operator_binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| build_operator().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_operator() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KEEPER_OPERATOR_BIN") {
        return Ok(PathBuf::from(p));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "keeper-operator",
            "--bin",
            "keeper-operator",
        ])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build for the operator")?;
    ensure!(status.success(), "cargo build --bin keeper-operator failed");
    let bin = artefact_dir()
        .parent()
        .expect("target dir")
        .join("debug/keeper-operator");
    ensure!(bin.is_file(), "{} was not built", bin.display());
    Ok(bin)
}

/// Builder for an operator child process.
pub struct OperatorBuilder {
    kubeconfig: PathBuf,
    namespace: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_file: PathBuf,
}

impl OperatorBuilder {
    pub fn new(kubeconfig: &Path, operator_namespace: &str) -> OperatorBuilder {
        OperatorBuilder {
            kubeconfig: kubeconfig.to_path_buf(),
            namespace: operator_namespace.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            log_file: artefact_dir().join(format!("{}.log", unique_name("operator"))),
        }
    }

    /// An extra command-line argument after `run`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn log_file(mut self, path: PathBuf) -> Self {
        self.log_file = path;
        self
    }

    /// Starts the operator; it is killed when the returned handle drops.
    pub fn spawn(self) -> Result<Operator> {
        let bin = operator_binary()?;
        let metrics_port = free_port()?;
        if let Some(dir) = self.log_file.parent() {
            fs::create_dir_all(dir)?;
        }
        let log = fs::File::create(&self.log_file)?;
        let child = Command::new(&bin)
            .arg("run")
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics_port}"))
            .arg(format!("--operator-namespace={}", self.namespace))
            .arg("--log-format=json")
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("POD_NAMESPACE", &self.namespace)
            .env("RUST_BACKTRACE", "1")
            // The KSM test server listens on 127.0.0.1 (any port); a test may override this.
            .env("KEEPER_OPERATOR_KEEPER_ALLOWED_HOSTS", "127.0.0.1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        Ok(Operator {
            child,
            metrics_port,
            log_file: self.log_file,
        })
    }
}

/// A running operator process; killed on drop. Its stdout/stderr go to `log_file`.
pub struct Operator {
    child: Child,
    metrics_port: u16,
    log_file: PathBuf,
}

impl Operator {
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Everything the operator has logged so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited (with its log tail).
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(30).collect();
            bail!(
                "operator exited ({status}); log {}:\n{}",
                self.log_file.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// `GET path` on the metrics port, with a bearer token if given: (status code, body).
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Result<(u16, String)> {
        let mut req = http_client().get(format!("{}{path}", self.metrics_url()));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.with_context(|| format!("GET {path}"))?;
        let code = resp.status().as_u16();
        Ok((code, resp.text().await?))
    }

    /// The operator's `/metrics`, read as a scraper holding `token` would (see
    /// [`TestEnv::metrics_reader_token`]).
    pub async fn scrape_metrics(&self, token: &SaToken) -> Result<String> {
        let (code, body) = self.get("/metrics", Some(token.secret())).await?;
        ensure!(code == 200, "GET /metrics answered {code}: {body}");
        Ok(body)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let url = format!("{}/readyz", self.metrics_url());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            if http_get_ok(&url).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "operator not ready after {timeout:?}; log: {}",
                    self.log_file.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills the process now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn http_client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client without TLS settings builds")
        })
        .clone()
}

/// A plain HTTP GET on loopback (no client library needed for /readyz); true on a 200.
async fn http_get_ok(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let Ok(mut s) = tokio::net::TcpStream::connect(host).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200")
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_names_reads_only_crd_metadata_names() {
        let manifest = "---\nkind: ServiceAccount\nmetadata:\n  name: sa\n---\n# Source: x\n\
                        apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
                        metadata:\n  annotations:\n    a: b\n  name: things.example.dev\nspec:\n  names:\n    kind: Thing\n";
        assert_eq!(crd_names(manifest), vec!["things.example.dev".to_string()]);
    }

    #[test]
    fn chart_fullname_matches_the_chart_helper() {
        assert_eq!(chart_fullname("ko"), "ko-keeper-operator");
        assert_eq!(chart_fullname("keeper-operator"), "keeper-operator");
        let long = "a".repeat(60);
        assert_eq!(chart_fullname(&long).len(), 63);
        assert!(!chart_fullname(&format!("{}-", "b".repeat(62))).ends_with('-'));
    }

    #[test]
    fn unique_names_are_distinct_dns_labels() {
        let a = unique_name("some-test");
        let b = unique_name("some-test");
        assert_ne!(a, b);
        for n in [a, b, unique_name(&"x".repeat(80))] {
            assert!(n.len() <= 63);
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
            assert!(!n.ends_with('-'));
        }
    }

    #[test]
    fn sa_token_debug_is_redacted() {
        let t = SaToken {
            value: "eyJhbGciOi.secret".into(),
        };
        assert!(!format!("{t:?}").contains("secret"));
    }
}
