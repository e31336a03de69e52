//! The few Kubernetes writes the controller makes: server-side apply of the Secret and of the
//! KeeperSecret and ClusterKeeperStore status, always forced under the one field manager, and best-effort events.

pub(crate) mod credentials;
pub(crate) mod redeem;
pub(crate) mod rollout;
pub(crate) mod templates;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;
use tracing::warn;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::FIELD_MANAGER;

fn params() -> PatchParams {
    // Controllers own their fields outright; forcing resolves conflicts with hand edits.
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies the full desired Secret (`data`, not `stringData`, which does not work with SSA).
pub(crate) async fn apply_secret(
    api: &Api<Secret>,
    secret: &Secret,
) -> Result<Secret, kube::Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    api.patch(&name, &params(), &Patch::Apply(secret)).await
}

/// How [`create_secret`] ended.
#[derive(Debug)]
pub enum Created {
    /// The Secret is new, and ours.
    Created(Box<Secret>),
    /// A Secret of that name appeared after the target was read (someone else made it): what
    /// this write added was taken out again at once, and it is left as its creator made it.
    Raced,
}

/// Creates the target Secret read as absent. An apply that finds the Secret there (made since
/// by someone else) must not take it over: the apply is not forced, so a key they set with
/// another value stops it (409), and if it merged anyway, the fields it added are withdrawn
/// by applying nothing under the same field manager.
pub async fn create_secret(api: &Api<Secret>, secret: &Secret) -> Result<Created, kube::Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let written = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(secret),
        )
        .await?;
    if !made_by_others(&written) {
        return Ok(Created::Created(Box::new(written)));
    }
    let nothing =
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}});
    api.patch(&name, &params(), &Patch::Apply(&nothing)).await?;
    Ok(Created::Raced)
}

/// PURE: whether another field manager had written `secret`, which an apply that created it
/// would not show.
fn made_by_others(secret: &Secret) -> bool {
    secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() != Some(FIELD_MANAGER))
}

/// Replaces `existing` (an adopted Secret) with `desired` as a whole, conditioned on the
/// version read: keys, labels and annotations others set are dropped. Later writes are applies.
pub(crate) async fn replace_secret(
    api: &Api<Secret>,
    existing: &Secret,
    desired: &Secret,
) -> Result<Secret, kube::Error> {
    let mut secret = desired.clone();
    secret.metadata.resource_version = existing.metadata.resource_version.clone();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let pp = kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    api.replace(&name, &pp, &secret).await
}

/// Deletes `secret` if it is still the object read (same UID and resourceVersion, so an edit or a
/// replacement made since is never deleted); `false` when it was already gone or changed.
pub(crate) async fn delete_secret(api: &Api<Secret>, secret: &Secret) -> Result<bool, kube::Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let dp = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: secret.metadata.uid.clone(),
            resource_version: secret.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Applies the whole status (of a KeeperSecret or a ClusterKeeperStore) with a minimal body.
pub(crate) async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    status: &impl Serialize,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &params(), &Patch::Apply(body)).await
}

/// The API server rejects Events whose note is longer (events.k8s.io/v1).
const NOTE_LIMIT: usize = 1024;
/// Events waiting to be published; when full, publishers wait (backpressure, never a drop).
const EVENT_QUEUE: usize = 1024;
/// Events published at once.
const EVENT_PUBLISHERS: usize = 4;

/// Publishes events.k8s.io/v1 Events in the background, as client-go's broadcaster does: a
/// reconcile only queues its event, so the API server's answer to it does not hold a reconcile
/// worker (one fewer round trip per first sync). Events are best effort: what they report has
/// already happened, so a failure is only logged, and any still queued at shutdown are lost.
///
/// Each event goes through a fresh kube [`Recorder`]: a long-lived one keeps every event it
/// published for six minutes, to turn repeats into series, and scans that cache under a write
/// lock on every publish. We publish only when Ready changes, so repeats are rare, yet that
/// cache was half the operator's heap at scale (17.7 of 35.6 MB at 2,000 KeeperSecrets).
#[derive(Clone)]
pub(crate) struct Events {
    queue: mpsc::Sender<(ObjectReference, Event)>,
}

impl Events {
    /// Starts the publisher, reporting as `reporter`. Needs a Tokio runtime.
    pub fn start(client: Client, reporter: Reporter) -> Self {
        let (queue, queued) = mpsc::channel(EVENT_QUEUE);
        let queued = futures::stream::unfold(queued, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        tokio::spawn(queued.for_each_concurrent(
            EVENT_PUBLISHERS,
            move |(regarding, event): (ObjectReference, Event)| {
                let recorder = Recorder::new(client.clone(), reporter.clone());
                async move {
                    if let Err(e) = recorder.publish(&event, &regarding).await {
                        warn!(error = %e, reason = event.reason, "could not publish event");
                    }
                }
            },
        ));
        Events { queue }
    }

    /// Queues an event on `regarding`; a note over the API's 1 kB limit is cut to fit.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        action: &str,
        reason: String,
        note: String,
    ) {
        let event = Event {
            type_,
            reason,
            note: Some(truncate(note, NOTE_LIMIT)),
            action: action.into(),
            secondary: None,
        };
        if self.queue.send((regarding.clone(), event)).await.is_err() {
            warn!("event publisher stopped; event not published");
        }
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    s.truncate(s.floor_char_boundary(max));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_to_the_limit_on_a_character_boundary() {
        assert_eq!(truncate("short".into(), NOTE_LIMIT), "short");
        let long = "é".repeat(NOTE_LIMIT); // two bytes each
        let cut = truncate(long, NOTE_LIMIT);
        assert_eq!(cut.len(), NOTE_LIMIT);
        // An odd limit falls inside a character: the cut moves back to its start.
        assert_eq!(truncate("éé".into(), 3), "é");
    }
}
