//! Typed status conditions: the types the operator writes, their statuses, and a setter that
//! says what it changed, so callers decide on events from the change rather than from strings.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::reason::Reason;

/// A condition type the operator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// Whether the Secret holds what the spec asks for (KeeperSecret), or the store's
    /// credential works (ClusterKeeperStore).
    Ready,
    /// True while the data is served from the last good copy.
    Stale,
    /// kstatus (Flux, `kstatus`): True until the current generation has synced once.
    Reconciling,
    /// kstatus: True when no retry can succeed until someone changes something.
    Stalled,
}

impl ConditionType {
    const ALL: [ConditionType; 4] = [
        ConditionType::Ready,
        ConditionType::Stale,
        ConditionType::Reconciling,
        ConditionType::Stalled,
    ];

    /// The type as written to the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Stale => "Stale",
            ConditionType::Reconciling => "Reconciling",
            ConditionType::Stalled => "Stalled",
        }
    }

    /// The type of a condition read from the API; `None` for one the operator does not write.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    /// The status as written to the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// What setting a condition changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Nothing.
    Unchanged,
    /// Only the message or the observed generation.
    Updated,
    /// Same status, another reason: a new kind of failure, worth an event.
    Reasoned,
    /// The status flipped, or the condition is new: `lastTransitionTime` moves.
    Transitioned,
}

impl Change {
    /// What replacing `old` (if any) with `new` changes.
    pub fn between(old: Option<&Condition>, new: &Condition) -> Change {
        match old {
            None => Change::Transitioned,
            Some(o) if o.status != new.status => Change::Transitioned,
            Some(o) if o.reason != new.reason => Change::Reasoned,
            Some(o)
                if o.message != new.message || o.observed_generation != new.observed_generation =>
            {
                Change::Updated
            }
            Some(_) => Change::Unchanged,
        }
    }

    /// Whether the change is one people should hear about (an event): a new status or reason,
    /// never a repeat, so a flapping Keeper does not flood the namespace.
    pub fn deserves_event(self) -> bool {
        self >= Change::Reasoned
    }
}

/// The condition of type `type_`, if any.
pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether the condition of type `type_` is there with `status`.
pub fn has(conditions: &[Condition], type_: ConditionType, status: ConditionStatus) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == status.as_str())
}

/// Sets one condition; `lastTransitionTime` only moves when its status flips. Ready stays first
/// in the list, the one set goes last (the callers set them in a fixed order).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: ConditionStatus,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Change {
    let at = conditions.iter().position(|c| c.type_ == type_.as_str());
    let old = at.map(|i| conditions.remove(i));
    let mut new = Condition {
        type_: type_.as_str().to_string(),
        status: status.as_str().to_string(),
        reason: reason.as_str().to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: Time(now),
    };
    let change = Change::between(old.as_ref(), &new);
    if let Some(old) = old.filter(|_| change != Change::Transitioned) {
        new.last_transition_time = old.last_transition_time;
    }
    if type_ == ConditionType::Ready {
        conditions.insert(0, new);
    } else {
        conditions.push(new);
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn the_change_says_what_moved_and_only_a_flip_moves_the_transition_time() {
        let mut conditions = vec![];
        let mut set = |status, reason, message, at| {
            let change = set_condition(
                &mut conditions,
                ConditionType::Stale,
                status,
                reason,
                message,
                Some(1),
                t(at),
            );
            (change, conditions[0].last_transition_time.clone())
        };
        use ConditionStatus::{False, True};
        let fresh = "The data is current";
        assert_eq!(
            set(False, Reason::Fresh, fresh, 0),
            (Change::Transitioned, Time(t(0)))
        );
        assert_eq!(
            set(False, Reason::Fresh, fresh, 5),
            (Change::Unchanged, Time(t(0)))
        );
        assert_eq!(
            set(False, Reason::Fresh, "other", 6),
            (Change::Updated, Time(t(0)))
        );
        assert_eq!(
            set(False, Reason::Synced, "other", 7),
            (Change::Reasoned, Time(t(0)))
        );
        assert_eq!(
            set(True, Reason::KeeperUnavailable, "down", 9),
            (Change::Transitioned, Time(t(9)))
        );
        assert!(!Change::Updated.deserves_event());
        assert!(Change::Reasoned.deserves_event());
    }

    #[test]
    fn ready_stays_first() {
        let mut conditions = vec![];
        for type_ in [ConditionType::Stale, ConditionType::Ready] {
            set_condition(
                &mut conditions,
                type_,
                ConditionStatus::True,
                Reason::Synced,
                "m",
                None,
                t(0),
            );
        }
        assert_eq!(conditions[0].type_, "Ready");
        assert_eq!(
            ConditionType::parse("Stalled"),
            Some(ConditionType::Stalled)
        );
        assert_eq!(ConditionType::parse("Other"), None);
    }
}
