//! Tenancy and in-cluster credentials end to end: the real kube-apiserver (RBAC on, the chart's
//! ServiceAccount), operator binaries and the KSM test server with the sample vault.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use keeper_e2e::harness::{Operator, TestEnv, create_secret, wait_until};
use keeper_e2e::ksm_server::{TestServer, sample_vault};
use keeper_operator::crd::KeeperSecret;
use keeper_operator::ksm::config::KsmConfig;
use keeper_operator::redeem::{CLAIM_ANNOTATION, REDEEMED_ANNOTATION};
use kube::api::PostParams;
use kube::{Api, ResourceExt};

const TIMEOUT: Duration = Duration::from_secs(60);
const POSTGRES: &str = "YP6qLSSxX3qEJLYyQs6iZw";

/// A KeeperSecret reading the Postgres password with the credential in Secret `cred`.
async fn keeper_secret(api: &Api<KeeperSecret>, name: &str, cred: &str) -> Result<()> {
    let ks: KeeperSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "keeper-operator.dev/v1alpha1",
        "kind": "KeeperSecret",
        "metadata": { "name": name },
        "spec": {
            "auth": { "secretRef": { "name": cred, "key": "config" } },
            "target": { "name": format!("{name}-out") },
            "data": [ { "key": "password", "notation": format!("keeper://{POSTGRES}/field/password") } ],
        },
    }))?;
    api.create(&PostParams::default(), &ks).await?;
    Ok(())
}

/// Waits until Ready has this status and reason; returns the condition message.
async fn wait_ready(
    api: &Api<KeeperSecret>,
    name: &str,
    status: &str,
    reason: &str,
) -> Result<String> {
    wait_until(&format!("{name} Ready={status} {reason}"), TIMEOUT, || {
        let api = api.clone();
        async move {
            let ks = api.get(name).await?;
            Ok(ks
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .find(|c| c.type_ == "Ready" && c.status == status && c.reason == reason)
                .map(|c| c.message.clone()))
        }
    })
    .await
}

fn value(s: &Secret, key: &str) -> String {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

async fn scrape(op: &Operator) -> Result<String> {
    let text = reqwest::get(format!("{}/metrics", op.metrics_url()))
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text)
}

/// Sum over lines of `metric{labels}` exactly (value after the last space).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_token_is_redeemed_once_by_the_leader_of_two_replicas() -> Result<()> {
    let env = TestEnv::new("ten-token").await?;
    let server = TestServer::start(sample_vault()).await?;
    let token = server.issue_token("operator")?;
    let (key_id, key) = server.server_public_key();
    let server_key = format!("{key_id}:{key}");
    let secrets: Api<Secret> = env.api();
    create_secret(
        &secrets,
        "ksm-token",
        &[
            ("config", token.as_bytes()),
            ("hostname", server.hostname().as_bytes()),
            ("serverPublicKey", server_key.as_bytes()),
        ],
    )
    .await?;

    // Two replicas with leader election; both are started before anything is to be done.
    let mut ops = Vec::new();
    for _ in 0..2 {
        let mut op = env.operator_for(&server)?.arg("--leader-elect").spawn()?;
        op.wait_ready(TIMEOUT).await?;
        ops.push(op);
    }
    let kss: Api<KeeperSecret> = env.api();
    keeper_secret(&kss, "db", "ksm-token").await?;
    keeper_secret(&kss, "db2", "ksm-token").await?;
    for name in ["db", "db2"] {
        wait_ready(&kss, name, "True", "Synced").await?;
    }
    let expected = server
        .record(POSTGRES)?
        .fields
        .iter()
        .find(|f| f["type"] == "password")
        .and_then(|f| f["value"][0].as_str().map(str::to_string))
        .context("password")?;
    assert_eq!(value(&secrets.get("db-out").await?, "password"), expected);

    // The token was replaced by a bound config in the same key; hostname and server key came
    // from the Secret's extra keys.
    let cred = secrets.get("ksm-token").await?;
    let stored = value(&cred, "config");
    ensure!(stored != token, "the token is still stored");
    let config = KsmConfig::parse(&stored).context("stored credential is a KSM config")?;
    assert_eq!(config.hostname(), server.hostname());
    assert!(cred.annotations().contains_key(REDEEMED_ANNOTATION));
    assert!(!cred.annotations().contains_key(CLAIM_ANNOTATION));

    // Exactly one redemption across both replicas, and it succeeded.
    let mut success = 0.0;
    let mut any = 0.0;
    for op in &ops {
        let text = scrape(op).await?;
        success += sample(
            &text,
            r#"keeper_operator_token_redemptions_total{outcome="success"}"#,
        );
        any += text
            .lines()
            .filter(|l| l.starts_with("keeper_operator_token_redemptions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert_eq!((success, any), (1.0, 1.0), "redemptions across replicas");

    // The spent token, stored again elsewhere: a clear, value-free error; the Secret is left
    // as the user wrote it (no claim left behind).
    create_secret(
        &secrets,
        "ksm-used",
        &[
            ("config", token.as_bytes()),
            ("hostname", server.hostname().as_bytes()),
            ("serverPublicKey", server_key.as_bytes()),
        ],
    )
    .await?;
    keeper_secret(&kss, "used", "ksm-used").await?;
    let msg = wait_ready(&kss, "used", "False", "TokenRedemptionFailed").await?;
    ensure!(msg.contains("generate a new one"), "{msg}");
    ensure!(!msg.contains(&token), "token in status");
    let used = secrets.get("ksm-used").await?;
    assert_eq!(value(&used, "config"), token);
    assert!(!used.annotations().contains_key(CLAIM_ANNOTATION));

    // A malformed token and a bare token without hostname: AuthFailed, saying what to fix.
    create_secret(&secrets, "ksm-bad", &[("config", b"US:c2hvcnQ")]).await?;
    keeper_secret(&kss, "bad", "ksm-bad").await?;
    let msg = wait_ready(&kss, "bad", "False", "AuthFailed").await?;
    ensure!(msg.contains("one-time access token"), "{msg}");
    let fresh = server.issue_token("operator")?;
    create_secret(&secrets, "ksm-nohost", &[("config", fresh.as_bytes())]).await?;
    keeper_secret(&kss, "nohost", "ksm-nohost").await?;
    let msg = wait_ready(&kss, "nohost", "False", "AuthFailed").await?;
    ensure!(msg.contains("\"hostname\""), "{msg}");
    ensure!(!msg.contains(&fresh), "token in status");

    for op in &mut ops {
        op.ensure_running()?;
        let logs = op.logs();
        ensure!(
            !logs.contains(&token) && !logs.contains(&fresh) && !logs.contains(&stored),
            "a credential in the logs"
        );
    }
    Ok(())
}
