//! Decide (pure): whether a sync is due and how fresh its data must be, and — after each
//! build — whether to write, wait, hold, or read Keeper once more.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;

use super::fetch::Fetched;
use super::observe::{self, Observed, Seen};
use crate::api::KeeperSecret;
use crate::controller::memo::{Recall, Sighted};
use crate::error::Error;
use crate::keeper::fetcher::Origin;
use crate::sync::build::Built;
use crate::sync::hold::{self, Sighting};
use crate::sync::refresh::{self, Decision, OnMiss, REFETCH_FLOOR, Target, Why};

/// A sync that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Due {
    pub why: Why,
    /// How old the shared data may be.
    pub max_age: Duration,
}

/// Whether a sync starts now.
#[derive(Debug)]
pub(super) enum Start {
    Sync(Due),
    /// Nothing is due for this long.
    Wait(Duration),
    /// A due refresh waits for the backlog, this long at most (woken when it drains).
    Defer(Duration),
}

/// Whether `ks`, as observed, is due for a sync as of `now`; an error when its target is
/// refused (owned by someone else, or missing under Merge).
pub(super) fn due(
    ks: &KeeperSecret,
    seen: &Observed,
    recall: &Recall,
    backlog: usize,
    now: Timestamp,
    interval: Duration,
) -> Result<Start, Error> {
    let target = match &seen.target {
        Seen::Vouched(vouched) => Target::Present(Some(&vouched.hash)),
        Seen::Read(existing) => Target::of(existing.as_deref(), &seen.hash_key),
    };
    let why = match refresh::due(ks, target, recall.synced_at, backlog, now, interval) {
        Decision::Wait(after) => return Ok(Start::Wait(after)),
        Decision::Defer(at_most) => return Ok(Start::Defer(at_most)),
        Decision::Sync(why) => why,
    };
    if let Seen::Read(existing) = &seen.target {
        observe::check(ks, existing.as_deref())?;
    }
    let max_age = refresh::max_age(why, ks, recall.requested_at, interval, now);
    Ok(Start::Sync(Due { why, max_age }))
}

/// Why Keeper is read again within one sync; each reason at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refetch {
    /// A record or field the spec names is missing from the shared data.
    Miss,
    /// Records a deletion policy leaves out may be new rather than deleted.
    Gone,
    /// Deletions need a second clean, fresh answer.
    SecondAnswer,
}

/// The refetches a sync has made.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tried {
    miss: bool,
    gone: bool,
    second_answer: bool,
}

impl Tried {
    pub fn insert(&mut self, why: Refetch) {
        match why {
            Refetch::Miss => self.miss = true,
            Refetch::Gone => self.gone = true,
            Refetch::SecondAnswer => self.second_answer = true,
        }
    }
}

/// What to do with a build.
#[derive(Debug)]
pub(super) enum Next {
    /// Write what was built (or fail with the build's error).
    Done,
    /// Come back after this long: the data is too young to read Keeper again for a miss.
    Wait(Duration),
    /// Read Keeper again for data at most this old, and build again from it.
    Refetch(Duration, Refetch),
    /// Write nothing: deletions are held back.
    Hold(Error),
}

/// A step, and what the memo learns from the build.
#[derive(Debug)]
pub(super) struct Verdict {
    pub step: Next,
    pub sighted: Sighted,
    /// The current generation missed a record for the first time.
    pub first_miss: bool,
}

impl From<Next> for Verdict {
    fn from(step: Next) -> Self {
        Verdict {
            step,
            sighted: Sighted::Unchanged,
            first_miss: false,
        }
    }
}

/// Decides what follows a build from `fetched`, given the refetches already `tried`, the
/// `previous` sighting of gone records and when this generation first `missed_at` a record.
pub(super) fn after_build(
    ks: &KeeperSecret,
    built: &Result<Built, Error>,
    fetched: &Fetched,
    tried: Tried,
    previous: Option<&Sighting>,
    missed_at: Option<Timestamp>,
    now: Timestamp,
) -> Verdict {
    let fresh = fetched.stale.is_none();
    let fetched_at = Timestamp::try_from(fetched.snapshot.fetched_at).unwrap_or(now);
    let built = match built {
        Err(e) if fresh && !tried.miss && e.reason().is_missing_reference() => {
            let step = match refresh::on_miss(ks, fetched_at, Some(missed_at.unwrap_or(now)), now) {
                OnMiss::Fail => Next::Done,
                OnMiss::Wait(after) => Next::Wait(after),
                OnMiss::Refetch(max_age) => Next::Refetch(max_age, Refetch::Miss),
            };
            // Remembered only while it may still be a new record (a generation that synced
            // before fails at once, and has nothing to remember).
            let first_miss = missed_at.is_none() && !matches!(step, Next::Done);
            return Verdict {
                step,
                sighted: Sighted::Unchanged,
                first_miss,
            };
        }
        Err(_) => return Next::Done.into(),
        Ok(built) => built,
    };
    if fresh
        && !tried.gone
        && !built.gone.is_empty()
        && let OnMiss::Refetch(max_age) = refresh::on_miss(ks, fetched_at, None, now)
    {
        return Next::Refetch(max_age, Refetch::Gone).into();
    }
    // Deletions follow only records absent from two clean, fresh answers.
    let source = if fresh && fetched.snapshot.origin == Origin::Keeper {
        hold::Source::Fresh
    } else {
        hold::Source::LastGood
    };
    let clean = fetched.snapshot.vault.skipped.is_empty();
    let held = |why| {
        Next::Hold(Error::DeletionHeld {
            why,
            gone: list(&built.gone),
        })
    };
    match hold::deletion(
        &built.gone,
        source,
        clean,
        fetched.snapshot.fetched_at,
        previous,
    ) {
        hold::Deletion::NothingGone => Verdict {
            step: Next::Done,
            sighted: match previous {
                Some(_) => Sighted::Forget,
                None => Sighted::Unchanged,
            },
            first_miss: false,
        },
        hold::Deletion::Confirmed => Next::Done.into(),
        hold::Deletion::Held(why @ hold::HoldReason::AwaitingSecondAnswer, sighting) => Verdict {
            // One more answer is read at once when the shared data is old enough.
            step: match tried.second_answer {
                false => Next::Refetch(REFETCH_FLOOR, Refetch::SecondAnswer),
                true => held(why),
            },
            sighted: sighting.map_or(Sighted::Forget, Sighted::First),
            first_miss: false,
        },
        hold::Deletion::Held(why, _) => held(why).into(),
    }
}

/// At most five names, comma-separated.
pub(super) fn list(names: &BTreeSet<String>) -> String {
    const SHOWN: usize = 5;
    let mut shown: Vec<&str> = names.iter().map(String::as_str).take(SHOWN).collect();
    if names.len() > SHOWN {
        shown.push("...");
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::keeper::fetcher::Snapshot;
    use crate::ksm::record::Vault;
    use crate::sync::build::Write;
    use crate::sync::mapping::MappingError;

    const NOW: i64 = 1_800_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    /// A fresh answer from Keeper, `age` seconds old.
    fn fresh(age: i64) -> Fetched {
        Fetched {
            snapshot: Arc::new(Snapshot {
                vault: Vault::default(),
                fetched_at: SystemTime::from(at(NOW - age)),
                origin: Origin::Keeper,
            }),
            stale: None,
        }
    }

    /// A build that would delete the target because `gone` left Keeper.
    fn deleting(gone: &[&str]) -> Result<Built, Error> {
        Ok(Built {
            write: Write::Delete { hash: "h".into() },
            records: BTreeSet::new(),
            keys: 0,
            gone: gone.iter().map(|g| g.to_string()).collect(),
        })
    }

    /// A KeeperSecret whose current generation has not synced yet.
    fn new_generation() -> KeeperSecret {
        let mut ks = crate::api::test_keeper_secret();
        ks.metadata.generation = Some(2);
        ks
    }

    #[test]
    fn a_miss_on_young_data_waits_for_the_floor_and_is_remembered_once() {
        let missing: Result<Built, Error> = Err(MappingError::RecordNotFound("x".into()).into());
        let ks = new_generation();
        let v = after_build(
            &ks,
            &missing,
            &fresh(4),
            Tried::default(),
            None,
            None,
            at(NOW),
        );
        assert!(matches!(v.step, Next::Wait(after) if after == Duration::from_secs(6)));
        assert!(v.first_miss);
        // On old enough data, Keeper is read again; a later miss keeps the first one's time.
        let v = after_build(
            &ks,
            &missing,
            &fresh(30),
            Tried::default(),
            None,
            Some(at(NOW - 5)),
            at(NOW),
        );
        assert!(matches!(v.step, Next::Refetch(_, Refetch::Miss)));
        assert!(!v.first_miss);
        // A generation that synced before fails at once, and remembers nothing.
        let mut synced = ks.clone();
        synced.status = Some(crate::api::KeeperSecretStatus {
            observed_generation: Some(2),
            ..Default::default()
        });
        let v = after_build(
            &synced,
            &missing,
            &fresh(30),
            Tried::default(),
            None,
            None,
            at(NOW),
        );
        assert!(matches!(v.step, Next::Done) && !v.first_miss);
        // Once read again, the miss is the build's error.
        let mut tried = Tried::default();
        tried.insert(Refetch::Miss);
        let v = after_build(
            &ks,
            &missing,
            &fresh(0),
            tried,
            None,
            Some(at(NOW - 5)),
            at(NOW),
        );
        assert!(matches!(v.step, Next::Done));
    }

    #[test]
    fn a_deletion_needs_a_second_fresh_answer_read_at_most_once() {
        let ks = crate::api::test_keeper_secret();
        let mut tried = Tried::default();
        tried.insert(Refetch::Gone);
        let first = after_build(
            &ks,
            &deleting(&["db"]),
            &fresh(0),
            tried,
            None,
            None,
            at(NOW),
        );
        assert!(matches!(
            first.step,
            Next::Refetch(REFETCH_FLOOR, Refetch::SecondAnswer)
        ));
        let Sighted::First(sighting) = first.sighted else {
            panic!("the first sighting is remembered: {first:?}");
        };
        // No newer answer came: hold, keeping the sighting.
        tried.insert(Refetch::SecondAnswer);
        let again = after_build(
            &ks,
            &deleting(&["db"]),
            &fresh(0),
            tried,
            Some(&sighting),
            None,
            at(NOW),
        );
        assert!(matches!(again.step, Next::Hold(Error::DeletionHeld { .. })));
        // A later answer that lacks it too confirms the deletion.
        let later = Sighting {
            fetched_at: SystemTime::from(at(NOW - 60)),
            ..sighting
        };
        let confirmed = after_build(
            &ks,
            &deleting(&["db"]),
            &fresh(0),
            tried,
            Some(&later),
            None,
            at(NOW),
        );
        assert!(matches!(confirmed.step, Next::Done));
        // Nothing gone any more: the sighting is forgotten.
        let back = after_build(
            &ks,
            &deleting(&[]),
            &fresh(0),
            tried,
            Some(&later),
            None,
            at(NOW),
        );
        assert!(matches!(
            (back.step, back.sighted),
            (Next::Done, Sighted::Forget)
        ));
    }

    #[test]
    fn the_last_good_copy_never_deletes() {
        let ks = crate::api::test_keeper_secret();
        let mut stale = fresh(0);
        stale.snapshot = Arc::new(Snapshot {
            vault: Vault::default(),
            fetched_at: SystemTime::from(at(NOW)),
            origin: Origin::Store,
        });
        let v = after_build(
            &ks,
            &deleting(&["db"]),
            &stale,
            Tried::default(),
            None,
            None,
            at(NOW),
        );
        assert!(matches!(
            v.step,
            Next::Hold(Error::DeletionHeld {
                why: hold::HoldReason::NotFresh,
                ..
            })
        ));
        assert!(matches!(v.sighted, Sighted::Unchanged));
    }
}
