//! PURE: status and Ready-condition computation, and which transitions deserve an event.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::conditions::{self, Change};
use crate::api::{
    ConditionStatus, ConditionType, DeletionPolicy, KeeperSecret, KeeperSecretStatus, Reason,
    RecordRevision, set_condition,
};

use ConditionStatus::{False, True};

/// What a successful sync produced.
#[derive(Debug)]
pub struct Synced {
    /// Records read, with revisions.
    pub records: Vec<RecordRevision>,
    /// Keyed hash of the data written.
    pub data_hash: String,
    /// Number of keys written.
    pub keys: usize,
    /// Records (or folders) gone from Keeper whose keys the deletion policy removed.
    pub gone: Vec<String>,
    /// When Keeper returned the data.
    pub fetched_at: Timestamp,
    /// Set when Keeper failed and the data is the last good copy.
    pub stale: Option<Stale>,
}

/// Why the synced data is not fresh.
#[derive(Debug)]
pub struct Stale {
    /// Stable reason of the Keeper failure.
    pub reason: Reason,
    /// The failure, for humans.
    pub error: String,
    /// When Keeper started failing.
    pub since: Timestamp,
    /// Keeper is unreachable or answered unusably (`KsmError::is_outage`), rather than refusing
    /// the credential.
    pub outage: bool,
    /// How old the data may get while an outage keeps the KeeperSecret Ready.
    pub max_age: std::time::Duration,
}

impl Stale {
    /// Ready's status and reason while serving the last good copy: an outage keeps Ready=True
    /// until the data is older than `max_age`; a refusal (revoked or unknown client, rejected
    /// client version, ...) is Ready=False at once under its own reason. The data stays either way.
    fn ready(&self, fetched_at: Timestamp, now: Timestamp) -> (ConditionStatus, Reason) {
        let max_age =
            jiff::SignedDuration::try_from(self.max_age).unwrap_or(jiff::SignedDuration::MAX);
        if !self.outage {
            (False, self.reason)
        } else if now.duration_since(fetched_at) > max_age {
            (False, Reason::LastGoodCopyExpired)
        } else {
            (True, Reason::LastGoodCopy)
        }
    }
}

/// Ready's message when a deletion policy removed the keys of records gone from Keeper.
fn gone_message(ks: &KeeperSecret, s: &Synced, holds: String) -> String {
    const SHOWN: usize = 5;
    let mut gone: Vec<&str> = s.gone.iter().map(String::as_str).take(SHOWN).collect();
    if s.gone.len() > SHOWN {
        gone.push("...");
    }
    let policy = ks.deletion_policy();
    let done = if s.keys == 0 && policy == DeletionPolicy::Delete {
        format!("Secret {} was deleted", ks.target_name())
    } else {
        holds
    };
    format!(
        "{done}; not found in Keeper (deleted, or no longer shared), so their keys were removed (deletionPolicy {policy:?}): {}",
        gone.join(", ")
    )
}

/// Status after a successful sync. `lastSyncTime` is when Keeper returned the data, so while
/// Keeper is down it stays put and shows how old the Secret's data is.
pub fn synced(ks: &KeeperSecret, now: Timestamp, s: &Synced) -> KeeperSecretStatus {
    let secret = ks.target_name();
    let holds = format!(
        "Secret {secret} holds {} keys from {} Keeper records",
        s.keys,
        s.records.len()
    );
    let (ready, reason, message, stale) = match &s.stale {
        None if !s.gone.is_empty() => (
            True,
            Reason::RecordDeleted,
            gone_message(ks, s, holds),
            (False, Reason::Fresh, "The data is current".to_string()),
        ),
        None => (
            True,
            Reason::Synced,
            holds,
            (False, Reason::Fresh, "The data is current".to_string()),
        ),
        Some(st) => {
            let (ready, reason) = st.ready(s.fetched_at, now);
            (
                ready,
                reason,
                format!(
                    "{holds}, fetched at {}; Keeper failing since {} ({}), serving the last good copy",
                    s.fetched_at, st.since, st.reason
                ),
                (
                    True,
                    st.reason,
                    format!("Keeper failing since {}: {}", st.since, st.error),
                ),
            )
        }
    };
    let prev = ks.status.clone().unwrap_or_default();
    let generation = ks.metadata.generation;
    let conditions = with_conditions(
        &prev.conditions,
        generation,
        now,
        [
            (ConditionType::Ready, (ready, reason, message.as_str())),
            (ConditionType::Stale, (stale.0, stale.1, stale.2.as_str())),
            (
                ConditionType::Reconciling,
                (False, Reason::Synced, "This generation has synced"),
            ),
            (
                ConditionType::Stalled,
                (False, Reason::Synced, "Nothing blocks the sync"),
            ),
        ],
    );
    KeeperSecretStatus {
        observed_generation: generation,
        conditions,
        last_sync_time: Some(Time(s.fetched_at)),
        records: s.records.clone(),
        data_hash: Some(s.data_hash.clone()),
        secret_name: Some(secret),
        last_handled_reconcile_at: handled(ks, &prev),
    }
}

/// Status after a failure: the last sync's time, records and hash stay, because the Secret
/// still holds that data (the operator never wipes it on failure).
pub fn failed(
    ks: &KeeperSecret,
    now: Timestamp,
    reason: Reason,
    message: &str,
) -> KeeperSecretStatus {
    let prev = ks.status.clone().unwrap_or_default();
    let generation = ks.metadata.generation;
    // Once this generation has synced, a later failure is not "still reconciling": the Secret
    // holds this spec's data and Ready says what is wrong now.
    let synced_before =
        conditions::find(&prev.conditions, ConditionType::Reconciling).is_some_and(|c| {
            c.status == False.as_str()
                && c.reason == Reason::Synced.as_str()
                && c.observed_generation == generation
        });
    let (reconciling, stalled) = if reason.stalls() {
        ((False, reason, message), (True, reason, message))
    } else {
        let retrying = (False, Reason::Retrying, "The operator retries with backoff");
        if synced_before {
            (
                (False, Reason::Synced, "This generation has synced"),
                retrying,
            )
        } else {
            ((True, reason, message), retrying)
        }
    };
    let conditions = with_conditions(
        &prev.conditions,
        generation,
        now,
        [
            (ConditionType::Ready, (False, reason, message)),
            (ConditionType::Reconciling, reconciling),
            (ConditionType::Stalled, stalled),
        ],
    );
    KeeperSecretStatus {
        observed_generation: generation,
        conditions,
        last_handled_reconcile_at: handled(ks, &prev),
        ..prev
    }
}

/// `prev` with each of `wanted` set for `generation` (see [`set_condition`]).
fn with_conditions<const N: usize>(
    prev: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
    wanted: [(ConditionType, (ConditionStatus, Reason, &str)); N],
) -> Vec<Condition> {
    let mut conditions = prev.to_vec();
    for (type_, (status, reason, message)) in wanted {
        set_condition(
            &mut conditions,
            type_,
            status,
            reason,
            message,
            generation,
            now,
        );
    }
    conditions
}

/// The sync request this attempt answers (see [`crate::sync::refresh::sync_request`]), or the
/// one answered before when there is none now.
fn handled(ks: &KeeperSecret, prev: &KeeperSecretStatus) -> Option<String> {
    crate::sync::refresh::sync_request(ks).or_else(|| prev.last_handled_reconcile_at.clone())
}

/// Whether `new` is worth writing over `old`. A status that differs only by a `lastSyncTime`
/// less than `resolution` later is not: at short refresh intervals rewriting it every wave
/// would cost one write per KeeperSecret per interval for a timestamp nobody acts on (the
/// reconciler remembers the newer time itself).
pub fn worth_writing(
    old: Option<&KeeperSecretStatus>,
    new: &KeeperSecretStatus,
    resolution: std::time::Duration,
) -> bool {
    let Some(old) = old else {
        return true;
    };
    let (Some(before), Some(after)) = (&old.last_sync_time, &new.last_sync_time) else {
        return old != new;
    };
    let same_otherwise = KeeperSecretStatus {
        last_sync_time: Some(after.clone()),
        ..old.clone()
    } == *new;
    let moved = after.0.duration_since(before.0);
    !same_otherwise
        || moved < jiff::SignedDuration::ZERO
        || moved >= jiff::SignedDuration::try_from(resolution).unwrap_or(jiff::SignedDuration::MAX)
}

/// An event to publish.
#[derive(Debug, PartialEq, Eq)]
pub struct Transition {
    /// Warning (failure) or Normal (recovered / first sync).
    pub warning: bool,
    /// Stable reason (the condition reason, as written).
    pub reason: String,
    /// Human-readable note (the condition message).
    pub note: String,
}

/// An event is due only when Ready's status or reason changes (new failure kind, recovery,
/// first sync): see [`Change::deserves_event`].
pub fn transition(
    before: Option<&KeeperSecretStatus>,
    after: &KeeperSecretStatus,
) -> Option<Transition> {
    let new = conditions::find(&after.conditions, ConditionType::Ready)?;
    let old = before.and_then(|s| conditions::find(&s.conditions, ConditionType::Ready));
    if !Change::between(old, new).deserves_event() {
        return None;
    }
    Some(Transition {
        warning: new.status != True.as_str(),
        reason: new.reason.clone(),
        note: new.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;

    fn ks(generation: i64, status: Option<KeeperSecretStatus>) -> KeeperSecret {
        let mut ks = crate::api::test_keeper_secret();
        ks.metadata.generation = Some(generation);
        ks.status = status;
        ks
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn ok() -> Synced {
        Synced {
            records: vec![RecordRevision {
                uid: "u".into(),
                revision: 3,
            }],
            data_hash: "hmac-sha256:ab".into(),
            keys: 2,
            gone: vec![],
            fetched_at: t(0),
            stale: None,
        }
    }

    fn ready(s: &KeeperSecretStatus) -> &Condition {
        conditions::find(&s.conditions, ConditionType::Ready).unwrap()
    }

    #[test]
    fn removed_keys_of_deleted_records_are_named_and_ready() {
        let gone = Synced {
            gone: vec!["uid AAAA".into(), "title \"Old\"".into()],
            ..ok()
        };
        let mut ks = ks(1, None);
        ks.spec.target = Some(crate::api::TargetSecret {
            deletion_policy: Some(DeletionPolicy::Merge),
            ..Default::default()
        });
        let c = ready(&synced(&ks, t(0), &gone)).clone();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "RecordDeleted")
        );
        assert!(
            c.message.starts_with("Secret db holds 2 keys"),
            "{}",
            c.message
        );
        assert!(
            c.message
                .contains("(deletionPolicy Merge): uid AAAA, title \"Old\"")
        );
        ks.spec.target.as_mut().unwrap().deletion_policy = Some(DeletionPolicy::Delete);
        let deleted = Synced { keys: 0, ..gone };
        let c = ready(&synced(&ks, t(0), &deleted)).clone();
        assert!(
            c.message.starts_with("Secret db was deleted;"),
            "{}",
            c.message
        );
    }

    #[test]
    fn synced_sets_everything() {
        let s = synced(&ks(4, None), t(0), &ok());
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.last_sync_time, Some(Time(t(0))));
        assert_eq!(s.secret_name.as_deref(), Some("db"));
        assert_eq!(s.data_hash.as_deref(), Some("hmac-sha256:ab"));
        let c = ready(&s);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.observed_generation),
            ("True", "Synced", Some(4))
        );
        assert!(
            c.message
                .contains("Secret db holds 2 keys from 1 Keeper records")
        );
    }

    fn stale(reason: Reason, outage: bool) -> Synced {
        Synced {
            stale: Some(Stale {
                reason,
                error: "it failed".into(),
                since: t(10),
                outage,
                max_age: std::time::Duration::from_secs(3600),
            }),
            ..ok()
        }
    }

    fn conditions(s: &KeeperSecretStatus) -> Vec<(&str, &str, &str)> {
        s.conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect()
    }

    #[test]
    fn an_outage_keeps_ready_until_the_copy_is_too_old() {
        let s = synced(
            &ks(1, None),
            t(3600),
            &stale(Reason::KeeperUnavailable, true),
        );
        assert_eq!(
            conditions(&s)[..2],
            [
                ("Ready", "True", "LastGoodCopy"),
                ("Stale", "True", "KeeperUnavailable")
            ]
        );
        let s = synced(
            &ks(1, None),
            t(3601),
            &stale(Reason::KeeperUnavailable, true),
        );
        assert_eq!(
            conditions(&s)[..2],
            [
                ("Ready", "False", "LastGoodCopyExpired"),
                ("Stale", "True", "KeeperUnavailable")
            ]
        );
        assert_eq!(s.data_hash.as_deref(), Some("hmac-sha256:ab"), "data kept");
    }

    #[test]
    fn a_refused_credential_is_not_ready_even_with_a_fresh_copy() {
        let s = synced(&ks(1, None), t(20), &stale(Reason::AuthFailed, false));
        assert_eq!(
            conditions(&s)[..2],
            [
                ("Ready", "False", "AuthFailed"),
                ("Stale", "True", "AuthFailed")
            ]
        );
        assert!(ready(&s).message.contains("serving the last good copy"));
        let event = transition(None, &s).unwrap();
        assert!(event.warning);
        assert_eq!(event.reason, "AuthFailed");
    }

    /// The kstatus conditions Flux and `kstatus` read: InProgress (Reconciling=True) until the
    /// generation first syncs, Failed (Stalled=True) on what no retry fixes, Current after.
    #[test]
    fn reconciling_until_the_generation_syncs_and_stalled_on_what_no_retry_fixes() {
        let progress = |s: &KeeperSecretStatus| {
            let find = |t: &str| {
                let c = s.conditions.iter().find(|c| c.type_ == t).unwrap();
                (c.status.clone(), c.reason.clone(), c.observed_generation)
            };
            (find("Reconciling"), find("Stalled"))
        };
        let yes = |reason: &str, g| ("True".to_string(), reason.to_string(), Some(g));
        let no = |reason: &str, g| ("False".to_string(), reason.to_string(), Some(g));

        // A first attempt that fails on something a retry may fix: still reconciling.
        let missing = failed(
            &ks(1, None),
            t(0),
            Reason::RecordNotFound,
            "record x not found",
        );
        assert_eq!(
            progress(&missing),
            (yes("RecordNotFound", 1), no("Retrying", 1))
        );
        // What no retry fixes: stalled, not reconciling.
        for reason in [
            Reason::InvalidSpec,
            Reason::AmbiguousTitle,
            Reason::NotAllowed,
            Reason::SecretOwnedElsewhere,
        ] {
            assert!(reason.stalls(), "{reason}");
            let s = failed(&ks(1, None), t(0), reason, "m");
            let reason = reason.as_str();
            assert_eq!(progress(&s), (no(reason, 1), yes(reason, 1)), "{reason}");
        }
        // Synced: current, from a fresh or a last good copy.
        let done = synced(&ks(1, Some(missing)), t(5), &ok());
        assert_eq!(progress(&done), (no("Synced", 1), no("Synced", 1)));
        let stale_ok = synced(&ks(1, None), t(5), &stale(Reason::KeeperUnavailable, true));
        assert_eq!(progress(&stale_ok), (no("Synced", 1), no("Synced", 1)));
        // A later failure of the same generation does not turn it back to reconciling...
        let later = failed(
            &ks(1, Some(done.clone())),
            t(9),
            Reason::KubernetesError,
            "m",
        );
        assert_eq!(progress(&later), (no("Synced", 1), no("Retrying", 1)));
        // ...but a new generation reconciles until it syncs.
        let edited = failed(&ks(2, Some(done)), t(9), Reason::FieldNotFound, "m");
        assert_eq!(
            progress(&edited),
            (yes("FieldNotFound", 2), no("Retrying", 2))
        );
    }

    #[test]
    fn transition_time_moves_only_on_status_flip() {
        let first = synced(&ks(1, None), t(0), &ok());
        let again = synced(&ks(1, Some(first.clone())), t(60), &ok());
        assert_eq!(ready(&again).last_transition_time, Time(t(0)));
        let down = failed(
            &ks(1, Some(again.clone())),
            t(120),
            Reason::KeeperUnavailable,
            "Keeper is down",
        );
        assert_eq!(ready(&down).last_transition_time, Time(t(120)));
        let throttled = failed(
            &ks(1, Some(down.clone())),
            t(180),
            Reason::Throttled,
            "slow down",
        );
        assert_eq!(
            ready(&throttled).last_transition_time,
            Time(t(120)),
            "reason change is not a transition"
        );
    }

    #[test]
    fn failure_keeps_last_good_sync_details() {
        let good = synced(&ks(1, None), t(0), &ok());
        let bad = failed(
            &ks(2, Some(good.clone())),
            t(30),
            Reason::RecordNotFound,
            "record uid x not found",
        );
        assert_eq!(bad.last_sync_time, good.last_sync_time);
        assert_eq!(bad.records, good.records);
        assert_eq!(bad.data_hash, good.data_hash);
        assert_eq!(bad.observed_generation, Some(2));
        assert_eq!(ready(&bad).status, "False");
    }

    #[test]
    fn unchanged_outcome_yields_identical_status() {
        let first = failed(&ks(1, None), t(0), Reason::AuthFailed, "bad config");
        let second = failed(
            &ks(1, Some(first.clone())),
            t(90),
            Reason::AuthFailed,
            "bad config",
        );
        assert_eq!(first, second, "identical status means no write");
    }

    #[test]
    fn a_status_that_only_moves_last_sync_time_a_little_is_not_rewritten() {
        let min = std::time::Duration::from_secs(60);
        let at = |secs| Synced {
            fetched_at: t(secs),
            ..ok()
        };
        let first = synced(&ks(1, None), t(0), &at(0));
        assert!(worth_writing(None, &first, min));
        let soon = synced(&ks(1, Some(first.clone())), t(10), &at(10));
        assert!(!worth_writing(Some(&first), &soon, min));
        let later = synced(&ks(1, Some(first.clone())), t(60), &at(60));
        assert!(worth_writing(Some(&first), &later, min));
        let changed = synced(
            &ks(1, Some(first.clone())),
            t(10),
            &Synced {
                data_hash: "hmac-sha256:cd".into(),
                ..at(10)
            },
        );
        assert!(worth_writing(Some(&first), &changed, min));
        let respec = synced(&ks(2, Some(first.clone())), t(10), &at(10));
        assert!(worth_writing(Some(&first), &respec, min));
    }

    #[test]
    fn events_only_on_transitions() {
        let first = synced(&ks(1, None), t(0), &ok());
        assert_eq!(
            transition(None, &first),
            Some(Transition {
                warning: false,
                reason: "Synced".into(),
                note: ready(&first).message.clone()
            })
        );
        let again = synced(&ks(1, Some(first.clone())), t(60), &ok());
        assert_eq!(transition(Some(&first), &again), None);
        let down = failed(
            &ks(1, Some(again.clone())),
            t(90),
            Reason::KeeperUnavailable,
            "down",
        );
        assert!(transition(Some(&again), &down).unwrap().warning);
        let still = failed(
            &ks(1, Some(down.clone())),
            t(95),
            Reason::KeeperUnavailable,
            "down",
        );
        assert_eq!(transition(Some(&down), &still), None);
        let other = failed(
            &ks(1, Some(still.clone())),
            t(99),
            Reason::Throttled,
            "slow",
        );
        assert_eq!(
            transition(Some(&still), &other).unwrap().reason,
            "Throttled"
        );
        let back = synced(&ks(1, Some(other.clone())), t(120), &ok());
        let ev = transition(Some(&other), &back).unwrap();
        assert!(!ev.warning);
        assert_eq!(ev.reason, "Synced");
    }
}
