//! Apply (API): carries out a write plan, then schedules the rollout restarts it calls for.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::Context;
use super::plan::Plan;
use crate::api::KeeperSecret;
use crate::controller::memo::Learned;
use crate::error::Error;
use crate::k8s;
use crate::keeper::CredentialKey;
use crate::sync::desired::TargetRefusal;

/// Applies `plan` for `ks` (whose Secret's hash is keyed by `credential`); what it did, for
/// the log, or `None` when it wrote nothing.
pub(super) async fn apply<S>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    plan: Plan,
    credential: &CredentialKey,
    interval: Duration,
    learned: &mut Learned,
) -> Result<Option<&'static str>, Error> {
    let secrets =
        Api::<Secret>::namespaced(ctx.client.clone(), &ks.namespace().unwrap_or_default());
    let (secret, existing, hash, written, did) = match plan {
        Plan::Skip => return Ok(None),
        Plan::Refuse(e) => return Err(e),
        Plan::Delete(existing) => {
            let deleted = k8s::delete_secret(&secrets, &existing).await?;
            return Ok(
                deleted.then_some("deleted Secret: every record it maps is gone from Keeper")
            );
        }
        Plan::Adopt {
            secret,
            existing,
            hash,
        } => {
            let written = k8s::replace_secret(&secrets, &existing, &secret).await?;
            (
                secret,
                Some(existing),
                hash,
                written,
                "wrote Secret, adopting the one it found",
            )
        }
        Plan::Rewrite { secret, hash } => {
            let written = k8s::apply_secret(&secrets, &secret).await?;
            (secret, None, hash, written, "wrote Secret")
        }
        Plan::Apply {
            secret,
            existing: Some(existing),
            hash,
        } => {
            let written = k8s::apply_secret(&secrets, &secret).await?;
            (secret, Some(existing), hash, written, "wrote Secret")
        }
        Plan::Apply {
            secret,
            existing: None,
            hash,
        } => match k8s::create_secret(&secrets, &secret).await? {
            k8s::Created::Created(written) => (secret, None, hash, *written, "wrote Secret"),
            k8s::Created::Raced => {
                let name = ks.target_name();
                return Err(TargetRefusal::Appeared { name }.into());
            }
        },
    };
    learned.verified(ks, credential, &written, &hash);
    ctx.rollouts
        .after_write(ks, interval, existing.as_deref(), &secret, &hash);
    Ok(Some(did))
}
