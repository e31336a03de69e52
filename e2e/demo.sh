#!/usr/bin/env bash
# THE demo: a local control plane, the KSM test server with the sample vault, the chart installed,
# and the operator (running as the chart's ServiceAccount) syncing a sample KeeperSecret. Prints
# the resulting Secret and leaves everything running.
#
#   e2e/demo.sh          start (or restart) the demo
#   e2e/demo.sh stop     stop the operator, the KSM test server and the control plane
#
# The demo vault's values are fake.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DEMO="${E2E_DEMO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keeper-operator-e2e/demo}"
OP_NS=keeper-operator
APP_NS=demo
RELEASE=keeper-operator
SA=keeper-operator

log() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

stop_pid() { # name: stop a process this script started, if it is still the same program
  local f="$DEMO/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid=$(<"$f")
  if [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */"$1" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop() {
  stop_pid keeper-operator
  stop_pid ksm-test-server
  e2e/cluster.sh down
  log "demo stopped"
}

wait_file() { # path, process name, seconds
  local deadline=$((SECONDS + $3))
  until [[ -s "$1" ]]; do
    if ! kill -0 "$(<"$DEMO/$2.pid")" 2>/dev/null; then
      tail -n 20 "$DEMO/$2.log" >&2
      die "$2 exited (log: $DEMO/$2.log)"
    fi
    ((SECONDS < deadline)) || die "timed out waiting for $1"
    sleep 0.2
  done
}

start() {
  mkdir -p "$DEMO"
  stop_pid keeper-operator
  stop_pid ksm-test-server

  log "building the operator and the KSM test server (cargo build)"
  cargo build --quiet -p keeper-operator --bin keeper-operator -p keeper-e2e --bin ksm-test-server
  local target
  target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

  log "starting the local control plane (first run builds it from Go modules: tens of minutes)"
  e2e/cluster.sh up >/dev/null
  eval "$(e2e/cluster.sh env)"

  log "starting the KSM test server with e2e/testdata/sample-vault.json"
  rm -rf "$DEMO/ksm" && mkdir -p "$DEMO/ksm"
  setsid "$target/debug/ksm-test-server" --vault e2e/testdata/sample-vault.json --state-dir "$DEMO/ksm" \
    </dev/null >"$DEMO/ksm-test-server.log" 2>&1 &
  echo $! >"$DEMO/ksm-test-server.pid"
  wait_file "$DEMO/ksm/server.json" ksm-test-server 30
  local keeper_host
  keeper_host=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hostname"])' "$DEMO/ksm/server.json")

  log "installing the chart (helm upgrade --install) into namespace $OP_NS"
  kubectl create namespace "$APP_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  # CRDs applied earlier without Helm (e.g. by hand) are adopted the way Helm documents it.
  local crd
  for crd in keepersecrets.keeper-operator.dev clusterkeeperstores.keeper-operator.dev; do
    if kubectl get crd "$crd" >/dev/null 2>&1; then
      kubectl annotate crd "$crd" --overwrite meta.helm.sh/release-name="$RELEASE" \
        meta.helm.sh/release-namespace="$OP_NS" >/dev/null
      kubectl label crd "$crd" --overwrite app.kubernetes.io/managed-by=Helm >/dev/null
    fi
  done
  helm upgrade --install "$RELEASE" helm/keeper-operator --namespace "$OP_NS" --create-namespace \
    --set fullnameOverride="$RELEASE" >/dev/null
  kubectl wait --for=condition=Established --timeout=60s \
    crd/keepersecrets.keeper-operator.dev crd/clusterkeeperstores.keeper-operator.dev >/dev/null

  log "storing the test server's KSM config in Secret $APP_NS/ksm-config"
  kubectl -n "$APP_NS" create secret generic ksm-config --from-file=config="$DEMO/ksm/config.b64" \
    --dry-run=client -o yaml | kubectl apply --server-side --force-conflicts -f - >/dev/null

  # No kubelet runs pods here, so the operator runs as a local process with the same identity a
  # pod would have: a token of the chart's ServiceAccount, subject to the chart's RBAC.
  log "minting a token for ServiceAccount $OP_NS/$SA and starting the operator"
  local kc="$DEMO/operator.kubeconfig" server ca token
  server=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  token=$(kubectl -n "$OP_NS" create token "$SA" --duration=24h)
  # Written by the shell itself, so the token never appears on a command line.
  (umask 077 && cat >"$kc" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "$server", certificate-authority-data: "$ca"}
users:
- name: $SA
  user: {token: "$token"}
contexts:
- name: operator
  context: {cluster: e2e, user: $SA, namespace: $OP_NS}
current-context: operator
EOF
  )
  local metrics_port
  metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  KUBECONFIG="$kc" POD_NAMESPACE="$OP_NS" setsid "$target/debug/keeper-operator" run \
    --operator-namespace="$OP_NS" \
    --metrics-bind-address="127.0.0.1:$metrics_port" \
    --keeper-ca-file="$DEMO/ksm/ca.pem" \
    --keeper-allowed-hosts="$keeper_host" \
    --log-format=plain --log-level=info \
    </dev/null >"$DEMO/keeper-operator.log" 2>&1 &
  echo $! >"$DEMO/keeper-operator.pid"
  local deadline=$((SECONDS + 60))
  until curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1; do
    if ! kill -0 "$(<"$DEMO/keeper-operator.pid")" 2>/dev/null; then
      tail -n 30 "$DEMO/keeper-operator.log" >&2
      die "the operator exited (log: $DEMO/keeper-operator.log)"
    fi
    ((SECONDS < deadline)) || die "the operator is not ready after 60s (log: $DEMO/keeper-operator.log)"
    sleep 0.5
  done

  log "applying e2e/examples/keepersecret.yaml in namespace $APP_NS"
  kubectl -n "$APP_NS" apply -f e2e/examples/keepersecret.yaml >/dev/null
  if ! kubectl -n "$APP_NS" wait keepersecret/shop-db --for=condition=Ready --timeout=90s >/dev/null; then
    kubectl -n "$APP_NS" get keepersecret shop-db -o yaml >&2 || true
    tail -n 30 "$DEMO/keeper-operator.log" >&2
    die "the KeeperSecret did not become Ready (operator log: $DEMO/keeper-operator.log)"
  fi

  echo
  kubectl -n "$APP_NS" get keepersecret shop-db
  echo
  echo "Secret $APP_NS/shop-db (decoded; the demo vault's values are fake):"
  kubectl -n "$APP_NS" get secret shop-db -o json \
    | python3 -c 'import base64,json,sys
for k, v in sorted(json.load(sys.stdin).get("data", {}).items()):
    text = base64.b64decode(v).decode("utf-8", "replace")
    print(f"  {k} = {text}")'
  cat <<EOF

The demo keeps running:
  KSM test server  https://$keeper_host   (admin API: see $DEMO/ksm/server.json; log $DEMO/ksm-test-server.log)
  operator         metrics http://127.0.0.1:$metrics_port/metrics   (log $DEMO/keeper-operator.log)
  cluster          $(e2e/cluster.sh env | head -n1)

Try:
  eval "\$(e2e/cluster.sh env)"
  kubectl -n $APP_NS get keepersecrets,secrets
  kubectl -n $APP_NS delete secret shop-db && sleep 3 && kubectl -n $APP_NS get secret shop-db   # restored
  # /metrics wants a token allowed to read it (the chart's metrics-reader ClusterRole):
  kubectl create clusterrolebinding demo-metrics --clusterrole=$RELEASE-metrics-reader --serviceaccount=$APP_NS:default
  curl -H "Authorization: Bearer \$(kubectl -n $APP_NS create token default)" http://127.0.0.1:$metrics_port/metrics

Stop everything:  e2e/demo.sh stop
EOF
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
