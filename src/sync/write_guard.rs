//! PURE: the write guard. A write that would empty a value or drop a key is refused unless
//! Keeper really changed (a record revision moved) or the user changed the spec; with the same
//! records at the same revisions, lost data can only be a fetch or decode glitch.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;

use crate::api::{CreationPolicy, KeeperSecret, RecordRevision};

/// Why a write was refused. Names keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to {what} key {key:?} of Secret {secret}: the Keeper records are unchanged (same revisions), so this looks like a fetch glitch; the Secret keeps its current data"
)]
pub struct GuardError {
    pub secret: String,
    pub key: String,
    pub what: &'static str,
}

/// Checks `desired` against the Secret as it is.
pub fn check(
    ks: &KeeperSecret,
    existing: Option<&Secret>,
    desired: &Secret,
    records: &BTreeSet<RecordRevision>,
) -> Result<(), GuardError> {
    let (Some(existing), Some(status)) = (existing, ks.status.as_ref()) else {
        return Ok(());
    };
    let spec_unchanged = status.observed_generation == ks.metadata.generation;
    let records_unchanged = !status.records.is_empty()
        && status.records.iter().cloned().collect::<BTreeSet<_>>() == *records;
    if !(spec_unchanged && records_unchanged) {
        return Ok(());
    }
    let empty = Default::default();
    let have = existing.data.as_ref().unwrap_or(&empty);
    let want = desired.data.as_ref().unwrap_or(&empty);
    let refuse = |key: &str, what| GuardError {
        secret: ks.target_name(),
        key: key.to_string(),
        what,
    };
    for (key, _) in have.iter().filter(|(_, v)| !v.0.is_empty()) {
        match want.get(key) {
            Some(new) if new.0.is_empty() => return Err(refuse(key, "empty")),
            // Merge shares the Secret with other writers: keys we do not send are not ours.
            None if ks.creation_policy() != CreationPolicy::Merge => {
                return Err(refuse(key, "drop"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
