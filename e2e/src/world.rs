//! One app namespace with the chart installed, a KSM test server holding the sample vault, a
//! bound credential Secret `ksm-config`, and helpers to create and watch KeeperSecrets that map
//! the Postgres password: the shared setup of the cache and fault scenarios.

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

use crate::harness::{Operator, OperatorBuilder, TestEnv, wait_until};
use crate::ksm_server::{RecordSpec, TestServer, sample_vault};

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
}

impl World {
    /// Installs the chart in fresh namespaces named after `name` and starts a test server.
    pub async fn start(name: &str) -> Result<World> {
        let env = TestEnv::new(name).await?;
        let server = TestServer::start(sample_vault()).await?;
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
        })
    }

    /// An operator for this world (trusts the test server's CA), not yet started.
    pub fn operator_builder(&self) -> OperatorBuilder {
        self.env
            .operator()
            .arg(format!("--keeper-ca-file={}", self.ca.display()))
            .arg("--concurrency=8")
    }

    /// A started, ready operator for this world.
    pub async fn operator(&self) -> Result<Operator> {
        let mut operator = self.operator_builder().spawn()?;
        operator.wait_ready(TIMEOUT).await?;
        Ok(operator)
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
            TIMEOUT,
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

    /// The Postgres record with its password field set to `password` (a JSON value array).
    pub fn postgres_with_password(&self, password: serde_json::Value) -> Result<RecordSpec> {
        let mut record = self.server.record(POSTGRES)?;
        for field in &mut record.fields {
            if field["type"] == "password" {
                field["value"] = password.clone();
            }
        }
        Ok(record)
    }

    /// The Postgres password the test server currently holds.
    pub fn postgres_password(&self) -> Result<String> {
        let record = self.server.record(POSTGRES)?;
        record
            .fields
            .iter()
            .find(|f| f["type"] == "password")
            .and_then(|f| f["value"][0].as_str())
            .map(str::to_string)
            .context("the Postgres record has no password")
    }

    /// Changes the Postgres password in Keeper (a new record revision); returns the revision.
    pub fn set_postgres_password(&self, password: &str) -> Result<i64> {
        self.server
            .set_record(self.postgres_with_password(json!([password]))?)
    }
}

/// A KeeperSecret `name` writing Secret `name` with the Postgres password under `password`.
pub fn keeper_secret(name: &str, refresh: &str) -> serde_json::Value {
    json!({
        "apiVersion": "keeper-operator.dev/v1alpha1",
        "kind": "KeeperSecret",
        "metadata": { "name": name },
        "spec": {
            "auth": { "secretRef": { "name": "ksm-config", "key": "config" } },
            "refreshInterval": refresh,
            "target": { "name": name },
            "data": [{ "key": "password", "notation": format!("keeper://{POSTGRES}/field/password") }]
        }
    })
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
    let value = secret.data.as_ref()?.get("password")?;
    Some(String::from_utf8_lossy(&value.0).into_owned())
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
