//! Stable-toolchain fuzzing: every target over its committed corpus, then over deterministic
//! mutations of it (`FUZZ_ITERATIONS` per target, default 3000; `FUZZ_SEED` to vary). A panic
//! reports the target and the input, base64, to add to the corpus as a regression.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use keeper_fuzz::TARGETS;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    entries
        .iter()
        .map(|p| std::fs::read(p).expect("corpus file"))
        .collect()
}

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"/",
    b"[",
    b"]",
    b"\\",
    b"{",
    b"}",
    b"\"",
    b"=",
    b"-",
    b"_",
    b"0",
    b"-1",
    b"99999999999999999999",
    b"keeper://",
    b"[0]",
    b"[]",
    b"null",
    b"\xc3\xa9",
    b"\xf0\x9f\x94\x91",
    b"{{ ",
    b" }}",
    b"{% ",
    b" %}",
    b" | int",
    b" // 0",
    b" * 99999999",
    b" ~ ",
    b"password",
    b"pin",
    b"\"template\"",
];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(i..i, ins.iter().copied());
            }
            3 => v.truncate(rng.below(v.len() + 1)),
            4 if !other.is_empty() => {
                let i = rng.below(v.len() + 1);
                let j = rng.below(other.len());
                v.truncate(i);
                v.extend_from_slice(&other[j..]);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v
}

fn run(name: &str, target: fn(&[u8]), input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
        panic!(
            "fuzz target {name} crashed on input (base64) {}",
            keeper_operator::ksm::crypto::b64_std(input)
        );
    }
}

#[test]
fn every_target_survives_its_corpus_and_mutations() {
    let iterations: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    for (name, target) in TARGETS {
        let seeds = corpus(name);
        assert!(!seeds.is_empty(), "corpus/{name} is empty");
        for input in &seeds {
            run(name, *target, input);
        }
        let mut rng = Rng(seed | 1);
        for _ in 0..iterations {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            run(name, *target, &mutate(&mut rng, a, b));
        }
    }
}
