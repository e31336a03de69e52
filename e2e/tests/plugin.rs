//! `kubectl keeper`: the operator binary installed as the `kubectl-keeper` plugin, found by the
//! real kubectl on PATH, against the real control plane and the KSM test server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use keeper_e2e::harness::{operator_binary, secret_bytes, wait_until, workspace_root};
use keeper_e2e::world::{World, keeper_secret_manifest};
use kube::api::PostParams;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A directory holding `kubectl-keeper`, a link to the operator binary (as users install it).
fn plugin_dir(w: &World) -> Result<PathBuf> {
    let dir = w.env.dir().join("plugin");
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("kubectl-keeper");
    if !link.exists() {
        std::os::unix::fs::symlink(operator_binary()?, &link)?;
    }
    Ok(dir)
}

/// Runs `kubectl keeper ARGS` (plugin discovery through PATH, the admin kubeconfig from
/// KUBECONFIG as for any plugin); its success, stdout and stderr.
fn kubectl_keeper(w: &World, dir: &Path, args: &[&str]) -> Result<(bool, String, String)> {
    let kubectl = w.env.cluster.kubectl().get_program().to_owned();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(kubectl);
    cmd.arg("keeper")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", w.env.cluster.admin_kubeconfig());
    // The KSM test server runs on this runtime: block a worker, not the runtime.
    let out = tokio::task::block_in_place(|| cmd.output())?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_keeper_status_refresh_why_and_render() -> Result<()> {
    let w = World::start("plugin").await?.with_timeout(TIMEOUT);
    let mut operator = w.operator().await?;
    let dir = plugin_dir(&w)?;
    let ns = w.env.app_namespace.clone();
    w.apply_example("database.yaml")?;
    w.kubectl_wait_ready("postgres")?;
    let secret = secret_bytes(&w.secrets().get("postgres-credentials").await?);
    let values: Vec<String> = secret
        .values()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let no_value = |text: &str| values.iter().all(|v| !text.contains(v.as_str()));

    // status: one line per KeeperSecret.
    let (ok, out, err) = kubectl_keeper(&w, &dir, &["status", "-n", &ns])?;
    ensure!(ok, "status failed: {err}");
    let line = out
        .lines()
        .find(|l| l.contains("postgres"))
        .with_context(|| format!("no postgres line in:\n{out}"))?;
    let cells: Vec<&str> = line.split_whitespace().collect();
    ensure!(
        cells[..4] == [ns.as_str(), "postgres", "True", "Synced"]
            && cells.last() == Some(&"postgres-credentials"),
        "status line: {line}"
    );

    // refresh: answered through status.lastHandledReconcileAt.
    let (ok, out, err) = kubectl_keeper(&w, &dir, &["refresh", "postgres", "-n", &ns])?;
    ensure!(ok, "refresh failed: {err}");
    ensure!(
        out.trim() == "keepersecret/postgres synced: Ready=True (Synced)",
        "refresh: {out}"
    );
    let handled = w
        .keeper_secrets()
        .get("postgres")
        .await?
        .status
        .and_then(|s| s.last_handled_reconcile_at);
    ensure!(handled.is_some(), "the request is answered in status");

    // why: a missing record in plain words, with its Warning event.
    let missing = keeper_secret_manifest(
        "missing",
        serde_json::json!({
            "auth": {"secretRef": {"name": "ksm-config", "key": "config"}},
            "data": [{"key": "k", "notation": "keeper://NoSuchRecord0000000000/field/password"}]
        }),
    );
    w.keeper_secrets()
        .create(&PostParams::default(), &serde_json::from_value(missing)?)
        .await?;
    let why = wait_until("why names the missing record", TIMEOUT, || {
        let dir = dir.clone();
        let w = &w;
        let ns = ns.clone();
        async move {
            let (ok, out, _) = kubectl_keeper(w, &dir, &["why", "missing", "-n", &ns])?;
            Ok((ok && out.contains("Warning RecordNotFound")).then_some(out))
        }
    })
    .await?;
    ensure!(
        why.contains("Ready is NOT ready (Ready=False, RecordNotFound)"),
        "why: {why}"
    );

    // render: the same keys and sizes the operator wrote, and no value.
    let config = dir.join("ksm-config");
    std::fs::write(&config, &w.config)?;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, w.server.ca_pem())?;
    let manifest = workspace_root().join("e2e/examples/database.yaml");
    let args = [
        "render",
        "-f",
        manifest.to_str().context("path")?,
        "--config",
        config.to_str().context("path")?,
        "--ca-file",
        ca.to_str().context("path")?,
    ];
    let (ok, out, err) = kubectl_keeper(&w, &dir, &args)?;
    ensure!(ok, "render failed: {err}");
    ensure!(no_value(&out) && no_value(&err), "render shows a value");
    ensure!(
        out.starts_with(&format!(
            "Secret postgres-credentials ({} keys):",
            secret.len()
        )),
        "render: {out}"
    );
    for (key, value) in &secret {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key.as_str()))
            .with_context(|| format!("no row for {key} in:\n{out}"))?;
        let size = row.split_whitespace().nth(1).unwrap_or_default();
        ensure!(size == value.len().to_string(), "size of {key}: {row}");
    }
    w.finish(&mut [&mut operator]).await
}
