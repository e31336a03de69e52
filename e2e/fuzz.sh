#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in e2e/fuzz with libFuzzer (cargo-fuzz, nightly Rust,
# AddressSanitizer), each for SECONDS (default 60), starting from the committed corpus.
#
#   e2e/fuzz.sh [SECONDS] [TARGET...]      e.g. e2e/fuzz.sh 600 notation response
#
# cargo-fuzz is installed from crates.io into a cache outside the work tree on first use. New
# corpus entries go to target/fuzz/corpus/<target>; a crash leaves its input in
# target/fuzz/artifacts/<target>/ and fails the run: add it to e2e/fuzz/corpus/<target>/ and a
# regression test next to the parser.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/keeper-operator-e2e"
CARGO_FUZZ_VERSION=0.13.2
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
((${#TARGETS[@]} > 0)) || TARGETS=(notation config token response record template spec)

log() { printf '[fuzz] %s\n' "$*" >&2; }

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  log "error: the nightly Rust toolchain is missing; cargo-fuzz needs it to build the libFuzzer"
  log "targets with AddressSanitizer. Add it with: rustup toolchain install nightly"
  log "(a local e2e/test.sh can skip this phase with E2E_SKIP_LIBFUZZER=1; with CI=true it always runs)"
  exit 1
fi
FUZZ_ROOT="$CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION"
if [[ ! -x "$FUZZ_ROOT/bin/cargo-fuzz" ]]; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION into $FUZZ_ROOT"
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$FUZZ_ROOT"
fi
export PATH="$FUZZ_ROOT/bin:$PATH"

# The sanitizer build has its own target dir in the cache (sanitizer flags would invalidate any
# other), shared by every clone on this machine so CI rebuilds only the changed crates.
fuzz() {
  cargo +nightly fuzz "$1" --fuzz-dir e2e/fuzz --features libfuzzer \
    --target-dir "$CACHE/fuzz-target" "${@:2}"
}
fuzz build -O
for t in "${TARGETS[@]}"; do
  mkdir -p "target/fuzz/corpus/$t" "target/fuzz/artifacts/$t"
  log "$t: ${SECONDS_EACH}s"
  fuzz run -O "$t" "target/fuzz/corpus/$t" "e2e/fuzz/corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -artifact_prefix="target/fuzz/artifacts/$t/" -print_final_stats=1 2>&1 |
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)|panicked' || true
  # grep only trims the output; the fuzzer's own status decides.
  if ((PIPESTATUS[0] != 0)); then
    log "$t: crash; input in target/fuzz/artifacts/$t/"
    exit 1
  fi
done
log "no crashes in ${#TARGETS[@]} targets x ${SECONDS_EACH}s"
