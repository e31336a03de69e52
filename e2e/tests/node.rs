//! The chart's Deployment on a real node: `helm install` of the operator image built offline by
//! `e2e/image.sh`, run by a kubelet on containerd and runc (`e2e/cluster.sh up --node`). The Pod
//! uses hostNetwork and reaches the API server and the KSM test server on 127.0.0.1 only.
//!
//! One replica, in order: install and sync; JSON logs and /metrics through the chart's Service;
//! `helm upgrade` to a new image tag with no overlap and no lost value; the container killed
//! while Keeper is down, and the restarted one serving the sealed copy; no value leaked; `helm
//! uninstall`, which leaves the CRDs and KeeperSecrets.
//!
//! Two replicas on the two nodes: leader election hands over through a `helm upgrade`, no Secret
//! loses a value, and the new leader syncs.
//!
//! Two shards on the two nodes (`sharding.shards: [a]`): each KeeperSecret is synced by its own
//! shard only, and a shard whose container is killed resumes its KeeperSecrets while the other
//! shard's are left untouched.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, Event, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keeper_e2e::harness::{
    Image, NodeCluster, Relay, artefact_dir, build_image, chart_fullname, container_id,
    create_secret, free_port, process_uid, root_mount_options, run, secret_text, wait_until,
    workspace_root,
};
use keeper_e2e::ksm_server::{DownMode, TestServer, sample_vault};
use keeper_e2e::leak_scan::SecretValues;
use keeper_e2e::world::{
    POSTGRES, condition, keeper_secret, keeper_secret_manifest, wait_for_reason,
};
use keeper_operator::api::{FORCE_SYNC_ANNOTATION, KeeperSecret, SHARD_LABEL};
use keeper_operator::runtime::leader::LEASE_NAME;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

#[path = "node/soak.rs"]
mod soak;

const TIMEOUT: Duration = Duration::from_secs(180);
/// The scenarios share the kept CRDs, which one Helm release at a time can own.
static SERIAL: Mutex<()> = Mutex::const_new(());
const CRDS: [&str; 2] = [
    "keepersecrets.keeper-operator.dev",
    "clusterkeeperstores.keeper-operator.dev",
];
/// The uid of the image's `nonroot` user, which the chart also sets.
const NONROOT: u32 = 65532;
/// Selects the operator's Pods.
const OPERATOR_PODS: &str = "app.kubernetes.io/name=keeper-operator";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chart_runs_the_image_on_a_node() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let (node, image) = node_with_image().await?;
    // On the node that shares this host's network, whose kubelet the API server reaches for logs.
    let pinned = json!({ "nodeSelector": { "kubernetes.io/hostname": node.nodes()?[0] } });
    let install = Install::prepare(node, &image, pinned).await?;

    let pod = install.install_and_sync(&image).await?;
    let logs = install.json_logs(&pod, false)?;
    install.scrape_through_service().await?;
    let pod = install.upgrade_without_overlap(&image).await?;
    let pod = install.kill_while_keeper_is_down(&pod).await?;
    let killed = install.json_logs(&pod, true)?;
    let restarted = install.json_logs(&pod, false)?;
    install
        .assert_no_leaks(&[logs, killed, restarted].join("\n"))
        .await?;
    install.uninstall_keeps_crds_and_secrets().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_hand_over_through_an_upgrade() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let (node, image) = node_with_image().await?;
    let install = Install::prepare(node, &image, json!({ "replicaCount": 2 })).await?;
    install.adopt_kept_crds().await?;
    let values = install.values.to_str().context("values path")?;
    install.helm(&["install", &install.release, &chart()?, "--values", values])?;
    let pods = install.ready_pods(&image, 2).await?;
    let nodes: BTreeSet<_> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    ensure!(nodes.len() == 2, "the replicas share a node: {nodes:?}");
    let ks: KeeperSecret = serde_json::from_value(keeper_secret("db", "1h"))?;
    install
        .keeper_secrets()
        .create(&PostParams::default(), &ks)
        .await?;
    install.wait_ready("Synced").await?;
    install.assert_secret_holds_password().await?;
    let leader = install.leader_among(&pods).await?;
    eprintln!("two replicas on {nodes:?}, leader {leader}");

    // Replaced one at a time (hostNetwork): the Lease passes to a new Pod, no value is lost.
    let next = install.node.tag(&image, &format!("{}-next", image.tag()))?;
    let watch = UpgradeWatch::start(&install);
    install.helm(&[
        "upgrade",
        &install.release,
        &chart()?,
        "--reuse-values",
        "--set",
        &format!("image.tag={}", next.tag()),
    ])?;
    let upgraded = install.ready_pods(&next, 2).await?;
    let (most_running, lost) = watch.stop().await?;
    ensure!(most_running <= 2, "{most_running} operators ran at once");
    ensure!(!lost, "Secret db lost its value during the upgrade");
    let new_leader = install.leader_among(&upgraded).await?;
    ensure!(new_leader != leader, "the Lease did not move");

    // The new leader reconciles: a rotated password reaches the Secret on demand.
    let record = install.server.record(POSTGRES)?;
    install
        .server
        .set_record(record.password("rotated-after-hand-over"))?;
    let force =
        json!({ "metadata": { "annotations": { FORCE_SYNC_ANNOTATION: "after-hand-over" } } });
    install
        .keeper_secrets()
        .patch("db", &PatchParams::default(), &Patch::Merge(&force))
        .await?;
    wait_until("the rotated password in Secret db", TIMEOUT, || async {
        let secret = install.secrets().get("db").await?;
        Ok(
            (secret_text(&secret, "password").as_deref() == Some("rotated-after-hand-over"))
                .then_some(()),
        )
    })
    .await?;
    eprintln!(
        "helm upgrade with two replicas: leader {leader} -> {new_leader}, {most_running} at most at once, no value lost"
    );
    install.helm(&["uninstall", &install.release])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_shards_split_the_keeper_secrets() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let (node, image) = node_with_image().await?;
    let install =
        Install::prepare(node, &image, json!({ "sharding": { "shards": ["a"] } })).await?;
    install.adopt_kept_crds().await?;
    let values = install.values.to_str().context("values path")?;
    install.helm(&["install", &install.release, &chart()?, "--values", values])?;
    // The default shard takes the unlabelled KeeperSecret, shard a the one labelled for it.
    let shards = [
        ("keeper-operator", "db", None),
        ("keeper-operator-a", "db-a", Some("a")),
    ];
    let mut pods = Vec::new();
    for (app, name, shard) in shards {
        let pod = install.shard_pod(app, &image).await?;
        let mut ks = keeper_secret(name, "1h");
        if let Some(shard) = shard {
            ks["metadata"]["labels"] = json!({ SHARD_LABEL: shard });
        }
        let ks: KeeperSecret = serde_json::from_value(ks)?;
        install
            .keeper_secrets()
            .create(&PostParams::default(), &ks)
            .await?;
        pods.push(pod);
    }
    for ((_, name, shard), pod) in shards.iter().zip(&pods) {
        wait_for_reason(
            &install.keeper_secrets(),
            name,
            "Ready",
            "True",
            "Synced",
            TIMEOUT,
        )
        .await?;
        let secret = install.secrets().get(name).await?;
        ensure!(
            secret_text(&secret, "password").as_deref() == Some(install.password.as_str()),
            "Secret {name} does not hold the record's password"
        );
        let label = secret.labels().get(SHARD_LABEL).map(String::as_str);
        ensure!(
            label == *shard,
            "Secret {name} carries shard label {label:?}"
        );
        let reporters = install.reporters_for(name, 1).await?;
        ensure!(
            reporters == BTreeSet::from([pod.name_any()]),
            "KeeperSecret {name} was reported on by {reporters:?}, not only {}",
            pod.name_any()
        );
    }
    install
        .local_shard_caches_its_own_only(&pods, ["db", "db-a"])
        .await?;
    eprintln!(
        "two shards on {:?}: db synced by {} only, db-a by {} only",
        pods.iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect::<Vec<_>>(),
        pods[0].name_any(),
        pods[1].name_any()
    );

    // Shard a's container killed: the kubelet restarts it, and it syncs a new password into its
    // Secret on request, while nothing of the default shard's KeeperSecret or Secret is written.
    let untouched =
        |ks: &KeeperSecret, secret: &Secret| (ks.resource_version(), secret.resource_version());
    let before = untouched(
        &install.keeper_secrets().get("db").await?,
        &install.secrets().get("db").await?,
    );
    let default_restarts = operator_status(&pods[0])?.restart_count;
    let restarts = operator_status(&pods[1])?.restart_count;
    let (node, id) = install.container(&pods[1])?;
    install.node.kill_container(&node, &id)?;
    wait_until(
        "shard a's container restarted and Ready",
        TIMEOUT,
        || async {
            let now = install.pods().get(&pods[1].name_any()).await?;
            let status = operator_status(&now)?;
            Ok((status.restart_count > restarts && status.ready).then_some(()))
        },
    )
    .await?;
    let record = install.server.record(POSTGRES)?;
    install
        .server
        .set_record(record.password("rotated-in-shard-a"))?;
    let force = json!({ "metadata": { "annotations": { FORCE_SYNC_ANNOTATION: "after-kill" } } });
    install
        .keeper_secrets()
        .patch("db-a", &PatchParams::default(), &Patch::Merge(&force))
        .await?;
    wait_until("the rotated password in Secret db-a", TIMEOUT, || async {
        let secret = install.secrets().get("db-a").await?;
        Ok(
            (secret_text(&secret, "password").as_deref() == Some("rotated-in-shard-a"))
                .then_some(()),
        )
    })
    .await?;
    let after = untouched(
        &install.keeper_secrets().get("db").await?,
        &install.secrets().get("db").await?,
    );
    ensure!(
        before == after,
        "the default shard's objects were written: {before:?} -> {after:?}"
    );
    let default_pod = install.pods().get(&pods[0].name_any()).await?;
    ensure!(
        operator_status(&default_pod)?.restart_count == default_restarts,
        "the default shard restarted"
    );
    let reporters = install.reporters_for("db-a", 1).await?;
    ensure!(
        reporters == BTreeSet::from([pods[1].name_any()]),
        "KeeperSecret db-a was reported on by {reporters:?}"
    );
    eprintln!("shard a killed and resumed; db and its Secret untouched ({after:?})");
    install.helm(&["uninstall", &install.release])?;
    Ok(())
}

/// The node cluster, with the operator image built and imported into every node.
async fn node_with_image() -> Result<(NodeCluster, Image)> {
    let node = NodeCluster::start().await?;
    let image = tokio::task::spawn_blocking(|| build_image("operator")).await??;
    node.import(&image)?;
    Ok((node, image))
}

/// One install of the chart on the nodes: its namespaces, release and the KSM test server.
struct Install {
    node: NodeCluster,
    server: TestServer,
    /// Makes the KSM test server reachable on the loopback of a node with its own network.
    _relay: Relay,
    /// The KSM config in the credential Secret `ksm-config`.
    config: String,
    release: String,
    op_ns: String,
    app_ns: String,
    values: PathBuf,
    metrics_port: u16,
    /// The password the KeeperSecret `db` maps.
    password: String,
}

impl Install {
    /// Namespaces, the credential Secret, the KSM CA ConfigMap and the values file for `image`,
    /// with `extra` values on top.
    async fn prepare(
        node: NodeCluster,
        image: &Image,
        extra: serde_json::Value,
    ) -> Result<Install> {
        let server = TestServer::sample().await?;
        let port = server
            .hostname()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .context("the KSM test server's port")?;
        let relay = node.relay(port)?;
        let op_ns = node.cluster.fresh_namespace("node-op").await?;
        let app_ns = node.cluster.fresh_namespace("node").await?;
        let dir = artefact_dir().join(&app_ns);
        std::fs::create_dir_all(&dir)?;
        let config = server.bound_config("operator")?;
        create_secret(
            &Api::namespaced(node.cluster.client(), &app_ns),
            "ksm-config",
            &[("config", config.as_bytes())],
        )
        .await?;
        let ca = ConfigMap {
            metadata: ObjectMeta {
                name: Some("keeper-ca".into()),
                ..Default::default()
            },
            data: Some([("ca.crt".to_string(), server.ca_pem().to_string())].into()),
            ..Default::default()
        };
        Api::<ConfigMap>::namespaced(node.cluster.client(), &op_ns)
            .create(&PostParams::default(), &ca)
            .await?;

        // The local image, hostNetwork, and everything reached on loopback.
        let metrics_port = free_port()?;
        let values = dir.join("values.yaml");
        let mut all = json!({
                "image": {
                    "repository": image.repository(),
                    "tag": image.tag(),
                    "pullPolicy": "Never",
                },
                "hostNetwork": true,
                "extraEnv": [
                    { "name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1" },
                    { "name": "KUBERNETES_SERVICE_PORT", "value": node.api_port()?.to_string() },
                ],
                "watchNamespace": app_ns,
                "keeperCA": { "configMap": "keeper-ca" },
                "keeperAllowedHosts": ["127.0.0.1"],
                // The Pod turns Ready only if the kubelet probes it on loopback.
                "metrics": { "port": metrics_port, "bindAddress": "127.0.0.1" },
        });
        for (key, value) in extra.as_object().into_iter().flatten() {
            all[key] = value.clone();
        }
        std::fs::write(&values, serde_yaml_ng::to_string(&all)?)?;
        let password = server
            .record(POSTGRES)?
            .fields
            .iter()
            .find(|f| f["type"] == "password")
            .and_then(|f| f["value"][0].as_str().map(str::to_string))
            .context("the sample vault's password")?;
        Ok(Install {
            release: op_ns.clone(),
            node,
            server,
            _relay: relay,
            config,
            op_ns,
            app_ns,
            values,
            metrics_port,
            password,
        })
    }

    /// Step 1: `helm install`: the Pod is Ready through the chart's own probes, runs as the
    /// non-root user on a read-only root filesystem, and syncs a KeeperSecret.
    async fn install_and_sync(&self, image: &Image) -> Result<Pod> {
        self.adopt_kept_crds().await?;
        let values = self.values.to_str().context("values path")?;
        self.helm(&["install", &self.release, &chart()?, "--values", values])?;
        let pod = self.ready_pod(image).await?;
        let (node, id) = self.container(&pod)?;
        let pid = self.node.container_pid(&node, &id)?;
        ensure!(
            process_uid(pid)? == NONROOT,
            "the operator does not run as uid {NONROOT}"
        );
        let root = root_mount_options(pid)?;
        ensure!(
            root.iter().any(|o| o == "ro"),
            "root filesystem mounted {root:?}"
        );
        eprintln!(
            "operator Pod {} Ready: uid {NONROOT}, root {root:?}",
            pod.name_any()
        );

        let ks: KeeperSecret = serde_json::from_value(keeper_secret("db", "1h"))?;
        self.keeper_secrets()
            .create(&PostParams::default(), &ks)
            .await?;
        self.wait_ready("Synced").await?;
        self.assert_secret_holds_password().await?;
        Ok(pod)
    }

    /// CRDs kept by an earlier run's `helm uninstall` belong to that release; a new release
    /// takes them over as users do (docs/operations.md, "Uninstalling and installing again").
    async fn adopt_kept_crds(&self) -> Result<()> {
        let crds: Api<CustomResourceDefinition> = Api::all(self.node.cluster.client());
        for crd in CRDS {
            if crds.get_opt(crd).await?.is_some() {
                let patch = json!({ "metadata": { "annotations": {
                    "meta.helm.sh/release-name": self.release,
                    "meta.helm.sh/release-namespace": self.op_ns,
                } } });
                crds.patch(crd, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
        Ok(())
    }

    /// Step 2a: `kubectl logs` of the operator container (the one before the last restart when
    /// `previous`) through the API server and the kubelet: every line is a JSON object.
    fn json_logs(&self, pod: &Pod, previous: bool) -> Result<String> {
        let mut cmd = self.node.cluster.kubectl();
        cmd.args(["logs", "-n", &self.op_ns, &pod.name_any(), "-c", "operator"]);
        if previous {
            cmd.arg("--previous");
        }
        let logs = tokio::task::block_in_place(|| run(&mut cmd, None))?.stdout;
        let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
        ensure!(!lines.is_empty(), "kubectl logs printed nothing");
        for line in &lines {
            let parsed: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("a log line is not JSON: {line:.120}"))?;
            ensure!(parsed.is_object(), "a log line is not a JSON object");
        }
        eprintln!("kubectl logs: {} JSON lines", lines.len());
        Ok(logs)
    }

    /// Step 2b: `/metrics` found as Prometheus finds it: the metrics Service's port, then its
    /// EndpointSlice. A hostNetwork Pod's address is the node's, which here is this host, so the
    /// scrape goes to 127.0.0.1 and never leaves loopback.
    async fn scrape_through_service(&self) -> Result<()> {
        let service_name = format!("{}-metrics", chart_fullname(&self.release));
        let client = self.node.cluster.client();
        let service = Api::<Service>::namespaced(client.clone(), &self.op_ns)
            .get(&service_name)
            .await?;
        let port = service
            .spec
            .and_then(|s| s.ports)
            .into_iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("metrics"))
            .context("the Service has no metrics port")?;
        ensure!(port.target_port.is_some(), "the metrics port has no target");

        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &self.op_ns);
        let lp =
            ListParams::default().labels(&format!("kubernetes.io/service-name={service_name}"));
        let (address, port) = wait_until("the Service's ready endpoint", TIMEOUT, || async {
            for slice in slices.list(&lp).await?.items {
                let port = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some("metrics"))
                    .and_then(|p| p.port);
                for ep in slice.endpoints.iter().flatten() {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready);
                    if let (Some(true), Some(port), Some(address)) =
                        (ready, port, ep.addresses.first())
                    {
                        return Ok(Some((address.clone(), port)));
                    }
                }
            }
            Ok(None)
        })
        .await?;
        let node_ip = self.node_ip().await?;
        ensure!(
            address == node_ip,
            "the endpoint {address} is not the node's address {node_ip}"
        );
        ensure!(
            port == i32::from(self.metrics_port),
            "the endpoint port {port} is not the metrics port"
        );

        let token = self
            .node
            .cluster
            .metrics_reader(&self.op_ns, &self.release)
            .await?;
        let url = format!("http://127.0.0.1:{port}/metrics");
        let scrape = reqwest::Client::new()
            .get(&url)
            .bearer_auth(token.secret())
            .send()
            .await?;
        ensure!(
            scrape.status() == 200,
            "/metrics answered {}",
            scrape.status()
        );
        let metrics = scrape.text().await?;
        ensure!(
            metrics.contains("keeper_operator_reconcile_duration_seconds"),
            "/metrics has no reconcile histogram"
        );
        let anonymous = reqwest::get(&url).await?.status();
        ensure!(
            anonymous == 401,
            "/metrics without a token answered {anonymous}"
        );
        eprintln!(
            "/metrics through Service {service_name} (endpoint {address}:{port}): {} bytes",
            metrics.len()
        );
        Ok(())
    }

    /// Step 3: `helm upgrade` to a new image tag. One replica without leader election means
    /// Recreate: at no moment do two operators run, and the Secret never loses its value.
    async fn upgrade_without_overlap(&self, image: &Image) -> Result<Pod> {
        let next = self.node.tag(image, &format!("{}-next", image.tag()))?;
        let watch = UpgradeWatch::start(self);
        self.helm(&[
            "upgrade",
            &self.release,
            &chart()?,
            "--reuse-values",
            "--set",
            &format!("image.tag={}", next.tag()),
        ])?;
        let pod = self.ready_pod(&next).await?;
        let (most_running, lost) = watch.stop().await?;
        ensure!(
            most_running == 1,
            "{most_running} operators ran at once during the upgrade"
        );
        ensure!(!lost, "Secret db lost its value during the upgrade");
        let deployment = Api::<Deployment>::namespaced(self.node.cluster.client(), &self.op_ns)
            .get(&chart_fullname(&self.release))
            .await?;
        let strategy = deployment.spec.strategy.and_then(|s| s.type_);
        ensure!(
            strategy.as_deref() == Some("Recreate"),
            "strategy {strategy:?}"
        );
        eprintln!(
            "helm upgrade to {}: Recreate, one operator at a time, no value lost",
            next.tag()
        );
        Ok(pod)
    }

    /// Step 4: Keeper down, the container killed, the Secret deleted: the kubelet restarts it in
    /// the same Pod, and the restarted operator re-creates the Secret from the sealed last good
    /// copy. The Secret goes only once the container is dead: the running operator would
    /// re-create it at once from the data it holds in memory, still fresh.
    async fn kill_while_keeper_is_down(&self, pod: &Pod) -> Result<Pod> {
        self.server.faults().set_down(DownMode::Refuse);
        let restarts = operator_status(pod)?.restart_count;
        let (node, id) = self.container(pod)?;
        self.node.kill_container(&node, &id)?;
        self.secrets()
            .delete("db", &DeleteParams::default())
            .await?;
        let restarted = wait_until(
            "the killed container restarted and Ready",
            TIMEOUT,
            || async {
                let pods = self.live_pods().await?;
                let Some(now) = pods.iter().find(|p| p.name_any() == pod.name_any()) else {
                    bail!("the Pod was replaced instead of its container restarted");
                };
                let status = operator_status(now)?;
                Ok((status.restart_count > restarts && status.ready).then(|| now.clone()))
            },
        )
        .await?;
        let ks = self.wait_ready("LastGoodCopy").await?;
        ensure!(
            condition(&ks, "Stale").is_some_and(|c| c.status == "True"),
            "not marked Stale"
        );
        self.assert_secret_holds_password().await?;
        eprintln!(
            "container killed with Keeper down: restart {} served the sealed copy",
            operator_status(&restarted)?.restart_count
        );
        self.server.faults().set_down(DownMode::Up);
        self.wait_ready("Synced").await?;
        Ok(restarted)
    }

    /// Step 5: No value of the vault or the credential in the logs, Events or KeeperSecret status.
    async fn assert_no_leaks(&self, logs: &str) -> Result<()> {
        let mut haystacks = vec![("operator logs".to_string(), logs.to_string())];
        for ns in [&self.op_ns, &self.app_ns] {
            let events: Api<Event> = Api::namespaced(self.node.cluster.client(), ns);
            for ev in events.list(&ListParams::default()).await?.items {
                let text = serde_json::to_string(&ev)?;
                haystacks.push((format!("Event {ns}/{}", ev.name_any()), text));
            }
        }
        for ks in self
            .keeper_secrets()
            .list(&ListParams::default())
            .await?
            .items
        {
            let text = serde_json::to_string(&ks.status)?;
            haystacks.push((format!("KeeperSecret {}", ks.name_any()), text));
        }
        let mut values = SecretValues::default();
        values.add_vault(&sample_vault());
        values.add_config(&self.config);
        let leaks = values.find(&haystacks);
        ensure!(
            leaks.is_empty(),
            "{} secret value(s) leaked: {}",
            leaks.len(),
            leaks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
        Ok(())
    }

    /// Step 6: `helm uninstall` removes the Pod and leaves the CRDs, the KeeperSecret and its
    /// Secret.
    async fn uninstall_keeps_crds_and_secrets(&self) -> Result<()> {
        self.helm(&["uninstall", &self.release])?;
        wait_until("the operator Pods gone", TIMEOUT, || async {
            Ok(self.live_pods().await?.is_empty().then_some(()))
        })
        .await?;
        let crds: Api<CustomResourceDefinition> = Api::all(self.node.cluster.client());
        for crd in CRDS {
            crds.get(crd)
                .await
                .with_context(|| format!("CRD {crd} after helm uninstall"))?;
        }
        self.keeper_secrets()
            .get("db")
            .await
            .context("KeeperSecret db after helm uninstall")?;
        self.assert_secret_holds_password().await
    }

    /// `helm <args> --wait` in the operator namespace.
    fn helm(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.node.cluster.helm();
        cmd.args(args)
            .args(["--namespace", &self.op_ns, "--wait", "--timeout"])
            .arg(format!("{}s", TIMEOUT.as_secs()));
        // The KSM test server runs on this runtime: block a worker, not the runtime.
        Ok(tokio::task::block_in_place(|| run(&mut cmd, None))?.stdout)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.node.cluster.client(), &self.op_ns)
    }

    fn keeper_secrets(&self) -> Api<KeeperSecret> {
        Api::namespaced(self.node.cluster.client(), &self.app_ns)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.node.cluster.client(), &self.app_ns)
    }

    async fn wait_ready(&self, reason: &str) -> Result<KeeperSecret> {
        wait_for_reason(
            &self.keeper_secrets(),
            "db",
            "Ready",
            "True",
            reason,
            TIMEOUT,
        )
        .await
    }

    async fn assert_secret_holds_password(&self) -> Result<()> {
        let secret = self.secrets().get("db").await?;
        ensure!(
            secret_text(&secret, "password").as_deref() == Some(self.password.as_str()),
            "Secret db does not hold the record's password"
        );
        Ok(())
    }

    async fn node_ip(&self) -> Result<String> {
        let node_name = self.node.nodes()?[0];
        let node = Api::<Node>::all(self.node.cluster.client())
            .get(node_name)
            .await?;
        Ok(node
            .status
            .and_then(|s| s.addresses)
            .into_iter()
            .flatten()
            .find(|a| a.type_ == "InternalIP")
            .context("the node has no InternalIP")?
            .address)
    }

    /// The operator Pods that are not being deleted.
    async fn live_pods(&self) -> Result<Vec<Pod>> {
        let lp = ListParams::default().labels(OPERATOR_PODS);
        Ok(self
            .pods()
            .list(&lp)
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect())
    }

    /// Waits for exactly one operator Pod, Ready, running `image`; returns it.
    async fn ready_pod(&self, image: &Image) -> Result<Pod> {
        Ok(self.ready_pods(image, 1).await?.remove(0))
    }

    /// Waits for exactly `count` operator Pods, all Ready and running `image`; returns them.
    async fn ready_pods(&self, image: &Image, count: usize) -> Result<Vec<Pod>> {
        let what = format!("{count} Ready Pod(s) of {}", image.reference);
        wait_until(&what, TIMEOUT, || async {
            let pods = self.live_pods().await?;
            let all = pods.len() == count
                && pods.iter().all(|pod| {
                    let ready = pod
                        .status
                        .iter()
                        .flat_map(|s| s.conditions.iter().flatten())
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    // The spec, not the status: containerd reports one of an image's tags there.
                    let runs_image = pod
                        .spec
                        .iter()
                        .flat_map(|s| &s.containers)
                        .any(|c| c.image.as_deref().is_some_and(|i| i.ends_with(image.tag())));
                    ready && runs_image
                });
            Ok(all.then_some(pods))
        })
        .await
    }

    /// The node of `pod` and the runc ID of its operator container.
    fn container(&self, pod: &Pod) -> Result<(String, String)> {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let id = operator_status(pod)?
            .container_id
            .context("no container ID")?;
        Ok((
            node.context("the Pod has no node")?,
            container_id(&id)?.to_string(),
        ))
    }

    /// Waits for the one operator Pod of the shard whose Pods are `app.kubernetes.io/name=app`,
    /// Ready and running `image`.
    async fn shard_pod(&self, app: &str, image: &Image) -> Result<Pod> {
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/name={app}"));
        wait_until(&format!("the Ready Pod of {app}"), TIMEOUT, || async {
            let pods = self.pods().list(&lp).await?.items;
            let [pod] = pods.as_slice() else {
                return Ok(None);
            };
            let ready = operator_status(pod).is_ok_and(|s| s.ready);
            let runs_image = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .any(|c| c.image.as_deref().is_some_and(|i| i.ends_with(image.tag())));
            Ok((ready && runs_image).then(|| pod.clone()))
        })
        .await
    }

    /// Of `pods` (one per shard, syncing `names` in order), the one on this host's network
    /// serves /metrics on loopback: the data ages it exports come from its cache, which must
    /// hold its own KeeperSecret and not the other shard's.
    async fn local_shard_caches_its_own_only(&self, pods: &[Pod], names: [&str; 2]) -> Result<()> {
        let local = self.node.nodes()?[0];
        let on_local =
            |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(local);
        let mine = pods
            .iter()
            .position(on_local)
            .context("no shard on this host's node")?;
        let (own, other) = (names[mine], names[1 - mine]);
        let token = self
            .node
            .cluster
            .metrics_reader(&self.op_ns, &self.release)
            .await?;
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let metrics = wait_until(
            &format!("the data age of {own} in /metrics"),
            TIMEOUT,
            || async {
                let scrape = reqwest::Client::new()
                    .get(&url)
                    .bearer_auth(token.secret())
                    .send()
                    .await?;
                let text = scrape.text().await?;
                Ok(text.contains(&format!("name=\"{own}\"")).then_some(text))
            },
        )
        .await?;
        ensure!(
            !metrics.contains(&format!("name=\"{other}\"")),
            "the shard syncing {own} caches {other} too"
        );
        Ok(())
    }

    /// The operator Pods that published Events about KeeperSecret `name`, once there are at
    /// least `least` such Events.
    async fn reporters_for(&self, name: &str, least: usize) -> Result<BTreeSet<String>> {
        let events: Api<Event> = Api::namespaced(self.node.cluster.client(), &self.app_ns);
        let lp = ListParams::default().fields(&format!(
            "involvedObject.kind=KeeperSecret,involvedObject.name={name}"
        ));
        wait_until(&format!("Events about {name}"), TIMEOUT, || async {
            let events = events.list(&lp).await?.items;
            let reporters = events
                .iter()
                .map(|e| e.reporting_instance.clone().unwrap_or_default())
                .collect();
            Ok((events.len() >= least).then_some(reporters))
        })
        .await
    }

    /// The Pod of `pods` that holds the leader Lease (once one does).
    async fn leader_among(&self, pods: &[Pod]) -> Result<String> {
        let leases: Api<Lease> = Api::namespaced(self.node.cluster.client(), &self.op_ns);
        let names: BTreeSet<String> = pods.iter().map(|p| p.name_any()).collect();
        wait_until("a leader among the Pods", TIMEOUT, || async {
            let holder = leases
                .get_opt(LEASE_NAME)
                .await?
                .and_then(|l| l.spec?.holder_identity);
            Ok(holder.filter(|h| names.contains(h)))
        })
        .await
    }
}

/// The path of the chart in this repository.
fn chart() -> Result<String> {
    let path = workspace_root().join("helm/keeper-operator");
    Ok(path.to_str().context("chart path")?.to_string())
}

fn operator_status(pod: &Pod) -> Result<ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|s| s.iter().find(|c| c.name == "operator"))
        .cloned()
        .context("no status of the operator container")
}

/// Polls, every 200 ms during an upgrade, how many operator containers run and whether Secret
/// `db` still holds the password.
struct UpgradeWatch {
    stop: Arc<AtomicBool>,
    most_running: Arc<AtomicUsize>,
    lost: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl UpgradeWatch {
    fn start(install: &Install) -> UpgradeWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let most_running = Arc::new(AtomicUsize::new(0));
        let lost = Arc::new(AtomicBool::new(false));
        let (pods, secrets) = (install.pods(), install.secrets());
        let password = install.password.clone();
        let task = tokio::spawn({
            let (stop, most_running, lost) = (stop.clone(), most_running.clone(), lost.clone());
            async move {
                let lp = ListParams::default().labels(OPERATOR_PODS);
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(list) = pods.list(&lp).await {
                        let running = list
                            .items
                            .iter()
                            .filter(|p| {
                                p.status
                                    .iter()
                                    .flat_map(|s| s.container_statuses.iter().flatten())
                                    .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                            })
                            .count();
                        most_running.fetch_max(running, Ordering::SeqCst);
                    }
                    let holds = secrets.get("db").await.is_ok_and(|s| {
                        secret_text(&s, "password").as_deref() == Some(password.as_str())
                    });
                    if !holds {
                        lost.store(true, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        UpgradeWatch {
            stop,
            most_running,
            lost,
            task,
        }
    }

    /// Stops polling; returns the most operators seen running at once, and whether the Secret
    /// was ever seen without the password.
    async fn stop(self) -> Result<(usize, bool)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await?;
        Ok((
            self.most_running.load(Ordering::SeqCst),
            self.lost.load(Ordering::SeqCst),
        ))
    }
}
