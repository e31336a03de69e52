//! Report: the status a sync leads to and when to come back (pure), written when it changed,
//! with an event when Ready transitions (API).

use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::fetch::Fetched;
use super::{Context, Settings};
use crate::api::{KeeperSecret, KeeperSecretStatus};
use crate::controller::memo::Learned;
use crate::error::Error;
use crate::k8s;
use crate::sync::build::{Built, Write};
use crate::sync::refresh;
use crate::sync::status::{self, Synced};

/// PURE: the status of `ks` after writing `built` from `fetched`, and when to sync again.
pub(super) fn synced(
    ks: &KeeperSecret,
    built: Built,
    fetched: &Fetched,
    settings: &Settings,
    interval: Duration,
    now: Timestamp,
) -> (KeeperSecretStatus, Duration) {
    let fetched_at = Timestamp::try_from(fetched.snapshot.fetched_at).unwrap_or(now);
    let max_stale_age = settings.max_stale_age;
    let stale = fetched.stale.as_ref();
    let retry_in = stale.map(|s| s.retry_in);
    let next = refresh::next(ks, fetched_at, now, interval, retry_in, max_stale_age);
    let data_hash = match built.write {
        Write::Apply(desired) => desired.hash,
        Write::Delete { hash } => hash,
    };
    let synced = Synced {
        records: built.records.into_iter().collect(),
        data_hash,
        keys: built.keys,
        gone: built.gone.into_iter().collect(),
        fetched_at,
        stale: stale.map(|s| status::Stale {
            reason: s.error.reason(),
            error: s.error.to_string(),
            since: Timestamp::try_from(s.since).unwrap_or(fetched_at),
            outage: s.error.is_outage(),
            max_age: max_stale_age,
        }),
    };
    (status::synced(ks, now, &synced), next)
}

/// Writes the status if it changed (beyond `lastSyncTime` moving less than `resolution`) and
/// publishes an event if Ready transitioned.
pub(super) async fn report<S>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    new: KeeperSecretStatus,
    resolution: Duration,
    learned: &mut Learned,
) -> Result<(), Error> {
    if !status::worth_writing(ks.status.as_ref(), &new, resolution) {
        learned.synced_at = new.last_sync_time.map(|t| t.0);
        return Ok(());
    }
    let api =
        Api::<KeeperSecret>::namespaced(ctx.client.clone(), &ks.namespace().unwrap_or_default());
    let written = k8s::apply_status(&api, &ks.name_any(), &new).await?;
    learned.status = written.status;
    if let Some(t) = status::transition(ks.status.as_ref(), &new) {
        let type_ = if t.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.events
            .publish(&ks.object_ref(&()), type_, "Sync", t.reason, t.note)
            .await;
    }
    Ok(())
}
