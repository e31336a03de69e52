//! The chart's Deployment on a real node: `helm install` of the operator image built offline by
//! `e2e/image.sh`, run by a kubelet on containerd and runc (`e2e/cluster.sh up --node`). The Pod
//! uses hostNetwork and reaches the API server and the KSM test server on 127.0.0.1 only.
//!
//! One scenario, in order: install and sync; JSON logs and /metrics through the chart's Service;
//! `helm upgrade` to a new image tag with no overlap and no lost value; the container killed
//! while Keeper is down, and the restarted one serving the sealed copy; `helm uninstall`, which
//! leaves the CRDs and KeeperSecrets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keeper_e2e::harness::{
    Image, NodeCluster, artefact_dir, build_image, chart_fullname, container_id, create_secret,
    free_port, process_uid, root_mount_options, run, secret_text, wait_until, workspace_root,
};
use keeper_e2e::ksm_server::{DownMode, TestServer, sample_vault};
use keeper_e2e::leak_scan::SecretValues;
use keeper_e2e::world::{condition, keeper_secret, wait_for_reason};
use keeper_operator::api::KeeperSecret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(180);
const CRDS: [&str; 2] = [
    "keepersecrets.keeper-operator.dev",
    "clusterkeeperstores.keeper-operator.dev",
];

/// One install of the chart on the node: its namespaces, release and the KSM test server.
struct Install {
    node: NodeCluster,
    server: TestServer,
    release: String,
    op_ns: String,
    app_ns: String,
    values: std::path::PathBuf,
    metrics_port: u16,
}

impl Install {
    fn helm(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.node.cluster.helm();
        cmd.args(args).args(["--namespace", &self.op_ns]);
        // helm waits on this runtime's KSM test server's clients: block a worker, not the runtime.
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

    /// The operator Pods that are not being deleted.
    async fn live_pods(&self) -> Result<Vec<Pod>> {
        let lp = ListParams::default().labels("app.kubernetes.io/name=keeper-operator");
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
        wait_until(
            &format!("one Ready Pod of {}", image.reference),
            TIMEOUT,
            || async {
                let pods = self.live_pods().await?;
                let [pod] = pods.as_slice() else {
                    return Ok(None);
                };
                let status = pod.status.clone().unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                // The spec, not the status: containerd reports one of an image's tags there.
                let runs_image = pod
                    .spec
                    .iter()
                    .flat_map(|s| &s.containers)
                    .any(|c| c.image.as_deref().is_some_and(|i| i.ends_with(image.tag())));
                Ok((ready && runs_image).then(|| pod.clone()))
            },
        )
        .await
    }

    /// The PID of the operator container's process in `pod`.
    fn operator_pid(&self, pod: &Pod) -> Result<u32> {
        let id = operator_status(pod)?
            .container_id
            .clone()
            .context("no container ID")?;
        self.node.container_pid(container_id(&id)?)
    }
}

fn operator_status(pod: &Pod) -> Result<k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|s| s.iter().find(|c| c.name == "operator"))
        .cloned()
        .context("no status of the operator container")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chart_runs_the_image_on_a_node() -> Result<()> {
    let node = NodeCluster::start().await?;
    let image = tokio::task::spawn_blocking(|| build_image("operator")).await??;
    node.import(&image)?;
    let node_name = node.node_name()?.to_string();
    let nodes: Api<Node> = Api::all(node.cluster.client());
    let node_ip = nodes
        .get(&node_name)
        .await?
        .status
        .and_then(|s| s.addresses)
        .into_iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .context("the node has no InternalIP")?
        .address;

    let server = TestServer::start(sample_vault()).await?;
    let op_ns = node.cluster.fresh_namespace("node-op").await?;
    let app_ns = node.cluster.fresh_namespace("node").await?;
    let release = op_ns.clone();
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
        metadata: kube::api::ObjectMeta {
            name: Some("keeper-ca".into()),
            ..Default::default()
        },
        data: Some([("ca.crt".to_string(), server.ca_pem().to_string())].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(node.cluster.client(), &op_ns)
        .create(&PostParams::default(), &ca)
        .await?;

    // The test values: the local image, hostNetwork, and the in-cluster config on loopback.
    let metrics_port = free_port()?;
    let values = dir.join("values.yaml");
    std::fs::write(
        &values,
        serde_yaml_ng::to_string(&json!({
            "image": { "repository": image.repository(), "tag": image.tag(), "pullPolicy": "Never" },
            "hostNetwork": true,
            "extraEnv": [
                { "name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1" },
                { "name": "KUBERNETES_SERVICE_PORT", "value": node.api_port()?.to_string() },
            ],
            "watchNamespace": app_ns,
            "keeperCA": { "configMap": "keeper-ca" },
            "keeperAllowedHosts": ["127.0.0.1"],
            // Loopback only: the Pod turns Ready only if the kubelet probes it on loopback.
            "metrics": { "port": metrics_port, "bindAddress": "127.0.0.1" },
        }))?,
    )?;
    let install = Install {
        node,
        server,
        release,
        op_ns,
        app_ns,
        values,
        metrics_port,
    };

    // CRDs kept by an earlier run's `helm uninstall` belong to that release; a new release takes
    // them over as users do (docs/operations.md, "Uninstalling").
    let crds: Api<CustomResourceDefinition> = Api::all(install.node.cluster.client());
    for crd in CRDS {
        if crds.get_opt(crd).await?.is_some() {
            let patch = json!({ "metadata": { "annotations": {
                "meta.helm.sh/release-name": install.release,
                "meta.helm.sh/release-namespace": install.op_ns,
            } } });
            crds.patch(crd, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
    }

    // 1. helm install: Ready through the chart's own probes, non-root, read-only root.
    let chart = workspace_root().join("helm/keeper-operator");
    let chart = chart.to_str().context("chart path")?;
    let values = install.values.to_str().context("values path")?.to_string();
    install.helm(&[
        "install",
        &install.release,
        chart,
        "--values",
        &values,
        "--wait",
        "--timeout",
        "180s",
    ])?;
    let pod = install.ready_pod(&image).await?;
    let pid = install.operator_pid(&pod)?;
    ensure!(
        process_uid(pid)? == 65532,
        "the operator does not run as uid 65532"
    );
    let root = root_mount_options(pid)?;
    ensure!(
        root.iter().any(|o| o == "ro"),
        "root filesystem mounted {root:?}"
    );
    eprintln!(
        "operator Pod {} Ready: uid 65532, root {root:?}",
        pod.name_any()
    );

    install
        .keeper_secrets()
        .create(
            &PostParams::default(),
            &serde_json::from_value(keeper_secret("db", "1h"))?,
        )
        .await?;
    wait_for_reason(
        &install.keeper_secrets(),
        "db",
        "Ready",
        "True",
        "Synced",
        TIMEOUT,
    )
    .await?;
    let password = install
        .server
        .record(keeper_e2e::world::POSTGRES)?
        .fields
        .iter()
        .find(|f| f["type"] == "password")
        .and_then(|f| f["value"][0].as_str().map(str::to_string))
        .context("the sample vault's password")?;
    let synced = install.secrets().get("db").await?;
    ensure!(
        secret_text(&synced, "password").as_deref() == Some(password.as_str()),
        "Secret db does not hold the record's password"
    );

    // 2. JSON logs through kubectl, /metrics through the Service's endpoints.
    let logs = {
        let mut cmd = install.node.cluster.kubectl();
        cmd.args([
            "logs",
            "-n",
            &install.op_ns,
            &pod.name_any(),
            "-c",
            "operator",
        ]);
        tokio::task::block_in_place(|| run(&mut cmd, None))?.stdout
    };
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(!lines.is_empty(), "kubectl logs printed nothing");
    for line in &lines {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("a log line is not JSON: {line:.120}"))?;
        ensure!(parsed.is_object(), "a log line is not a JSON object");
    }
    eprintln!("kubectl logs: {} JSON lines", lines.len());

    let fullname = chart_fullname(&install.release);
    let service_name = format!("{fullname}-metrics");
    let service = Api::<Service>::namespaced(install.node.cluster.client(), &install.op_ns)
        .get(&service_name)
        .await?;
    let target = service
        .spec
        .and_then(|s| s.ports)
        .into_iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .context("the Service has no metrics port")?
        .target_port;
    ensure!(
        target.is_some(),
        "the Service's metrics port has no targetPort"
    );
    let slices: Api<EndpointSlice> = Api::namespaced(install.node.cluster.client(), &install.op_ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service_name}"));
    let (address, port) = wait_until("the Service's ready endpoint", TIMEOUT, || async {
        for slice in slices.list(&lp).await?.items {
            let port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some("metrics"))
                .and_then(|p| p.port);
            for ep in slice.endpoints.iter().flatten() {
                let ready = ep
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(false);
                if let (true, Some(port), Some(address)) = (ready, port, ep.addresses.first()) {
                    return Ok(Some((address.clone(), port)));
                }
            }
        }
        Ok(None)
    })
    .await?;
    // A hostNetwork Pod's address is the node's; on this node that is this host, so the scrape
    // goes to 127.0.0.1 and never leaves loopback.
    ensure!(
        address == node_ip,
        "the endpoint {address} is not the node's address {node_ip}"
    );
    ensure!(
        port == i32::from(install.metrics_port),
        "the endpoint port {port} is not the metrics port"
    );
    let token = install
        .node
        .cluster
        .metrics_reader(&install.op_ns, &install.release)
        .await?;
    let scrape = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
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
    let anonymous = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await?;
    ensure!(
        anonymous.status() == 401,
        "/metrics without a token answered {}",
        anonymous.status()
    );
    eprintln!(
        "/metrics through Service {service_name} (endpoint {address}:{port}): {} bytes",
        metrics.len()
    );

    // 3. helm upgrade to a new image tag: Recreate, so at most one operator at any moment, and
    // the Secret never loses its value.
    let next = install.node.tag(&image, &format!("{}-next", image.tag()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let most_running = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, most_running, lost) = (stop.clone(), most_running.clone(), lost.clone());
        let pods = install.pods();
        let secrets = install.secrets();
        let password = password.clone();
        tokio::spawn(async move {
            let lp = ListParams::default().labels("app.kubernetes.io/name=keeper-operator");
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
                match secrets.get("db").await {
                    Ok(s) if secret_text(&s, "password").as_deref() == Some(password.as_str()) => {}
                    _ => lost.store(true, Ordering::SeqCst),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    install.helm(&[
        "upgrade",
        &install.release,
        chart,
        "--reuse-values",
        "--set",
        &format!("image.tag={}", next.tag()),
        "--wait",
        "--timeout",
        "180s",
    ])?;
    let upgraded = install.ready_pod(&next).await?;
    stop.store(true, Ordering::SeqCst);
    watcher.await?;
    ensure!(
        upgraded.name_any() != pod.name_any(),
        "the upgrade did not replace the Pod"
    );
    ensure!(
        most_running.load(Ordering::SeqCst) == 1,
        "{} operators ran at once during the upgrade",
        most_running.load(Ordering::SeqCst)
    );
    ensure!(
        !lost.load(Ordering::SeqCst),
        "Secret db lost its value during the upgrade"
    );
    let deployment = Api::<Deployment>::namespaced(install.node.cluster.client(), &install.op_ns)
        .get(&fullname)
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

    // 4. Keeper down, Secret deleted, container killed: the restarted container re-creates the
    // Secret from the sealed last good copy.
    install.server.faults().set_down(DownMode::Refuse);
    install
        .secrets()
        .delete("db", &DeleteParams::default())
        .await?;
    let before = operator_status(&upgraded)?.restart_count;
    let id = operator_status(&upgraded)?
        .container_id
        .context("no container ID")?;
    install.node.kill_container(container_id(&id)?)?;
    let restarted = wait_until(
        "the killed container restarted and Ready",
        TIMEOUT,
        || async {
            let pods = install.live_pods().await?;
            let Some(pod) = pods.iter().find(|p| p.name_any() == upgraded.name_any()) else {
                bail!("the Pod was replaced instead of its container restarted");
            };
            let status = operator_status(pod)?;
            Ok((status.restart_count > before && status.ready).then(|| pod.clone()))
        },
    )
    .await?;
    let ks = wait_for_reason(
        &install.keeper_secrets(),
        "db",
        "Ready",
        "True",
        "LastGoodCopy",
        TIMEOUT,
    )
    .await?;
    ensure!(
        condition(&ks, "Stale").is_some_and(|c| c.status == "True"),
        "not marked Stale"
    );
    let served = install.secrets().get("db").await?;
    ensure!(
        secret_text(&served, "password").as_deref() == Some(password.as_str()),
        "the sealed copy was not served"
    );
    eprintln!(
        "container killed with Keeper down: restart {} served the sealed copy",
        operator_status(&restarted)?.restart_count
    );
    install.server.faults().set_down(DownMode::Up);
    wait_for_reason(
        &install.keeper_secrets(),
        "db",
        "Ready",
        "True",
        "Synced",
        TIMEOUT,
    )
    .await?;

    // No value in the logs, events or statuses of the whole run.
    let mut haystacks = vec![("operator logs".to_string(), {
        let mut cmd = install.node.cluster.kubectl();
        cmd.args([
            "logs",
            "-n",
            &install.op_ns,
            &restarted.name_any(),
            "-c",
            "operator",
            "--previous",
        ]);
        let previous = tokio::task::block_in_place(|| run(&mut cmd, None))?.stdout;
        format!("{logs}\n{previous}")
    })];
    for ns in [&install.op_ns, &install.app_ns] {
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(install.node.cluster.client(), ns);
        for ev in events.list(&ListParams::default()).await?.items {
            haystacks.push((
                format!("Event {ns}/{}", ev.name_any()),
                serde_json::to_string(&ev)?,
            ));
        }
    }
    for ks in install
        .keeper_secrets()
        .list(&ListParams::default())
        .await?
        .items
    {
        haystacks.push((
            format!("KeeperSecret {}", ks.name_any()),
            serde_json::to_string(&ks.status)?,
        ));
    }
    let mut values = SecretValues::default();
    values.add_vault(&sample_vault());
    values.add_config(&config);
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

    // 5. helm uninstall leaves the CRDs, the KeeperSecrets and their Secrets.
    install.helm(&["uninstall", &install.release, "--wait", "--timeout", "120s"])?;
    wait_until("the operator Pods gone", TIMEOUT, || async {
        Ok(install.live_pods().await?.is_empty().then_some(()))
    })
    .await?;
    for crd in CRDS {
        crds.get(crd)
            .await
            .with_context(|| format!("CRD {crd} after helm uninstall"))?;
    }
    install
        .keeper_secrets()
        .get("db")
        .await
        .context("KeeperSecret db after helm uninstall")?;
    let kept = install.secrets().get("db").await?;
    ensure!(
        secret_text(&kept, "password").as_deref() == Some(password.as_str()),
        "Secret db changed by the uninstall"
    );
    Ok(())
}
