//! The last render of each KeeperSecret, so an unchanged refresh does not render again
//! (and `htpasswd` does not run bcrypt again).
//!
//! An entry is found by a slot digest of the KeeperSecret's [`HashKey`] and holds a keyed digest
//! of everything a render reads (templates, merge policy, values): neither reveals anything
//! without the key. A hit needs the same digest, so any change to a template or a value renders
//! again. Failures that would fail the same way again are kept too, so a hostile template is not
//! rendered at every retry; a missed deadline is not (it may be the machine's load).
//!
//! The cache is bounded in entries and bytes and forgets the least recently used first: a
//! tenant filling it only costs others a render.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::api::{Template, TemplateMergePolicy};
use crate::lock;
use crate::sync::desired::HashKey;
use crate::sync::mapping::Bytes;
use crate::sync::template::{TemplateError, TemplateSource};

/// Renders remembered at most (one per KeeperSecret).
pub const CACHE_ENTRIES: usize = 4096;
/// Bytes of rendered output remembered at most.
pub const CACHE_BYTES: usize = 8 * 1024 * 1024;
/// What an entry costs beyond its output (digests, map slot).
const ENTRY_OVERHEAD: usize = 128;

/// What a render produced.
pub type Rendered = Result<BTreeMap<String, Bytes>, TemplateError>;

/// A render's place in the cache and the digest of its inputs.
pub struct RenderDigest {
    slot: [u8; 16],
    digest: [u8; 32],
}

/// Digests what a render reads, keyed by `key` (the KeeperSecret's hash key).
pub fn inputs(
    template: &Template,
    from: &BTreeMap<String, TemplateSource>,
    values: &BTreeMap<String, Bytes>,
    key: &HashKey,
) -> RenderDigest {
    let slot = key.digest("keeper-operator.dev/render-cache-slot/v1", &[]);
    let policy: &[u8] = match template.merge_policy {
        TemplateMergePolicy::Replace => b"Replace",
        TemplateMergePolicy::Merge => b"Merge",
    };
    // Every part is length-prefixed by `digest`; the counts make the sections unambiguous.
    let counts = [template.data.len(), from.len(), values.len()].map(|n| (n as u64).to_be_bytes());
    let mut parts: Vec<&[u8]> = vec![policy, &counts[0], &counts[1], &counts[2]];
    for (k, text) in &template.data {
        parts.extend([k.as_bytes(), text.as_bytes()]);
    }
    for (k, source) in from {
        let kind: &[u8] = if source.is_confidential() { b"s" } else { b"c" };
        parts.extend([k.as_bytes(), kind, source.text().as_bytes()]);
    }
    for (k, v) in values {
        parts.extend([k.as_bytes(), v.as_slice()]);
    }
    let digest = key.digest("keeper-operator.dev/render-inputs/v1", &parts);
    let mut short = [0u8; 16];
    short.copy_from_slice(&slot[..16]);
    RenderDigest {
        slot: short,
        digest: *digest,
    }
}

/// The last render per KeeperSecret, bounded (see the module docs).
#[derive(Default)]
pub struct RenderCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<[u8; 16], Entry>,
    bytes: usize,
    tick: u64,
}

struct Entry {
    digest: [u8; 32],
    rendered: Rendered,
    bytes: usize,
    used: u64,
}

impl RenderCache {
    /// The remembered outcome of a render of exactly these inputs.
    pub fn get(&self, inputs: &RenderDigest) -> Option<Rendered> {
        let mut inner = lock(&self.inner);
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(&inputs.slot)?;
        if entry.digest != inputs.digest {
            return None;
        }
        entry.used = tick;
        Some(entry.rendered.clone())
    }

    /// Remembers `rendered` for these inputs, in place of the KeeperSecret's earlier render;
    /// outcomes that might differ next time are not kept.
    pub fn put(&self, inputs: &RenderDigest, rendered: &Rendered) {
        if rendered.as_ref().is_err_and(|e| !e.is_repeatable()) {
            return;
        }
        let bytes = ENTRY_OVERHEAD
            + rendered.as_ref().map_or(0, |data| {
                data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            });
        if bytes > CACHE_BYTES {
            return;
        }
        let mut inner = lock(&self.inner);
        inner.tick += 1;
        let entry = Entry {
            digest: inputs.digest,
            rendered: rendered.clone(),
            bytes,
            used: inner.tick,
        };
        if let Some(old) = inner.entries.insert(inputs.slot, entry) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.entries.len() > CACHE_ENTRIES || inner.bytes > CACHE_BYTES {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(slot, _)| *slot)
            else {
                break;
            };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.bytes -= gone.bytes;
            }
        }
    }

    /// Entries and bytes held.
    #[cfg(test)]
    pub fn size(&self) -> (usize, usize) {
        let inner = lock(&self.inner);
        (inner.entries.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;
    use crate::sync::template::Exceeded;

    fn tpl(text: &str) -> Template {
        Template {
            data: [("out".to_string(), text.to_string())].into(),
            ..Template::default()
        }
    }

    fn vals(v: &[u8]) -> BTreeMap<String, Bytes> {
        [("password".to_string(), Zeroizing::new(v.to_vec()))].into()
    }

    fn key(uid: &str) -> HashKey {
        HashKey::derive(b"credential", uid)
    }

    fn out(n: usize) -> Rendered {
        Ok([("out".to_string(), Zeroizing::new(vec![b'x'; n]))].into())
    }

    #[test]
    fn a_hit_needs_the_same_key_templates_and_values() {
        let cache = RenderCache::default();
        let none = BTreeMap::new();
        let base = inputs(&tpl("{{ password }}"), &none, &vals(b"a"), &key("1"));
        cache.put(&base, &out(3));
        assert!(cache.get(&base).unwrap().is_ok());
        let again = inputs(&tpl("{{ password }}"), &none, &vals(b"a"), &key("1"));
        assert!(cache.get(&again).is_some());
        for other in [
            inputs(&tpl("{{ password }}!"), &none, &vals(b"a"), &key("1")),
            inputs(&tpl("{{ password }}"), &none, &vals(b"b"), &key("1")),
            inputs(&tpl("{{ password }}"), &none, &vals(b"a"), &key("2")),
        ] {
            assert!(cache.get(&other).is_none());
        }
        let mut merge = tpl("{{ password }}");
        merge.merge_policy = TemplateMergePolicy::Merge;
        assert!(
            cache
                .get(&inputs(&merge, &none, &vals(b"a"), &key("1")))
                .is_none()
        );
        // A new render of the same KeeperSecret takes its slot.
        let changed = inputs(&tpl("{{ password }}"), &none, &vals(b"b"), &key("1"));
        cache.put(&changed, &out(3));
        assert!(cache.get(&base).is_none());
        assert_eq!(cache.size().0, 1);
    }

    #[test]
    fn repeatable_failures_are_kept_a_missed_deadline_is_not() {
        let cache = RenderCache::default();
        let i = inputs(&tpl("x"), &BTreeMap::new(), &vals(b"a"), &key("1"));
        let budget = |bound| TemplateError::Budget {
            key: "out".into(),
            bound,
        };
        cache.put(&i, &Err(budget(Exceeded::Time)));
        assert!(cache.get(&i).is_none());
        cache.put(&i, &Err(budget(Exceeded::Nodes)));
        assert!(matches!(
            cache.get(&i),
            Some(Err(TemplateError::Budget {
                bound: Exceeded::Nodes,
                ..
            }))
        ));
    }

    #[test]
    fn bounded_in_bytes_least_recently_used_goes_first() {
        let cache = RenderCache::default();
        let none = BTreeMap::new();
        let per = CACHE_BYTES / 4;
        let all: Vec<RenderDigest> = (0..5)
            .map(|i| inputs(&tpl("x"), &none, &vals(b"a"), &key(&i.to_string())))
            .collect();
        for i in &all[..4] {
            cache.put(i, &out(per - ENTRY_OVERHEAD - 3));
        }
        assert_eq!(cache.size(), (4, CACHE_BYTES));
        assert!(cache.get(&all[0]).is_some()); // 0 is now more recent than 1
        cache.put(&all[4], &out(10));
        assert!(cache.get(&all[1]).is_none());
        assert!(cache.get(&all[0]).is_some());
        assert!(cache.size().1 <= CACHE_BYTES);
    }
}
