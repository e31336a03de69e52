#!/usr/bin/env bash
# Scale benchmark, run on purpose: N KeeperSecrets over C credentials against the real
# local control plane and the KSM test server. Writes JSON to --out and prints a table.
#
#   e2e/bench.sh --keeper-secrets N --credentials C --out FILE [--debug] [bench options...]
#
# By default the operator is built in release mode (what users run; several minutes on 2 cores
# the first time). --debug uses the debug build instead: that is what the CI smoke run in
# e2e/test.sh does, where only behaviour is checked, not timings. The bench client itself is a
# debug build of e2e/src/bin/bench.rs (it only issues requests and polls).
# Other options (--refresh 10s, --waves 3, --concurrency 16, --outage-waves 2) pass through.
# Uses E2E_KUBECONFIG if set, else starts/reuses the control plane of e2e/cluster.sh in
# E2E_STATE_DIR (default: a dedicated bench cluster, left running, without the audit log the
# tests' RBAC check reads: the operator's ServiceAccount would pay a blocking log write per
# request that the raw baselines, made as admin, do not).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export E2E_STATE_DIR="${E2E_STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keeper-operator-e2e/bench-cluster}"
export E2E_AUDIT_LOG="${E2E_AUDIT_LOG:-off}"

profile=release
args=()
while (($#)); do
  case $1 in
    --debug) profile=debug ;;
    *) args+=("$1") ;;
  esac
  shift
done

if [[ $profile == release ]]; then
  cargo build --release --quiet -p keeper-operator --bin keeper-operator
else
  cargo build --quiet -p keeper-operator --bin keeper-operator
fi
KEEPER_OPERATOR_BIN="$ROOT/target/$profile/keeper-operator"
export KEEPER_OPERATOR_BIN
cargo build --quiet -p keeper-e2e --bin bench

if [[ -z "${E2E_KUBECONFIG:-}" ]]; then
  E2E_KUBECONFIG=$(e2e/cluster.sh up)
  export E2E_KUBECONFIG
fi
exec "$ROOT/target/debug/bench" "${args[@]}"
