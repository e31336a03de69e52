#!/usr/bin/env bash
# Proves that ksm-test-server speaks Keeper's protocol: the OFFICIAL Keeper SDKs, unmodified,
# bind a one-time token, fetch, resolve notations, download a file, list folders, and write
# (create, update, a stale update, upload, a read-only share, delete) against it;
# then keeper-operator resolves a table of notations (notations.txt) as the Python SDK does.
#
#   Python:     keeper-secrets-manager-core==17.3.0 (PyPI), in a venv this script creates
#   JavaScript: @keeper-security/secrets-manager-core@17.5.0 (npm)
#
# Both are installed once into a cache outside the work tree:
#   ${KSM_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keeper-operator-interop}
# The server binary is $KSM_TEST_SERVER_BIN, or built with cargo. TLS verification stays on:
# the SDKs trust the server's fresh CA through REQUESTS_CA_BUNDLE / NODE_EXTRA_CA_CERTS.
# Exits non-zero if anything fails, including a missing python3/node/npm.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY_SDK_VERSION=17.3.0
JS_SDK_VERSION=17.5.0
CACHE=${KSM_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keeper-operator-interop}
VAULT="$ROOT/e2e/testdata/sample-vault.json"

log() { printf '[interop] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in python3 node npm; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
mkdir -p "$CACHE"

# Python SDK in its own venv (re-created if broken or at another version).
VENV="$CACHE/venv-python-sdk-$PY_SDK_VERSION"
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; \
        sys.exit(m.version('keeper-secrets-manager-core') != '$PY_SDK_VERSION')" 2>/dev/null; then
    log "installing keeper-secrets-manager-core==$PY_SDK_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "keeper-secrets-manager-core==$PY_SDK_VERSION"
fi

# JavaScript SDK, pinned, in its own node_modules.
NODE_DIR="$CACHE/node-sdk-$JS_SDK_VERSION"
JS_PKG="$NODE_DIR/node_modules/@keeper-security/secrets-manager-core/package.json"
if [ ! -f "$JS_PKG" ] || ! grep -q "\"version\": \"$JS_SDK_VERSION\"" "$JS_PKG"; then
    log "installing @keeper-security/secrets-manager-core@$JS_SDK_VERSION into $NODE_DIR"
    rm -rf "$NODE_DIR"
    mkdir -p "$NODE_DIR"
    printf '{"name":"ksm-interop","private":true}\n' >"$NODE_DIR/package.json"
    (cd "$NODE_DIR" && npm install --no-audit --no-fund --silent --save-exact \
        "@keeper-security/secrets-manager-core@$JS_SDK_VERSION")
fi

BIN=${KSM_TEST_SERVER_BIN:-}
if [ -z "$BIN" ]; then
    log "building ksm-test-server"
    (cd "$ROOT" && cargo build --quiet -p keeper-e2e --bin ksm-test-server)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ksm-test-server"
fi
[ -x "$BIN" ] || die "no server binary at $BIN"

STATE=$(mktemp -d "${TMPDIR:-/tmp}/ksm-interop.XXXXXX")
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$STATE"
}
trap cleanup EXIT

"$BIN" --vault "$VAULT" --state-dir "$STATE" 2>"$STATE/server.log" &
SERVER_PID=$!
for _ in $(seq 1 300); do
    [ -f "$STATE/server.json" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$STATE/server.log" >&2; die "server exited"; }
    sleep 0.1
done
[ -f "$STATE/server.json" ] || die "server did not start"
log "server up: $(tr -d '\n ' <"$STATE/server.json")"

status=0
log "Python SDK $PY_SDK_VERSION"
REQUESTS_CA_BUNDLE="$STATE/ca.pem" KSM_CONFIG_SKIP_MODE=TRUE NOTATION_TABLE="$HERE/notations.txt" \
    "$VENV/bin/python" "$HERE/python_sdk_test.py" "$STATE" "$VAULT" || status=1
log "notations: keeper-operator against the Python SDK's answers"
OPERATOR_BIN=${KEEPER_OPERATOR_BIN:-}
if [ -z "$OPERATOR_BIN" ]; then
    (cd "$ROOT" && cargo build --quiet -p keeper-operator --bin keeper-operator)
    OPERATOR_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/keeper-operator"
fi
python3 "$HERE/compare_notations.py" "$STATE" "$HERE/notations.txt" "$OPERATOR_BIN" || status=1
log "JavaScript SDK $JS_SDK_VERSION"
NODE_PATH="$NODE_DIR/node_modules" NODE_EXTRA_CA_CERTS="$STATE/ca.pem" \
    node "$HERE/js_sdk_test.js" "$STATE" "$VAULT" || status=1

if [ "$status" -ne 0 ]; then
    log "server log:"
    cat "$STATE/server.log" >&2
    die "interop failed"
fi
log "both official SDKs passed"
