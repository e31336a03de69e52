//! The downloaded attachments of every credential, under one byte budget.
//!
//! Files are cached per record revision so a refresh does not download them again, but every
//! tenant can attach files to its own records: a per-credential cache would let tenants together
//! hold any amount of memory. One cache for the whole process, with a byte cap and
//! least-recently-used eviction, keeps the total bounded; an evicted file is downloaded again
//! when next needed.

use crate::bounded_cache::BoundedCache;

use super::FileBytes;

/// Default total size of cached attachments, across all credentials.
pub const DEFAULT_FILES_BUDGET: usize = 32 << 20;

/// Attachments of all credentials by (credential id, file UID), each for one record revision,
/// at most `budget` bytes in total.
pub struct FileCache(BoundedCache<(String, String), i64, FileBytes>);

impl Default for FileCache {
    fn default() -> Self {
        FileCache::new(DEFAULT_FILES_BUDGET)
    }
}

fn key(credential: &str, uid: &str) -> (String, String) {
    (credential.to_string(), uid.to_string())
}

impl FileCache {
    pub fn new(budget: usize) -> Self {
        FileCache(BoundedCache::new(budget))
    }

    /// The cached content of `uid` if it belongs to `revision`; marks it used.
    pub fn get(&self, credential: &str, uid: &str, revision: i64) -> Option<FileBytes> {
        self.0.get(&key(credential, uid), &revision)
    }

    /// Caches a file, evicting the least recently used ones to stay within the budget. A file
    /// larger than the whole budget is not cached.
    pub fn insert(&self, credential: &str, uid: &str, revision: i64, bytes: FileBytes) {
        let len = bytes.len();
        self.0.insert(key(credential, uid), revision, bytes, len);
    }

    /// Keeps only the files of `credential` for which `keep(uid, revision)` holds.
    pub fn retain(&self, credential: &str, mut keep: impl FnMut(&str, i64) -> bool) {
        self.0
            .retain(|(cred, uid), revision| cred != credential || keep(uid, *revision));
    }

    /// The cached files of `credential`: UID, revision and content.
    pub fn of(&self, credential: &str) -> Vec<(String, i64, FileBytes)> {
        self.0
            .select(|(cred, _)| cred == credential)
            .into_iter()
            .map(|((_, uid), revision, bytes)| (uid, revision, bytes))
            .collect()
    }

    /// Bytes cached now, across all credentials.
    #[cfg(test)]
    pub fn total(&self) -> usize {
        self.0.total()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use zeroize::Zeroizing;

    use super::*;

    fn file(len: usize) -> FileBytes {
        Arc::new(Zeroizing::new(vec![7; len]))
    }

    #[test]
    fn many_tenants_stay_within_one_budget_least_recently_used_first() {
        let cache = FileCache::new(1000);
        // 250 tenants, each with a 100-byte file: only the ten most recent stay.
        for tenant in 0..250 {
            cache.insert(&format!("cred-{tenant}"), "f", 1, file(100));
            assert!(cache.total() <= 1000);
        }
        assert_eq!(cache.total(), 1000);
        assert!(cache.get("cred-0", "f", 1).is_none(), "evicted");
        assert!(cache.get("cred-240", "f", 1).is_some());
        // A use keeps a file: the next insert evicts the least recently used other one.
        assert!(cache.get("cred-241", "f", 1).is_some());
        cache.insert("cred-new", "f", 1, file(100));
        assert!(cache.get("cred-241", "f", 1).is_some());
        assert!(cache.get("cred-242", "f", 1).is_none());
    }

    #[test]
    fn revisions_replacement_and_retain_keep_the_count_right() {
        let cache = FileCache::new(1000);
        cache.insert("a", "f", 1, file(300));
        assert!(cache.get("a", "f", 2).is_none(), "another revision");
        cache.insert("a", "f", 2, file(200));
        assert_eq!(cache.total(), 200, "replaced, not added");
        cache.insert("a", "g", 1, file(100));
        cache.insert("b", "f", 1, file(100));
        cache.retain("a", |uid, _| uid == "g");
        assert_eq!(cache.total(), 200);
        assert_eq!(cache.of("a").len(), 1);
        assert_eq!(cache.of("b").len(), 1, "other credentials untouched");
        cache.insert("a", "huge", 1, file(1001));
        assert!(
            cache.get("a", "huge", 1).is_none(),
            "larger than the budget"
        );
        assert_eq!(cache.total(), 200);
    }
}
