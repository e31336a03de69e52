//! PURE: when Keeper's answer may not change the Secret although a sync has data for it.
//!
//! - **A refused credential stops writes.** When Keeper refuses the credential (revoked device,
//!   `access_denied`, rejected client version: anything but an outage, see [`Refusable`]),
//!   the Secrets keep what they hold, but nothing is created or
//!   re-created from the last good copy: that copy is data the credential may no longer read.
//! - **Deletions follow only a clean, fresh answer.** deletionPolicy Delete and Merge remove
//!   keys, or the Secret, only for records absent from two distinct answers fetched from Keeper
//!   (never the last good copy, never a copy restored from the sealed store) in which every
//!   entry decrypted: a record that does not decrypt, a glitch or a stale copy is never taken for
//!   a deletion.

use std::collections::BTreeSet;
use std::time::SystemTime;

/// A failure to read Keeper, as far as holding writes is concerned; the Keeper side says which
/// of its failures are refusals, so this module needs none of its types.
pub trait Refusable {
    /// Keeper refused the credential: not an outage, nor a problem on the operator's side.
    fn is_refusal(&self) -> bool;
}

/// Keeper refused the credential (not an outage): the error to report, if so. `stale` is the
/// failure a last good copy was served for; `latest` the credential's latest failure (a copy
/// served as fresh may predate a refusal that came since).
pub fn refusal<'a, E: Refusable>(stale: Option<&'a E>, latest: Option<&'a E>) -> Option<&'a E> {
    stale.or(latest).filter(|e| e.is_refusal())
}

/// Records found absent in one answer of Keeper, and when Keeper gave that answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// When Keeper returned the answer.
    pub fetched_at: SystemTime,
    /// What the deletion policy would remove (records or folders, by name).
    pub gone: BTreeSet<String>,
}

/// Where the answer a sync built from came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Fetched from Keeper within the refresh interval.
    Fresh,
    /// The last good copy, served because Keeper fails (in memory or restored from the sealed
    /// store).
    LastGood,
}

/// Why a deletion is held back; the Secret keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// The answer is the last good copy, not a fresh one.
    NotFresh,
    /// Something in the answer did not decrypt: a missing record may be one of those.
    Undecryptable,
    /// Absent from one fresh answer; the next one must agree.
    AwaitingSecondAnswer,
    /// Every record is gone, but the operator did not create the Secret for this KeeperSecret
    /// (it adopted it, or an earlier version wrote it): it is never deleted.
    NotCreatedHere,
}

impl HoldReason {
    /// What the status says, after the list of records.
    pub fn explain(self) -> &'static str {
        match self {
            HoldReason::NotFresh => {
                "the data is the last good copy, not a fresh answer from Keeper; deletions wait for Keeper to answer"
            }
            HoldReason::Undecryptable => {
                "Keeper's answer held entries that did not decrypt, so absence proves nothing; deletions wait for an answer in which everything decrypts"
            }
            HoldReason::AwaitingSecondAnswer => {
                "absent from one answer of Keeper; deletions wait until the next answer agrees"
            }
            HoldReason::NotCreatedHere => {
                "the operator did not create this Secret for this KeeperSecret (no keeper-operator.dev/created-for annotation with its UID), so it never deletes it; delete it by hand if it should go"
            }
        }
    }
}

/// What a sync may do about records its deletion policy would remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// No record is gone: any earlier sighting is forgotten.
    NothingGone,
    /// Gone in two distinct fresh, clean answers: the deletion policy applies.
    Confirmed,
    /// Keep the Secret as it is; remember `Some` sighting (the first fresh, clean answer).
    Held(HoldReason, Option<Sighting>),
}

/// Decides whether the records in `gone`, absent from an answer from `source` fetched at
/// `fetched_at` in which `clean` (everything decrypted), may be deleted, given the earlier
/// `previous` sighting.
pub fn deletion(
    gone: &BTreeSet<String>,
    source: Source,
    clean: bool,
    fetched_at: SystemTime,
    previous: Option<&Sighting>,
) -> Deletion {
    if gone.is_empty() {
        return Deletion::NothingGone;
    }
    if source != Source::Fresh {
        return Deletion::Held(HoldReason::NotFresh, None);
    }
    if !clean {
        return Deletion::Held(HoldReason::Undecryptable, None);
    }
    match previous {
        // An earlier, distinct answer already lacked every one of them.
        Some(p) if p.fetched_at < fetched_at && gone.is_subset(&p.gone) => Deletion::Confirmed,
        // The same answer again: keep the first sighting.
        Some(p) if p.fetched_at == fetched_at && *gone == p.gone => {
            Deletion::Held(HoldReason::AwaitingSecondAnswer, Some(p.clone()))
        }
        _ => Deletion::Held(
            HoldReason::AwaitingSecondAnswer,
            Some(Sighting {
                fetched_at,
                gone: gone.clone(),
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn gone(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn sighting(secs: u64, names: &[&str]) -> Sighting {
        Sighting {
            fetched_at: at(secs),
            gone: gone(names),
        }
    }

    #[test]
    fn a_record_absent_from_one_answer_is_not_deleted_yet() {
        let d = deletion(&gone(&["a"]), Source::Fresh, true, at(10), None);
        assert_eq!(
            d,
            Deletion::Held(HoldReason::AwaitingSecondAnswer, Some(sighting(10, &["a"])))
        );
    }

    #[test]
    fn a_record_absent_from_two_distinct_fresh_answers_is_deleted() {
        let first = sighting(10, &["a", "b"]);
        let d = deletion(&gone(&["a"]), Source::Fresh, true, at(20), Some(&first));
        assert_eq!(d, Deletion::Confirmed);
    }

    #[test]
    fn the_same_answer_twice_is_not_two_answers() {
        let first = sighting(10, &["a"]);
        let d = deletion(&gone(&["a"]), Source::Fresh, true, at(10), Some(&first));
        assert_eq!(
            d,
            Deletion::Held(HoldReason::AwaitingSecondAnswer, Some(first))
        );
    }

    #[test]
    fn a_record_newly_gone_starts_its_own_count() {
        let first = sighting(10, &["a"]);
        let d = deletion(
            &gone(&["a", "b"]),
            Source::Fresh,
            true,
            at(20),
            Some(&first),
        );
        assert_eq!(
            d,
            Deletion::Held(
                HoldReason::AwaitingSecondAnswer,
                Some(sighting(20, &["a", "b"]))
            )
        );
    }

    #[test]
    fn the_last_good_copy_never_deletes() {
        let first = sighting(10, &["a"]);
        let d = deletion(&gone(&["a"]), Source::LastGood, true, at(20), Some(&first));
        assert_eq!(d, Deletion::Held(HoldReason::NotFresh, None));
    }

    #[test]
    fn an_answer_with_undecryptable_entries_never_deletes() {
        let first = sighting(10, &["a"]);
        let d = deletion(&gone(&["a"]), Source::Fresh, false, at(20), Some(&first));
        assert_eq!(d, Deletion::Held(HoldReason::Undecryptable, None));
    }

    #[test]
    fn nothing_gone_is_nothing_to_decide() {
        let first = sighting(10, &["a"]);
        let d = deletion(
            &BTreeSet::new(),
            Source::LastGood,
            false,
            at(20),
            Some(&first),
        );
        assert_eq!(d, Deletion::NothingGone);
    }
}
