//! PURE: a ClusterKeeperStore's status, from what the operator already knows: whether its
//! credential parses, what the credential's shared fetcher last heard from Keeper, and which
//! KeeperSecrets name the store. No Keeper call is made for it.

use std::collections::BTreeSet;
use std::time::SystemTime;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    ClusterKeeperStore, ClusterKeeperStoreStatus, ConditionStatus, ConditionType, KeeperSecret,
    Reason, set_condition,
};

/// Most namespaces listed in status; the count of KeeperSecrets stays exact.
pub const MAX_NAMESPACES: usize = 100;

/// What loading the store's credential found.
pub enum StoreCredential {
    /// A KSM configuration, and what its fetcher knows (`None`: not used since the start).
    Parsed(Option<LastHeard>),
    /// A one-time token, redeemed when the first KeeperSecret uses the store.
    Token,
    /// Missing or unusable: the reason and message a KeeperSecret would get.
    Failed(Reason, String),
}

/// What a credential's shared fetcher last heard from Keeper, as plain data the Keeper side
/// fills in (so this module needs nothing of the fetcher).
#[derive(Debug, Clone, PartialEq)]
pub struct LastHeard {
    /// When Keeper last answered with data.
    pub fetched_at: Option<SystemTime>,
    /// The latest attempts' failure: its reason, its message, and since when they fail.
    pub failure: Option<(Reason, String, SystemTime)>,
    /// The latest answer was too large to persist as the last good copy: the limit it exceeded,
    /// in sealed bytes.
    pub too_large_to_seal: Option<usize>,
}

/// Which KeeperSecrets name a store.
#[derive(Debug, Default, PartialEq)]
pub struct Usage {
    /// How many name it.
    pub keeper_secrets: i32,
    /// How many of those it refuses (Ready reason NotAllowed).
    pub refused: i32,
    /// The namespaces of the others.
    pub namespaces: BTreeSet<String>,
}

/// The usage of store `name` among `all` KeeperSecrets.
pub fn usage<'a>(name: &str, all: impl IntoIterator<Item = &'a KeeperSecret>) -> Usage {
    let mut usage = Usage::default();
    for ks in all {
        if ks
            .spec
            .auth
            .store_ref
            .as_ref()
            .is_none_or(|r| r.name != name)
        {
            continue;
        }
        usage.keeper_secrets += 1;
        if ks
            .ready_condition()
            .is_some_and(|c| c.reason == Reason::NotAllowed.as_str())
        {
            usage.refused += 1;
        } else if let Some(ns) = &ks.metadata.namespace {
            usage.namespaces.insert(ns.clone());
        }
    }
    usage
}

/// The status of `store` as of `now`.
pub fn compute(
    store: &ClusterKeeperStore,
    credential: &StoreCredential,
    usage: Usage,
    now: Timestamp,
) -> ClusterKeeperStoreStatus {
    let time = |t: SystemTime| Timestamp::try_from(t).ok();
    let health = match credential {
        StoreCredential::Parsed(health) => health.as_ref(),
        _ => None,
    };
    let fetched_at = health.and_then(|h| h.fetched_at).and_then(time);
    let (status, reason, message) = match credential {
        StoreCredential::Failed(reason, message) => (ConditionStatus::False, *reason, message.clone()),
        StoreCredential::Token => (
            ConditionStatus::Unknown,
            Reason::TokenNotRedeemed,
            "The credential is a one-time token; the first KeeperSecret that uses the store redeems it".to_string(),
        ),
        StoreCredential::Parsed(None) => (
            ConditionStatus::Unknown,
            Reason::NotUsed,
            "The credential parses; no KeeperSecret has used the store since the operator started, so Keeper has not been asked".to_string(),
        ),
        StoreCredential::Parsed(Some(h)) => match &h.failure {
            Some((reason, error, since)) => (
                ConditionStatus::False,
                *reason,
                format!(
                    "Keeper failing since {}: {error}",
                    time(*since).map_or_else(|| "?".into(), |t| t.to_string())
                ),
            ),
            None => match fetched_at {
                // The time is in lastFetchTime; the message stays the same from one answer to
                // the next.
                Some(_) if let Some(limit) = h.too_large_to_seal => (
                    ConditionStatus::True,
                    Reason::KeeperAnswered,
                    format!(
                        "Keeper answered the latest request for this credential; the answer is too large to keep as the sealed last good copy (over {limit} bytes sealed), so a restart while Keeper is down would find an older copy or none"
                    ),
                ),
                Some(_) => (
                    ConditionStatus::True,
                    Reason::KeeperAnswered,
                    "Keeper answered the latest request for this credential".to_string(),
                ),
                None => (
                    ConditionStatus::Unknown,
                    Reason::NotUsed,
                    "Keeper has not answered for this credential yet".to_string(),
                ),
            },
        },
    };
    let generation = store.metadata.generation;
    let mut conditions = store.status.clone().unwrap_or_default().conditions;
    set_condition(
        &mut conditions,
        ConditionType::Ready,
        status,
        reason,
        &message,
        generation,
        now,
    );
    ClusterKeeperStoreStatus {
        observed_generation: generation,
        conditions,
        last_fetch_time: fetched_at.map(Time),
        keeper_secrets: Some(usage.keeper_secrets),
        refused_keeper_secrets: Some(usage.refused),
        namespaces: usage.namespaces.into_iter().take(MAX_NAMESPACES).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::{Auth, ClusterKeeperStoreSpec, SecretKeyRef, StoreRef};

    fn store() -> ClusterKeeperStore {
        let mut store = ClusterKeeperStore::new(
            "shared",
            ClusterKeeperStoreSpec {
                credentials_secret_ref: SecretKeyRef {
                    name: "ksm".into(),
                    key: "config".into(),
                },
                namespace_selector: None,
                namespaces: vec![],
                allowed_folders: vec![],
                allowed_records: vec![],
            },
        );
        store.metadata.generation = Some(3);
        store
    }

    fn borrower(ns: &str, store: &str, reason: Option<Reason>) -> KeeperSecret {
        let mut ks = crate::api::test_keeper_secret();
        ks.metadata.namespace = Some(ns.into());
        ks.spec.auth = Auth {
            secret_ref: None,
            store_ref: Some(StoreRef { name: store.into() }),
        };
        if let Some(reason) = reason {
            ks.status = Some(crate::sync::status::failed(&ks, t(0), reason, "m"));
        }
        ks
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn ready(status: &ClusterKeeperStoreStatus) -> (&str, &str) {
        let c = crate::api::conditions::find(&status.conditions, ConditionType::Ready).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn usage_counts_borrowers_and_refusals_of_this_store_only() {
        let all = [
            borrower("a", "shared", None),
            borrower("a", "shared", Some(Reason::RecordNotFound)),
            borrower("b", "shared", None),
            borrower("c", "shared", Some(Reason::NotAllowed)),
            borrower("d", "other", None),
            crate::api::test_keeper_secret(),
        ];
        let u = usage("shared", &all);
        assert_eq!((u.keeper_secrets, u.refused), (4, 1));
        assert_eq!(u.namespaces, ["a".to_string(), "b".into()].into());
    }

    #[test]
    fn ready_follows_the_credential_and_keepers_last_answer() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let answered = StoreCredential::Parsed(Some(LastHeard {
            fetched_at: Some(at),
            failure: None,
            too_large_to_seal: None,
        }));
        let s = compute(&store(), &answered, Usage::default(), t(5));
        assert_eq!(ready(&s), ("True", "KeeperAnswered"));
        assert_eq!(s.last_fetch_time, Some(Time(t(0))));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.conditions[0].observed_generation, Some(3));

        let too_large = StoreCredential::Parsed(Some(LastHeard {
            fetched_at: Some(at),
            failure: None,
            too_large_to_seal: Some(1 << 20),
        }));
        let s = compute(&store(), &too_large, Usage::default(), t(5));
        assert_eq!(ready(&s), ("True", "KeeperAnswered"));
        assert!(s.conditions[0].message.contains("too large"), "{s:?}");

        let down = StoreCredential::Parsed(Some(LastHeard {
            fetched_at: Some(at),
            failure: Some((Reason::KeeperUnavailable, "refused".into(), at)),
            too_large_to_seal: None,
        }));
        let s = compute(&store(), &down, Usage::default(), t(5));
        assert_eq!(ready(&s), ("False", "KeeperUnavailable"));
        assert_eq!(
            s.last_fetch_time,
            Some(Time(t(0))),
            "the last answer still shows"
        );

        let unused = compute(
            &store(),
            &StoreCredential::Parsed(None),
            Usage::default(),
            t(5),
        );
        assert_eq!(ready(&unused), ("Unknown", "NotUsed"));
        let token = compute(&store(), &StoreCredential::Token, Usage::default(), t(5));
        assert_eq!(ready(&token), ("Unknown", "TokenNotRedeemed"));
        let missing =
            StoreCredential::Failed(Reason::AuthFailed, "Secret ops/ksm does not exist".into());
        let s = compute(&store(), &missing, Usage::default(), t(5));
        assert_eq!(ready(&s), ("False", "AuthFailed"));
        assert_eq!(s.conditions[0].message, "Secret ops/ksm does not exist");
    }

    #[test]
    fn the_transition_time_moves_only_when_ready_flips() {
        let mut store = store();
        let failed = StoreCredential::Failed(Reason::AuthFailed, "m".into());
        store.status = Some(compute(&store, &failed, Usage::default(), t(0)));
        let again = compute(&store, &failed, Usage::default(), t(60));
        assert_eq!(again.conditions[0].last_transition_time, Time(t(0)));
        let unused = compute(
            &store,
            &StoreCredential::Parsed(None),
            Usage::default(),
            t(60),
        );
        assert_eq!(unused.conditions[0].last_transition_time, Time(t(60)));
    }

    #[test]
    fn namespaces_are_capped_but_counts_are_exact() {
        let all: Vec<KeeperSecret> = (0..150)
            .map(|i| borrower(&format!("ns-{i:03}"), "shared", None))
            .collect();
        let s = compute(
            &store(),
            &StoreCredential::Parsed(None),
            usage("shared", &all),
            t(0),
        );
        assert_eq!(s.namespaces.len(), MAX_NAMESPACES);
        assert_eq!(s.keeper_secrets, Some(150));
    }
}
