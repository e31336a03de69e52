//! A test environment: the chart installed for one app namespace, with the operator's kubeconfig,
//! operator builders and the leak scan that ends every scenario.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Resource};

use super::process::{artefact_dir, unique_name, write_private};
use super::{ChartInstall, Cluster, Operator, OperatorBuilder, SaToken, create_secret};
use crate::ksm_server::TestServer;
use crate::leak_scan::SecretValues;

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
        // Off unless asked for: every environment is an install of its own, and a priority
        // level per install would split the API server's concurrency among dozens of them.
        let mut values = vec![
            ("watchNamespace", app_ns.as_str()),
            ("flowControl.enabled", "false"),
        ];
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
            .get_or_try_init(|| {
                self.cluster
                    .metrics_reader(&self.chart.namespace, &self.chart.release)
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
