//! A least-recently-used cache under a byte budget, for data tenants can make the operator
//! hold (attachments, template sources): one budget for the whole process keeps the total
//! bounded however many tenants fill it; an evicted entry is read again when next needed.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use crate::lock;

/// One entry: the version it belongs to, its value, its size and last use (a logical clock).
struct Entry<Ver, V> {
    version: Ver,
    value: V,
    bytes: usize,
    used: u64,
}

struct Inner<K, Ver, V> {
    entries: HashMap<K, Entry<Ver, V>>,
    total: usize,
    clock: u64,
}

/// Values by key, each valid for one version of its source, at most `budget` bytes in total.
pub struct BoundedCache<K, Ver, V> {
    budget: usize,
    inner: Mutex<Inner<K, Ver, V>>,
}

impl<K: Eq + Hash + Clone, Ver: PartialEq + Clone, V: Clone> BoundedCache<K, Ver, V> {
    pub fn new(budget: usize) -> Self {
        BoundedCache {
            budget,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                total: 0,
                clock: 0,
            }),
        }
    }

    /// The cached value of `key` if it belongs to `version`; marks it used.
    pub fn get(&self, key: &K, version: &Ver) -> Option<V> {
        let mut inner = lock(&self.inner);
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(key)?;
        (entry.version == *version).then(|| {
            entry.used = now;
            entry.value.clone()
        })
    }

    /// Caches `value` (`bytes` large), evicting the least recently used entries to stay within
    /// the budget. A value larger than the whole budget is not cached.
    pub fn insert(&self, key: K, version: Ver, value: V, bytes: usize) {
        if bytes > self.budget {
            return;
        }
        let mut inner = lock(&self.inner);
        if let Some(old) = inner.entries.remove(&key) {
            inner.total -= old.bytes;
        }
        while inner.total + bytes > self.budget {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(evicted) = inner.entries.remove(&oldest) {
                inner.total -= evicted.bytes;
            }
        }
        inner.clock += 1;
        let used = inner.clock;
        inner.total += bytes;
        inner.entries.insert(
            key,
            Entry {
                version,
                value,
                bytes,
                used,
            },
        );
    }

    /// Keeps only the entries for which `keep(key, version)` holds.
    pub fn retain(&self, mut keep: impl FnMut(&K, &Ver) -> bool) {
        let mut inner = lock(&self.inner);
        let mut freed = 0;
        inner.entries.retain(|k, e| {
            let kept = keep(k, &e.version);
            if !kept {
                freed += e.bytes;
            }
            kept
        });
        inner.total -= freed;
    }

    /// The entries whose key `wanted` selects: key, version and value.
    pub fn select(&self, wanted: impl Fn(&K) -> bool) -> Vec<(K, Ver, V)> {
        let inner = lock(&self.inner);
        inner
            .entries
            .iter()
            .filter(|(k, _)| wanted(k))
            .map(|(k, e)| (k.clone(), e.version.clone(), e.value.clone()))
            .collect()
    }

    /// Bytes cached now.
    #[cfg(test)]
    pub fn total(&self) -> usize {
        lock(&self.inner).total
    }
}
