//! One hostile tenant against the chart's Pod at its real memory limit: every budget attack at
//! once from one namespace, while honest KeeperSecrets in another namespace follow rotations in
//! Keeper. Passes only with no container restart and every honest Secret updated within its
//! refresh interval plus 15 s; prints the operator's peak memory and CPU.

use std::time::Instant;

use keeper_e2e::harness::{cpu_seconds, peak_rss_mib};
use keeper_e2e::ksm_server::{FileSpec, Listing, RecordSpec};

use super::*;

/// Honest KeeperSecrets, and how often they refresh.
const HONEST: usize = 50;
const HONEST_REFRESH: Duration = Duration::from_secs(10);
/// An honest Secret must hold a rotated value this long after the rotation at the latest.
const HONEST_DEADLINE: Duration = Duration::from_secs(10 + 15);
/// Rotations of the honest record during the attack.
const ROTATIONS: usize = 3;
/// Hostile KeeperSecrets mapping an attachment of [`ATTACHMENT_BYTES`] each: together more than
/// the operator's attachment cache holds.
const ATTACHMENTS: usize = 40;
const ATTACHMENT_BYTES: usize = 900 * 1024;
/// Hostile KeeperSecrets at the CRD's size limit.
const AT_SIZE_LIMIT: usize = 16;
/// Force-sync annotations per second on one hostile KeeperSecret.
const FORCE_SYNCS_PER_SECOND: u64 = 20;
/// The shared folder the sample vault's `operator` application sees.
const SHARED_FOLDER: &str = "WrCSNEzZNMFwau1vshzjIA";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_tenant_cannot_starve_the_others() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let (node, image) = node_with_image().await?;
    // Every namespace watched, the chart's default memory limit, on the node sharing this host's
    // network (its container's /proc is readable here).
    let extra = json!({
        "watchNamespace": "",
        "nodeSelector": { "kubernetes.io/hostname": node.nodes()?[0] },
    });
    let install = Install::prepare(node, &image, extra).await?;
    install.adopt_kept_crds().await?;
    let values = install.values.to_str().context("values path")?;
    install.helm(&["install", &install.release, &chart()?, "--values", values])?;
    let pod = install.ready_pod(&image).await?;
    let (node_name, id) = install.container(&pod)?;
    let pid = install.node.container_pid(&node_name, &id)?;

    // The honest tenant: 50 KeeperSecrets on one credential, refreshing every 10 s.
    let honest = install.keeper_secrets();
    for i in 0..HONEST {
        let refresh = format!("{}s", HONEST_REFRESH.as_secs());
        let ks: KeeperSecret =
            serde_json::from_value(keeper_secret(&format!("honest-{i}"), &refresh))?;
        honest.create(&PostParams::default(), &ks).await?;
    }
    wait_honest(&install, &install.password).await?;

    // The hostile tenant, with a credential of its own on the same Keeper application.
    let hostile_ns = install.node.cluster.fresh_namespace("hostile").await?;
    let client = install.node.cluster.client();
    create_secret(
        &Api::namespaced(client.clone(), &hostile_ns),
        "ksm-config",
        &[(
            "config",
            install.server.bound_config("operator")?.as_bytes(),
        )],
    )
    .await?;
    let hostile: Api<KeeperSecret> = Api::namespaced(client.clone(), &hostile_ns);
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    attack(&install, &hostile_ns, &hostile).await?;
    let forcing = force_syncs(hostile.clone(), "forced".to_string());

    // Rotations reach every honest Secret in time while the attack goes on.
    let mut slowest = Duration::ZERO;
    for round in 0..ROTATIONS {
        let value = format!("rotated-under-attack-{round}");
        let record = install.server.record(POSTGRES)?;
        install.server.set_record(record.password(&value))?;
        let rotated = Instant::now();
        wait_honest(&install, &value).await?;
        let took = rotated.elapsed();
        ensure!(
            took <= HONEST_DEADLINE,
            "rotation {round} reached every honest Secret after {took:?}"
        );
        slowest = slowest.max(took);
    }
    forcing.abort();

    // The attack was refused, not absorbed by luck: every budget attack is Ready=False.
    for name in ["alias-bomb", "doubling", "fuel-0"] {
        let ks = hostile.get(name).await?;
        let ready = ks
            .ready_condition()
            .cloned()
            .context("no Ready condition")?;
        ensure!(ready.status == "False", "{name}: {ready:?}");
        eprintln!("soak: {name} refused: {} ({})", ready.reason, ready.message);
    }
    let pod = install.pods().get(&pod.name_any()).await?;
    let restarts = operator_status(&pod)?.restart_count;
    ensure!(
        restarts == 0,
        "the operator container restarted {restarts} time(s)"
    );
    let peak = peak_rss_mib(pid)?;
    let cpu = cpu_seconds(pid)? - cpu_before;
    eprintln!(
        "soak: {HONEST} honest KeeperSecrets, slowest rotation {:.1} s; operator peak RSS {peak:.1} MiB \
         (limit 256 MiB), {cpu:.1} s CPU in {:.0} s of attack, 0 restarts",
        slowest.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    install.helm(&["uninstall", &install.release])?;
    Ok(())
}

/// Waits until every honest Secret holds `password`.
async fn wait_honest(install: &Install, password: &str) -> Result<()> {
    let secrets = install.secrets();
    wait_until(
        &format!("{HONEST} honest Secrets with the current password"),
        TIMEOUT,
        || async {
            let current = secrets
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|s| s.name_any().starts_with("honest-"))
                .filter(|s| secret_text(s, "password").as_deref() == Some(password))
                .count();
            Ok((current == HONEST).then_some(()))
        },
    )
    .await
}

/// Everything at once: an alias bomb, doubling helpers, 64-template fuel burners, many large
/// attachments and objects at the size limit; the force-sync storm starts after.
async fn attack(install: &Install, ns: &str, hostile: &Api<KeeperSecret>) -> Result<()> {
    let client = install.node.cluster.client();
    let auth = json!({ "secretRef": { "name": "ksm-config", "key": "config" } });
    let password =
        json!([{ "key": "password", "notation": format!("keeper://{POSTGRES}/field/password") }]);
    let create = |name: String, spec: serde_json::Value| {
        let hostile = hostile.clone();
        async move {
            let ks: KeeperSecret = serde_json::from_value(keeper_secret_manifest(&name, spec))?;
            hostile.create(&PostParams::default(), &ks).await?;
            anyhow::Ok(())
        }
    };

    // Aliases that copy 5,000 nodes 5,000 times, from a ConfigMap (inline templates are too
    // small to hold it).
    let list = vec!["x"; 5000].join(",");
    let refs = vec!["*a"; 5000].join(",");
    let bomb = format!("{{{{ ('{{a: &a [{list}], b: [{refs}]}}' | fromyaml).b | length }}}}");
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("bomb".into()),
            ..Default::default()
        },
        data: Some([("out".to_string(), bomb)].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &map)
        .await?;
    create(
        "alias-bomb".into(),
        json!({ "auth": auth, "data": password,
                "target": { "template": { "templateFrom": [ { "configMap": { "name": "bomb" } } ] } } }),
    )
    .await?;

    // A value doubled 30 times by a native helper.
    let doubling = format!("{{{{ password{} | length }}}}", " | hexencode".repeat(30));
    create(
        "doubling".into(),
        json!({ "auth": auth, "data": password,
                "target": { "template": { "data": { "out": doubling } } } }),
    )
    .await?;

    // 64 templates that each loop as long as they are let.
    let burn = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let burners: serde_json::Map<String, serde_json::Value> =
        (0..64).map(|k| (format!("k{k}"), json!(burn))).collect();
    for i in 0..4 {
        create(
            format!("fuel-{i}"),
            json!({ "auth": auth, "data": password,
                    "target": { "template": { "data": burners } } }),
        )
        .await?;
    }

    // Large attachments on records of the tenant's own application, one KeeperSecret each.
    for i in 0..ATTACHMENTS {
        let record_uid = keeper_operator::ksm::crypto::generate_uid();
        let file_uid = keeper_operator::ksm::crypto::generate_uid();
        let content = vec![b'a' + (i % 26) as u8; ATTACHMENT_BYTES];
        let blob = RecordSpec::new(&record_uid, format!("Blob {i}"), "file")
            .in_folder(SHARED_FOLDER)
            .file(FileSpec::from_bytes(&file_uid, "blob.bin", None, &content))
            // Listed as Keeper lists records made in a shared folder by the Vault UI.
            .listed(Listing::FlatInFolder);
        install.server.set_record(blob)?;
        create(
            format!("attachment-{i}"),
            json!({ "auth": auth, "refreshInterval": "10s",
                    "data": [{ "key": "blob", "notation": format!("keeper://{record_uid}/file/blob.bin") }] }),
        )
        .await?;
    }

    // Objects as large as the CRD admits: 64 templates of 8,192 characters each.
    let big = format!("{{# {} #}}{{{{ password }}}}", "p".repeat(8192 - 20));
    let templates: serde_json::Map<String, serde_json::Value> =
        (0..64).map(|k| (format!("k{k}"), json!(big))).collect();
    for i in 0..AT_SIZE_LIMIT {
        create(
            format!("large-{i}"),
            json!({ "auth": auth, "data": password,
                    "target": { "template": { "data": templates } } }),
        )
        .await?;
    }

    create("forced".into(), json!({ "auth": auth, "data": password })).await
}

/// Sets a new force-sync value on `name` [`FORCE_SYNCS_PER_SECOND`] times a second until aborted.
fn force_syncs(api: Api<KeeperSecret>, name: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / FORCE_SYNCS_PER_SECOND));
        loop {
            tick.tick().await;
            let now = jiff::Timestamp::now().to_string();
            let patch = json!({ "metadata": { "annotations": { FORCE_SYNC_ANNOTATION: now } } });
            let _ = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    })
}
