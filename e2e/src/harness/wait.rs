//! Waiting for the cluster to reach a state: polling, status conditions, Secrets, deletion.

use std::fmt;
use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

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
