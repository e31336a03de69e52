//! The platform itself: the local control plane enforces RBAC, the chart lints, renders and passes
//! the real API server's validation, and its RBAC grants the operator exactly what it needs.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keeper_e2e::harness::{self, Cluster, TestEnv, can_i, run, workspace_root};
use keeper_e2e::ksm_server::{SAMPLE_VAULT_JSON, TestServer, VaultSpec, uids};
use keeper_e2e::leak_scan::SecretValues;
use keeper_operator::api::KeeperSecret;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, ResourceExt};

const CRDS: [&str; 2] = [
    "keepersecrets.keeper-operator.dev",
    "clusterkeeperstores.keeper-operator.dev",
];

fn chart_dir() -> String {
    workspace_root()
        .join("helm/keeper-operator")
        .display()
        .to_string()
}

#[tokio::test]
async fn control_plane_is_real_and_enforces_rbac() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let version = cluster.client().apiserver_version().await?;
    assert_eq!(version.git_version, format!("v{}", harness::KUBE_VERSION));

    // A ServiceAccount with no bindings can authenticate but do nothing.
    let ns = cluster.fresh_namespace("rbac").await?;
    let sa = k8s_openapi::api::core::v1::ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some("nobody".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::namespaced(cluster.client(), &ns)
        .create(&PostParams::default(), &sa)
        .await?;
    let token = cluster
        .service_account_token(&ns, "nobody", Duration::from_secs(600))
        .await?;
    let client = cluster.token_client(&token, &ns).await?;
    assert!(!can_i(&client, "get", "", "secrets", Some(&ns)).await?);
    let err = Api::<Secret>::namespaced(client, &ns)
        .list(&ListParams::default())
        .await
        .expect_err("an unbound ServiceAccount must not list secrets");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "expected 403, got {err}"
    );

    // The controller-manager runs: it creates each namespace's default ServiceAccount.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(cluster.client(), &ns);
    harness::wait_until(
        "default ServiceAccount",
        Duration::from_secs(30),
        || async { Ok(sas.get_opt("default").await?) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn chart_lints_strictly() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let variants: [&[&str]; 2] = [
        &[],
        &[
            "--set",
            "replicaCount=3,watchNamespace=apps,serviceMonitor.enabled=true,networkPolicy.enabled=true,keeperCA.configMap=keeper-ca",
        ],
    ];
    for extra in variants {
        let mut cmd = cluster.helm();
        cmd.args(["lint", "--strict", "--kube-version", harness::KUBE_VERSION])
            .arg(chart_dir())
            .args(extra);
        run(&mut cmd, None)?;
    }
    // The schema rejects unknown and mistyped values.
    for bad in [
        "replicaCount=many",
        "logging.format=xml",
        "nosuchvalue=1",
        "metrics.auth=maybe",
    ] {
        let mut cmd = cluster.helm();
        cmd.args(["lint", "--strict"])
            .arg(chart_dir())
            .args(["--set", bad]);
        assert!(
            run(&mut cmd, None).is_err(),
            "helm lint accepted --set {bad}"
        );
    }
    Ok(())
}

/// Renders the chart in several configurations and has the real API server validate every object
/// (strict field validation, admission); the pod template meets the "restricted" Pod Security level.
#[tokio::test]
async fn chart_renders_and_passes_server_validation() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let op_ns = cluster.fresh_namespace("chart").await?;
    let app_ns = cluster.fresh_namespace("chart-app").await?;
    let mut cmd = cluster.kubectl();
    cmd.args([
        "label",
        "namespace",
        &op_ns,
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    run(&mut cmd, None)?;

    let wide = cluster.render_chart(&op_ns, &op_ns, &[])?;
    let crds = harness::crd_names(&wide);
    assert_eq!(crds.len(), CRDS.len(), "rendered CRDs: {crds:?}");
    for crd in CRDS {
        assert!(crds.iter().any(|c| c == crd), "{crd} not rendered");
    }
    assert!(wide.contains("helm.sh/resource-policy: keep"));
    assert!(
        !wide.contains("--leader-elect"),
        "one replica needs no leader election"
    );
    assert!(wide.contains("type: Recreate"));

    // CRDs first (for real), so that the rest validates against an established API.
    cluster.install_chart(&op_ns, &op_ns, &[]).await?;
    let ha = cluster.render_chart(
        &op_ns,
        &op_ns,
        &[
            ("replicaCount", "2"),
            ("watchNamespace", &app_ns),
            ("networkPolicy.enabled", "true"),
            ("keeperCA.configMap", "keeper-ca"),
        ],
    )?;
    assert!(ha.contains("- --leader-elect"));
    assert!(ha.contains("kind: PodDisruptionBudget"));
    assert!(ha.contains("maxSurge: 1"), "HA surges a standby in first");
    // On the node's network a surge Pod may find no free port: one Pod at a time instead.
    let host_ha = cluster.render_chart(
        &op_ns,
        &op_ns,
        &[("replicaCount", "2"), ("hostNetwork", "true")],
    )?;
    assert!(host_ha.contains("hostNetwork: true"));
    assert!(host_ha.contains("dnsPolicy: ClusterFirstWithHostNet"));
    assert!(host_ha.contains("maxSurge: 0") && host_ha.contains("maxUnavailable: 1"));
    assert!(host_ha.contains("host: 127.0.0.1"), "probes on loopback");
    // The metrics port stays off the node's network unless asked for.
    assert!(wide.contains("- --metrics-bind-address=0.0.0.0:8080"));
    assert!(host_ha.contains("- --metrics-bind-address=127.0.0.1:8080"));
    // Restarting workloads is opt-in, cluster-wide or per namespace.
    let grants_restart = |manifest: &str| {
        let lines: Vec<&str> = manifest.lines().map(str::trim).collect();
        lines.windows(2).any(|w| {
            w[0] == r#"resources: ["deployments", "statefulsets", "daemonsets"]"#
                && w[1] == r#"verbs: ["patch"]"#
        })
    };
    assert!(!grants_restart(&wide), "rolloutRestart is on by default");
    let scoped = cluster.render_chart(
        &op_ns,
        &op_ns,
        &[("rbac.rolloutRestartNamespaces", &format!("{{{app_ns}}}"))],
    )?;
    assert!(grants_restart(&scoped));
    let role = harness::chart_fullname(&op_ns);
    assert!(scoped.contains(&format!(
        "name: {role}-rollout-restart\n  namespace: {app_ns}"
    )));
    assert!(wide.contains("kind: ValidatingAdmissionPolicy"));
    assert!(ha.contains(&format!("- --watch-namespace={app_ns}")));
    for manifest in [&wide, &ha, &scoped] {
        let out = cluster.apply(manifest, &["--dry-run=server", "--validate=strict"])?;
        assert!(
            !out.stderr.contains("Warning"),
            "server warnings (e.g. Pod Security 'restricted'):\n{}",
            out.stderr
        );
    }
    // Without CRDs the chart still renders (crds.install=false).
    let no_crds = cluster.render_chart(&op_ns, &op_ns, &[("crds.install", "false")])?;
    assert!(harness::crd_names(&no_crds).is_empty());
    Ok(())
}

#[tokio::test]
async fn rendered_crds_are_established() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.fresh_namespace("crds").await?;
    let install = cluster.install_chart(&ns, &ns, &[]).await?;
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client());
    for crd in CRDS {
        assert!(install.crds.iter().any(|c| c == crd));
        let obj = api.get(crd).await?;
        let established = harness::condition(&obj, "Established")
            .and_then(|c| c["status"].as_str().map(String::from));
        assert_eq!(established.as_deref(), Some("True"), "{crd}");
        let keep = obj.metadata.annotations.unwrap_or_default();
        assert_eq!(
            keep.get("helm.sh/resource-policy").map(String::as_str),
            Some("keep")
        );
    }
    Ok(())
}

/// The chart's ServiceAccount, with a real token, can do what the operator needs in the watched
/// namespace and nothing outside it.
#[tokio::test]
async fn chart_rbac_is_least_privilege_with_watch_namespace() -> Result<()> {
    let env = TestEnv::new("rbac-ns").await?;
    let other = env.cluster.fresh_namespace("rbac-other").await?;
    let token = env
        .cluster
        .service_account_token(
            &env.chart.namespace,
            &env.chart.service_account,
            Duration::from_secs(600),
        )
        .await?;
    let client = env
        .cluster
        .token_client(&token, &env.chart.namespace)
        .await?;
    let app = Some(env.app_namespace.as_str());
    let op = Some(env.chart.namespace.as_str());
    let group = "keeper-operator.dev";

    for (verb, g, res, ns) in [
        ("watch", group, "keepersecrets", app),
        ("patch", group, "keepersecrets/status", app),
        ("create", "", "secrets", app),
        ("update", "", "secrets", app),
        ("create", "events.k8s.io", "events", app),
        ("get", "", "configmaps", app),
        ("get", group, "clusterkeeperstores", None),
        ("list", group, "clusterkeeperstores", None),
        ("patch", group, "clusterkeeperstores/status", None),
        ("delete", "", "secrets", app),
        ("get", "", "namespaces", None),
        ("create", "authentication.k8s.io", "tokenreviews", None),
        (
            "create",
            "authorization.k8s.io",
            "subjectaccessreviews",
            None,
        ),
        ("create", "coordination.k8s.io", "leases", op),
        ("update", "coordination.k8s.io", "leases", op),
        ("get", "", "secrets", op),
        ("create", "", "secrets", op),
        ("patch", "", "secrets", op),
    ] {
        assert!(
            can_i(&client, verb, g, res, ns).await?,
            "operator cannot {verb} {res} in {ns:?}"
        );
    }
    for (verb, g, res, ns) in [
        ("get", "", "secrets", Some(other.as_str())),
        ("list", "", "secrets", None),
        ("list", group, "keepersecrets", Some(other.as_str())),
        ("update", group, "keepersecrets", app),
        ("create", "", "configmaps", app),
        // templateFrom reads one named ConfigMap at a time, in watched namespaces only.
        ("list", "", "configmaps", app),
        ("watch", "", "configmaps", app),
        ("get", "", "configmaps", Some(other.as_str())),
        ("delete", "", "secrets", op),
        ("create", "coordination.k8s.io", "leases", app),
        ("delete", "", "namespaces", None),
        ("create", "", "pods", app),
        ("patch", "apps", "deployments", op),
        // Rollout restarts are opt-in (rbac.rolloutRestart or rbac.rolloutRestartNamespaces).
        ("patch", "apps", "deployments", app),
        ("get", "apps", "deployments", app),
        ("delete", "apps", "deployments", app),
        ("update", group, "clusterkeeperstores", None),
        // Nothing the operator never does: it reads KeeperSecrets only from its watch cache,
        // writes their status only by apply, never patches an event series, never watches
        // stores or namespaces, and never lists its own namespace.
        ("get", group, "keepersecrets", app),
        ("update", group, "keepersecrets/status", app),
        ("patch", "events.k8s.io", "events", app),
        ("watch", group, "clusterkeeperstores", None),
        ("update", group, "clusterkeeperstores/status", None),
        ("watch", "", "namespaces", None),
        ("list", "", "secrets", op),
    ] {
        assert!(
            !can_i(&client, verb, g, res, ns).await?,
            "operator may {verb} {res} in {ns:?}"
        );
    }

    // And the real authorizer agrees on real requests.
    let in_app: Api<Secret> = Api::namespaced(client.clone(), &env.app_namespace);
    in_app.list(&ListParams::default()).await?;
    let outside: Api<Secret> = Api::namespaced(client.clone(), &other);
    let err = outside
        .list(&ListParams::default())
        .await
        .expect_err("secrets outside watchNamespace");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client, &env.app_namespace);
    assert!(cms.list(&ListParams::default()).await.is_err());
    Ok(())
}

/// Without watchNamespace the operator reads across namespaces, yet still only what it needs.
#[tokio::test]
async fn chart_rbac_cluster_wide_mode() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.fresh_namespace("rbac-wide").await?;
    let other = cluster.fresh_namespace("rbac-wide-other").await?;
    let install = cluster.install_chart(&ns, &ns, &[]).await?;
    let token = cluster
        .service_account_token(&ns, &install.service_account, Duration::from_secs(600))
        .await?;
    let client = cluster.token_client(&token, &ns).await?;
    assert!(can_i(&client, "list", "", "secrets", None).await?);
    assert!(
        can_i(
            &client,
            "watch",
            "keeper-operator.dev",
            "keepersecrets",
            None
        )
        .await?
    );
    assert!(can_i(&client, "create", "events.k8s.io", "events", Some(&other)).await?);
    assert!(
        !can_i(
            &client,
            "create",
            "coordination.k8s.io",
            "leases",
            Some(&other)
        )
        .await?
    );
    assert!(!can_i(&client, "list", "", "configmaps", Some(&other)).await?);
    assert!(!can_i(&client, "create", "", "pods", Some(&other)).await?);
    assert!(!can_i(&client, "*", "*", "*", None).await?);
    Ok(())
}

/// First value of a standard field of a record in the sample vault (expected Secret contents come
/// from the vault file, not from the test).
fn vault_field(vault: &serde_json::Value, uid: &str, field_type: &str) -> String {
    let record = vault["records"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["uid"] == uid))
        .unwrap_or_else(|| panic!("record {uid} not in the sample vault"));
    let field = record["fields"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["type"] == field_type))
        .unwrap_or_else(|| panic!("{uid} has no {field_type} field"));
    field["value"][0].as_str().expect("text value").to_string()
}

/// The user path end to end: the chart's RBAC suffices for the real operator, which syncs the
/// README's example KeeperSecret from the KSM test server while running as the chart's
/// ServiceAccount.
#[tokio::test]
async fn operator_syncs_the_example_as_the_chart_service_account() -> Result<()> {
    let vault_path = workspace_root().join("e2e/testdata/sample-vault.json");
    let vault_text = std::fs::read_to_string(&vault_path)?;
    let vault: serde_json::Value = serde_json::from_str(&vault_text)?;
    let server = TestServer::start(VaultSpec::from_json(&vault_text)?).await?;
    let env = TestEnv::with_values("smoke", &[("flowControl.enabled", "true")]).await?;
    let config = server.bound_config("operator")?;
    env.create_credential_secret("ksm-config", &config).await?;
    let mut operator = env.operator_for(&server)?.spawn()?;
    operator.wait_ready(Duration::from_secs(60)).await?;

    let mut cmd = env.cluster.kubectl();
    cmd.args(["-n", &env.app_namespace, "apply", "-f"])
        .arg(workspace_root().join("e2e/examples/keepersecret.yaml"));
    run(&mut cmd, None)?;
    let gvk = GroupVersionKind::gvk("keeper-operator.dev", "v1alpha1", "KeeperSecret");
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.cluster.client(),
        &env.app_namespace,
        &ApiResource::from_gvk(&gvk),
    );
    harness::wait_for_condition(&api, "shop-db", "Ready", Duration::from_secs(60)).await?;

    let secrets: Api<Secret> = env.api();
    let secret =
        harness::wait_for_secret(&secrets, "shop-db", Duration::from_secs(10), |_| true).await?;
    let data = harness::secret_strings(&secret);
    let db = "YP6qLSSxX3qEJLYyQs6iZw";
    let expected = [
        ("username", vault_field(&vault, db, "login")),
        ("password", vault_field(&vault, db, "password")),
        ("url", vault_field(&vault, db, "url")),
        (
            "stripe-api-key",
            vault_field(&vault, "SsxoiM-FPCF65F54JaY3jQ", "password"),
        ),
    ];
    for (key, value) in &expected {
        assert_eq!(data.get(*key), Some(value), "key {key}");
    }
    let labels = secret.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("keeper-operator")
    );

    // The chart's FlowSchema classifies the operator's requests into its own priority level.
    let level = &env.chart.service_account;
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let metrics = env.cluster.client().request_text(req).await?;
    let dispatched: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_flowcontrol_dispatched_requests_total{"))
        .filter(|l| l.contains(&format!("flow_schema=\"{level}\"")))
        .filter(|l| l.contains(&format!("priority_level=\"{level}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        dispatched > 0.0,
        "no request went through the chart's FlowSchema {level}"
    );

    operator.ensure_running()?;
    let logs = operator.logs();
    assert!(
        !logs.contains("forbidden"),
        "RBAC denial in the operator log:\n{logs}"
    );
    for (key, value) in &expected {
        assert!(
            !logs.contains(value.as_str()),
            "the value of {key} leaked into the operator log"
        );
    }
    env.finish(&server, &[&config], &mut [&mut operator]).await
}

/// The leak scan cannot pass silently: values planted in a log file, an Event and a
/// KeeperSecret's status are each found, and the report names where, never the value.
#[tokio::test]
async fn leak_scan_catches_planted_values() -> Result<()> {
    let env = TestEnv::new("leak-plant").await?;
    let vault = keeper_e2e::ksm_server::sample_vault();
    let mut secrets = SecretValues::default();
    secrets.add_vault(&vault);
    env.assert_no_leaks(&secrets).await?;

    let password = vault_field(
        &serde_json::from_str(SAMPLE_VAULT_JSON)?,
        uids::POSTGRES,
        "password",
    );
    std::fs::create_dir_all(env.dir())?;
    std::fs::write(
        env.dir().join("planted.log"),
        format!(
            "{{\"level\":\"DEBUG\",\"body\":{}}}\n",
            serde_json::to_string(&password)?
        ),
    )?;
    let event: Event = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "planted"},
        "involvedObject": {"kind": "Secret", "name": "x", "namespace": env.app_namespace},
        "reason": "Planted",
        "message": "webhook whsec_test_0123456789abcdef",
        "type": "Normal",
    }))?;
    env.api::<Event>()
        .create(&PostParams::default(), &event)
        .await?;
    let ks: KeeperSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "keeper-operator.dev/v1alpha1",
        "kind": "KeeperSecret",
        "metadata": {"name": "planted"},
        "spec": {"auth": {"secretRef": {"name": "c", "key": "config"}},
                 "data": [{"key": "k", "notation": "keeper://x/field/password"}]},
    }))?;
    let api = env.api::<KeeperSecret>();
    api.create(&PostParams::default(), &ks).await?;
    let status = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "False", "reason": "Planted",
        "message": "token pool-7f3a9c2e", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    api.patch_status("planted", &PatchParams::default(), &Patch::Merge(&status))
        .await?;

    let err = env
        .assert_no_leaks(&secrets)
        .await
        .expect_err("planted values must be found");
    let report = format!("{err:#}");
    assert!(report.contains("3 secret value(s) leaked"), "{report}");
    for place in ["planted.log", "Event ", "KeeperSecret planted status"] {
        assert!(report.contains(place), "{place} not reported: {report}");
    }
    for value in [
        password.as_str(),
        "whsec_test_0123456789abcdef",
        "pool-7f3a9c2e",
    ] {
        assert!(!report.contains(value), "the report shows a value");
    }
    Ok(())
}

/// `/metrics` names every KeeperSecret, so it answers only callers RBAC allows, checked by the
/// operator on the real API server (TokenReview, then SubjectAccessReview for `get /metrics`):
/// 401 without or with a bad token, 403 for a ServiceAccount without the chart's
/// metrics-reader ClusterRole, 200 with it. The probes stay open; `--metrics-auth=false` (for
/// clusters that protect the port otherwise) opens /metrics again.
#[tokio::test]
async fn metrics_answer_only_callers_allowed_to_get_them() -> Result<()> {
    let env = TestEnv::new("metrics-auth").await?;
    let mut op = env.operator().spawn()?;
    op.wait_ready(Duration::from_secs(60)).await?;

    assert_eq!(op.get("/healthz", None).await?.0, 200);
    assert_eq!(op.get("/readyz", None).await?.0, 200);
    let (code, body) = op.get("/metrics", None).await?;
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("keeper_operator_"), "{body}");
    let forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06YWRtaW4ifQ.c2lnbmF0dXJl";
    assert_eq!(op.get("/metrics", Some(forged)).await?.0, 401);

    // A valid ServiceAccount token without the ClusterRole.
    let sa = k8s_openapi::api::core::v1::ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some("stranger".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::namespaced(env.cluster.client(), &env.app_namespace)
        .create(&PostParams::default(), &sa)
        .await?;
    let stranger = env
        .cluster
        .service_account_token(&env.app_namespace, "stranger", Duration::from_secs(600))
        .await?;
    let (code, body) = op.get("/metrics", Some(stranger.secret())).await?;
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("keeper_operator_"), "{body}");

    // Bound to <fullname>-metrics-reader, as the README tells Prometheus' ServiceAccount.
    let reader = env.metrics_reader_token().await?;
    for _ in 0..3 {
        let text = op.scrape_metrics(reader).await?;
        assert!(text.contains("keeper_operator_leader 1"), "{text}");
        assert!(text.contains("keeper_operator_reconcile_duration_seconds"));
    }
    op.ensure_running()?;
    let logs = op.logs();
    for token in [reader.secret(), stranger.secret(), forged] {
        assert!(!logs.contains(token), "a bearer token in the operator log");
    }
    op.kill();

    let mut open = env.operator().arg("--metrics-auth=false").spawn()?;
    open.wait_ready(Duration::from_secs(60)).await?;
    let (code, body) = open.get("/metrics", None).await?;
    assert_eq!(code, 200);
    assert!(body.contains("keeper_operator_leader 1"), "{body}");
    Ok(())
}

/// The chart wires the flag, the review permissions and the scrapers' ClusterRole to
/// `metrics.auth`, and a ServiceMonitor then sends Prometheus' token.
#[tokio::test]
async fn chart_protects_metrics_unless_told_otherwise() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let on = cluster.render_chart("ko", "ko", &[("serviceMonitor.enabled", "true")])?;
    assert!(on.contains("- --metrics-auth=true"));
    assert!(on.contains("name: ko-keeper-operator-metrics-reader"));
    assert!(on.contains("nonResourceURLs: [\"/metrics\"]"));
    assert!(on.contains("resources: [\"tokenreviews\"]"));
    assert!(on.contains("resources: [\"subjectaccessreviews\"]"));
    assert!(on.contains("bearerTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token"));
    let off = cluster.render_chart(
        "ko",
        "ko",
        &[
            ("serviceMonitor.enabled", "true"),
            ("metrics.auth", "false"),
        ],
    )?;
    assert!(off.contains("- --metrics-auth=false"));
    for absent in [
        "metrics-reader",
        "tokenreviews",
        "subjectaccessreviews",
        "bearerTokenFile",
    ] {
        assert!(
            !off.contains(absent),
            "{absent} rendered with metrics.auth=false"
        );
    }
    Ok(())
}

/// The chart's admission policies hold the operator's ServiceAccount to what it is for, past what
/// its RBAC grants: a workload patch may only set the restart annotation, only a Secret carrying
/// the created-for marker may be deleted, and no KeeperSecret may live in the operator namespace.
#[tokio::test]
async fn admission_policy_bounds_the_operator() -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use keeper_operator::api::RESTARTED_AT_ANNOTATION;
    /// A new policy reaches the API server's admission chain within seconds when the API server
    /// is idle, but took over a minute while the whole suite installed charts at once.
    const TIMEOUT: Duration = Duration::from_secs(300);

    let env = TestEnv::with_values("vap", &[("rbac.rolloutRestart", "true")]).await?;
    let cluster = &env.cluster;
    let app = &env.app_namespace;
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "api" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "api" } },
            "template": {
                "metadata": { "labels": { "app": "api" }, "annotations": { "team": "shop" } },
                "spec": { "containers": [ { "name": "api", "image": "registry.k8s.io/pause:3.10" } ] },
            },
        },
    }))?;
    Api::<Deployment>::namespaced(cluster.client(), app)
        .create(&PostParams::default(), &deployment)
        .await?;
    let secret = |name: &str, annotations: serde_json::Value| -> Result<Secret> {
        Ok(serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "annotations": annotations },
            "stringData": { "k": "v" },
        }))?)
    };
    let admin_secrets: Api<Secret> = Api::namespaced(cluster.client(), app);
    admin_secrets
        .create(
            &PostParams::default(),
            &secret("hand-made", serde_json::json!({}))?,
        )
        .await?;
    let marker = serde_json::json!({ "keeper-operator.dev/created-for": "0b9c3c1e-uid" });
    admin_secrets
        .create(&PostParams::default(), &secret("created", marker)?)
        .await?;

    let token = cluster
        .service_account_token(
            &env.chart.namespace,
            &env.chart.service_account,
            Duration::from_secs(600),
        )
        .await?;
    let operator = cluster.token_client(&token, app).await?;
    let deployments: Api<Deployment> = Api::namespaced(operator.clone(), app);
    let patch = |body: serde_json::Value| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch("api", &PatchParams::default(), &Patch::Merge(body))
                .await
        }
    };
    let forbidden = |r: kube::Result<()>| matches!(r, Err(kube::Error::Api(ref s)) if s.code == 403 && s.message.contains("keeper-operator may"));
    // The policy takes a moment to reach the API server's admission chain after install. Each
    // attempt asks for another image: one admitted before the policy loaded would make the
    // same patch a no-op, which the policy rightly lets through.
    let attempt = std::sync::atomic::AtomicU32::new(0);
    harness::wait_until(
        "the workload policy denies an image change",
        TIMEOUT,
        || {
            let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let image = serde_json::json!({ "spec": { "template": { "spec": {
                "containers": [ { "name": "api", "image": format!("registry.example/evil:{n}") } ] } } } });
            let patch = patch(image);
            async move { Ok(forbidden(patch.await.map(|_| ())).then_some(())) }
        },
    )
    .await?;
    let denied = [
        serde_json::json!({ "spec": { "replicas": 5 } }),
        serde_json::json!({ "spec": { "template": { "metadata": { "labels": { "x": "y" } } } } }),
        serde_json::json!({ "spec": { "template": { "metadata": { "annotations": { "team": "ops" } } } } }),
        serde_json::json!({ "metadata": { "labels": { "x": "y" } } }),
    ];
    for body in denied {
        let r = patch(body.clone()).await.map(|_| ());
        assert!(forbidden(r), "the operator patched {body}");
    }
    let restart = serde_json::json!({ "spec": { "template": { "metadata": { "annotations": {
        RESTARTED_AT_ANNOTATION: "2026-12-07T00:00:00Z" } } } } });
    patch(restart).await?;

    let secrets: Api<Secret> = Api::namespaced(operator, app);
    let r = secrets.delete("hand-made", &Default::default()).await;
    assert!(
        forbidden(r.map(|_| ())),
        "the operator deleted a Secret it did not create"
    );
    secrets.delete("created", &Default::default()).await?;
    assert!(admin_secrets.get_opt("hand-made").await?.is_some());

    // Nobody, admin included, may put a KeeperSecret into the operator's namespace.
    let ks: KeeperSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "keeper-operator.dev/v1alpha1", "kind": "KeeperSecret",
        "metadata": { "name": "sneaky" },
        "spec": { "auth": { "storeRef": { "name": "shared" } },
                  "data": [ { "key": "k", "notation": "keeper://abc/field/password" } ] },
    }))?;
    let kss = Api::<KeeperSecret>::namespaced(cluster.client(), &env.chart.namespace);
    harness::wait_until(
        "the namespace policy denies a KeeperSecret",
        TIMEOUT,
        || {
            let (kss, ks) = (kss.clone(), ks.clone());
            async move {
                match kss.create(&PostParams::default(), &ks).await {
                    Err(kube::Error::Api(s))
                        if s.code == 403 && s.message.contains("own namespace") =>
                    {
                        Ok(Some(()))
                    }
                    Err(e) => Err(e.into()),
                    Ok(_) => {
                        kss.delete("sneaky", &Default::default()).await?;
                        Ok(None)
                    }
                }
            }
        },
    )
    .await?;
    Ok(())
}

/// A target the operator read as absent is created only if it still is: a Secret someone else
/// made in between is left exactly as they made it, and never marked as the operator's.
#[tokio::test]
async fn a_secret_made_while_the_operator_creates_its_target_is_left_as_made() -> Result<()> {
    use keeper_operator::api::{CREATED_FOR_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
    use keeper_operator::k8s::{Created, create_secret};

    let cluster = Cluster::connect().await?;
    let ns = cluster.fresh_namespace("create-race").await?;
    let api: Api<Secret> = Api::namespaced(cluster.client(), &ns);
    let ours = |name: &str, key: &str| -> Result<Secret> {
        Ok(serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "labels": {(MANAGED_BY_LABEL): MANAGED_BY_VALUE},
                "annotations": {(CREATED_FOR_ANNOTATION): "0b6ee3a8-uid-of-a-keeper-secret"},
            },
            "data": {(key): "b3Vycw=="},
        }))?)
    };
    // Someone else's Secret, made after the operator read the name as free.
    harness::create_secret(&api, "taken", &[("theirs", b"theirs")]).await?;
    let before = api.get("taken").await?;

    let outcome = create_secret(&api, &ours("taken", "ours")?).await?;
    anyhow::ensure!(matches!(outcome, Created::Raced), "{outcome:?}");
    let after = api.get("taken").await?;
    assert_eq!(after.data, before.data, "their data, and only theirs");
    assert_eq!(after.metadata.labels, before.metadata.labels);
    assert_eq!(after.metadata.annotations, before.metadata.annotations);

    // A key they set with another value stops the write outright.
    let err = create_secret(&api, &ours("taken", "theirs")?)
        .await
        .expect_err("a conflicting key must stop the create");
    anyhow::ensure!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err}"
    );
    assert_eq!(api.get("taken").await?.data, before.data);

    // A name still free is created, and ours.
    let outcome = create_secret(&api, &ours("free", "ours")?).await?;
    anyhow::ensure!(matches!(outcome, Created::Created(_)), "{outcome:?}");
    let created = api.get("free").await?;
    assert!(created.annotations().contains_key(CREATED_FOR_ANNOTATION));
    Ok(())
}
