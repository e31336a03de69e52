//! Keeps every ClusterKeeperStore's status current, so an administrator sees whether a store
//! works and who uses it. Each pass lists the stores, reads each one's credential Secret and
//! asks the credential's shared fetcher what Keeper last answered: no Keeper call is made, and
//! the status is written only when it changed.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use tracing::{debug, warn};

use crate::api::{ClusterKeeperStore, KeeperSecret, Reason};
use crate::controller::reconcile::Context;
use crate::error::Error;
use crate::k8s;
use crate::k8s::credentials::{self, Stored};
use crate::keeper::KeeperSource;
use crate::keeper::fetcher::KeeperHealth;
use crate::keeper::fetcher::sealed::MAX_STORED_BYTES;
use crate::sync::store_status::{self, LastHeard, StoreCredential};

/// How often store status is brought up to date.
pub const PERIOD: Duration = Duration::from_secs(20);

/// Updates store status every [`PERIOD`] until the task is dropped.
pub async fn run<S: KeeperSource>(ctx: Arc<Context<S>>, keeper_secrets: Store<KeeperSecret>) {
    // Counting borrowers needs the KeeperSecrets listed first.
    if !super::listed(&keeper_secrets).await {
        return;
    }
    let api = Api::<ClusterKeeperStore>::all(ctx.client.clone());
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = update_all(&ctx, &api, &keeper_secrets).await {
            warn!(error = %Error::Kube(e), "could not list ClusterKeeperStores");
        }
    }
}

async fn update_all<S: KeeperSource>(
    ctx: &Context<S>,
    api: &Api<ClusterKeeperStore>,
    keeper_secrets: &Store<KeeperSecret>,
) -> Result<(), kube::Error> {
    let stores = api.list(&ListParams::default()).await?.items;
    let all = keeper_secrets.state();
    for store in stores {
        let name = store.name_any();
        let credential = credential(ctx, &store).await;
        let usage = store_status::usage(&name, all.iter().map(Arc::as_ref));
        let status = store_status::compute(&store, &credential, usage, Timestamp::now());
        if store.status.as_ref() == Some(&status) {
            continue;
        }
        match k8s::apply_status(api, &name, &status).await {
            Ok(_) => debug!(store = name, "store status updated"),
            Err(e) => warn!(store = name, error = %Error::Kube(e), "could not write store status"),
        }
    }
    Ok(())
}

/// Loads `store`'s credential as a KeeperSecret using it would, but never redeems a token.
async fn credential<S: KeeperSource>(
    ctx: &Context<S>,
    store: &ClusterKeeperStore,
) -> StoreCredential {
    let Some(ns) = ctx.settings.operator_namespace.as_deref() else {
        return StoreCredential::Failed(
            Reason::InvalidSpec,
            credentials::NO_OPERATOR_NAMESPACE.into(),
        );
    };
    let reference = &store.spec.credentials_secret_ref;
    let secret = match Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&reference.name)
        .await
    {
        Ok(secret) => secret,
        Err(e) => {
            let e = Error::Kube(e);
            return StoreCredential::Failed(e.reason(), e.to_string());
        }
    };
    match credentials::parse(secret.as_ref(), ns, reference) {
        Ok(Stored::Config(c)) => {
            StoreCredential::Parsed(ctx.keeper.health(&c.key).await.map(last_heard))
        }
        Ok(Stored::Token(_)) => StoreCredential::Token,
        Err(e) => StoreCredential::Failed(e.reason(), e.to_string()),
    }
}

/// What the store status reads of a fetcher's health.
fn last_heard(health: KeeperHealth) -> LastHeard {
    LastHeard {
        fetched_at: health.fetched_at,
        failure: health
            .failure
            .map(|(error, since)| (error.reason(), error.to_string(), since)),
        too_large_to_seal: health.persist_refused.then_some(MAX_STORED_BYTES),
    }
}
