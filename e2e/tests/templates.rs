//! Templates end to end: `templateFrom` a ConfigMap and a Secret with the certificate and
//! credential helpers, a ConfigMap edit picked up on a force-sync, an unchanged render that
//! writes nothing (htpasswd's salt is derived, not random), and a missing source reported as
//! such and retried; the API server holding KeeperSecrets to the CRD's size bounds.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use keeper_e2e::harness::{Cluster, create_secret, secret_bytes, wait_until};
use keeper_e2e::ksm_server::{RecordSpec, uids};
use keeper_e2e::world::{World, keeper_secret_manifest};
use keeper_operator::api::{
    FORCE_SYNC_ANNOTATION, KeeperSecret, MAX_DATA_FROM_ITEMS, MAX_DATA_ITEMS,
    MAX_INLINE_TEMPLATE_CHARS, MAX_INLINE_TEMPLATES, MAX_NOTATION_CHARS, MAX_ROLLOUT_TARGETS,
};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::{Digest, Sha256};

const TIMEOUT: Duration = Duration::from_secs(60);
const RECORD: &str = "IngressTlsRecord000001";
const PASSWORD: &str = "Ingress-Pw-7dK2mQ9x";

fn text(d: &BTreeMap<String, Vec<u8>>, k: &str) -> String {
    String::from_utf8_lossy(d.get(k).map(Vec::as_slice).unwrap_or_default()).into_owned()
}

/// A self-signed certificate and its key, as PEM.
fn certificate(name: &str) -> Result<(String, String)> {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()])?;
    Ok((c.cert.pem(), c.signing_key.serialize_pem()))
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    cm
}

/// A KeeperSecret mapping the ingress record's login, password and PEM bundle, with this
/// `template`.
fn ingress(name: &str, template: serde_json::Value) -> Result<KeeperSecret> {
    let field = |f: &str| format!("keeper://{RECORD}/{f}");
    let spec = json!({
        "auth": { "secretRef": { "name": "ksm-config", "key": "config" } },
        "refreshInterval": "1h",
        "target": { "type": "kubernetes.io/tls", "template": template },
        "data": [
            { "key": "user", "notation": field("field/login") },
            { "key": "password", "notation": field("field/password") },
            { "key": "bundle", "notation": field("custom_field/bundle") },
        ],
    });
    Ok(serde_json::from_value(keeper_secret_manifest(name, spec))?)
}

async fn force_sync(api: &Api<KeeperSecret>, name: &str, value: &str) -> Result<()> {
    let patch = json!({ "metadata": { "annotations": { FORCE_SYNC_ANNOTATION: value } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_until(&format!("{name} answers {value}"), TIMEOUT, || {
        let api = api.clone();
        async move {
            let ks = api.get(name).await?;
            let handled = ks.status.and_then(|s| s.last_handled_reconcile_at);
            Ok((handled.as_deref() == Some(value)).then_some(()))
        }
    })
    .await
}

fn verifies(line: &str, user: &str) -> bool {
    line.strip_prefix(&format!("{user}:"))
        .is_some_and(|hash| bcrypt::verify(PASSWORD, hash).unwrap_or(false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_from_renders_helpers_follows_edits_and_reports_missing_sources() -> Result<()> {
    let w = World::start("tmpl-from").await?.with_timeout(TIMEOUT);
    let mut operator = w
        .plain_operator_builder()
        .arg("--log-level=debug")
        .spawn()?;
    operator.wait_ready(TIMEOUT).await?;
    let (leaf, key) = certificate("www.example.internal")?;
    let (ca, _) = certificate("example CA")?;
    let record = RecordSpec::login(RECORD, "Ingress TLS")
        .in_folder(uids::PRODUCTION)
        .field("login", json!(["admin"]))
        .password(PASSWORD)
        .custom("multiline", "bundle", json!([format!("{leaf}{ca}{key}")]));
    w.server.set_record(record)?;

    let config_maps: Api<ConfigMap> = w.env.api();
    let templates = [
        ("auth", "{{ htpasswd(user, password) }}"),
        ("tls.crt", "{{ bundle | pem_certificates }}"),
        ("tls.key", "{{ bundle | pem_private_key }}"),
        (
            "leaf.sha256",
            "{{ bundle | pem_blocks('CERTIFICATE') | first | sha256 }}",
        ),
        ("ca.crt", "ignored: inline data wins"),
    ];
    config_maps
        .create(
            &PostParams::default(),
            &config_map("ingress-templates", &templates),
        )
        .await?;
    create_secret(
        &w.secrets(),
        "dsn-template",
        &[("dsn", b"postgres://{{ user }}:{{ password }}@db/app")],
    )
    .await?;
    let api = w.keeper_secrets();
    let template = json!({
        "templateFrom": [
            { "configMap": { "name": "ingress-templates" } },
            { "secret": { "name": "dsn-template", "items": [ { "key": "dsn" } ] } },
        ],
        "data": { "ca.crt": "{{ (bundle | pem_blocks('CERTIFICATE'))[1:] | pem_join }}" },
    });
    api.create(&PostParams::default(), &ingress("ingress", template)?)
        .await?;
    w.wait_reason("ingress", "True", "Synced").await?;

    let secret = w.secrets().get("ingress").await?;
    let d = secret_bytes(&secret);
    assert_eq!(
        d.keys().collect::<Vec<_>>(),
        ["auth", "ca.crt", "dsn", "leaf.sha256", "tls.crt", "tls.key"]
    );
    ensure!(
        verifies(&text(&d, "auth"), "admin"),
        "auth: {}",
        text(&d, "auth")
    );
    assert_eq!(text(&d, "tls.crt"), format!("{leaf}{ca}"));
    assert_eq!(text(&d, "ca.crt"), ca);
    assert_eq!(text(&d, "tls.key"), key);
    let digest: String = Sha256::digest(leaf.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(text(&d, "leaf.sha256"), digest);
    assert_eq!(
        text(&d, "dsn"),
        format!("postgres://admin:{PASSWORD}@db/app")
    );

    // Rendered again with nothing changed: the same bytes (htpasswd's salt is derived), so no
    // write, and no restart of the workloads that read it.
    force_sync(&api, "ingress", "1").await?;
    let again = w.secrets().get("ingress").await?;
    assert_eq!(
        again.metadata.resource_version, secret.metadata.resource_version,
        "an unchanged render rewrote the Secret"
    );

    // The ConfigMap changes: the next sync (here, asked for) renders the new template.
    let patch = json!({ "data": { "auth": "{{ htpasswd('ops', password) }}" } });
    config_maps
        .patch(
            "ingress-templates",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    force_sync(&api, "ingress", "2").await?;
    let d = secret_bytes(&w.secrets().get("ingress").await?);
    ensure!(
        verifies(&text(&d, "auth"), "ops"),
        "auth: {}",
        text(&d, "auth")
    );

    // A missing source: its own reason, retried (not Stalled); creating it heals.
    let missing = json!({ "templateFrom": [ { "configMap": { "name": "later" } } ] });
    api.create(&PostParams::default(), &ingress("missing", missing)?)
        .await?;
    let ks = w
        .wait_reason("missing", "False", "TemplateSourceNotFound")
        .await?;
    let message = &ks.ready_condition().context("Ready")?.message;
    ensure!(
        message.contains(r#"ConfigMap "later" not found"#),
        "{message}"
    );
    w.wait_condition("missing", "Stalled", "False", "Retrying")
        .await?;
    config_maps
        .create(
            &PostParams::default(),
            &config_map("later", &templates[1..3]),
        )
        .await?;
    force_sync(&api, "missing", "1").await?;
    w.wait_reason("missing", "True", "Synced").await?;
    let d = secret_bytes(&w.secrets().get("missing").await?);
    assert_eq!(text(&d, "tls.key"), key);

    w.finish(&mut [&mut operator]).await
}

/// The API server holds KeeperSecrets to the CRD's size bounds: a spec at the bounds is
/// admitted, one item or character over any of them is refused (422, naming the field), and so
/// is the 1 MiB inline template that once grew the operator's watch cache by 1 MiB per object.
#[tokio::test]
async fn the_api_server_refuses_oversize_keeper_secrets() -> Result<()> {
    let cluster = Cluster::connect().await?;
    // The chart (for its CRDs) in one namespace; the KeeperSecrets in another, since the chart's
    // admission policy refuses them in the operator's own namespace.
    let release = cluster.fresh_namespace("limits-operator").await?;
    cluster.install_chart(&release, &release, &[]).await?;
    let ns = cluster.fresh_namespace("limits").await?;
    let api: Api<KeeperSecret> = Api::namespaced(cluster.client(), &ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let item = |i: usize| json!({"key": format!("k{i}"), "notation": "keeper://x/field/password"});
    let templates = |n: usize, chars: usize| -> serde_json::Map<String, serde_json::Value> {
        (0..n)
            .map(|i| (format!("t{i}"), "x".repeat(chars).into()))
            .collect()
    };
    let spec = |data: Vec<serde_json::Value>, target: serde_json::Value| {
        json!({
            "auth": {"secretRef": {"name": "ksm-config", "key": "config"}},
            "data": data,
            "target": target,
        })
    };
    let at_bounds = spec(
        (0..MAX_DATA_ITEMS).map(item).collect(),
        json!({"template": {"data": templates(MAX_INLINE_TEMPLATES, MAX_INLINE_TEMPLATE_CHARS)}}),
    );
    let ks: KeeperSecret = serde_json::from_value(keeper_secret_manifest("bounds", at_bounds))?;
    api.create(&dry_run, &ks)
        .await
        .context("a spec at the bounds must be admitted")?;

    let long_notation = json!({"key": "k", "notation": "x".repeat(MAX_NOTATION_CHARS + 1)});
    let data_from = json!({"record": {"uid": uids::POSTGRES}});
    let rollout = json!({"kind": "Deployment", "name": "w"});
    let over: [(&str, &str, serde_json::Value); 7] = [
        (
            "a 1 MiB template",
            "spec.target.template.data",
            spec(
                vec![item(0)],
                json!({"template": {"data": templates(1, 1 << 20)}}),
            ),
        ),
        (
            "a template one character over",
            "spec.target.template.data",
            spec(
                vec![item(0)],
                json!({"template": {"data": templates(1, MAX_INLINE_TEMPLATE_CHARS + 1)}}),
            ),
        ),
        (
            "one template too many",
            "spec.target.template.data",
            spec(
                vec![item(0)],
                json!({"template": {"data": templates(MAX_INLINE_TEMPLATES + 1, 1)}}),
            ),
        ),
        (
            "one data item too many",
            "spec.data",
            spec((0..=MAX_DATA_ITEMS).map(item).collect(), json!({})),
        ),
        (
            "a notation one character over",
            "spec.data[0].notation",
            spec(vec![long_notation], json!({})),
        ),
        (
            "one dataFrom item too many",
            "spec.dataFrom",
            json!({
                "auth": {"secretRef": {"name": "ksm-config", "key": "config"}},
                "dataFrom": vec![data_from; MAX_DATA_FROM_ITEMS + 1],
            }),
        ),
        (
            "one rollout target too many",
            "spec.rolloutRestart",
            json!({
                "auth": {"secretRef": {"name": "ksm-config", "key": "config"}},
                "data": [item(0)],
                "rolloutRestart": vec![rollout; MAX_ROLLOUT_TARGETS + 1],
            }),
        ),
    ];
    for (what, field, spec) in over {
        let ks: KeeperSecret = serde_json::from_value(keeper_secret_manifest("over", spec))?;
        let err = api
            .create(&dry_run, &ks)
            .await
            .expect_err(&format!("{what} must be refused"));
        let kube::Error::Api(status) = &err else {
            anyhow::bail!("{what}: not an API error: {err}");
        };
        ensure!(status.code == 422, "{what}: HTTP {}", status.code);
        ensure!(
            status.message.contains(field),
            "{what}: the refusal does not name {field}: {}",
            status.message.chars().take(300).collect::<String>()
        );
    }
    Ok(())
}
