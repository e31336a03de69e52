#!/usr/bin/env bash
# Smallest benchmark size, run by e2e/test.sh so the benchmark keeps working. Checks behaviour
# only (every key present with a sane value, <= 1 Keeper call per credential per wave, no calls
# between waves, every Secret kept through the outage), never timings. Two shards, so the
# sharded path (one operator per label value) keeps working too.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$ROOT/target/e2e/bench-smoke.json"
rm -f "$out" "${out%.json}.png"
"$ROOT/e2e/bench.sh" --debug --keeper-secrets 20 --credentials 1 --refresh 5s --waves 2 \
  --outage-waves 2 --shards 2 --out "$out"
python3 - "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
def num(key, v=None):
    v = d[key] if v is None else v
    assert isinstance(v, (int, float)) and v >= 0, f"{key}={v!r}"
    return v
assert d["keeper_secrets"] == 20 and d["credentials"] == 1 and d["shards"] == 2, d
for k in ["ready_seconds", "raw_apiserver_seconds", "raw_same_writes_seconds",
          "change_propagation_seconds", "operator_rss_steady_anon_mib",
          "operator_rss_steady_file_mib",
          "keeper_calls_per_wave", "keeper_calls_between_waves", "operator_rss_peak_mib",
          "operator_rss_steady_mib", "operator_cpu_seconds", "apiserver_requests"]:
    num(k)
for p in ["p50", "p95", "p99"]:
    num("sync_latency_ms." + p, d["sync_latency_ms"][p])
assert d["ready_seconds"] > 0 and d["raw_apiserver_seconds"] > 0
assert d["operator_rss_peak_mib"] >= d["operator_rss_steady_mib"] > 0
assert d["apiserver_requests"] > 0
assert set(d["apiserver_requests_by_phase"]) == {"cold_start", "steady_waves",
                                                 "change_propagation", "outage"}, d
# Each shard reads each credential once per wave.
assert d["keeper_calls_per_wave"] <= d["credentials"] * d["shards"], d["keeper_calls_per_wave"]
assert 0 < d["operator_rss_peak_largest_shard_mib"] < d["operator_rss_peak_mib"], d
# Who was busy: every control-plane process, the operator (not in the raw phases) and the bench.
cpu = d["cpu_seconds_by_phase"]
assert {"kube-apiserver", "etcd", "operator", "bench", "wall"} <= set(cpu["cold_start"]), cpu
assert "operator" not in cpu["raw_same_writes"] and cpu["raw_same_writes"]["wall"] > 0, cpu
assert d["keeper_calls_between_waves"] == 0, d["keeper_calls_between_waves"]
assert d["outage"]["all_secrets_kept"] and d["outage"]["all_ready_throughout"], d["outage"]
# A restart re-lists and rewrites nothing: no Secret either way, no status while Keeper answers.
up, down = d["restart_keeper_up"], d["restart_keeper_down"]
assert up["secrets_rewritten"] == 0 and up["statuses_rewritten"] == 0, up
assert down["secrets_rewritten"] == 0, down
assert up["settle_seconds"] >= up["ready_seconds"] > 0, up
assert up["operator_rss_peak_mib"] > 0 and down["operator_rss_peak_mib"] > 0, (up, down)
png = open(sys.argv[1].removesuffix(".json") + ".png", "rb").read()
assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000, "chart written"
print("bench smoke: all keys present and sane, chart written")
PY
