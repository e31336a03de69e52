//! Faults end to end: the kube-apiserver restarted in the middle of a sync, the leader of two
//! replicas killed, a slow Keeper and a wrong server key id. In each, no Secret is ever emptied or
//! lost, status ends truthful and recovery needs no one. Each test takes `SERIAL`: an API-server
//! restart would disturb any other scenario running beside it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use keeper_e2e::harness::{Operator, wait_until};
use keeper_e2e::world::{
    TIMEOUT, World, assert_passwords_in, check_password_in, condition, names, password,
};
use keeper_operator::runtime::leader::LEASE_NAME;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Waits until the `count` managed Secrets all hold `value`; every check on the way also fails
/// the test if any Secret is missing its value or holds something other than `allowed`.
async fn wait_all_hold(w: &World, count: usize, value: &str, allowed: &[&str]) -> Result<()> {
    wait_until(
        &format!("{count} Secrets holding the new value"),
        TIMEOUT,
        || async {
            let all = w.snapshot().await?;
            for (name, (_, data)) in &all {
                // A hard failure, not a retry: an emptied or foreign value must never appear.
                if let Err(e) = check_password_in(name, data, allowed) {
                    return Ok(Some(Err(e)));
                }
            }
            let done = all
                .values()
                .filter(|(_, d)| d.get("password").is_some_and(|b| b.0 == value.as_bytes()))
                .count();
            Ok((all.len() == count && done == count).then_some(Ok(())))
        },
    )
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_mid_sync_loses_nothing_and_recovers() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let w = World::start("fault-apiserver").await?;
    let original = w.postgres_password()?;
    let mut operator = w.operator().await?;
    w.create(&names("api", 0..10), "5s").await?;
    w.wait_all(10, "Synced").await?;

    // Keeper rotates and 20 more KeeperSecrets arrive; once the first new Secret is written,
    // the API server goes away for 5 s in the middle of that work.
    w.set_postgres_password("rotated-during-restart")?;
    w.create(&names("api", 10..30), "5s").await?;
    let secrets = w.secrets();
    wait_until("the first new Secret written", TIMEOUT, || async {
        Ok(secrets.get_opt("api-0010").await?.map(|_| ()))
    })
    .await?;
    w.env
        .cluster
        .restart_apiserver(Duration::from_secs(5))
        .await?;
    let back = Instant::now();
    operator.ensure_running()?;
    assert_passwords_in(&w, &[&original, "rotated-during-restart"]).await?;

    wait_all_hold(
        &w,
        30,
        "rotated-during-restart",
        &[&original, "rotated-during-restart"],
    )
    .await?;
    let all = w.wait_all(30, "Synced").await?;
    eprintln!(
        "all 30 Secrets current {:?} after the API server came back",
        back.elapsed()
    );
    ensure!(
        all.iter().all(|ks| {
            ks.status.as_ref().and_then(|s| s.observed_generation) == ks.metadata.generation
        }),
        "status describes an older generation"
    );

    // The watches were re-established: a deleted Secret comes back without anyone asking.
    secrets.delete("api-0003", &DeleteParams::default()).await?;
    let restored = wait_until("api-0003 restored", TIMEOUT, || async {
        Ok(secrets
            .get_opt("api-0003")
            .await?
            .and_then(|s| password(&s)))
    })
    .await?;
    assert_eq!(restored, "rotated-during-restart");
    operator.ensure_running()?;
    w.finish(&mut [&mut operator]).await
}

/// Identity in the Lease of the operator namespace.
async fn lease_holder(w: &World) -> Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(w.env.cluster.client(), &w.env.chart.namespace);
    Ok(leases
        .get_opt(LEASE_NAME)
        .await?
        .and_then(|l| l.spec?.holder_identity))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_is_killed() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let w = World::start("fault-failover").await?;
    let original = w.postgres_password()?;
    let mut replicas: Vec<(String, Operator)> = Vec::new();
    for id in ["replica-a", "replica-b"] {
        let mut op = w
            .operator_builder()
            .arg("--leader-elect")
            .env("POD_NAME", id)
            .spawn()?;
        op.wait_ready(TIMEOUT).await?;
        replicas.push((id.to_string(), op));
    }
    w.create(&names("ha", 0..10), "5s").await?;
    w.wait_all(10, "Synced").await?;
    let leader = lease_holder(&w).await?.context("no Lease holder")?;
    let (mut dead, mut standby) = {
        let b = replicas.pop().context("replica b")?;
        let a = replicas.pop().context("replica a")?;
        if a.0 == leader { (a, b) } else { (b, a) }
    };
    ensure!(
        dead.0 == leader,
        "the Lease names neither replica: {leader}"
    );
    // Only the leader writes.
    ensure!(
        !standby.1.logs().contains("wrote Secret"),
        "the standby wrote a Secret while not leading"
    );

    // SIGKILL: no graceful release of the Lease, so the standby must wait for it to expire.
    dead.1.kill();
    let killed = Instant::now();
    w.set_postgres_password("rotated-after-failover")?;
    w.create(&names("ha", 10..15), "5s").await?;
    wait_all_hold(
        &w,
        15,
        "rotated-after-failover",
        &[&original, "rotated-after-failover"],
    )
    .await?;
    eprintln!(
        "standby took over and synced everything {:?} after the leader was killed",
        killed.elapsed()
    );
    ensure!(
        lease_holder(&w).await?.as_deref() == Some(standby.0.as_str()),
        "the standby does not hold the Lease"
    );
    standby.1.ensure_running()?;
    w.wait_all(15, "Synced").await?;
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=keeper-operator");
    ensure!(w.secrets().list(&managed).await?.items.len() == 15);
    w.finish(&mut [&mut dead.1, &mut standby.1]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_keeper_and_a_wrong_server_key_keep_every_secret() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let w = World::start("fault-slow").await?;
    let original = w.postgres_password()?;
    let mut operator = w.operator().await?;
    w.create(&names("slow", 0..10), "5s").await?;
    w.wait_all(10, "Synced").await?;

    // Every Keeper answer takes 3 s: a rotation still reaches every Secret, and the KeeperSecrets
    // waiting on the slow call share it instead of piling up requests.
    w.server.faults().set_latency(Duration::from_secs(3));
    let calls = w.get_secret_calls();
    let slow_since = Instant::now();
    w.set_postgres_password("rotated-while-slow")?;
    wait_all_hold(
        &w,
        10,
        "rotated-while-slow",
        &[&original, "rotated-while-slow"],
    )
    .await?;
    let waves = slow_since.elapsed().as_secs() / 5 + 2;
    let made = w.get_secret_calls() - calls;
    ensure!(
        made <= waves,
        "{made} get_secret calls in {waves} waves while Keeper was slow"
    );
    w.server.faults().set_latency(Duration::ZERO);

    // The server answers with another key id (custom server keys are not rotated by guessing):
    // the Secrets keep the last good copy, status names the failure, the next wave recovers.
    w.server.faults().wrong_key_id_next(2);
    w.set_postgres_password("after-wrong-key")?;
    let kss = w.keeper_secrets();
    wait_until(
        "a KeeperSecret stale with WrongServerKey",
        TIMEOUT,
        || async {
            let all = kss.list(&ListParams::default()).await?.items;
            Ok(all
                .iter()
                .any(|ks| {
                    condition(ks, "Stale")
                        .is_some_and(|c| c.status == "True" && c.reason == "WrongServerKey")
                })
                .then_some(()))
        },
    )
    .await?;
    assert_passwords_in(&w, &["rotated-while-slow"]).await?;
    wait_all_hold(
        &w,
        10,
        "after-wrong-key",
        &["rotated-while-slow", "after-wrong-key"],
    )
    .await?;
    let all = w.wait_all(10, "Synced").await?;
    ensure!(
        all.iter()
            .all(|ks| condition(ks, "Stale").is_some_and(|c| c.status == "False")),
        "status not fresh after recovery"
    );
    w.finish(&mut [&mut operator]).await
}
