//! The status contract as the GitOps tools read it: live KeeperSecrets in each state, captured
//! with `kubectl get -o json`, judged by the kstatus library (what Flux's health checks use) and
//! by the chart's Argo CD health check and refresh action run in Argo CD's Lua engine
//! (`gitops-check`, `e2e/tools/gitops-check`). The captures stay in the test's artefact dir
//! under `target/e2e/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use keeper_e2e::harness::{create_secret, run, wait_until, workspace_root};
use keeper_e2e::ksm_server::DownMode;
use keeper_e2e::world::{World, condition, create_keeper_secret};
use keeper_operator::api::FORCE_SYNC_ANNOTATION;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

/// The chart's Argo CD scripts.
fn argocd_script(path: &str) -> PathBuf {
    workspace_root()
        .join("helm/keeper-operator/argocd")
        .join(path)
}

/// KeeperSecret `name` as `kubectl get -o json` prints it, saved as `gitops/<state>.json` in the
/// test's artefact dir.
fn capture(w: &World, name: &str, state: &str) -> Result<(PathBuf, Value)> {
    let mut cmd = w.env.cluster.kubectl();
    cmd.args(["get", "keepersecret", name, "-o", "json"])
        .args(["-n", &w.env.app_namespace]);
    // The KSM test server runs on this runtime: block a worker, not the runtime.
    let out = tokio::task::block_in_place(|| run(&mut cmd, None))?;
    let dir = w.env.dir().join("gitops");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{state}.json"));
    std::fs::write(&path, &out.stdout)?;
    Ok((path, serde_json::from_str(&out.stdout)?))
}

/// What `gitops-check` prints for `args`.
fn gitops_check(w: &World, args: &[&Path]) -> Result<Value> {
    let mut cmd: Command = w.env.cluster.gitops_check();
    cmd.args(args);
    let out = run(&mut cmd, None)?;
    Ok(serde_json::from_str(&out.stdout)?)
}

/// (status, message) of a checker's verdict.
fn verdict(v: &Value) -> (String, String) {
    let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    (field("status"), field("message"))
}

/// Captures `name` in `state` and checks what kstatus and the Argo CD health check make of it;
/// returns both messages.
fn expect(
    w: &World,
    name: &str,
    state: &str,
    kstatus: &str,
    health: &str,
) -> Result<(String, String)> {
    let (file, _) = capture(w, name, state)?;
    let (k, k_msg) = verdict(&gitops_check(w, &[Path::new("kstatus"), &file])?);
    let health_lua = argocd_script("health.lua");
    let (h, h_msg) = verdict(&gitops_check(
        w,
        &[Path::new("argocd-health"), &health_lua, &file],
    )?);
    eprintln!("{state}: kstatus {k} ({k_msg}); Argo CD {h} ({h_msg})");
    ensure!(
        (k.as_str(), h.as_str()) == (kstatus, health),
        "{state}: kstatus {k} ({k_msg}), Argo CD {h} ({h_msg}); expected {kstatus} and {health}"
    );
    Ok((k_msg, h_msg))
}

/// The spec of a KeeperSecret reading a record titled `title` into key `k`.
fn by_title(title: &str) -> Value {
    json!({
        "auth": { "secretRef": { "name": "ksm-config", "key": "config" } },
        "data": [{ "key": "k", "record": { "title": title }, "field": "password" }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kstatus_and_argo_cd_read_every_state_of_a_live_keeper_secret() -> Result<()> {
    let w = World::start("gitops").await?;
    let mut operator = w.operator().await?;
    let kss = w.keeper_secrets();
    // A Secret someone else created under the target name: no retry fixes that.
    create_secret(&w.secrets(), "owned", &[("mine", b"x")]).await?;
    w.create(&["synced".to_string(), "owned".to_string()], "5s")
        .await?;
    create_keeper_secret(&kss, "missing", by_title("No Such Record")).await?;

    // Synced: what `kubectl wait` waits for, Current, Healthy.
    w.kubectl_wait_ready("synced")?;
    let ks = w
        .wait_condition("synced", "Reconciling", "False", "Synced")
        .await?;
    let (_, message) = expect(&w, "synced", "synced", "Current", "Healthy")?;
    ensure!(message == ks.ready_condition().context("Ready")?.message);

    // Stalled: Failed and Degraded at once, and `kubectl wait` does not call it Ready.
    w.wait_condition("owned", "Stalled", "True", "SecretOwnedElsewhere")
        .await?;
    let (k_msg, h_msg) = expect(&w, "owned", "stalled", "Failed", "Degraded")?;
    ensure!(k_msg.contains("owned") && h_msg.starts_with("SecretOwnedElsewhere: "));
    let mut wait = w.env.cluster.kubectl();
    wait.args(["wait", "--for=condition=Ready", "--timeout=2s"])
        .args(["-n", &w.env.app_namespace, "keepersecret/owned"]);
    let out = tokio::task::block_in_place(|| wait.output())?;
    ensure!(
        !out.status.success(),
        "kubectl wait passed a stalled object"
    );

    // A missing record never synced: retried, so kstatus waits (InProgress) while Argo CD
    // shows the failure.
    w.wait_condition("missing", "Reconciling", "True", "RecordNotFound")
        .await?;
    let (_, h_msg) = expect(&w, "missing", "record-not-found", "InProgress", "Degraded")?;
    ensure!(h_msg.starts_with("RecordNotFound: ") && h_msg.contains("No Such Record"));

    // The refresh action, applied the way Argo CD applies it: its merge patch sets only the
    // force-sync annotation, and the operator answers it in status.
    let (synced, _) = capture(&w, "synced", "before-refresh")?;
    let actions = gitops_check(
        &w,
        &[
            Path::new("argocd-discovery"),
            &argocd_script("actions/discovery.lua"),
            &synced,
        ],
    )?;
    ensure!(
        actions == json!({ "refresh": { "disabled": false } }),
        "{actions}"
    );
    let refreshed = gitops_check(
        &w,
        &[
            Path::new("argocd-action"),
            &argocd_script("actions/refresh/action.lua"),
            &synced,
        ],
    )?;
    let requested = refreshed["object"]["metadata"]["annotations"][FORCE_SYNC_ANNOTATION]
        .as_str()
        .context("the action set no force-sync annotation")?
        .to_string();
    let at = requested.parse::<jiff::Timestamp>()?;
    ensure!(
        jiff::Timestamp::now().duration_since(at).abs() < jiff::SignedDuration::from_secs(60),
        "the force-sync value {requested} is not the current time"
    );
    let patch = &refreshed["patch"];
    ensure!(
        *patch == json!({ "metadata": { "annotations": { FORCE_SYNC_ANNOTATION: requested } } }),
        "the action changes more than the annotation: {patch}"
    );
    kss.patch("synced", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    wait_until("the refresh answered in status", w.timeout(), || async {
        let ks = kss.get("synced").await?;
        let handled = ks.status.and_then(|s| s.last_handled_reconcile_at);
        Ok((handled.as_deref() == Some(requested.as_str())).then_some(()))
    })
    .await?;
    expect(&w, "synced", "refreshed", "Current", "Healthy")?;

    // A generation the operator has not seen, and an object it has not seen at all.
    operator.kill();
    let spec = json!({ "spec": { "refreshInterval": "7s" } });
    let edited = kss
        .patch("synced", &PatchParams::default(), &Patch::Merge(&spec))
        .await?;
    let generation = edited.metadata.generation.context("generation")?;
    let (k_msg, h_msg) = expect(
        &w,
        "synced",
        "generation-unobserved",
        "InProgress",
        "Progressing",
    )?;
    ensure!(k_msg.contains(&format!("generation is {generation}")));
    ensure!(h_msg.contains(&format!("generation {generation}")));
    create_keeper_secret(&kss, "fresh", by_title("Postgres")).await?;
    // kstatus calls an object without any status Current (it cannot tell "not yet reconciled"
    // from "has no status"); the Argo CD check waits for the operator.
    expect(&w, "fresh", "no-status", "Current", "Progressing")?;

    let mut restarted = w.operator().await?;
    wait_until("the new generation synced", w.timeout(), || async {
        let ks = kss.get("synced").await?;
        let status = ks.status.clone().unwrap_or_default();
        let ready = condition(&ks, "Ready").is_some_and(|c| c.status == "True");
        Ok((ready && status.observed_generation == Some(generation)).then_some(()))
    })
    .await?;
    expect(&w, "synced", "generation-synced", "Current", "Healthy")?;
    // The docs' wait for the latest generation.
    let mut wait = w.env.cluster.kubectl();
    wait.args(["wait", "--timeout=10s", "-n", &w.env.app_namespace])
        .arg(format!(
            "--for=jsonpath={{.status.observedGeneration}}={generation}"
        ))
        .arg("keepersecret/synced");
    tokio::task::block_in_place(|| run(&mut wait, None))?;
    w.kubectl_wait_ready("fresh")?;

    // Keeper down: the Secret keeps the last good copy and stays Ready; Argo CD says stale.
    w.server.faults().set_down(DownMode::Refuse);
    let ks = w
        .wait_condition("synced", "Stale", "True", "KeeperUnavailable")
        .await?;
    let ready = ks.ready_condition().context("Ready")?;
    ensure!((ready.status.as_str(), ready.reason.as_str()) == ("True", "LastGoodCopy"));
    let (_, h_msg) = expect(&w, "synced", "keeper-down", "Current", "Healthy")?;
    ensure!(
        h_msg.starts_with("Stale, serving the last good copy (KeeperUnavailable): "),
        "{h_msg}"
    );
    w.server.faults().set_down(DownMode::Up);
    w.wait_condition("synced", "Stale", "False", "Fresh")
        .await?;
    expect(&w, "synced", "keeper-back", "Current", "Healthy")?;

    w.finish(&mut [&mut operator, &mut restarted]).await
}

/// docs/gitops.md's argocd-cm snippet holds the chart's scripts verbatim.
#[test]
fn the_argocd_cm_snippet_matches_the_chart() -> Result<()> {
    let doc = std::fs::read_to_string(workspace_root().join("docs/gitops.md"))?;
    let block = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(yaml, _)| yaml))
        .find(|yaml| yaml.contains("resource.customizations.health."))
        .context("no argocd-cm snippet in docs/gitops.md")?;
    let patch: Value = serde_yaml_ng::from_str(block)?;
    ensure!(
        patch["metadata"] == json!({"name": "argocd-cm", "namespace": "argocd"}),
        "the snippet must name argocd-cm in argocd: {}",
        patch["metadata"]
    );
    let data = &patch["data"];
    let text = |v: &Value| v.as_str().map(str::to_string).context("not a string");
    let file = |p: &str| std::fs::read_to_string(argocd_script(p));
    ensure!(
        text(&data["resource.customizations.health.keeper-operator.dev_KeeperSecret"])?
            == file("health.lua")?,
        "health.lua differs"
    );
    let actions: Value = serde_yaml_ng::from_str(&text(
        &data["resource.customizations.actions.keeper-operator.dev_KeeperSecret"],
    )?)?;
    ensure!(
        text(&actions["discovery.lua"])? == file("actions/discovery.lua")?,
        "discovery.lua differs"
    );
    ensure!(
        actions["definitions"]
            == json!([{ "name": "refresh", "action.lua": file("actions/refresh/action.lua")? }]),
        "the refresh action differs"
    );
    Ok(())
}
