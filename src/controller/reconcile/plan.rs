//! Plan (pure): what to do to the target Secret, from what was built and what it holds.

use k8s_openapi::api::core::v1::Secret;

use super::decide::list;
use super::observe::Existing;
use crate::api::KeeperSecret;
use crate::error::Error;
use crate::sync::build::{Built, Write};
use crate::sync::desired::{self, Ownership};
use crate::sync::{hold, write_guard};

/// What apply does.
#[derive(Debug)]
pub(super) enum Plan {
    /// The target already holds the desired data.
    Skip,
    /// Write `secret` over the target the memo vouches for, which was not read.
    Rewrite { secret: Box<Secret>, hash: String },
    /// Write `secret` (create it when there is no `existing` Secret).
    Apply {
        secret: Box<Secret>,
        existing: Option<Box<Secret>>,
        hash: String,
    },
    /// Replace an unmanaged Secret whole (`adoptionPolicy: Adopt`).
    Adopt {
        secret: Box<Secret>,
        existing: Box<Secret>,
        hash: String,
    },
    /// Delete the target, which the operator created for this KeeperSecret.
    Delete(Box<Secret>),
    /// Write nothing, for this reason.
    Refuse(Error),
}

/// Plans the write of `built` over the target as it `existing`s. Only a Secret created here
/// (now, or before for this KeeperSecret) gets the created-for marker and an owner reference,
/// and only such a Secret is ever deleted; an unmanaged one is adopted whole or refused with
/// the keys it would touch; the write guard has the last word.
pub(super) fn plan(ks: &KeeperSecret, built: &Built, existing: Existing) -> Plan {
    let (desired, existing) = match (&built.write, existing) {
        (_, Existing::Current) => return Plan::Skip,
        (Write::Apply(desired), Existing::Unread(provenance)) => {
            let mut secret = desired.secret.clone();
            desired::mark(ks, provenance, &mut secret);
            return Plan::Rewrite {
                secret: Box::new(secret),
                hash: desired.hash.clone(),
            };
        }
        (Write::Apply(desired), Existing::Read(existing)) => (desired, existing),
        (Write::Delete { .. }, Existing::Read(existing)) => return delete(ks, existing, built),
        // Observe reads the target before a deletion: a vouched-for one is never deleted unread.
        (Write::Delete { .. }, Existing::Unread(_)) => return Plan::Skip,
    };
    let mut secret = desired.secret.clone();
    desired::mark(
        ks,
        desired::provenance(ks, existing.as_deref()),
        &mut secret,
    );
    let unmanaged = existing
        .as_deref()
        .is_some_and(|e| desired::ownership(ks, Some(e)) == Ok(Ownership::Unmanaged));
    if unmanaged {
        if let Some(e) = &existing
            && let Err(refused) = desired::adoption(ks, e, &secret)
        {
            return Plan::Refuse(refused.into());
        }
    } else if existing
        .as_deref()
        .is_some_and(|e| desired::is_up_to_date(e, &secret))
    {
        return Plan::Skip;
    }
    if let Err(refused) = write_guard::check(ks, existing.as_deref(), &secret, &built.records) {
        return Plan::Refuse(refused.into());
    }
    let (secret, hash) = (Box::new(secret), desired.hash.clone());
    match existing {
        Some(existing) if unmanaged => Plan::Adopt {
            secret,
            existing,
            hash,
        },
        existing => Plan::Apply {
            secret,
            existing,
            hash,
        },
    }
}

/// Deletes only a Secret the operator created for `ks`; any other is kept whole.
fn delete(ks: &KeeperSecret, existing: Option<Box<Secret>>, built: &Built) -> Plan {
    let Some(existing) = existing else {
        return Plan::Skip;
    };
    if desired::ownership(ks, Some(&existing)) != Ok(Ownership::Ours)
        || !desired::created_for(ks, &existing)
    {
        return Plan::Refuse(Error::DeletionHeld {
            why: hold::HoldReason::NotCreatedHere,
            gone: list(&built.gone),
        });
    }
    Plan::Delete(existing)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use kube::api::ObjectMeta;

    use super::*;

    fn deletion() -> Built {
        Built {
            write: Write::Delete { hash: "h".into() },
            records: BTreeSet::new(),
            keys: 0,
            gone: ["db".to_string()].into(),
        }
    }

    #[test]
    fn only_a_secret_created_here_is_deleted() {
        let ks = crate::api::test_keeper_secret();
        assert!(matches!(
            plan(&ks, &deletion(), Existing::Read(None)),
            Plan::Skip
        ));
        let theirs = Secret {
            metadata: ObjectMeta {
                name: Some("db".into()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        assert!(matches!(
            plan(&ks, &deletion(), Existing::Read(Some(Box::new(theirs)))),
            Plan::Refuse(Error::DeletionHeld {
                why: hold::HoldReason::NotCreatedHere,
                ..
            })
        ));
        assert!(matches!(
            plan(&ks, &deletion(), Existing::Current),
            Plan::Skip
        ));
    }
}
