//! PURE: one budget for a whole render, shared by every key (inline and `templateFrom`).
//!
//! A KeeperSecret is hostile input: MiniJinja's fuel bounds the engine's own work, but not what
//! happens inside a helper (a `b64encode` of a large value, a `fromyaml` that expands aliases,
//! a bcrypt hash). Every helper therefore charges this budget *before* it allocates: the bytes
//! it is about to produce, the values a parser is about to build, and it checks the deadline.
//! The first bound crossed is remembered, so the render fails with that bound's fixed text.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use minijinja::{Error, ErrorKind};

/// MiniJinja fuel for the whole render, all keys together (an instruction costs 1, 64 bytes
/// of data produced or visited cost 1). Far beyond any realistic Secret template.
pub const FUEL: u64 = 200_000;
/// Templates (inline and `templateFrom` together) one KeeperSecret may render.
pub const MAX_TEMPLATE_KEYS: usize = 64;
/// Bytes the helpers may produce in one render, all calls together.
pub const MAX_HELPER_BYTES: usize = 4 * 1024 * 1024;
/// Values (scalars, lists, maps) `fromjson` and `fromyaml` may build in one render; a YAML alias
/// counts every value it copies, so an alias bomb stops here.
pub const MAX_PARSE_NODES: usize = 100_000;
/// Nesting depth of a value `fromjson` or `fromyaml` builds.
pub const MAX_PARSE_DEPTH: usize = 64;
/// Wall time one render may take, checked by every helper and between keys.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// What a parsed value is charged on top of its text: about one `Value` and its slot.
pub const NODE_BYTES: usize = 32;

/// The bound a render crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exceeded {
    /// More than [`MAX_TEMPLATE_KEYS`] templates.
    Keys = 1,
    /// MiniJinja ran out of [`FUEL`].
    Fuel,
    /// Helpers would produce more than [`MAX_HELPER_BYTES`].
    Bytes,
    /// The parsers would build more than [`MAX_PARSE_NODES`] values.
    Nodes,
    /// A parsed value nests deeper than [`MAX_PARSE_DEPTH`].
    Depth,
    /// The render ran past [`DEADLINE`].
    Time,
}

impl Exceeded {
    const ALL: [Exceeded; 6] = [
        Self::Keys,
        Self::Fuel,
        Self::Bytes,
        Self::Nodes,
        Self::Depth,
        Self::Time,
    ];

    /// A fixed text naming the bound (never a value).
    pub fn text(self) -> &'static str {
        match self {
            Self::Keys => "template budget: more than 64 templates",
            Self::Fuel => "template budget: out of fuel (200000 for all keys together)",
            Self::Bytes => "template budget: helpers would produce more than 4 MiB",
            Self::Nodes => {
                "template budget: fromjson/fromyaml would build more than 100000 values (a YAML alias counts every copy)"
            }
            Self::Depth => "template budget: fromjson/fromyaml nesting deeper than 64",
            Self::Time => "template budget: rendering took longer than 2 s",
        }
    }

    fn from_code(code: u8) -> Option<Exceeded> {
        Self::ALL.into_iter().find(|e| *e as u8 == code)
    }
}

/// What is left of one render's budget. Shared by the helpers (hence atomics: MiniJinja wants
/// `Send + Sync` closures), though a render runs on one thread.
#[derive(Debug)]
pub struct Budget {
    bytes: AtomicUsize,
    nodes: AtomicUsize,
    deadline: Instant,
    tripped: AtomicU8,
}

impl Budget {
    /// A full budget for a render starting at `start`.
    pub fn new(start: Instant) -> Budget {
        Budget::ending_at(start + DEADLINE)
    }

    /// A full budget whose time runs out at `deadline`.
    pub fn ending_at(deadline: Instant) -> Budget {
        Budget {
            bytes: AtomicUsize::new(MAX_HELPER_BYTES),
            nodes: AtomicUsize::new(MAX_PARSE_NODES),
            deadline,
            tripped: AtomicU8::new(0),
        }
    }

    /// Takes `n` bytes before a helper allocates them; also checks the deadline.
    pub fn bytes(&self, n: usize) -> Result<(), Error> {
        self.time()?;
        take(&self.bytes, n).map_err(|()| self.trip(Exceeded::Bytes))
    }

    /// Takes one parsed value of `text` bytes (nodes and bytes).
    pub fn node(&self, text: usize) -> Result<(), Error> {
        take(&self.nodes, 1).map_err(|()| self.trip(Exceeded::Nodes))?;
        self.bytes(NODE_BYTES.saturating_add(text))
    }

    /// Fails once the deadline has passed.
    pub fn time(&self) -> Result<(), Error> {
        if Instant::now() >= self.deadline {
            return Err(self.trip(Exceeded::Time));
        }
        Ok(())
    }

    /// Records `bound` as crossed (the first one wins) and returns the error for MiniJinja.
    pub fn trip(&self, bound: Exceeded) -> Error {
        let _ = self
            .tripped
            .compare_exchange(0, bound as u8, Ordering::Relaxed, Ordering::Relaxed);
        Error::new(ErrorKind::InvalidOperation, bound.text())
    }

    /// The first bound crossed, if any.
    pub fn tripped(&self) -> Option<Exceeded> {
        Exceeded::from_code(self.tripped.load(Ordering::Relaxed))
    }
}

/// Subtracts `n` from `left` unless that would go below zero.
fn take(left: &AtomicUsize, n: usize) -> Result<(), ()> {
    left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(n))
        .map(|_| ())
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_state_the_constants() {
        let mib = (MAX_HELPER_BYTES / (1024 * 1024)).to_string();
        assert!(Exceeded::Bytes.text().contains(&format!("{mib} MiB")));
        assert!(
            Exceeded::Nodes
                .text()
                .contains(&MAX_PARSE_NODES.to_string())
        );
        assert!(
            Exceeded::Depth
                .text()
                .contains(&MAX_PARSE_DEPTH.to_string())
        );
        assert!(
            Exceeded::Keys
                .text()
                .contains(&MAX_TEMPLATE_KEYS.to_string())
        );
        assert!(Exceeded::Fuel.text().contains(&FUEL.to_string()));
        let secs = format!("{} s", DEADLINE.as_secs());
        assert!(Exceeded::Time.text().contains(&secs));
        for e in Exceeded::ALL {
            assert_eq!(Exceeded::from_code(e as u8), Some(e));
        }
    }

    #[test]
    fn charges_stop_at_the_bound_and_the_first_bound_is_kept() {
        let b = Budget::new(Instant::now());
        b.bytes(MAX_HELPER_BYTES - 10).unwrap();
        b.bytes(10).unwrap();
        assert!(b.bytes(1).is_err());
        assert_eq!(b.tripped(), Some(Exceeded::Bytes));
        b.trip(Exceeded::Fuel);
        assert_eq!(b.tripped(), Some(Exceeded::Bytes));

        let b = Budget::new(Instant::now());
        for _ in 0..MAX_PARSE_NODES {
            b.node(0).unwrap();
        }
        assert!(b.node(0).is_err());
        assert_eq!(b.tripped(), Some(Exceeded::Nodes));

        let b = Budget::ending_at(Instant::now());
        assert!(b.bytes(0).is_err());
        assert_eq!(b.tripped(), Some(Exceeded::Time));
    }
}
