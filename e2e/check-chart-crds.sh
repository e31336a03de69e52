#!/usr/bin/env bash
# The chart renders its CRDs from helm/keeper-operator/files/crds/, which must be byte-identical
# copies of the generated crds/*.yaml. Fails on drift; `--fix` copies crds/ into the chart.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/crds"
DST="$ROOT/helm/keeper-operator/files/crds"

shopt -s nullglob
src=("$SRC"/*.yaml)
if [[ ${#src[@]} -eq 0 ]]; then
  echo "check-chart-crds: no CRDs in crds/ (run: cargo run --bin crdgen -- crds/)" >&2
  exit 1
fi
if [[ "${1:-}" == "--fix" ]]; then
  rm -rf "$DST" && mkdir -p "$DST" && cp "${src[@]}" "$DST"/
  echo "check-chart-crds: copied ${#src[@]} CRD(s) into the chart" >&2
  exit 0
fi
if ! diff -r -u "$SRC" "$DST"; then
  echo "check-chart-crds: the chart's CRDs differ from crds/; run e2e/check-chart-crds.sh --fix" >&2
  exit 1
fi
echo "check-chart-crds: chart CRDs match crds/ (${#src[@]} file(s))" >&2
