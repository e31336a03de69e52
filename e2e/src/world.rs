//! One app namespace with the chart installed, a KSM test server holding the sample vault, a
//! bound credential Secret `ksm-config`, and helpers to create and watch KeeperSecrets that map
//! the Postgres password: the shared setup of the controller, cache and fault scenarios. Also
//! the KeeperSecret manifests and waits those scenarios share.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keeper_operator::api::KeeperSecret;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::harness::{
    Operator, OperatorBuilder, TestEnv, secret_bytes, secret_text, wait_until, workspace_root,
};
use crate::ksm_server::{ServerOptions, TestServer, sample_vault};

/// The KeeperSecret examples of `e2e/examples/` that the sample vault satisfies with a Secret
/// in the namespace (`store-user.yaml` also needs `cluster-store.yaml`).
pub const EXAMPLES: [&str; 6] = [
    "keepersecret.yaml",
    "database.yaml",
    "connection-url.yaml",
    "files.yaml",
    "whole-record.yaml",
    "folder.yaml",
];

/// How long a scenario waits for anything.
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// UID of the sample vault's Postgres record.
pub const POSTGRES: &str = "YP6qLSSxX3qEJLYyQs6iZw";

/// A scenario: chart, app namespace, KSM test server and the credential Secret `ksm-config`.
pub struct World {
    pub env: TestEnv,
    pub server: TestServer,
    pub ca: std::path::PathBuf,
    /// The KSM config given to the operator (its key material is scanned for).
    pub config: String,
    /// How long this world's waits last.
    timeout: Duration,
}

impl World {
    /// Installs the chart in fresh namespaces named after `name` and starts a test server.
    pub async fn start(name: &str) -> Result<World> {
        World::start_with(name, ServerOptions::default()).await
    }

    /// [`World::start`] with a test server started with `options` (another key id, say).
    pub async fn start_with(name: &str, options: ServerOptions) -> Result<World> {
        let env = TestEnv::new(name).await?;
        let server = TestServer::start_with(sample_vault(), options).await?;
        std::fs::create_dir_all(env.dir())?;
        let ca = env.dir().join("keeper-ca.pem");
        std::fs::write(&ca, server.ca_pem())?;
        let config = server.bound_config("operator")?;
        env.create_credential_secret("ksm-config", &config).await?;
        Ok(World {
            env,
            server,
            ca,
            config,
            timeout: TIMEOUT,
        })
    }

    /// The same world with waits of `timeout` instead of [`TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> World {
        self.timeout = timeout;
        self
    }

    /// How long this world's waits last.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// An operator trusting the test server's CA, otherwise with the operator's defaults; not
    /// yet started.
    pub fn plain_operator_builder(&self) -> OperatorBuilder {
        self.env
            .operator()
            .arg(format!("--keeper-ca-file={}", self.ca.display()))
    }

    /// An operator for this world (trusts the test server's CA), not yet started.
    pub fn operator_builder(&self) -> OperatorBuilder {
        self.plain_operator_builder().arg("--concurrency=8")
    }

    /// A started, ready operator for this world.
    pub async fn operator(&self) -> Result<Operator> {
        let mut operator = self.operator_builder().spawn()?;
        operator.wait_ready(self.timeout).await?;
        Ok(operator)
    }

    /// Applies `e2e/examples/<file>` verbatim in the app namespace, as admin.
    pub fn apply_example(&self, file: &str) -> Result<()> {
        let path = workspace_root().join("e2e/examples").join(file);
        let manifest =
            std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        // The KSM test server runs on this runtime: block a worker, not the runtime.
        tokio::task::block_in_place(|| {
            self.env
                .cluster
                .apply(&manifest, &["-n", &self.env.app_namespace])
        })?;
        Ok(())
    }

    /// `kubectl wait --for=condition=Ready`, exactly as users and Argo CD do.
    pub fn kubectl_wait_ready(&self, name: &str) -> Result<()> {
        let mut cmd = self.env.cluster.kubectl();
        cmd.args(["wait", "--for=condition=Ready"])
            .arg(format!("--timeout={}s", self.timeout.as_secs()))
            .args(["-n", &self.env.app_namespace])
            .arg(format!("keepersecret/{name}"));
        // The KSM test server runs on this runtime: block a worker, not the runtime.
        let out = tokio::task::block_in_place(|| cmd.output())?;
        ensure!(
            out.status.success(),
            "kubectl wait: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Waits until KeeperSecret `name`'s Ready condition has this status and reason.
    pub async fn wait_reason(
        &self,
        name: &str,
        status: &str,
        reason: &str,
    ) -> Result<KeeperSecret> {
        self.wait_condition(name, "Ready", status, reason).await
    }

    /// Waits until KeeperSecret `name`'s condition `type_` has this status and reason.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> Result<KeeperSecret> {
        wait_for_reason(
            &self.keeper_secrets(),
            name,
            type_,
            status,
            reason,
            self.timeout,
        )
        .await
    }

    /// Waits until Secret `name` exists and `check` accepts its data.
    pub async fn wait_secret(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&BTreeMap<String, Vec<u8>>) -> bool,
    ) -> Result<Secret> {
        let api = self.secrets();
        let check = &check;
        wait_until(&format!("Secret {name}: {what}"), self.timeout, || {
            let api = api.clone();
            async move {
                let Some(s) = api.get_opt(name).await? else {
                    return Ok(None);
                };
                Ok(check(&secret_bytes(&s)).then_some(s))
            }
        })
        .await
    }

    /// The test server's current value of standard field `field_type` of record `uid` (what a
    /// Secret must hold).
    pub fn vault_value(&self, uid: &str, field_type: &str) -> Result<String> {
        self.server
            .record(uid)?
            .field_text(field_type)
            .with_context(|| format!("record {uid} has no text {field_type} field"))
    }

    /// Ends the scenario: stops the operators and fails on any leaked secret value.
    pub async fn finish(&self, operators: &mut [&mut Operator]) -> Result<()> {
        self.env
            .finish(&self.server, &[&self.config], operators)
            .await
    }

    /// KeeperSecrets in the app namespace (admin).
    pub fn keeper_secrets(&self) -> Api<KeeperSecret> {
        self.env.api()
    }

    /// Secrets in the app namespace (admin).
    pub fn secrets(&self) -> Api<Secret> {
        self.env.api()
    }

    /// get_secret requests the test server has answered so far.
    pub fn get_secret_calls(&self) -> u64 {
        self.server.counters().endpoint("get_secret")
    }

    /// Creates `names` KeeperSecrets mapping the Postgres password, `concurrency` at a time.
    pub async fn create(&self, names: &[String], refresh: &str) -> Result<()> {
        let api = self.keeper_secrets();
        stream::iter(names)
            .map(|name| {
                let api = api.clone();
                async move {
                    let ks: KeeperSecret = serde_json::from_value(keeper_secret(name, refresh))?;
                    api.create(&PostParams::default(), &ks).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Waits until every KeeperSecret in the namespace has Ready with this reason.
    pub async fn wait_all(&self, count: usize, reason: &str) -> Result<Vec<KeeperSecret>> {
        let api = self.keeper_secrets();
        wait_until(
            &format!("{count} KeeperSecrets Ready reason {reason}"),
            self.timeout,
            || {
                let api = api.clone();
                async move {
                    let all = api.list(&ListParams::default()).await?.items;
                    let done = all
                        .iter()
                        .filter(|ks| ks.ready_condition().is_some_and(|c| c.reason == reason))
                        .count();
                    Ok((all.len() == count && done == count).then_some(all))
                }
            },
        )
        .await
    }

    /// Every managed Secret's resourceVersion and data, by name.
    pub async fn snapshot(
        &self,
    ) -> Result<BTreeMap<String, (Option<String>, BTreeMap<String, ByteString>)>> {
        let lp = ListParams::default().labels("app.kubernetes.io/managed-by=keeper-operator");
        Ok(self
            .secrets()
            .list(&lp)
            .await?
            .items
            .into_iter()
            .map(|s| {
                let name = s.metadata.name.clone().unwrap_or_default();
                (
                    name,
                    (s.metadata.resource_version, s.data.unwrap_or_default()),
                )
            })
            .collect())
    }

    /// The Postgres password the test server currently holds.
    pub fn postgres_password(&self) -> Result<String> {
        self.vault_value(POSTGRES, "password")
    }

    /// Changes the Postgres password in Keeper (a new record revision); returns the revision.
    pub fn set_postgres_password(&self, password: &str) -> Result<i64> {
        self.server
            .set_record(self.server.record(POSTGRES)?.password(password))
    }
}

/// A KeeperSecret manifest `name` with this `spec`.
pub fn keeper_secret_manifest(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "keeper-operator.dev/v1alpha1",
        "kind": "KeeperSecret",
        "metadata": { "name": name },
        "spec": spec,
    })
}

/// Creates KeeperSecret `name` with this `spec`, as admin.
pub async fn create_keeper_secret(
    api: &Api<KeeperSecret>,
    name: &str,
    spec: serde_json::Value,
) -> Result<KeeperSecret> {
    let ks: KeeperSecret = serde_json::from_value(keeper_secret_manifest(name, spec))?;
    Ok(api.create(&PostParams::default(), &ks).await?)
}

/// A KeeperSecret `name` writing Secret `name` with the Postgres password under `password`.
pub fn keeper_secret(name: &str, refresh: &str) -> serde_json::Value {
    keeper_secret_manifest(
        name,
        json!({
            "auth": { "secretRef": { "name": "ksm-config", "key": "config" } },
            "refreshInterval": refresh,
            "target": { "name": name },
            "data": [{ "key": "password", "notation": format!("keeper://{POSTGRES}/field/password") }]
        }),
    )
}

/// Waits until KeeperSecret `name`'s condition `type_` has this status and reason; returns it.
pub async fn wait_for_reason(
    api: &Api<KeeperSecret>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
    timeout: Duration,
) -> Result<KeeperSecret> {
    wait_until(
        &format!("{name} {type_}={status} reason {reason}"),
        timeout,
        || async move {
            let ks = api.get(name).await?;
            let ok = ks
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .any(|c| c.type_ == type_ && c.status == status && c.reason == reason);
            Ok(ok.then_some(ks))
        },
    )
    .await
}

/// `prefix-0000`, `prefix-0001`, ... for the range.
pub fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:04}")).collect()
}

/// A status condition by type.
pub fn condition<'a>(
    ks: &'a KeeperSecret,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    ks.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// The `password` key of a Secret, as text.
pub fn password(secret: &Secret) -> Option<String> {
    secret_text(secret, "password")
}

/// Secret `name` (its `data`) holds a password from `allowed`; a missing one never passes, not
/// even when `allowed` holds "".
pub fn check_password_in(
    name: &str,
    data: &BTreeMap<String, ByteString>,
    allowed: &[&str],
) -> Result<()> {
    let value = data.get("password").map(|b| String::from_utf8_lossy(&b.0));
    ensure!(
        value.is_some_and(|v| allowed.contains(&v.as_ref())),
        "Secret {name} lost its password or holds an unexpected one"
    );
    Ok(())
}

/// Every managed Secret holds a password from `allowed`; returns how many there are.
pub async fn assert_passwords_in(w: &World, allowed: &[&str]) -> Result<usize> {
    let all = w.snapshot().await?;
    for (name, (_, data)) in &all {
        check_password_in(name, data, allowed)?;
    }
    Ok(all.len())
}
