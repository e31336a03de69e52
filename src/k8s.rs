//! The few Kubernetes writes the controller makes: server-side apply of the Secret and of the
//! KeeperSecret status, always forced under the one field manager, and best-effort events.

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource};
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

/// Publishes an event on `regarding`. Best effort: what it reports has already happened, so a
/// failure is only logged.
pub async fn publish_event(
    recorder: &Recorder,
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
    if let Err(e) = recorder.publish(&event, regarding).await {
        warn!(error = %e, "could not publish event");
    }
}
