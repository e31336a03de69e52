//! Tenancy and in-cluster credentials end to end: the real kube-apiserver (RBAC on, the chart's
//! ServiceAccount), operator binaries and the KSM test server with the sample vault.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Secret;
use keeper_e2e::harness::{Operator, TestEnv, create_secret, secret_text, unique_name, wait_until};
use keeper_e2e::ksm_server::{TestServer, uids};
use keeper_e2e::world::{POSTGRES, create_keeper_secret, wait_for_reason};
use keeper_operator::api::{CLAIM_ANNOTATION, REDEEMED_ANNOTATION, RESTARTED_AT_ANNOTATION};
use keeper_operator::api::{ClusterKeeperStore, KeeperSecret};
use keeper_operator::ksm::config::KsmConfig;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A KeeperSecret reading the Postgres password with the credential in Secret `cred`.
async fn keeper_secret(api: &Api<KeeperSecret>, name: &str, cred: &str) -> Result<()> {
    let spec = serde_json::json!({
        "auth": { "secretRef": { "name": cred, "key": "config" } },
        "target": { "name": format!("{name}-out") },
        "data": [ { "key": "password", "notation": format!("keeper://{POSTGRES}/field/password") } ],
    });
    create_keeper_secret(api, name, spec).await?;
    Ok(())
}

/// Waits until Ready has this status and reason; returns the condition message.
async fn wait_ready(
    api: &Api<KeeperSecret>,
    name: &str,
    status: &str,
    reason: &str,
) -> Result<String> {
    let ks = wait_for_reason(api, name, "Ready", status, reason, TIMEOUT).await?;
    let ready = ks.ready_condition().context("Ready")?;
    Ok(ready.message.clone())
}

fn value(s: &Secret, key: &str) -> String {
    secret_text(s, key).unwrap_or_default()
}

/// The operator's metrics, read with a token allowed to (as a Prometheus bound to the chart's
/// metrics-reader ClusterRole).
async fn scrape(env: &TestEnv, op: &Operator) -> Result<String> {
    op.scrape_metrics(env.metrics_reader_token().await?).await
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
    let server = TestServer::sample().await?;
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
    let mut leaders = Vec::new();
    for op in &ops {
        let text = scrape(&env, op).await?;
        leaders.push(sample(&text, "keeper_operator_leader"));
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
    leaders.sort_by(f64::total_cmp);
    assert_eq!(leaders, [0.0, 1.0], "exactly one replica reports leading");

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

/// A KeeperSecret from a JSON spec, refreshed every 5 s (the minimum).
async fn keeper_secret_with(
    api: &Api<KeeperSecret>,
    name: &str,
    spec: serde_json::Value,
) -> Result<()> {
    let mut spec = spec;
    spec["refreshInterval"] = "5s".into();
    spec["target"] = serde_json::json!({ "name": format!("{name}-out") });
    create_keeper_secret(api, name, spec).await?;
    Ok(())
}

/// (generation, restartedAt) of a Deployment: every pod-template change bumps the generation.
async fn template_state(api: &Api<Deployment>, name: &str) -> Result<(i64, Option<String>)> {
    let d = api.get(name).await?;
    let restarted = d
        .spec
        .template
        .metadata
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(RESTARTED_AT_ANNOTATION).cloned());
    Ok((d.metadata.generation.unwrap_or_default(), restarted))
}

/// Long enough for a restart that should not happen to have happened: one more refresh wave
/// (5 s, a feeder may lag one wave) plus the restart window for a 5 s interval (6.5 s).
const QUIET: Duration = Duration::from_secs(13);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_change_restarts_the_consuming_deployment_once() -> Result<()> {
    let env = TestEnv::with_values("ten-rollout", &[("rbac.rolloutRestart", "true")]).await?;
    let server = TestServer::sample().await?;
    let config = server.bound_config("operator")?;
    env.create_credential_secret("ksm", &config).await?;
    let deployments: Api<Deployment> = env.api();
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "api", "labels": { "app": "api" } },
        "spec": {
            "selector": { "matchLabels": { "app": "api" } },
            "template": {
                "metadata": { "labels": { "app": "api" }, "annotations": { "team": "shop" } },
                "spec": { "containers": [ { "name": "api", "image": "registry.k8s.io/pause:3.10" } ] },
            },
        },
    }))?;
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    let daemon_sets: Api<DaemonSet> = env.api();
    let daemon_set: DaemonSet = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "agent" },
        "spec": {
            "selector": { "matchLabels": { "app": "agent" } },
            "template": {
                "metadata": { "labels": { "app": "agent" } },
                "spec": { "containers": [ { "name": "agent", "image": "registry.k8s.io/pause:3.10" } ] },
            },
        },
    }))?;
    daemon_sets
        .create(&PostParams::default(), &daemon_set)
        .await?;
    let mut op = env.operator_for(&server)?.spawn()?;
    op.wait_ready(TIMEOUT).await?;

    // Two KeeperSecrets read the same record and feed the same Deployment; the first also feeds a
    // DaemonSet, the second names a StatefulSet that does not exist.
    let kss: Api<KeeperSecret> = env.api();
    let notation = format!("keeper://{POSTGRES}/field/password");
    let api = serde_json::json!({ "kind": "Deployment", "name": "api" });
    keeper_secret_with(
        &kss,
        "feed-a",
        serde_json::json!({
            "auth": { "secretRef": { "name": "ksm", "key": "config" } },
            "data": [ { "key": "password", "notation": notation } ],
            "rolloutRestart": [ api, { "kind": "DaemonSet", "name": "agent" } ],
        }),
    )
    .await?;
    keeper_secret_with(
        &kss,
        "feed-b",
        serde_json::json!({
            "auth": { "secretRef": { "name": "ksm", "key": "config" } },
            "data": [ { "key": "db-password", "notation": notation } ],
            "rolloutRestart": [ api, { "kind": "StatefulSet", "name": "missing" } ],
        }),
    )
    .await?;
    for name in ["feed-a", "feed-b"] {
        wait_ready(&kss, name, "True", "Synced").await?;
    }

    // The first sync restarts nothing.
    tokio::time::sleep(QUIET).await;
    let (generation, restarted) = template_state(&deployments, "api").await?;
    ensure!(
        restarted.is_none(),
        "restarted on first sync: {restarted:?}"
    );

    // One record change in Keeper: both Secrets follow, the Deployment restarts exactly once.
    server.set_record(server.record(POSTGRES)?.password("rotated-for-rollout"))?;
    let secrets: Api<Secret> = env.api();
    for (secret, key) in [("feed-a-out", "password"), ("feed-b-out", "db-password")] {
        wait_until(&format!("{secret} rotated"), TIMEOUT, || {
            let secrets = secrets.clone();
            async move {
                let s = secrets.get(secret).await?;
                Ok((value(&s, key) == "rotated-for-rollout").then_some(()))
            }
        })
        .await?;
    }
    let first = wait_until("restartedAt on the Deployment", TIMEOUT, || {
        let deployments = deployments.clone();
        async move { Ok(template_state(&deployments, "api").await?.1) }
    })
    .await?;
    tokio::time::sleep(QUIET).await;
    let after = template_state(&deployments, "api").await?;
    assert_eq!(after, (generation + 1, Some(first.clone())), "one restart");
    let d = deployments.get("api").await?;
    let annotations = d.spec.template.metadata.and_then(|m| m.annotations);
    assert_eq!(
        annotations.and_then(|a| a.get("team").cloned()).as_deref(),
        Some("shop"),
        "the patch keeps other annotations"
    );
    let text = scrape(&env, &op).await?;
    let restarted =
        r#"keeper_operator_rollout_restarts_total{kind="Deployment",outcome="restarted"}"#;
    assert_eq!(sample(&text, restarted), 1.0, "{text}");
    let missing =
        r#"keeper_operator_rollout_restarts_total{kind="StatefulSet",outcome="not_found"}"#;
    assert_eq!(sample(&text, missing), 1.0, "{text}");
    let daemons = r#"keeper_operator_rollout_restarts_total{kind="DaemonSet",outcome="restarted"}"#;
    assert_eq!(sample(&text, daemons), 1.0, "{text}");
    let agent = daemon_sets.get("agent").await?;
    ensure!(
        agent
            .spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .is_some_and(|a| a.contains_key(RESTARTED_AT_ANNOTATION)),
        "the DaemonSet was not restarted"
    );
    // The missing StatefulSet is a warning, not a failed sync.
    wait_ready(&kss, "feed-b", "True", "Synced").await?;
    let events: Api<k8s_openapi::api::core::v1::Event> = env.api();
    wait_until("RolloutRestartFailed event", TIMEOUT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await?;
            Ok(list
                .items
                .iter()
                .find(|e| {
                    e.reason.as_deref() == Some("RolloutRestartFailed")
                        && e.involved_object.name.as_deref() == Some("feed-b")
                })
                .map(|e| e.message.clone().unwrap_or_default()))
        }
    })
    .await?;

    // No-ops restart nothing: the Secret deleted and restored with the same data, and a spec
    // change that leaves the data as it is.
    let before = sample(&text, restarted);
    secrets.delete("feed-a-out", &Default::default()).await?;
    wait_until("feed-a-out restored", TIMEOUT, || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get_opt("feed-a-out").await?;
            Ok(s.filter(|s| value(s, "password") == "rotated-for-rollout"))
        }
    })
    .await?;
    let patch = serde_json::json!({ "spec": { "refreshInterval": "6s" } });
    kss.patch(
        "feed-b",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        template_state(&deployments, "api").await?,
        (generation + 1, Some(first)),
        "a no-op restarted the Deployment"
    );
    let text = scrape(&env, &op).await?;
    assert_eq!(sample(&text, restarted), before);

    // The metrics of this run: leader (no election), Keeper latency, budget use, data age;
    // no record title in any label.
    ensure!(!text.contains("Postgres"), "a record title in the metrics");
    assert_eq!(sample(&text, "keeper_operator_leader"), 1.0, "{text}");
    let latency =
        r#"keeper_operator_keeper_request_duration_seconds_count{operation="get_secret"}"#;
    let requests = text
        .lines()
        .filter(|l| {
            l.starts_with(r#"keeper_operator_keeper_requests_total{operation="get_secret""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    ensure!(requests >= 2.0, "{text}");
    assert_eq!(
        sample(&text, latency),
        requests,
        "one latency sample per request"
    );
    let budget: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("keeper_operator_keeper_budget_utilization{credential=\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    ensure!(
        budget.len() == 1 && (0.0..=1.0).contains(&budget[0]),
        "one credential's budget use in 0..1: {budget:?}"
    );
    for name in ["feed-a", "feed-b"] {
        let series = format!(
            r#"keeper_operator_keeper_secret_data_age_seconds{{namespace="{}",name="{name}"}}"#,
            env.app_namespace
        );
        let age = sample(&text, &series);
        ensure!(
            age > 0.0 && age < 30.0,
            "{name}: data age {age} (refreshed every 5 s)"
        );
    }
    // Deleting a KeeperSecret removes its series.
    kss.delete("feed-a", &Default::default()).await?;
    wait_until("feed-a's data age series gone", TIMEOUT, || {
        let (env, op) = (&env, &op);
        async move {
            let text = scrape(env, op).await?;
            Ok((!text.contains(r#"name="feed-a""#)).then_some(()))
        }
    })
    .await?;
    env.finish(&server, &[&config], &mut [&mut op]).await
}

/// A cluster-scoped store for the credential in the operator namespace, lent to the app
/// namespace, with the given allow-lists.
async fn store(
    env: &TestEnv,
    name: &str,
    records: &[&str],
    folders: &[&str],
) -> Result<ClusterKeeperStore> {
    let store: ClusterKeeperStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "keeper-operator.dev/v1alpha1",
        "kind": "ClusterKeeperStore",
        "metadata": { "name": name },
        "spec": {
            "credentialsSecretRef": { "name": "shared-ksm", "key": "config" },
            "namespaces": [ env.app_namespace ],
            "allowedRecords": records,
            "allowedFolders": folders,
        },
    }))?;
    let api: Api<ClusterKeeperStore> = Api::all(env.cluster.client());
    Ok(api.create(&PostParams::default(), &store).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_allow_lists_limit_records_and_folders() -> Result<()> {
    let env = TestEnv::new("ten-allow").await?;
    let server = TestServer::sample().await?;
    let config = server.bound_config("operator")?;
    let op_secrets: Api<Secret> = Api::namespaced(env.cluster.client(), &env.chart.namespace);
    create_secret(&op_secrets, "shared-ksm", &[("config", config.as_bytes())]).await?;
    let by_records = unique_name("ten-records");
    let by_folder = unique_name("ten-folder");
    store(&env, &by_records, &[POSTGRES, uids::STRIPE], &[]).await?;
    store(&env, &by_folder, &[], &[uids::PRODUCTION]).await?;
    let mut op = env.operator_for(&server)?.spawn()?;
    op.wait_ready(TIMEOUT).await?;

    let kss: Api<KeeperSecret> = env.api();
    let auth = |store: &str| serde_json::json!({ "storeRef": { "name": store } });
    let field = |key: &str, uid: &str| serde_json::json!({ "key": key, "record": { "uid": uid }, "field": "password" });
    // Listed records: synced.
    keeper_secret_with(
        &kss,
        "listed",
        serde_json::json!({
            "auth": auth(&by_records),
            "data": [ field("db", POSTGRES), field("stripe", uids::STRIPE) ],
        }),
    )
    .await?;
    // A record in the allowed folder (by UID and by title), a dataFrom of that folder: synced.
    keeper_secret_with(
        &kss,
        "in-folder",
        serde_json::json!({
            "auth": auth(&by_folder),
            "data": [ field("db", POSTGRES),
                      { "key": "analytics", "notation": "keeper://Analytics DB/field/password" } ],
        }),
    )
    .await?;
    // Outside the lists: NotAllowed, naming the UID or folder.
    keeper_secret_with(
        &kss,
        "unlisted",
        serde_json::json!({
            "auth": auth(&by_records),
            "data": [ field("analytics", uids::ANALYTICS) ],
        }),
    )
    .await?;
    keeper_secret_with(&kss, "direct", serde_json::json!({
        "auth": auth(&by_folder),
        "data": [ { "key": "stripe", "notation": format!("keeper://{}/field/password", uids::STRIPE) } ],
    }))
    .await?;
    keeper_secret_with(
        &kss,
        "folder",
        serde_json::json!({
            "auth": auth(&by_records),
            "dataFrom": [ { "folder": { "uid": uids::PRODUCTION } } ],
        }),
    )
    .await?;
    // The title of a record outside the lists matches nothing.
    keeper_secret_with(
        &kss,
        "titled",
        serde_json::json!({
            "auth": auth(&by_folder),
            "data": [ { "key": "stripe", "notation": "keeper://Stripe API/field/password" } ],
        }),
    )
    .await?;

    wait_ready(&kss, "listed", "True", "Synced").await?;
    wait_ready(&kss, "in-folder", "True", "Synced").await?;
    for (name, what) in [
        ("unlisted", format!("record {}", uids::ANALYTICS)),
        ("direct", format!("record {}", uids::STRIPE)),
        ("folder", format!("shared folder {}", uids::PRODUCTION)),
    ] {
        let msg = wait_ready(&kss, name, "False", "NotAllowed").await?;
        ensure!(msg.contains(&what), "{name}: {msg}");
    }
    wait_ready(&kss, "titled", "False", "RecordNotFound").await?;
    let secrets: Api<Secret> = env.api();
    for name in ["unlisted-out", "direct-out", "folder-out", "titled-out"] {
        ensure!(secrets.get_opt(name).await?.is_none(), "{name} was written");
    }
    let stripe = server
        .record(uids::STRIPE)?
        .field_text("password")
        .context("stripe password")?;
    let listed = secrets.get("listed-out").await?;
    assert_eq!(value(&listed, "stripe"), stripe);

    // The administrator narrows the store: the next refresh is refused and the Secret written
    // before stays exactly as it was.
    let stores: Api<ClusterKeeperStore> = Api::all(env.cluster.client());
    let narrow = serde_json::json!({ "spec": { "allowedRecords": [ uids::STRIPE ] } });
    stores
        .patch(
            &by_records,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&narrow),
        )
        .await?;
    let msg = wait_ready(&kss, "listed", "False", "NotAllowed").await?;
    ensure!(msg.contains(&format!("record {POSTGRES}")), "{msg}");
    let kept = secrets.get("listed-out").await?;
    assert_eq!(kept.data, listed.data, "the existing Secret is untouched");

    for name in [&by_records, &by_folder] {
        stores.delete(name, &Default::default()).await?;
    }
    env.finish(&server, &[&config], &mut [&mut op]).await
}

/// A tenant's credential naming a host outside `--keeper-allowed-hosts` (the harness allows
/// 127.0.0.1, where the test server listens) fails before any request leaves the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_aimed_at_a_host_not_allowed_is_refused_before_any_request() -> Result<()> {
    let env = TestEnv::new("ten-hosts").await?;
    let server = TestServer::sample().await?;
    let config = server.bound_config("operator")?;
    // Same keys, but `localhost`: the same listener, reached by a name the list lacks.
    let port = server
        .hostname()
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .context("test server hostname has no port")?;
    let mut json: serde_json::Value = serde_json::from_str(&KsmConfig::parse(&config)?.to_json())?;
    json["hostname"] = format!("localhost:{port}").into();
    let elsewhere = json.to_string();
    let secrets: Api<Secret> = env.api();
    create_secret(
        &secrets,
        "ksm-elsewhere",
        &[("config", elsewhere.as_bytes())],
    )
    .await?;
    create_secret(&secrets, "ksm-ok", &[("config", config.as_bytes())]).await?;

    let mut op = env.operator_for(&server)?.spawn()?;
    op.wait_ready(TIMEOUT).await?;
    let kss: Api<KeeperSecret> = env.api();
    keeper_secret(&kss, "elsewhere", "ksm-elsewhere").await?;
    let message = wait_ready(&kss, "elsewhere", "False", "HostNotAllowed").await?;
    ensure!(
        message.contains(&format!("localhost:{port}")),
        "the message names the host: {message}"
    );
    ensure!(
        server.counters().total() == 0,
        "the refused credential reached the server"
    );
    ensure!(
        secrets.get_opt("elsewhere-out").await?.is_none(),
        "a Secret was written"
    );
    // The allowed host still works.
    keeper_secret(&kss, "ok", "ksm-ok").await?;
    wait_ready(&kss, "ok", "True", "Synced").await?;
    env.finish(&server, &[&config], &mut [&mut op]).await
}

/// A tenant who may create KeeperSecrets cannot turn Merge into ownership: Merge writes only
/// into a Secret that invites it, never marks that Secret as the operator's, creationPolicy
/// cannot change afterwards, and Helm release Secrets are never targets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_needs_the_targets_opt_in_and_never_makes_the_secret_ours() -> Result<()> {
    use keeper_operator::api::{ALLOW_MERGE_ANNOTATION, FORCE_SYNC_ANNOTATION, MANAGED_BY_LABEL};
    use kube::api::{Patch, PatchParams};
    let env = TestEnv::new("ten-merge").await?;
    let server = TestServer::sample().await?;
    let config = server.bound_config("operator")?;
    let secrets: Api<Secret> = env.api();
    create_secret(&secrets, "ksm", &[("config", config.as_bytes())]).await?;
    create_secret(&secrets, "hand-made", &[("user", b"app")]).await?;
    let mut op = env.operator_for(&server)?.spawn()?;
    op.wait_ready(TIMEOUT).await?;
    let kss: Api<KeeperSecret> = env.api();
    let notation = format!("keeper://{POSTGRES}/field/password");
    let spec = serde_json::json!({
        "auth": { "secretRef": { "name": "ksm", "key": "config" } },
        "target": { "name": "hand-made", "creationPolicy": "Merge", "deletionPolicy": "Delete" },
        "data": [ { "key": "password", "notation": notation } ],
    });
    create_keeper_secret(&kss, "merger", spec).await?;
    let message = wait_ready(&kss, "merger", "False", "TargetNotOptedIn").await?;
    ensure!(
        message.contains("allow-merge-from: merger"),
        "the status says how to opt in: {message}"
    );
    let untouched = secrets.get("hand-made").await?;
    ensure!(
        value(&untouched, "password").is_empty(),
        "written without the Secret's opt-in"
    );

    // Whoever owns the Secret opts in; a sync request picks it up at once.
    let invite =
        serde_json::json!({"metadata": {"annotations": {ALLOW_MERGE_ANNOTATION: "merger"}}});
    secrets
        .patch("hand-made", &PatchParams::default(), &Patch::Merge(&invite))
        .await?;
    let request = serde_json::json!({"metadata": {"annotations": {FORCE_SYNC_ANNOTATION: "1"}}});
    kss.patch("merger", &PatchParams::default(), &Patch::Merge(&request))
        .await?;
    wait_ready(&kss, "merger", "True", "Synced").await?;
    let merged = secrets.get("hand-made").await?;
    ensure!(value(&merged, "user") == "app", "the owner's key is kept");
    ensure!(!value(&merged, "password").is_empty(), "our key is merged");
    ensure!(
        !merged.labels().contains_key(MANAGED_BY_LABEL),
        "a merged Secret is not labelled as the operator's: {:?}",
        merged.labels()
    );
    ensure!(merged.owner_references().is_empty(), "no owner reference");

    // The API server refuses to switch the KeeperSecret to Owner.
    let switch = serde_json::json!({"spec": {"target": {"creationPolicy": "Owner"}}});
    let refused = kss
        .patch("merger", &PatchParams::default(), &Patch::Merge(&switch))
        .await;
    ensure!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains("creationPolicy is immutable")),
        "{refused:?}"
    );

    // A Helm release is never a target.
    let helm = serde_json::json!({
        "auth": { "secretRef": { "name": "ksm", "key": "config" } },
        "target": { "name": "sh.helm.release.v1.app.v1", "type": "helm.sh/release.v1", "creationPolicy": "Merge" },
        "data": [ { "key": "release", "notation": notation } ],
    });
    let refused = create_keeper_secret(&kss, "helm", helm).await;
    ensure!(
        refused.is_err(),
        "a KeeperSecret targeting a Helm release was admitted"
    );
    env.finish(&server, &[&config], &mut [&mut op]).await
}
