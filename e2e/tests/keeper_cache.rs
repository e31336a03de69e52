//! Shared Keeper access and the last good copy, end to end: the real kube-apiserver (RBAC on,
//! the chart's ServiceAccount), the operator binary and the KSM test server's fault injection
//! and request counters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use keeper_e2e::harness::{peak_rss_mib, wait_until};
use keeper_e2e::ksm_server::{DownMode, FileFailure};
use keeper_e2e::world::{
    POSTGRES, TIMEOUT, World, assert_passwords_in, condition, create_keeper_secret, keeper_secret,
    keeper_secret_manifest, names, password, wait_for_reason,
};
use keeper_operator::api::KeeperSecret;
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

const WEB_CERTIFICATE: &str = "eOg9gnMeK3HgPNAqf7KB7g";
const CERT_PEM: &str = "SP4eXwtZ4A3YYDQ0Rjrpcw";

/// A KeeperSecret `name` writing Secret `name` with the web certificate's `cert.pem` as `ca.crt`.
fn file_keeper_secret(name: &str, refresh: &str) -> Result<KeeperSecret> {
    Ok(serde_json::from_value(keeper_secret_manifest(
        name,
        json!({
            "auth": { "secretRef": { "name": "ksm-config", "key": "config" } },
            "refreshInterval": refresh,
            "target": { "name": name },
            "data": [{ "key": "ca.crt", "notation": format!("keeper://{WEB_CERTIFICATE}/file/cert.pem") }]
        }),
    ))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_keeper_secrets_cost_one_keeper_call() -> Result<()> {
    let w = World::start("cache-scale").await?;
    let mut operator = w.operator().await?;

    w.create(&names("one", 0..1), "1h").await?;
    w.wait_all(1, "Synced").await?;
    let one = w.get_secret_calls();

    w.create(&names("many", 0..199), "1h").await?;
    w.wait_all(200, "Synced").await?;
    let two_hundred = w.get_secret_calls();
    eprintln!("get_secret calls: 1 KeeperSecret -> {one}, 200 KeeperSecrets -> {two_hundred}");
    ensure!(one == 1, "one KeeperSecret cost {one} get_secret calls");
    ensure!(
        two_hundred == 1,
        "200 KeeperSecrets cost {two_hundred} get_secret calls, not 1"
    );

    // Between refresh waves nothing reaches Keeper.
    tokio::time::sleep(Duration::from_secs(10)).await;
    ensure!(w.get_secret_calls() == 1, "Keeper was called between waves");
    let all = w.snapshot().await?;
    ensure!(
        all.len() == 200,
        "expected 200 Secrets, found {}",
        all.len()
    );
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_wave_costs_one_call_and_reaches_every_secret() -> Result<()> {
    let w = World::start("cache-wave").await?;
    let mut operator = w.operator().await?;
    w.create(&names("wave", 0..20), "10s").await?;
    w.wait_all(20, "Synced").await?;

    let before = w.get_secret_calls();
    let started = Instant::now();
    w.set_postgres_password("rotated-in-keeper")?;
    let secrets = w.secrets();
    wait_until("every Secret has the rotated password", TIMEOUT, || {
        let secrets = secrets.clone();
        async move {
            let lp = ListParams::default().labels("app.kubernetes.io/managed-by=keeper-operator");
            let all = secrets.list(&lp).await?.items;
            let done = all
                .iter()
                .filter(|s| password(s).as_deref() == Some("rotated-in-keeper"));
            Ok((done.count() == 20).then_some(()))
        }
    })
    .await?;
    let elapsed = started.elapsed();
    let calls = w.get_secret_calls() - before;
    // One wave every 10 s (plus a jitter of at most a second per object): the calls are
    // bounded by the waves that fit in the elapsed time, however many KeeperSecrets there are.
    let waves = elapsed.as_secs() / 10 + 2;
    eprintln!("change reached 20 Secrets in {elapsed:?} with {calls} get_secret calls");
    ensure!(
        calls <= waves,
        "{calls} get_secret calls in {elapsed:?} for 20 KeeperSecrets (max {waves})"
    );
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_every_secret_and_costs_no_request_storm() -> Result<()> {
    let w = World::start("cache-outage").await?;
    let mut operator = w.operator().await?;
    w.create(&names("outage", 0..10), "5s").await?;
    w.wait_all(10, "Synced").await?;
    let good = w.snapshot().await?;

    let before = w.get_secret_calls();
    w.server.faults().set_down(DownMode::Unavailable);
    let during = w.wait_all(10, "LastGoodCopy").await?;
    for ks in &during {
        let stale = condition(ks, "Stale").context("Stale condition")?;
        ensure!(
            stale.status == "True" && stale.reason == "KeeperUnavailable",
            "{stale:?}"
        );
        let ready = ks.ready_condition().context("Ready")?;
        ensure!(
            ready.status == "True" && ready.message.contains("last good copy"),
            "{ready:?}"
        );
    }
    // Four refresh intervals of outage.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let calls = w.get_secret_calls() - before;
    eprintln!("10 KeeperSecrets at 5s over ~25s of outage: {calls} get_secret attempts");
    // Without sharing and backoff this would be 10 objects x 5 waves = 50 attempts.
    ensure!(calls <= 6, "{calls} attempts during the outage");
    ensure!(
        w.snapshot().await? == good,
        "a Secret changed while Keeper was down"
    );

    w.server.faults().set_down(DownMode::Up);
    let after = w.wait_all(10, "Synced").await?;
    for ks in &after {
        ensure!(
            condition(ks, "Stale").is_some_and(|c| c.status == "False"),
            "still stale"
        );
    }
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_storm_is_honoured_and_nothing_is_lost() -> Result<()> {
    let w = World::start("cache-throttle").await?;
    let mut operator = w.operator().await?;
    w.create(&names("throttle", 0..10), "5s").await?;
    w.wait_all(10, "Synced").await?;
    let good = w.snapshot().await?;

    let before = w.get_secret_calls();
    let started = Instant::now();
    w.server
        .faults()
        .throttle_next(3, Some(Duration::from_secs(4)));
    let during = w.wait_all(10, "LastGoodCopy").await?;
    ensure!(
        during
            .iter()
            .all(|ks| condition(ks, "Stale").is_some_and(|c| c.reason == "Throttled")),
        "Stale reason is not Throttled"
    );
    w.wait_all(10, "Synced").await?;
    let elapsed = started.elapsed();
    let calls = w.get_secret_calls() - before;
    eprintln!("throttled 3 times with retry_after=4s: {calls} get_secret calls in {elapsed:?}");
    // Three throttled answers, each honoured for 4 s, then one success.
    ensure!(calls <= 5, "{calls} calls: retry_after was not honoured");
    ensure!(
        elapsed >= Duration::from_secs(8),
        "recovered before the retry_after waits ended"
    );
    let after = w.snapshot().await?;
    ensure!(
        after.values().map(|v| &v.1).eq(good.values().map(|v| &v.1)),
        "data changed"
    );
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_truncated_responses_never_reach_a_secret() -> Result<()> {
    let w = World::start("cache-tamper").await?;
    let mut operator = w.operator().await?;
    w.create(&names("tamper", 0..3), "5s").await?;
    w.wait_all(3, "Synced").await?;
    let good = w.snapshot().await?;

    w.server.faults().tamper_next(1);
    w.server.faults().truncate_next(1);
    let during = w.wait_all(3, "LastGoodCopy").await?;
    ensure!(
        during
            .iter()
            .all(|ks| condition(ks, "Stale").is_some_and(|c| c.reason == "InvalidResponse")),
        "Stale reason is not InvalidResponse"
    );
    ensure!(
        w.snapshot().await? == good,
        "a Secret changed on a tampered response"
    );
    w.wait_all(3, "Synced").await?;
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_serves_the_sealed_copy_while_keeper_is_down() -> Result<()> {
    let w = World::start("cache-restart").await?;
    let mut first = w.operator().await?;
    w.create(&names("restart", 0..1), "1h").await?;
    w.wait_all(1, "Synced").await?;

    // The last good copy is sealed in the operator's namespace: no value readable at rest.
    let cache_api: Api<Secret> = Api::namespaced(w.env.cluster.client(), &w.env.chart.namespace);
    let lp = ListParams::default().labels("app.kubernetes.io/component=last-good-cache");
    let caches = cache_api.list(&lp).await?.items;
    ensure!(
        caches.len() == 1,
        "expected one cache Secret, found {}",
        caches.len()
    );
    let sealed = &caches[0].data.as_ref().context("cache data")?["snapshot"].0;
    let plain = w.server.record(POSTGRES)?;
    let secret_value = plain
        .fields
        .iter()
        .find(|f| f["type"] == "password")
        .context("password")?["value"][0]
        .as_str()
        .context("password text")?
        .to_string();
    ensure!(
        !sealed
            .windows(secret_value.len())
            .any(|win| win == secret_value.as_bytes()),
        "plaintext at rest"
    );
    ensure!(
        !sealed.windows(8).any(|win| win == b"Postgres"),
        "titles readable at rest"
    );

    first.kill();
    w.server.faults().set_down(DownMode::Refuse);
    w.secrets()
        .delete("restart-0000", &DeleteParams::default())
        .await?;
    // A mapping change while everything is down is rendered from the sealed copy too.
    let patch = json!({ "spec": { "target": { "template": { "data": {
        "url": "postgres://app:{{ password }}@db:5432/app"
    } } } } });
    w.keeper_secrets()
        .patch(
            "restart-0000",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;

    let mut second = w.operator().await?;
    let ks = w.wait_all(1, "LastGoodCopy").await?.remove(0);
    ensure!(
        condition(&ks, "Stale").is_some_and(|c| c.status == "True"),
        "not marked stale"
    );
    let secret = w.secrets().get("restart-0000").await?;
    let data = secret.data.context("data")?;
    let url = String::from_utf8_lossy(&data.get("url").context("templated key")?.0).into_owned();
    ensure!(
        url == format!("postgres://app:{secret_value}@db:5432/app"),
        "template not re-rendered"
    );

    w.server.faults().set_down(DownMode::Up);
    w.wait_all(1, "Synced").await?;
    w.finish(&mut [&mut first, &mut second]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_file_download_keeps_the_file_and_downloads_once_per_revision() -> Result<()> {
    let w = World::start("cache-files").await?;
    let mut operator = w.operator().await?;
    let ks = file_keeper_secret("cert", "5s")?;
    w.keeper_secrets()
        .create(&PostParams::default(), &ks)
        .await?;
    w.wait_all(1, "Synced").await?;
    let good = w.secrets().get("cert").await?;
    let good_bytes = good.data.as_ref().context("data")?["ca.crt"].0.clone();
    ensure!(!good_bytes.is_empty(), "file is empty");

    // Several waves at the same revision download nothing again.
    let downloads = w.server.counters().file_downloads();
    tokio::time::sleep(Duration::from_secs(12)).await;
    ensure!(
        w.server.counters().file_downloads() == downloads,
        "file downloaded again at the same revision"
    );

    // A new revision whose download fails: the Secret keeps the old bytes, never an empty value.
    w.server
        .faults()
        .fail_files_next(1000, FileFailure::Truncate);
    w.server
        .set_file_content(CERT_PEM, b"-----BEGIN CERTIFICATE-----\nrotated\n")?;
    let api = w.keeper_secrets();
    wait_until("Ready=False DownloadFailed", TIMEOUT, || {
        let api = api.clone();
        async move {
            let ks = api.get("cert").await?;
            Ok(ks
                .ready_condition()
                .is_some_and(|c| c.reason == "DownloadFailed")
                .then_some(()))
        }
    })
    .await?;
    let during = w.secrets().get("cert").await?;
    ensure!(
        during.data.as_ref().context("data")?["ca.crt"].0 == good_bytes,
        "file changed on a failed download"
    );

    w.server.faults().clear();
    w.wait_all(1, "Synced").await?;
    let secrets = w.secrets();
    wait_until("rotated file in the Secret", TIMEOUT, || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get("cert").await?;
            let bytes = s
                .data
                .unwrap_or_default()
                .remove("ca.crt")
                .map(|b| b.0)
                .unwrap_or_default();
            Ok((bytes == b"-----BEGIN CERTIFICATE-----\nrotated\n").then_some(()))
        }
    })
    .await?;
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_write_loses_nothing_and_converges_after_restart() -> Result<()> {
    let w = World::start("fault-kill").await?;
    let original = w.postgres_password()?;
    let mut first = w.operator().await?;
    let all = names("kill", 0..30);
    w.create(&all, "5s").await?;
    // SIGKILL while the first Secrets are being written.
    let secrets = w.secrets();
    wait_until("the first Secret written", TIMEOUT, || {
        let secrets = secrets.clone();
        async move {
            let lp = ListParams::default().labels("app.kubernetes.io/managed-by=keeper-operator");
            Ok((!secrets.list(&lp).await?.items.is_empty()).then_some(()))
        }
    })
    .await?;
    first.kill();
    let written = assert_passwords_in(&w, &[&original]).await?;
    eprintln!("killed with {written}/30 Secrets written");

    let mut second = w.operator().await?;
    w.wait_all(30, "Synced").await?;
    ensure!(
        assert_passwords_in(&w, &[&original]).await? == 30,
        "a Secret is missing"
    );

    // Killed again in the middle of a rotation wave: every Secret keeps a whole value (old or
    // new, never empty), and a restart finishes the wave.
    w.set_postgres_password("rotated-mid-kill")?;
    wait_until("the first rotated Secret", TIMEOUT, || async {
        let all = w.snapshot().await?;
        Ok(all
            .values()
            .any(|(_, d)| {
                d.get("password")
                    .is_some_and(|b| b.0 == b"rotated-mid-kill")
            })
            .then_some(()))
    })
    .await?;
    second.kill();
    assert_passwords_in(&w, &[&original, "rotated-mid-kill"]).await?;
    let mut third = w.operator().await?;
    let secrets = w.secrets();
    wait_until("every Secret rotated", TIMEOUT, || {
        let secrets = secrets.clone();
        async move {
            let lp = ListParams::default().labels("app.kubernetes.io/managed-by=keeper-operator");
            let items = secrets.list(&lp).await?.items;
            let done = items
                .iter()
                .filter(|s| password(s).as_deref() == Some("rotated-mid-kill"))
                .count();
            Ok((done == 30).then_some(()))
        }
    })
    .await?;
    let after = w.wait_all(30, "Synced").await?;
    ensure!(
        after
            .iter()
            .all(|ks| condition(ks, "Stale").is_some_and(|c| c.status == "False")),
        "status not fresh after recovery"
    );
    w.finish(&mut [&mut first, &mut second, &mut third]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_policy_keeps_their_concurrent_edits_and_restores_our_keys() -> Result<()> {
    let w = World::start("fault-merge").await?;
    let mut operator = w.operator().await?;
    let theirs = Secret {
        metadata: ObjectMeta {
            name: Some("app-config".into()),
            // Its creator invites the KeeperSecret to merge into it.
            annotations: Some(BTreeMap::from([(
                keeper_operator::api::ALLOW_MERGE_ANNOTATION.to_string(),
                "merge".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([
            ("theirs".into(), "v0".into()),
            ("other".into(), "kept".into()),
        ])),
        ..Secret::default()
    };
    w.secrets().create(&PostParams::default(), &theirs).await?;
    let mut ks = keeper_secret("merge", "5s");
    ks["spec"]["target"] = json!({ "name": "app-config", "creationPolicy": "Merge" });
    let ks: KeeperSecret = serde_json::from_value(ks)?;
    w.keeper_secrets()
        .create(&PostParams::default(), &ks)
        .await?;
    w.wait_all(1, "Synced").await?;
    let vault_password = {
        let s = w.secrets().get("app-config").await?;
        password(&s).context("our key written")?
    };

    // Someone else edits the Secret over and over (their key, a new key, and our key) while
    // Keeper rotates the value underneath.
    w.set_postgres_password("rotated-during-merge")?;
    let api = w.secrets();
    for i in 1..=10 {
        let patch = json!({ "stringData": {
            "theirs": format!("v{i}"),
            "added": format!("a{i}"),
            "password": "overwritten-by-someone",
        } });
        api.patch("app-config", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let secrets = w.secrets();
    let done = wait_until("their edits kept, our key restored", TIMEOUT, || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get("app-config").await?;
            Ok((password(&s).as_deref() == Some("rotated-during-merge")).then_some(s))
        }
    })
    .await?;
    let data: BTreeMap<String, String> = done
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    ensure!(
        data.get("theirs").map(String::as_str) == Some("v10")
            && data.get("added").map(String::as_str) == Some("a10")
            && data.get("other").map(String::as_str) == Some("kept"),
        "their keys were not kept: {:?}",
        data.keys()
    );
    ensure!(
        vault_password != "rotated-during-merge",
        "the rotation was a no-op"
    );
    let ks = w.keeper_secrets().get("merge").await?;
    let ready = ks.ready_condition().context("Ready")?;
    ensure!(
        ready.status == "True" && ready.reason == "Synced",
        "status: {} {}",
        ready.status,
        ready.reason
    );
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glitch_that_empties_a_value_is_refused_but_a_real_change_is_applied() -> Result<()> {
    let w = World::start("cache-guard").await?;
    let _operator = w.operator().await?;
    w.create(&names("guard", 0..1), "5s").await?;
    w.wait_all(1, "Synced").await?;
    let good = w.snapshot().await?;

    // Same revision, emptied value: only a backend glitch can do that.
    w.server
        .glitch_record(w.server.record(POSTGRES)?.field("password", json!([])))?;
    let refused = w.wait_all(1, "WriteRefused").await?;
    let message = &refused[0].ready_condition().context("Ready")?.message;
    ensure!(message.contains("\"password\""), "{message}");
    ensure!(w.snapshot().await? == good, "the glitch reached the Secret");

    // The same emptying as a real edit in Keeper (new revision) is applied.
    w.server
        .set_record(w.server.record(POSTGRES)?.field("password", json!([])))?;
    w.wait_all(1, "Synced").await?;
    let secret = w.secrets().get("guard-0000").await?;
    ensure!(
        password(&secret).as_deref() == Some(""),
        "intentional change not applied"
    );
    Ok(())
}

/// The client id inside the world's base64 KSM config.
fn client_id(config: &str) -> Result<String> {
    let json = keeper_operator::ksm::crypto::b64_decode(config)?;
    let parsed: serde_json::Value = serde_json::from_slice(&json)?;
    Ok(parsed["clientId"]
        .as_str()
        .context("clientId in the config")?
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_is_not_ready_but_its_secrets_keep_their_data() -> Result<()> {
    let w = World::start("cache-revoked").await?;
    let mut operator = w.operator().await?;
    w.create(&names("revoked", 0..2), "5s").await?;
    w.wait_all(2, "Synced").await?;
    let good = w.snapshot().await?;

    ensure!(
        w.server.revoke_device(&client_id(&w.config)?),
        "no such device"
    );
    // A refusal is not an outage: the Secrets keep their data, and nothing is written.
    let revoked = w.wait_all(2, "CredentialRefused").await?;
    for ks in &revoked {
        let ready = ks.ready_condition().context("Ready")?;
        ensure!(ready.status == "False", "{ready:?}");
        ensure!(ready.message.contains("AuthFailed"), "{ready:?}");
        ensure!(ready.message.contains("last good copy"), "{ready:?}");
    }
    ensure!(
        w.snapshot().await? == good,
        "a revoked credential changed a Secret"
    );
    // A deleted Secret is not re-created from the last good copy.
    w.secrets()
        .delete("revoked-0001", &Default::default())
        .await?;
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    ensure!(
        w.secrets().get_opt("revoked-0001").await?.is_none(),
        "a revoked credential re-created a Secret from the last good copy"
    );

    // A restarted operator, with only the sealed copy, tells the same truth.
    operator.kill();
    let mut restarted = w.operator().await?;
    let api = w.keeper_secrets();
    api.patch(
        "revoked-0000",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "refreshInterval": "6s" } })),
    )
    .await?;
    wait_until(
        "the edited KeeperSecret reports CredentialRefused again",
        TIMEOUT,
        || {
            let api = api.clone();
            async move {
                let ks = api.get("revoked-0000").await?;
                let ready = ks.ready_condition().context("Ready")?;
                let current = ks.status.as_ref().and_then(|s| s.observed_generation)
                    == ks.metadata.generation;
                Ok(
                    (current && ready.reason == "CredentialRefused" && ready.status == "False")
                        .then_some(()),
                )
            }
        },
    )
    .await?;
    ensure!(
        w.snapshot().await?.get("revoked-0000") == good.get("revoked-0000"),
        "data lost after the restart"
    );
    ensure!(
        w.secrets().get_opt("revoked-0001").await?.is_none(),
        "a restarted operator re-created a Secret from the sealed copy of a refused credential"
    );
    w.finish(&mut [&mut operator, &mut restarted]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_good_copy_older_than_the_maximum_age_turns_not_ready_and_keeps_its_data()
-> Result<()> {
    let w = World::start("cache-expiry").await?;
    let mut operator = w.operator_builder().arg("--max-stale-age=20s").spawn()?;
    operator.wait_ready(TIMEOUT).await?;
    w.create(&names("expiry", 0..1), "5s").await?;
    w.wait_all(1, "Synced").await?;
    let good = w.snapshot().await?;

    w.server.faults().set_down(DownMode::Unavailable);
    w.wait_all(1, "LastGoodCopy").await?;
    let expired = w.wait_all(1, "LastGoodCopyExpired").await?;
    let ready = expired[0].ready_condition().context("Ready")?;
    ensure!(ready.status == "False", "{ready:?}");
    ensure!(
        condition(&expired[0], "Stale").is_some_and(|c| c.status == "True"),
        "not marked stale"
    );
    ensure!(w.snapshot().await? == good, "the expired copy was removed");

    w.server.faults().set_down(DownMode::Up);
    w.wait_all(1, "Synced").await?;
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_recreates_a_file_secret_from_the_sealed_copy_while_keeper_is_down()
-> Result<()> {
    let w = World::start("cache-restart-files").await?;
    let mut first = w.operator().await?;
    let ks = file_keeper_secret("tls", "1h")?;
    w.keeper_secrets()
        .create(&PostParams::default(), &ks)
        .await?;
    w.wait_all(1, "Synced").await?;
    let good = w.secrets().get("tls").await?.data.context("data")?["ca.crt"]
        .0
        .clone();

    // The attachment is sealed beside the snapshot: present, and unreadable at rest.
    let cache_api: Api<Secret> = Api::namespaced(w.env.cluster.client(), &w.env.chart.namespace);
    let lp = ListParams::default().labels("app.kubernetes.io/component=last-good-cache");
    let files = wait_until("the sealed files in the cache Secret", TIMEOUT, || {
        let cache_api = cache_api.clone();
        let lp = lp.clone();
        async move {
            let caches = cache_api.list(&lp).await?.items;
            Ok(caches
                .into_iter()
                .find_map(|s| s.data?.remove("files"))
                .map(|b| b.0))
        }
    })
    .await?;
    let probe = &good[..good.len().min(24)];
    ensure!(
        !files.windows(probe.len()).any(|win| win == probe),
        "attachment readable at rest"
    );

    first.kill();
    w.server.faults().set_down(DownMode::Refuse);
    w.secrets().delete("tls", &DeleteParams::default()).await?;
    let downloads = w.server.counters().file_downloads();

    let mut second = w.operator().await?;
    let restored = wait_until(
        "the file Secret recreated from the sealed copy",
        TIMEOUT,
        || {
            let secrets = w.secrets();
            async move {
                Ok(secrets
                    .get_opt("tls")
                    .await?
                    .and_then(|s| s.data?.remove("ca.crt"))
                    .map(|b| b.0))
            }
        },
    )
    .await?;
    ensure!(restored == good, "the recreated file differs");
    ensure!(
        w.server.counters().file_downloads() == downloads,
        "downloaded while Keeper was down"
    );
    let ks = w.wait_all(1, "LastGoodCopy").await?.remove(0);
    ensure!(
        condition(&ks, "Stale").is_some_and(|c| c.status == "True"),
        "not marked stale"
    );

    w.server.faults().set_down(DownMode::Up);
    w.wait_all(1, "Synced").await?;
    w.finish(&mut [&mut first, &mut second]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_attachment_is_refused_while_other_tenants_keep_syncing() -> Result<()> {
    let w = World::start("fault-huge-file").await?;
    let original = w.postgres_password()?;
    let mut operator = w.operator().await?;
    w.create(&names("neighbour", 0..3), "5s").await?;
    w.wait_all(3, "Synced").await?;

    // One tenant maps a 200 MB attachment.
    w.server
        .set_file_content(CERT_PEM, &vec![b'x'; 200 * 1024 * 1024])?;
    let huge = file_keeper_secret("huge", "5s")?;
    let api = w.keeper_secrets();
    api.create(&PostParams::default(), &huge).await?;
    wait_until("the huge attachment refused with TooLarge", TIMEOUT, || {
        let api = api.clone();
        async move {
            let ks = api.get("huge").await?;
            Ok(ks
                .ready_condition()
                .filter(|c| c.status == "False" && c.reason == "TooLarge")
                .cloned())
        }
    })
    .await
    .and_then(|c| {
        ensure!(
            c.message.contains("cert.pem") || c.message.contains(CERT_PEM),
            "{c:?}"
        );
        Ok(())
    })?;

    // The others keep picking up Keeper changes meanwhile.
    w.set_postgres_password("rotated-beside-a-huge-file")?;
    wait_until(
        "the neighbours hold the rotated password",
        TIMEOUT,
        || async {
            let all = w.snapshot().await?;
            let done = all
                .iter()
                .filter(|(name, (_, d))| {
                    name.starts_with("neighbour")
                        && d.get("password")
                            .is_some_and(|b| b.0 == b"rotated-beside-a-huge-file")
                })
                .count();
            Ok((done == 3).then_some(()))
        },
    )
    .await?;
    ensure!(original != "rotated-beside-a-huge-file");
    let peak = peak_rss_mib(operator.pid())?;
    eprintln!("operator peak RSS with a 200 MB attachment mapped: {peak:.1} MiB");
    ensure!(peak < 128.0, "peak RSS {peak:.1} MiB");
    operator.ensure_running()?;
    w.finish(&mut [&mut operator]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_created_after_the_last_fetch_syncs_in_seconds_with_one_more_call() -> Result<()> {
    let w = World::start("cache-new-record").await?;
    let _operator = w.operator().await?;
    w.create(&names("known", 0..1), "1h").await?;
    w.wait_all(1, "Synced").await?;
    let calls = w.get_secret_calls();
    // The shared data ages past the refetch floor (10 s); the refresh interval is an hour.
    tokio::time::sleep(Duration::from_secs(11)).await;

    // A user creates a record in the app's shared folder, then a KeeperSecret for it.
    let create_record = |uid: &str, password: &str| -> Result<()> {
        let record = w.server.record(POSTGRES)?;
        let record = record.copy_as(uid, format!("Created later {uid}"));
        w.server.set_record(record.password(password)).map(drop)
    };
    let spec = |uid: &str, name: &str| {
        json!({
            "auth": { "secretRef": { "name": "ksm-config", "key": "config" } },
            "refreshInterval": "1h",
            "target": { "name": name },
            "data": [{ "key": "password", "notation": format!("keeper://{uid}/field/password") }]
        })
    };
    let api = w.keeper_secrets();
    let sync_new_record = |uid: &'static str, name: &'static str, within: Duration| {
        let (api, w) = (api.clone(), &w);
        async move {
            create_record(uid, name)?;
            let started = Instant::now();
            create_keeper_secret(&api, name, spec(uid, name)).await?;
            wait_for_reason(&api, name, "Ready", "True", "Synced", within).await?;
            eprintln!(
                "{name}: a record created after the last fetch synced in {:?}",
                started.elapsed()
            );
            let secret = w.secrets().get(name).await?;
            ensure!(password(&secret).as_deref() == Some(name));
            anyhow::Ok(())
        }
    };
    // The shared data is older than the floor: read again at once.
    sync_new_record("N3wRec0rdCreatedLaterw", "later", Duration::from_secs(30)).await?;
    ensure!(
        w.get_secret_calls() == calls + 1,
        "expected one more get_secret, got {}",
        w.get_secret_calls() - calls
    );

    // A second after that read (as when a sibling on the credential just synced): read again
    // once the data is as old as the floor, not at the next refresh an hour away.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sync_new_record("N3wRec0rdCreatedAfterr", "after", Duration::from_secs(15)).await?;
    ensure!(
        w.get_secret_calls() == calls + 2,
        "expected two more get_secret, got {}",
        w.get_secret_calls() - calls
    );

    // A record that never comes costs one read once the data is as old as the floor, and none
    // on the retry after the first backoff (30 s), when that generation's failure is recorded.
    create_keeper_secret(&api, "typo", spec("CCCCCCCCCCCCCCCCCCCCCC", "typo")).await?;
    wait_for_reason(&api, "typo", "Ready", "False", "RecordNotFound", TIMEOUT).await?;
    tokio::time::sleep(Duration::from_secs(40)).await;
    ensure!(
        w.get_secret_calls() == calls + 3,
        "a missing record cost {} more get_secret",
        w.get_secret_calls() - calls - 2
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_sync_and_flux_requests_sync_at_once_and_are_answered() -> Result<()> {
    let w = World::start("cache-force-sync").await?;
    let _operator = w.operator().await?;
    w.create(&names("asked", 0..2), "1h").await?;
    w.wait_all(2, "Synced").await?;
    let calls = w.get_secret_calls();
    // Past the few seconds a requested sync may reuse; nothing is due for an hour.
    tokio::time::sleep(Duration::from_secs(11)).await;
    w.set_postgres_password("rotated-on-request")?;

    let api = w.keeper_secrets();
    // Flux writes the time of the request: data fetched after it answers it.
    let flux = format!("{:.9}", jiff::Timestamp::now());
    let requests = [
        ("asked-0000", "keeper-operator.dev/force-sync", "1"),
        (
            "asked-0001",
            "reconcile.fluxcd.io/requestedAt",
            flux.as_str(),
        ),
    ];
    let started = Instant::now();
    for (name, annotation, value) in requests {
        let patch = json!({ "metadata": { "annotations": { annotation: value } } });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    for (name, _, value) in requests {
        wait_until(&format!("{name} answers {value}"), TIMEOUT, || {
            let api = api.clone();
            async move {
                let ks = api.get(name).await?;
                let handled = ks.status.and_then(|s| s.last_handled_reconcile_at);
                Ok((handled.as_deref() == Some(value)).then_some(()))
            }
        })
        .await?;
        let secret = w.secrets().get(name).await?;
        ensure!(
            password(&secret).as_deref() == Some("rotated-on-request"),
            "{name}"
        );
    }
    eprintln!("two sync requests answered in {:?}", started.elapsed());
    // Both shared one Keeper call.
    ensure!(
        w.get_secret_calls() == calls + 1,
        "requests cost {} get_secret",
        w.get_secret_calls() - calls
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credentials_sealed_copy_is_destroyed_after_the_maximum_age() -> Result<()> {
    let w = World::start("cache-refused-expiry").await?;
    let mut operator = w.operator_builder().arg("--max-stale-age=15s").spawn()?;
    operator.wait_ready(TIMEOUT).await?;
    w.create(&names("refused", 0..1), "5s").await?;
    w.wait_all(1, "Synced").await?;
    let good = w.snapshot().await?;
    let cache_api: Api<Secret> = Api::namespaced(w.env.cluster.client(), &w.env.chart.namespace);
    let lp = ListParams::default().labels("app.kubernetes.io/component=last-good-cache");
    ensure!(
        cache_api.list(&lp).await?.items.len() == 1,
        "the last good copy is sealed"
    );

    ensure!(
        w.server.revoke_device(&client_id(&w.config)?),
        "no such device"
    );
    w.wait_all(1, "CredentialRefused").await?;
    // Older than --max-stale-age: the sealed copy of the refused credential is destroyed...
    wait_until("the sealed copy destroyed", TIMEOUT, || {
        let cache_api = cache_api.clone();
        let lp = lp.clone();
        async move {
            let sealed = cache_api
                .list(&lp)
                .await?
                .items
                .into_iter()
                .any(|s| s.data.is_some_and(|d| !d.is_empty()));
            Ok((!sealed).then_some(()))
        }
    })
    .await?;
    // ...while the Secrets keep what they hold.
    ensure!(
        w.snapshot().await? == good,
        "a refused credential changed a Secret"
    );
    w.finish(&mut [&mut operator]).await
}

/// A Keeper answer too large to seal into a Secret (the API server refuses one over 1 MiB) is
/// served from memory, reported once (metric and one log line), and not sent to the API server
/// again at the next fetches of the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_too_large_to_seal_is_reported_once_and_served_from_memory() -> Result<()> {
    let w = World::start("cache-too-large").await?;
    // 1.2 MB of notes that do not compress (hex of a simple generator's output).
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let notes: String = (0..1_200_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from_digit((state % 16) as u32, 16).unwrap_or('0')
        })
        .collect();
    let mut record = w.server.record(POSTGRES)?.password("fits-in-memory");
    record.notes = Some(notes);
    w.server.set_record(record)?;
    let operator = w.operator().await?;
    // Refreshed every 5 s: several fetches of the same data.
    w.create(&names("big", 0..2), "5s").await?;
    w.wait_all(2, "Synced").await?;
    let calls = w.get_secret_calls();
    wait_until("two more fetches", TIMEOUT, || async {
        Ok((w.get_secret_calls() >= calls + 2).then_some(()))
    })
    .await?;
    ensure!(assert_passwords_in(&w, &["fits-in-memory"]).await? == 2);

    let metrics = operator
        .scrape_metrics(w.env.metrics_reader_token().await?)
        .await?;
    let too_large: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("keeper_operator_keeper_store_too_large"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    ensure!(too_large == 1.0, "store_too_large: {too_large}");
    let logs = operator.logs();
    ensure!(
        logs.matches("too large to persist").count() == 1,
        "one log line for one body"
    );
    // Nothing sealed for it in the operator's namespace.
    let cache_api: Api<Secret> = Api::namespaced(w.env.cluster.client(), &w.env.chart.namespace);
    let lp = ListParams::default().labels("app.kubernetes.io/component=last-good-cache");
    for cache in cache_api.list(&lp).await?.items {
        ensure!(
            !cache.data.unwrap_or_default().contains_key("snapshot"),
            "an oversize copy was stored"
        );
    }
    Ok(())
}
