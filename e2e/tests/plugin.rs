//! `kubectl keeper`: the operator binary installed as the `kubectl-keeper` plugin, found by the
//! real kubectl on PATH, against the real control plane and the KSM test server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keeper_e2e::harness::{
    create_secret, operator_binary, secret_bytes, secret_text, wait_until, workspace_root,
};
use keeper_e2e::ksm_server::ServerOptions;
use keeper_e2e::world::{EXAMPLES, POSTGRES, World, keeper_secret_manifest};
use keeper_operator::api::KeeperSecret;
use keeper_operator::cli::plugin::{render_key, render_table};
use keeper_operator::ksm::config::KsmConfig;
use keeper_operator::sync::desired::Desired;
use kube::ResourceExt;
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

    // render: for every example, what the operator wrote, and no value.
    let config = dir.join("ksm-config");
    std::fs::write(&config, &w.config)?;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, w.server.ca_pem())?;
    let render = |manifest: &Path, store: Option<&Path>| -> Result<(bool, String, String)> {
        let mut args = vec![
            "render".to_string(),
            "-f".into(),
            manifest.to_str().context("path")?.into(),
            "--config".into(),
            config.to_str().context("path")?.into(),
            "--ca-file".into(),
            ca.to_str().context("path")?.into(),
        ];
        if let Some(store) = store {
            args.extend(["--store".into(), store.to_str().context("path")?.into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl_keeper(&w, &dir, &args)
    };
    let examples = workspace_root().join("e2e/examples");
    for example in EXAMPLES {
        w.apply_example(example)?;
    }
    for example in EXAMPLES {
        let manifest = examples.join(example);
        let ks: KeeperSecret = serde_yaml_ng::from_str(&std::fs::read_to_string(&manifest)?)?;
        w.kubectl_wait_ready(&ks.name_any())?;
        let written = secret_bytes(&w.secrets().get(&ks.target_name()).await?);
        let (ok, out, err) = render(&manifest, None)?;
        ensure!(ok, "render {example} failed: {err}");
        // Equal to a table of names, sizes and hashes, stdout shows no value; nor does stderr
        // (values shorter than 8 bytes could match by chance).
        ensure!(
            out == expected_render(&ks, &written, &w.config),
            "render {example}:\n{out}"
        );
        let shown = written
            .values()
            .filter(|v| v.len() >= 8)
            .any(|v| err.contains(String::from_utf8_lossy(v).as_ref()));
        ensure!(!shown, "render {example} shows a value: {err}");
    }

    // The store's allow-list applies with --store: its record renders, any other is refused
    // with the operator's reason.
    let store = examples.join("cluster-store.yaml");
    let (ok, out, err) = render(&examples.join("store-user.yaml"), Some(&store))?;
    let stripe = w.vault_value("SsxoiM-FPCF65F54JaY3jQ", "password")?;
    ensure!(
        ok && out.lines().any(|l| l
            .split_whitespace()
            .take(2)
            .eq(["api-key", &stripe.len().to_string()])),
        "render store-user: {out}{err}"
    );
    let forbidden = dir.join("forbidden.yaml");
    std::fs::write(
        &forbidden,
        serde_json::to_vec(&keeper_secret_manifest(
            "forbidden",
            serde_json::json!({
                "auth": {"storeRef": {"name": "shared"}},
                "data": [{"key": "k", "notation": format!("keeper://{POSTGRES}/field/password")}]
            }),
        ))?,
    )?;
    let (ok, _, err) = render(&forbidden, Some(&store))?;
    ensure!(
        !ok && err.contains("the operator would refuse this KeeperSecret (NotAllowed)"),
        "render forbidden: {err}"
    );
    w.finish(&mut [&mut operator]).await
}

/// What `kubectl keeper render` must print for `ks` when the operator wrote `written`.
///
/// The operator keys its hashes with the credential and the KeeperSecret's UID, which a
/// manifest on disk does not have; render keys them with the config alone ([`render_key`]). So
/// the operator's Secret is hashed here with render's key: equal hashes mean equal bytes under
/// every key, and the table compares key set, sizes, per-key hashes and the whole-data hash
/// (what the data-hash annotation covers). None of the examples uses `htpasswd`, whose salt
/// also comes from the key.
fn expected_render(ks: &KeeperSecret, written: &BTreeMap<String, Vec<u8>>, config: &str) -> String {
    let data: BTreeMap<String, ByteString> = written
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone())))
        .collect();
    let key = render_key(config);
    let desired = Desired {
        hash: key.hash(written.iter().map(|(k, v)| (k.as_str(), v.as_slice()))),
        secret: Secret {
            data: Some(data),
            ..Secret::default()
        },
    };
    render_table(ks, &desired, &key)
}

/// An IL5 token (`IL5:KEY:KEY_ID:SERVER_KEY`) in a credential Secret is redeemed in the cluster
/// with the server key it carries. The operator syncs with it, and the bound config it stores
/// serves `kubectl keeper render` and `keeper get` against a server under that key id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_il5_token_redeemed_in_the_cluster_serves_the_operator_and_the_cli() -> Result<()> {
    let options = ServerOptions {
        key_id: "18".into(),
        ..ServerOptions::default()
    };
    let w = World::start_with("plugin-il5", options)
        .await?
        .with_timeout(TIMEOUT);
    let il5 = w.server.issue_il5_token("operator")?;
    // The IL5 prefix names il5.keepersecurity.us: the Secret names the test server instead.
    let hostname = w.server.hostname();
    create_secret(
        &w.secrets(),
        "ksm-il5",
        &[
            ("config", il5.as_bytes()),
            ("hostname", hostname.as_bytes()),
        ],
    )
    .await?;
    let mut operator = w.operator().await?;
    let manifest = keeper_secret_manifest(
        "il5",
        serde_json::json!({
            "auth": {"secretRef": {"name": "ksm-il5", "key": "config"}},
            "data": [{"key": "password", "notation": format!("keeper://{POSTGRES}/field/password")}]
        }),
    );
    w.keeper_secrets()
        .create(
            &PostParams::default(),
            &serde_json::from_value(manifest.clone())?,
        )
        .await?;
    w.wait_reason("il5", "True", "Synced").await?;
    let password = w.vault_value(POSTGRES, "password")?;
    let synced = secret_text(&w.secrets().get("il5").await?, "password");
    ensure!(synced.as_ref() == Some(&password), "the synced value");

    // The token was replaced by a config bound with the token's own server key.
    let stored = secret_text(&w.secrets().get("ksm-il5").await?, "config").context("config")?;
    let config = KsmConfig::parse(&stored).context("the stored credential is a KSM config")?;
    ensure!(config.is_bound() && config.server_public_key_id() == 18);

    // The same config, taken out of the cluster, serves the command line.
    let dir = plugin_dir(&w)?;
    let config_file = dir.join("il5-config");
    std::fs::write(&config_file, &stored)?;
    let manifest_file = dir.join("il5.json");
    std::fs::write(&manifest_file, serde_json::to_vec(&manifest)?)?;
    let path = |p: &Path| p.to_str().map(str::to_string).context("path");
    let (config_arg, ca_arg) = (path(&config_file)?, path(&w.ca)?);
    let args = [
        "render",
        "-f",
        &path(&manifest_file)?,
        "--config",
        &config_arg,
        "--ca-file",
        &ca_arg,
    ];
    let (ok, out, err) = kubectl_keeper(&w, &dir, &args)?;
    ensure!(ok, "render failed: {err}");
    ensure!(
        out.lines().any(|l| l
            .split_whitespace()
            .take(2)
            .eq(["password", &password.len().to_string()])),
        "render: {out}"
    );
    let notation = format!("keeper://{POSTGRES}/field/password");
    let mut get = Command::new(operator_binary()?);
    get.args([
        "keeper",
        "get",
        &notation,
        "--config",
        &config_arg,
        "--ca-file",
        &ca_arg,
    ]);
    let out = tokio::task::block_in_place(|| get.output())?;
    ensure!(
        out.status.success(),
        "keeper get: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(String::from_utf8_lossy(&out.stdout).trim_end() == password);
    w.finish(&mut [&mut operator]).await
}
