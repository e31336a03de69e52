//! The few Kubernetes writes the controller makes: server-side apply of the Secret and of the
//! KeeperSecret status, always forced under the one field manager, and best-effort events.

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use tracing::warn;

use crate::crd::{FIELD_MANAGER, KeeperSecret, KeeperSecretStatus};

fn params() -> PatchParams {
    // Controllers own their fields outright; forcing resolves conflicts with hand edits.
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies the full desired Secret (`data`, not `stringData`, which does not work with SSA).
pub async fn apply_secret(api: &Api<Secret>, secret: &Secret) -> Result<Secret, kube::Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    api.patch(&name, &params(), &Patch::Apply(secret)).await
}

/// Applies the whole status with a minimal body.
pub async fn apply_status(
    api: &Api<KeeperSecret>,
    name: &str,
    status: &KeeperSecretStatus,
) -> Result<KeeperSecret, kube::Error> {
    let body = serde_json::json!({
        "apiVersion": KeeperSecret::api_version(&()),
        "kind": KeeperSecret::kind(&()),
        "status": status,
    });
    api.patch_status(name, &params(), &Patch::Apply(body)).await
}

/// Publishes events.k8s.io/v1 Events through kube's [`Recorder`], with a fresh one per event.
///
/// A long-lived `Recorder` keeps every event it published for six minutes, to turn repeats into
/// series, and scans that cache under a write lock on every publish. We publish only when Ready
/// changes, so repeats are rare, yet that cache was half the operator's heap at scale (17.7 of
/// 35.6 MB at 2,000 KeeperSecrets, ~2 KB per event, more during an outage's two transitions).
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
}

impl Events {
    /// A publisher reporting as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Events { client, reporter }
    }

    /// Publishes an event on `regarding`. Best effort: what it reports has already happened, so
    /// a failure is only logged.
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
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, regarding).await {
            warn!(error = %e, "could not publish event");
        }
    }
}
