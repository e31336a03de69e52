//! Observe (API): the credential, and what the target Secret holds — read only when the
//! managed-Secret versions cannot vouch that it is still the version whose data was last
//! written or verified (values are never cached).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::Context;
use crate::api::{CreationPolicy, KeeperSecret};
use crate::controller::memo::{Learned, Recall, Vouched};
use crate::error::Error;
use crate::k8s::credentials::Credential;
use crate::keeper::KeeperSource;
use crate::sync::build::{Built, Write};
use crate::sync::desired::{self, FilledKeys, HashKey, Ownership, Provenance};

/// What a reconcile starts from: plain data, no API handle.
pub(super) struct Observed {
    pub cred: Arc<Credential>,
    pub hash_key: HashKey,
    pub target: Seen,
}

/// How the target Secret is known.
pub(super) enum Seen {
    /// The memo vouches for what it still holds (it was not read).
    Vouched(Vouched),
    /// Read from the API server (`None`: it does not exist).
    Read(Option<Box<Secret>>),
}

/// The target Secret as the write plan needs it.
pub(super) enum Existing {
    /// Vouched for holding exactly the desired data: nothing to read or write.
    Current,
    /// Vouched for holding other data in the same keys (a value changed in Keeper): it is
    /// written over without being read, as what it was created as.
    Unread(Provenance),
    /// As read from the API server (`None`: it does not exist), checked for ownership.
    Read(Option<Box<Secret>>),
}

/// Loads the credential of `ks` and learns what its target holds.
pub(super) async fn observe<S: KeeperSource>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    recall: &Recall,
    learned: &mut Learned,
) -> Result<Observed, Error> {
    let operator_namespace = ctx.settings.operator_namespace.as_deref();
    let cred = ctx
        .caches
        .credentials
        .load(&ctx.client, &ctx.keeper, ks, operator_namespace)
        .await?;
    let hash_key = cred.hash_key(ks.metadata.uid.as_deref().unwrap_or_default());
    let target = match ctx.caches.vouched_target(ks, recall, &cred.key) {
        Some(vouched) => Seen::Vouched(vouched),
        None => Seen::Read(
            read(ctx, ks, &cred, &hash_key, learned)
                .await?
                .map(Box::new),
        ),
    };
    Ok(Observed {
        cred,
        hash_key,
        target,
    })
}

/// The target as observed, or — when the memo vouched for other keys than `built` fills (the
/// write guard must see the values), or a deletion needs its metadata — read and checked now.
pub(super) async fn existing<S>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    seen: Observed,
    built: &Built,
    learned: &mut Learned,
) -> Result<Existing, Error> {
    match seen.target {
        Seen::Read(existing) => Ok(Existing::Read(existing)),
        Seen::Vouched(v) if matches!(&built.write, Write::Apply(d) if d.hash == v.hash) => {
            Ok(Existing::Current)
        }
        Seen::Vouched(v)
            if matches!(&built.write,
                Write::Apply(d) if FilledKeys::of(&d.secret) == v.shape.filled_keys) =>
        {
            Ok(Existing::Unread(v.shape.provenance))
        }
        Seen::Vouched(_) => {
            let existing = read(ctx, ks, &seen.cred, &seen.hash_key, learned).await?;
            check(ks, existing.as_ref())?;
            Ok(Existing::Read(existing.map(Box::new)))
        }
    }
}

/// PURE: refuses a target owned by someone else, or a missing one that Merge was meant to add
/// to.
pub(super) fn check(ks: &KeeperSecret, existing: Option<&Secret>) -> Result<(), Error> {
    let ownership = desired::ownership(ks, existing)?;
    if ownership == Ownership::Absent && ks.creation_policy() == CreationPolicy::Merge {
        return Err(Error::TargetNotFound {
            name: ks.target_name(),
        });
    }
    Ok(())
}

/// Reads the target Secret; when its data checks out against its own hash annotation, the
/// memo learns its version.
async fn read<S>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    cred: &Credential,
    hash_key: &HashKey,
    learned: &mut Learned,
) -> Result<Option<Secret>, Error> {
    let secrets =
        Api::<Secret>::namespaced(ctx.client.clone(), &ks.namespace().unwrap_or_default());
    let existing = secrets.get_opt(&ks.target_name()).await?;
    if let Some(secret) = &existing
        && let Some(hash) = desired::verified_hash(secret, hash_key)
    {
        learned.verified(ks, &cred.key, secret, hash);
    }
    Ok(existing)
}
