//! The controller end to end: the real kube-apiserver (RBAC on, the chart's ServiceAccount), the
//! operator binary, and the KSM test server loaded with the sample vault. The KeeperSecrets are
//! the README examples in `e2e/examples/`, applied verbatim.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use keeper_e2e::harness::{Operator, create_secret, secret_bytes, wait_until, workspace_root};
use keeper_e2e::ksm_server::uids::WEB_CERT;
use keeper_e2e::ksm_server::{DownMode, Listing, RecordSpec};
use keeper_e2e::world::{EXAMPLES, POSTGRES, World};
use keeper_operator::api::{
    ClusterKeeperStore, ClusterKeeperStoreStatus, KeeperSecret, MANAGED_BY_LABEL,
};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Tests run on a multi-thread runtime because the KSM test server shares it with blocking
/// kubectl calls.
///
/// One test's world (control plane namespace + chart, a KSM test server) with waits of
/// [`TIMEOUT`], and its running operator.
async fn start(name: &str) -> Result<(World, Operator)> {
    let w = World::start(name).await?.with_timeout(TIMEOUT);
    let operator = debug_operator(&w).await?;
    Ok((w, operator))
}

/// A ready operator at debug level, so the leak scan covers debug logs too.
async fn debug_operator(w: &World) -> Result<Operator> {
    let mut operator = w
        .plain_operator_builder()
        .arg("--log-level=debug")
        .spawn()?;
    operator.wait_ready(TIMEOUT).await?;
    Ok(operator)
}

fn text(d: &BTreeMap<String, Vec<u8>>, k: &str) -> String {
    String::from_utf8_lossy(d.get(k).map(Vec::as_slice).unwrap_or_default()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_produce_the_documented_secrets() -> Result<()> {
    let (w, mut operator) = start("ctl-examples").await?;
    // No drift in GitOps diffs: the API server stores every example's spec exactly as written
    // (no defaulted fields, which Argo CD and Flux would show as a permanent difference).
    for f in EXAMPLES.iter().chain(&["cluster-store.yaml"]) {
        let path = keeper_e2e::harness::workspace_root()
            .join("e2e/examples")
            .join(f);
        let manifest = std::fs::read_to_string(&path)?;
        let written: serde_json::Value = serde_yaml_ng::from_str(&manifest)?;
        let out = w.env.cluster.apply(
            &manifest,
            &["--dry-run=server", "-o", "json", "-n", &w.env.app_namespace],
        )?;
        let stored: serde_json::Value = serde_json::from_str(&out.stdout)?;
        assert_eq!(
            stored["spec"], written["spec"],
            "{f}: the stored spec differs"
        );
    }
    for f in EXAMPLES {
        w.apply_example(f)?;
    }
    for ks in [
        "shop-db",
        "postgres",
        "analytics-url",
        "web-certificate",
        "postgres-all",
        "production",
    ] {
        w.kubectl_wait_ready(ks)?;
        // What Flux's kstatus reads: done reconciling, nothing stalled.
        w.wait_condition(ks, "Reconciling", "False", "Synced")
            .await?;
        w.wait_condition(ks, "Stalled", "False", "Synced").await?;
    }

    let shop = secret_bytes(&w.secrets().get("shop-db").await?);
    assert_eq!(
        shop.keys().collect::<Vec<_>>(),
        ["password", "stripe-api-key", "url", "username"]
    );
    assert_eq!(
        text(&shop, "stripe-api-key"),
        w.vault_value("SsxoiM-FPCF65F54JaY3jQ", "password")?
    );

    let pg = w.secrets().get("postgres-credentials").await?;
    let d = secret_bytes(&pg);
    assert_eq!(text(&d, "username"), w.vault_value(POSTGRES, "login")?);
    assert_eq!(text(&d, "password"), w.vault_value(POSTGRES, "password")?);
    assert_eq!(
        d.keys().collect::<Vec<_>>(),
        ["analytics-host", "environment", "password", "username"]
    );
    assert!(
        !text(&d, "analytics-host").contains('{'),
        "property picks one part of the host"
    );
    let labels = pg.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels[MANAGED_BY_LABEL], "keeper-operator");
    assert_eq!(labels["app.kubernetes.io/part-of"], "shop");
    assert_eq!(pg.type_.as_deref(), Some("Opaque"));
    let owner = &pg.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("KeeperSecret", "postgres", Some(true))
    );
    assert!(pg.string_data.is_none());

    let url = text(
        &secret_bytes(&w.secrets().get("analytics-url").await?),
        "DATABASE_URL",
    );
    assert!(
        url.starts_with("postgresql://") && url.ends_with("/analytics"),
        "templated URL has the expected shape"
    );
    assert_eq!(
        secret_bytes(&w.secrets().get("analytics-url").await?).len(),
        1,
        "Replace keeps only templated keys"
    );

    let files = secret_bytes(&w.secrets().get("web-certificate").await?);
    assert!(text(&files, "ca.crt").starts_with("-----BEGIN CERTIFICATE-----"));
    let bundle = &files["bundle.bin"];
    assert_eq!(
        bundle[..4],
        [0, 1, 2, 3],
        "binary file content is kept byte for byte"
    );

    let all = w.secrets().get("postgres-all").await?;
    let keys = secret_bytes(&all);
    assert!(
        keys.contains_key("Replica") && keys.contains_key("Replica_2"),
        "repeated labels are suffixed: {:?}",
        keys.keys()
    );
    assert!(keys.contains_key("Connection_Pool_Token"));
    assert!(
        all.metadata.owner_references.is_none(),
        "Orphan has no owner reference"
    );

    let folder = secret_bytes(&w.secrets().get("production").await?);
    assert!(
        folder.contains_key("Postgres_password") && folder.contains_key("Web_Certificate_cert.pem"),
        "{:?}",
        folder.keys()
    );

    let ks = w.keeper_secrets().get("postgres").await?;
    let status = ks.status.clone().context("status")?;
    assert_eq!(status.observed_generation, ks.metadata.generation);
    assert_eq!(status.secret_name.as_deref(), Some("postgres-credentials"));
    assert!(status.records.iter().any(|r| r.uid == POSTGRES));
    let annotations = pg.metadata.annotations.unwrap_or_default();
    assert_eq!(
        status.data_hash.as_deref(),
        annotations
            .get("keeper-operator.dev/data-hash")
            .map(String::as_str)
    );
    let status_text = serde_json::to_string(&status)?;
    assert!(
        !status_text.contains(&w.vault_value(POSTGRES, "password")?),
        "no secret value in status"
    );
    w.finish(&mut [&mut operator]).await
}

/// Records created in a shared folder by Commander or the Vault UI come flat, wrapped by the
/// folder key: they sync by title, UID, notation and through their shared folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_records_in_shared_folders_sync() -> Result<()> {
    let (w, mut operator) = start("ctl-flat").await?;
    // Postgres sits in the sub-folder Databases, Web Certificate directly in Production.
    for uid in [POSTGRES, WEB_CERT] {
        w.server
            .set_record(w.server.record(uid)?.listed(Listing::FlatInFolder))?;
    }
    w.apply_example("database.yaml")?;
    w.apply_example("folder.yaml")?;
    w.kubectl_wait_ready("postgres")?;
    w.kubectl_wait_ready("production")?;

    let d = secret_bytes(&w.secrets().get("postgres-credentials").await?);
    assert_eq!(text(&d, "username"), w.vault_value(POSTGRES, "login")?);
    assert_eq!(text(&d, "password"), w.vault_value(POSTGRES, "password")?);
    assert_eq!(text(&d, "environment"), "production");

    let folder = secret_bytes(&w.secrets().get("production").await?);
    assert_eq!(
        text(&folder, "Postgres_password"),
        w.vault_value(POSTGRES, "password")?
    );
    assert!(
        text(&folder, "Web_Certificate_cert.pem").starts_with("-----BEGIN CERTIFICATE-----"),
        "{:?}",
        folder.keys()
    );
    assert!(
        folder.keys().any(|k| k.starts_with("Analytics_DB_")),
        "nested records still there: {:?}",
        folder.keys()
    );
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeper_edits_propagate_and_targets_heal() -> Result<()> {
    let (w, mut operator) = start("ctl-refresh").await?;
    w.apply_example("database.yaml")?;
    w.kubectl_wait_ready("postgres")?;
    let before = w
        .keeper_secrets()
        .get("postgres")
        .await?
        .status
        .and_then(|s| s.last_sync_time);

    // Edited in Keeper: picked up at the next refresh (refreshInterval 10s). lastSyncTime counts
    // whole seconds, so the edit lands in a later second than the first sync.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.server
        .set_record(w.server.record(POSTGRES)?.password("rotated-in-keeper"))?;
    w.wait_secret("postgres-credentials", "rotated password", |d| {
        text(d, "password") == "rotated-in-keeper"
    })
    .await?;
    let after = w
        .keeper_secrets()
        .get("postgres")
        .await?
        .status
        .and_then(|s| s.last_sync_time);
    assert_ne!(before, after, "lastSyncTime moves with each sync");

    // Hand-edited: restored promptly (well before the next refresh would be due).
    let patch = serde_json::json!({"data": {"password": "aGFja2Vk"}});
    w.secrets()
        .patch(
            "postgres-credentials",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    w.wait_secret("postgres-credentials", "restored after edit", |d| {
        text(d, "password") == "rotated-in-keeper"
    })
    .await?;

    // Deleted: recreated.
    w.secrets()
        .delete("postgres-credentials", &DeleteParams::default())
        .await?;
    w.wait_secret("postgres-credentials", "recreated after delete", |d| {
        text(d, "password") == "rotated-in-keeper"
    })
    .await?;
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeper_outage_keeps_the_last_good_secret_and_recovers() -> Result<()> {
    let (w, mut operator) = start("ctl-outage").await?;
    w.apply_example("database.yaml")?;
    w.kubectl_wait_ready("postgres")?;
    let good = w.secrets().get("postgres-credentials").await?;

    let synced_at = w
        .keeper_secrets()
        .get("postgres")
        .await?
        .status
        .and_then(|s| s.last_sync_time);

    // Keeper down: the Secret keeps the last good copy, and status says so honestly.
    w.server.faults().set_down(DownMode::Refuse);
    let ks = w
        .wait_condition("postgres", "Stale", "True", "KeeperUnavailable")
        .await?;
    let ready = ks.ready_condition().context("Ready")?;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "LastGoodCopy")
    );
    let during = w.secrets().get("postgres-credentials").await?;
    assert_eq!(
        during.metadata.resource_version, good.metadata.resource_version,
        "Secret untouched while Keeper is down"
    );
    assert_eq!(secret_bytes(&during), secret_bytes(&good));
    assert_eq!(
        ks.status.and_then(|s| s.last_sync_time),
        synced_at,
        "lastSyncTime still says when Keeper last answered"
    );

    // Keeper back: sync resumes by itself.
    w.server.faults().set_down(DownMode::Up);
    w.wait_reason("postgres", "True", "Synced").await?;
    w.wait_condition("postgres", "Stale", "False", "Fresh")
        .await?;
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_secrets_are_collected_and_orphans_kept() -> Result<()> {
    let (w, mut operator) = start("ctl-gc").await?;
    w.apply_example("database.yaml")?;
    w.apply_example("whole-record.yaml")?;
    w.kubectl_wait_ready("postgres")?;
    w.kubectl_wait_ready("postgres-all")?;

    w.keeper_secrets()
        .delete("postgres", &DeleteParams::background())
        .await?;
    w.keeper_secrets()
        .delete("postgres-all", &DeleteParams::background())
        .await?;
    let secrets = w.secrets();
    wait_until("Owner Secret garbage-collected", TIMEOUT, || {
        let secrets = secrets.clone();
        async move {
            Ok(secrets
                .get_opt("postgres-credentials")
                .await?
                .is_none()
                .then_some(()))
        }
    })
    .await?;
    assert!(
        w.secrets().get_opt("postgres-all").await?.is_some(),
        "Orphan Secret stays"
    );
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specific_failures_and_cel_rejections() -> Result<()> {
    let (w, mut operator) = start("ctl-errors").await?;
    let ns = w.env.app_namespace.clone();

    // CEL: exactly one auth form; the apiserver rejects it with our message.
    let both = r#"{"apiVersion":"keeper-operator.dev/v1alpha1","kind":"KeeperSecret","metadata":{"name":"bad"},
        "spec":{"auth":{"secretRef":{"name":"a","key":"b"},"storeRef":{"name":"s"}},
                "data":[{"key":"k","notation":"x/field/y"}]}}"#;
    let err = w
        .env
        .cluster
        .apply(both, &["-n", &ns])
        .err()
        .context("CEL must reject two auth forms")?;
    assert!(
        format!("{err:#}").contains("exactly one of secretRef or storeRef"),
        "{err:#}"
    );
    let bad_key = both
        .replace(r#""storeRef":{"name":"s"}"#, "")
        .replace(",}", "}")
        .replace(r#""key":"k""#, r#""key":"no spaces""#);
    assert!(
        w.env.cluster.apply(&bad_key, &["-n", &ns]).is_err(),
        "invalid Secret key rejected"
    );

    // A record that does not exist, and a title matching several records.
    let missing = r#"{"apiVersion":"keeper-operator.dev/v1alpha1","kind":"KeeperSecret","metadata":{"name":"missing"},
        "spec":{"auth":{"secretRef":{"name":"ksm-config","key":"config"}},
                "data":[{"key":"k","record":{"title":"No Such Record"},"field":"password"}]}}"#;
    w.env.cluster.apply(missing, &["-n", &ns])?;
    let ks = w.wait_reason("missing", "False", "RecordNotFound").await?;
    // Never synced, and creating the record would fix it: still reconciling, not stalled.
    w.wait_condition("missing", "Reconciling", "True", "RecordNotFound")
        .await?;
    w.wait_condition("missing", "Stalled", "False", "Retrying")
        .await?;
    assert!(
        ks.ready_condition()
            .context("Ready")?
            .message
            .contains("No Such Record")
    );

    // Credentials that are not a KSM config.
    create_secret(&w.secrets(), "not-a-config", &[("config", b"hello")]).await?;
    let bad_cred = missing
        .replace("ksm-config", "not-a-config")
        .replace(r#""name":"missing""#, r#""name":"badcred""#);
    w.env.cluster.apply(&bad_cred, &["-n", &ns])?;
    w.wait_reason("badcred", "False", "AuthFailed").await?;

    // A Secret the operator did not create is never taken over.
    create_secret(&w.secrets(), "postgres-credentials", &[("mine", b"x")]).await?;
    w.apply_example("database.yaml")?;
    w.wait_reason("postgres", "False", "SecretOwnedElsewhere")
        .await?;
    // No retry fixes that: stalled, which Flux reports as failed rather than waiting forever.
    w.wait_condition("postgres", "Stalled", "True", "SecretOwnedElsewhere")
        .await?;
    assert_eq!(
        secret_bytes(&w.secrets().get("postgres-credentials").await?)
            .keys()
            .collect::<Vec<_>>(),
        ["mine"]
    );
    // The status says what adopting it would do, by key name only.
    let refused = w.keeper_secrets().get("postgres").await?;
    let message = &refused.ready_condition().context("Ready")?.message;
    ensure!(
        message.contains("set target.adopt: true")
            && message.contains("; drop: mine)")
            && !message.contains("change"),
        "names the keys added and dropped: {message}"
    );
    // The flag alone is not enough: the Secret must invite the KeeperSecret.
    let adopt = serde_json::json!({"spec": {"target": {"adopt": true}}});
    w.keeper_secrets()
        .patch("postgres", &PatchParams::default(), &Patch::Merge(&adopt))
        .await?;
    w.wait_reason("postgres", "False", "TargetNotOptedIn")
        .await?;
    ensure!(
        secret_bytes(&w.secrets().get("postgres-credentials").await?).contains_key("mine"),
        "adopted without the Secret's opt-in"
    );
    // Adopted once invited: exactly the synced keys, and managed from then on.
    let invite = serde_json::json!({"metadata": {"annotations": {
        keeper_operator::api::ALLOW_MERGE_ANNOTATION: "postgres"}}});
    w.secrets()
        .patch(
            "postgres-credentials",
            &PatchParams::default(),
            &Patch::Merge(&invite),
        )
        .await?;
    let request = serde_json::json!({"metadata": {"annotations": {
        keeper_operator::api::FORCE_SYNC_ANNOTATION: "adopt"}}});
    w.keeper_secrets()
        .patch("postgres", &PatchParams::default(), &Patch::Merge(&request))
        .await?;
    w.wait_reason("postgres", "True", "Synced").await?;
    let adopted = w.secrets().get("postgres-credentials").await?;
    ensure!(
        !secret_bytes(&adopted).contains_key("mine"),
        "foreign key dropped"
    );
    ensure!(secret_bytes(&adopted).contains_key("password"));
    let labels = adopted.metadata.labels.unwrap_or_default();
    ensure!(labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some("keeper-operator"));
    w.finish(&mut [&mut operator]).await
}

/// A KeeperSecret mapping the Stripe record's numeric PIN, password and webhook secret under
/// `pin`, `password` and `webhook`, rendering `template` into key `DATABASE_URL` of a Secret
/// of type `type_`.
fn stripe_template(name: &str, template: &str, type_: &str) -> String {
    let stripe = keeper_e2e::ksm_server::uids::STRIPE;
    let field = |key: &str, field: &str| serde_json::json!({ "key": key, "record": { "uid": stripe }, "field": field });
    let key = if type_ == "Opaque" {
        "DATABASE_URL"
    } else {
        ".dockerconfigjson"
    };
    serde_json::json!({
        "apiVersion": "keeper-operator.dev/v1alpha1", "kind": "KeeperSecret",
        "metadata": { "name": name },
        "spec": {
            "auth": { "secretRef": { "name": "ksm-config", "key": "config" } },
            "data": [ field("pin", "Support PIN"), field("password", "password"),
                      field("webhook", "Webhook Secret") ],
            "target": { "type": type_, "template": { "data": { key: template } } },
        }
    })
    .to_string()
}

/// Templates that fail over a numeric value (the PIN) and over strings, output over the Secret
/// limit, a notation asking a value for a property, a Secret the API server refuses because of
/// its value, an ambiguous title and a missing Merge target: each ends Ready=False with its
/// reason, and the leak scan at the end finds no value of the vault in status, Events or the
/// operator's debug log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_over_secret_values_show_no_value() -> Result<()> {
    let (w, mut operator) = start("ctl-value-errors").await?;
    let ns = w.env.app_namespace.clone();
    // A second "Stripe API" (with its own PIN) makes the title ambiguous (added before
    // the first fetch, so every sync sees it).
    let twin = RecordSpec::login("TwinStripeRecord000001", "Stripe API")
        .in_folder(keeper_e2e::ksm_server::uids::PRODUCTION)
        .password("sk_twin_9dQm2LxV7pRz4Tk")
        .custom("pinCode", "Support PIN", serde_json::json!(["60418253"]));
    w.server.set_record(twin)?;
    let opaque = [
        ("pin-div", "{{ (pin | int) // 0 }}", "InvalidSpec"),
        ("pin-mod", "{{ (pin | int) % 0 }}", "InvalidSpec"),
        ("pin-str", "{{ pin // 0 }}", "InvalidSpec"),
        ("pin-range", "{{ range(pin | int) }}", "InvalidSpec"),
        ("pin-key", "{{ data[pin] }}", "InvalidSpec"),
        ("pw-int", "{{ password | int }}", "InvalidSpec"),
        ("pw-add", "{{ password + 1 }}", "InvalidSpec"),
        ("pw-key", "{{ data[password] }}", "InvalidSpec"),
        ("pw-attr", "{{ password.foo }}", "InvalidSpec"),
        ("pw-filter", "{{ password ~ 1 | foo }}", "InvalidSpec"),
        ("pw-repeat", "{{ password * 99999999999 }}", "InvalidSpec"),
        ("pw-format", "{{ '%d' | format(webhook) }}", "InvalidSpec"),
        ("pw-b64", "{{ webhook | b64decode }}", "InvalidSpec"),
        (
            "pin-large",
            "{% for i in range(200) %}{{ pin * 1000 }}{% endfor %}",
            "TooLarge",
        ),
    ];
    for (name, template, _) in opaque {
        w.env
            .cluster
            .apply(&stripe_template(name, template, "Opaque"), &["-n", &ns])?;
    }
    // The API server validates a dockerconfigjson Secret's value as JSON and refuses it.
    let docker = stripe_template(
        "pw-docker",
        "{{ password }}",
        "kubernetes.io/dockerconfigjson",
    );
    w.env.cluster.apply(&docker, &["-n", &ns])?;
    let property = format!(
        r#"{{"apiVersion":"keeper-operator.dev/v1alpha1","kind":"KeeperSecret","metadata":{{"name":"pin-property"}},
        "spec":{{"auth":{{"secretRef":{{"name":"ksm-config","key":"config"}}}},
                "data":[{{"key":"k","notation":"keeper://{}/custom_field/Support PIN[0][digits]"}}]}}}}"#,
        keeper_e2e::ksm_server::uids::STRIPE
    );
    w.env.cluster.apply(&property, &["-n", &ns])?;
    let stripe_uid = format!(r#"{{"uid":"{}"}}"#, keeper_e2e::ksm_server::uids::STRIPE);
    let by_title = stripe_template("pin-title", "{{ (pin | int) // 0 }}", "Opaque")
        .replace(&stripe_uid, r#"{"title":"Stripe API"}"#);
    w.env.cluster.apply(&by_title, &["-n", &ns])?;
    // Merge needs a Secret someone else created.
    let merge = stripe_template("pin-merge", "{{ pin }}", "Opaque").replace(
        r#""type":"Opaque""#,
        r#""type":"Opaque","creationPolicy":"Merge""#,
    );
    w.env.cluster.apply(&merge, &["-n", &ns])?;

    let expected = opaque
        .iter()
        .map(|(name, _, reason)| (*name, *reason))
        .chain([
            ("pw-docker", "KubernetesError"),
            ("pin-property", "FieldNotFound"),
            ("pin-title", "AmbiguousTitle"),
            ("pin-merge", "TargetNotFound"),
        ]);
    for (name, reason) in expected {
        let ks = w.wait_reason(name, "False", reason).await?;
        let message = &ks.ready_condition().context("Ready")?.message;
        // Every template error names its key (and its line, where the template engine knows
        // one: a budget runs out for the whole render).
        if reason == "InvalidSpec" {
            ensure!(
                message.contains(r#"template for key "DATABASE_URL""#),
                "{name}: {message}"
            );
        }
    }
    w.finish(&mut [&mut operator]).await
}

/// Waits until ClusterKeeperStore `name` is Ready with this status and reason and `check`
/// accepts its status (written every 20 s).
async fn wait_store(
    stores: &Api<ClusterKeeperStore>,
    name: &str,
    ready: (&str, &str),
    check: impl Fn(&ClusterKeeperStoreStatus) -> bool,
) -> Result<ClusterKeeperStoreStatus> {
    let check = &check;
    wait_until(
        &format!("ClusterKeeperStore {name} Ready {ready:?}"),
        TIMEOUT,
        || async move {
            let status = stores.get(name).await?.status.unwrap_or_default();
            let is_ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && (c.status.as_str(), c.reason.as_str()) == ready);
            Ok((is_ready && check(&status)).then_some(status))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_store_lends_credentials_to_selected_namespaces() -> Result<()> {
    let w = World::start("ctl-store").await?.with_timeout(TIMEOUT);
    // The one operator of the suite that writes store status (they all watch one namespace).
    let mut operator = w
        .plain_operator_builder()
        .arg("--log-level=debug")
        .arg("--store-status=true")
        .spawn()?;
    operator.wait_ready(TIMEOUT).await?;
    let operator_ns = w.env.chart.namespace.clone();
    let config = w.server.bound_config("operator")?;
    let shared: Api<Secret> = Api::namespaced(w.env.cluster.client(), &operator_ns);
    create_secret(&shared, "ksm-shared", &[("config", config.as_bytes())]).await?;
    w.env.cluster.apply(
        &std::fs::read_to_string(workspace_root().join("e2e/examples/cluster-store.yaml"))?,
        &[],
    )?;

    w.apply_example("store-user.yaml")?;
    w.wait_reason("stripe", "False", "NotAllowed").await?;
    // Store health: the credential parses, nothing asked Keeper through it yet, one refusal.
    let stores: Api<ClusterKeeperStore> = Api::all(w.env.cluster.client());
    wait_store(&stores, "shared", ("Unknown", "NotUsed"), |s| {
        s.keeper_secrets == Some(1) && s.refused_keeper_secrets == Some(1)
    })
    .await?;
    let broken = serde_json::json!({
        "apiVersion": "keeper-operator.dev/v1alpha1", "kind": "ClusterKeeperStore",
        "metadata": {"name": "no-credential"},
        "spec": {"credentialsSecretRef": {"name": "missing", "key": "config"}}
    });
    stores
        .create(&Default::default(), &serde_json::from_value(broken)?)
        .await?;
    let status = wait_store(&stores, "no-credential", ("False", "AuthFailed"), |s| {
        s.keeper_secrets == Some(0)
    })
    .await?;
    let message = &status.conditions[0].message;
    ensure!(message.contains("does not exist"), "says why: {message}");

    let label =
        serde_json::json!({"metadata": {"labels": {"keeper-operator.dev/store": "shared"}}});
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(w.env.cluster.client());
    namespaces
        .patch(
            &w.env.app_namespace,
            &PatchParams::default(),
            &Patch::Merge(&label),
        )
        .await?;
    // The namespace label is not watched: touch the spec to retry now rather than after backoff.
    let touch = serde_json::json!({"spec": {"refreshInterval": "11s"}});
    w.keeper_secrets()
        .patch("stripe", &PatchParams::default(), &Patch::Merge(&touch))
        .await?;
    w.kubectl_wait_ready("stripe")?;
    let d = secret_bytes(&w.secrets().get("stripe").await?);
    assert_eq!(
        text(&d, "api-key"),
        w.vault_value("SsxoiM-FPCF65F54JaY3jQ", "password")?
    );
    let app = w.env.app_namespace.clone();
    let status = wait_store(&stores, "shared", ("True", "KeeperAnswered"), |s| {
        s.refused_keeper_secrets == Some(0) && s.namespaces == [app.clone()]
    })
    .await?;
    ensure!(status.last_fetch_time.is_some());
    let mut get = w.env.cluster.kubectl();
    get.args(["get", "clusterkeeperstores", "shared"]);
    let out = tokio::task::block_in_place(|| get.output())?;
    let table = String::from_utf8_lossy(&out.stdout);
    ensure!(
        table.contains("KEEPERSECRETS") && table.contains("KeeperAnswered"),
        "printer columns: {table}"
    );
    stores
        .delete("no-credential", &DeleteParams::default())
        .await?;
    w.env
        .finish(&w.server, &[&w.config, &config], &mut [&mut operator])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_objects_cost_no_writes_and_no_keeper_calls_even_after_restart() -> Result<()> {
    let (w, mut operator) = start("ctl-quiet").await?;
    w.apply_example("connection-url.yaml")?; // default refresh interval: 1h
    w.kubectl_wait_ready("analytics-url")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let versions = |ks: &KeeperSecret, s: &Secret| {
        (
            ks.metadata.resource_version.clone(),
            s.metadata.resource_version.clone(),
        )
    };
    let before = versions(
        &w.keeper_secrets().get("analytics-url").await?,
        &w.secrets().get("analytics-url").await?,
    );
    let calls = w.server.counters().total();

    tokio::time::sleep(Duration::from_secs(8)).await;
    let settled = versions(
        &w.keeper_secrets().get("analytics-url").await?,
        &w.secrets().get("analytics-url").await?,
    );
    assert_eq!(
        settled, before,
        "no status or Secret writes once synced (no reconcile loop)"
    );
    assert_eq!(
        w.server.counters().total(),
        calls,
        "no Keeper calls between refreshes"
    );

    // A restarted operator finds everything current: no Keeper call, no write.
    operator.kill();
    operator = debug_operator(&w).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarted = versions(
        &w.keeper_secrets().get("analytics-url").await?,
        &w.secrets().get("analytics-url").await?,
    );
    assert_eq!(restarted, before, "restart rewrites nothing");
    assert_eq!(
        w.server.counters().total(),
        calls,
        "restart costs no Keeper call"
    );
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_policies_decide_what_reads_keeper_again() -> Result<()> {
    let (w, mut operator) = start("ctl-policy").await?;
    let api = w.keeper_secrets();
    // (name, refreshInterval, refreshPolicy)
    let objects = [
        ("periodic", "5s", None),
        ("on-change", "5s", Some("OnChange")),
        ("zero", "0", None),
        ("created-once", "5s", Some("CreatedOnce")),
    ];
    for (name, interval, policy) in objects {
        let mut manifest = keeper_e2e::world::keeper_secret(name, interval);
        if let Some(policy) = policy {
            manifest["spec"]["refreshPolicy"] = policy.into();
        }
        let ks: KeeperSecret = serde_json::from_value(manifest)?;
        api.create(&Default::default(), &ks).await?;
    }
    for (name, ..) in objects {
        w.kubectl_wait_ready(name)?;
    }
    let first = w.postgres_password()?;

    // Rotated in Keeper: only the periodic one follows on its own.
    w.set_postgres_password("rotated-for-policies")?;
    w.wait_secret("periodic", "periodic refresh", |d| {
        text(d, "password") == "rotated-for-policies"
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    for name in ["on-change", "zero", "created-once"] {
        let s = w.secrets().get(name).await?;
        let held = text(&secret_bytes(&s), "password");
        ensure!(held == first, "{name} refreshed on a timer");
    }

    // Hand-edited: OnChange restores (with current data), CreatedOnce keeps the edit.
    let edit = serde_json::json!({"data": {"password": "ZWRpdGVk"}});
    for name in ["on-change", "created-once"] {
        w.secrets()
            .patch(name, &PatchParams::default(), &Patch::Merge(&edit))
            .await?;
    }
    w.wait_secret("on-change", "restored after edit", |d| {
        text(d, "password") == "rotated-for-policies"
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let kept = w.secrets().get("created-once").await?;
    ensure!(
        text(&secret_bytes(&kept), "password") == "edited",
        "CreatedOnce overwrote a hand edit"
    );

    // Deleted: CreatedOnce writes it again.
    w.secrets()
        .delete("created-once", &DeleteParams::default())
        .await?;
    w.wait_secret("created-once", "recreated after delete", |d| {
        text(d, "password") == "rotated-for-policies"
    })
    .await?;

    // A sync request reaches a KeeperSecret with periodic refreshes off.
    let request = serde_json::json!({"metadata": {"annotations": {
        keeper_operator::api::FORCE_SYNC_ANNOTATION: "now"}}});
    api.patch("zero", &PatchParams::default(), &Patch::Merge(&request))
        .await?;
    w.wait_secret("zero", "synced on request", |d| {
        text(d, "password") == "rotated-for-policies"
    })
    .await?;
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_values_decode_and_deleted_records_follow_the_deletion_policy() -> Result<()> {
    let (w, mut operator) = start("ctl-deletion").await?;
    const ENCODED: &str = "EncodedValuesRecord001";
    const DOOMED: &str = "DoomedRecord0000000001";
    for (uid, title, password) in [
        (ENCODED, "Encoded values", "aGVsbG8/Pz4+"),
        (DOOMED, "Doomed", "doomed password!"),
    ] {
        let record = w.server.record(POSTGRES)?.copy_as(uid, title);
        w.server.set_record(record.password(password))?;
    }
    let by_record = |key: &str, uid: &str, decoding: Option<&str>| {
        let mut item = serde_json::json!({"key": key, "record": {"uid": uid}, "field": "password"});
        if let Some(d) = decoding {
            item["decodingStrategy"] = d.into();
        }
        item
    };
    let spec = |name: &str, deletion: Option<&str>, data: Vec<serde_json::Value>| {
        let mut target = serde_json::json!({"name": name});
        if let Some(policy) = deletion {
            target["deletionPolicy"] = policy.into();
        }
        serde_json::json!({
            "auth": {"secretRef": {"name": "ksm-config", "key": "config"}},
            "refreshInterval": "5s",
            "target": target,
            "data": data,
        })
    };
    let api = w.keeper_secrets();
    let objects = [
        (
            "decoded",
            spec(
                "decoded",
                None,
                vec![
                    by_record("base64", ENCODED, Some("Base64")),
                    by_record("auto", ENCODED, Some("Auto")),
                    by_record("auto-plain", DOOMED, Some("Auto")),
                    by_record("stored", ENCODED, None),
                ],
            ),
        ),
        (
            "wrong-alphabet",
            spec(
                "wrong-alphabet",
                None,
                vec![by_record("v", ENCODED, Some("Base64URL"))],
            ),
        ),
        (
            "delete-all",
            spec(
                "delete-all",
                Some("Delete"),
                vec![by_record("v", DOOMED, None)],
            ),
        ),
        (
            "merge-some",
            spec(
                "merge-some",
                Some("Merge"),
                vec![
                    by_record("kept", ENCODED, None),
                    by_record("gone", DOOMED, None),
                ],
            ),
        ),
        (
            "retain",
            spec("retain", None, vec![by_record("v", DOOMED, None)]),
        ),
    ];
    for (name, spec) in &objects {
        keeper_e2e::world::create_keeper_secret(&api, name, spec.clone()).await?;
    }

    // Decoding.
    w.wait_secret("decoded", "decoded values", |d| {
        text(d, "base64") == "hello??>>"
            && text(d, "auto") == "hello??>>"
            && text(d, "auto-plain") == "doomed password!"
            && text(d, "stored") == "aGVsbG8/Pz4+"
    })
    .await?;
    let failed = w
        .wait_reason("wrong-alphabet", "False", "DecodingFailed")
        .await?;
    let message = keeper_e2e::world::condition(&failed, "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    ensure!(
        message.contains("\"v\"") && message.contains("base64url") && !message.contains("aGVs"),
        "a specific message without the value: {message}"
    );
    ensure!(w.secrets().get_opt("wrong-alphabet").await?.is_none());

    // The record is deleted in Keeper.
    for name in ["delete-all", "merge-some", "retain"] {
        w.kubectl_wait_ready(name)?;
    }
    w.server.delete_record(DOOMED)?;
    let secrets = w.secrets();
    wait_until("Delete removes the Secret", TIMEOUT, || {
        let secrets = secrets.clone();
        async move { Ok(secrets.get_opt("delete-all").await?.is_none().then_some(())) }
    })
    .await?;
    w.wait_reason("delete-all", "True", "RecordDeleted").await?;
    w.wait_secret("merge-some", "only the gone key removed", |d| {
        d.len() == 1 && text(d, "kept") == "aGVsbG8/Pz4+"
    })
    .await?;
    let merged = w.wait_reason("merge-some", "True", "RecordDeleted").await?;
    let message = keeper_e2e::world::condition(&merged, "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    ensure!(message.contains(DOOMED), "names the record: {message}");
    w.wait_reason("retain", "False", "RecordNotFound").await?;
    let kept = w.secrets().get("retain").await?;
    ensure!(
        text(&secret_bytes(&kept), "v") == "doomed password!",
        "Retain keeps the value"
    );
    w.finish(&mut [&mut operator]).await
}
