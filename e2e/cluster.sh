#!/usr/bin/env bash
# A real, local Kubernetes control plane for tests and the demo: etcd + kube-apiserver (RBAC on,
# its own PKI, loopback only) + kube-controller-manager (garbage collection, namespace deletion,
# default ServiceAccounts, ClusterRole aggregation). No kubelet: pods never run. kube-apiserver
# writes an audit log of ServiceAccounts' requests to $STATE/logs/audit.log (e2e/audit-policy.yaml).
#
#   e2e/cluster.sh up     start it in the background (or reuse a healthy one); prints the admin kubeconfig path
#   e2e/cluster.sh down   stop every process by its PID
#   e2e/cluster.sh env    print `export` lines (KUBECONFIG, E2E_KUBECONFIG, PATH with kubectl/helm)
#   e2e/cluster.sh restart-apiserver [SECONDS]   stop kube-apiserver, wait, start it again (fault tests)
#
# State (PKI, etcd data, logs, PIDs, kubeconfig) lives in ${E2E_STATE_DIR:-$HOME/.cache/keeper-operator-e2e/cluster}.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="${E2E_STATE_DIR:-$HOME/.cache/keeper-operator-e2e/cluster}"
PKI="$STATE/pki"
LOGS="$STATE/logs"
RUN="$STATE/run"
KUBECONFIG_OUT="$STATE/admin.kubeconfig"
START_TIMEOUT="${E2E_START_TIMEOUT:-60}"
COMPONENTS=(kube-controller-manager kube-apiserver etcd) # stop order

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pid_of() { # prints the PID of a component we started, if it is still that process
  local f="$RUN/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid=$(<"$f")
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */"$1" ]] && echo "$pid"
}

api_url() { [[ -f "$RUN/ports" ]] && awk -F= '$1=="API_PORT"{print "https://127.0.0.1:" $2}' "$RUN/ports"; }

healthy() {
  local c url
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
  url=$(api_url) || return 1
  [[ -f "$KUBECONFIG_OUT" ]] && curl -fsS --max-time 5 --cacert "$PKI/serving-ca.crt" "$url/readyz" >/dev/null 2>&1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

make_pki() {
  rm -rf "$PKI" && mkdir -p "$PKI"
  local o=(-days 7 -nodes) q=(openssl)
  ( cd "$PKI"
    # Serving CA and the apiserver's leaf cert (IP SAN; a leaf, not a CA: rustls rejects CA leafs).
    "${q[@]}" req -x509 -newkey rsa:2048 "${o[@]}" -subj /CN=e2e-serving-ca -keyout serving-ca.key -out serving-ca.crt
    "${q[@]}" req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver.key -out apiserver.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >server.ext
    "${q[@]}" x509 -req -in apiserver.csr -CA serving-ca.crt -CAkey serving-ca.key -CAcreateserial -days 7 \
      -extfile server.ext -out apiserver.crt
    # Client CA and the admin user (CN = user, O = group; system:masters bypasses RBAC).
    "${q[@]}" req -x509 -newkey rsa:2048 "${o[@]}" -subj /CN=e2e-client-ca -keyout client-ca.key -out client-ca.crt
    "${q[@]}" req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=e2e-admin" -keyout admin.key -out admin.csr
    printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' >client.ext
    "${q[@]}" x509 -req -in admin.csr -CA client-ca.crt -CAkey client-ca.key -CAcreateserial -days 7 \
      -extfile client.ext -out admin.crt
    # ServiceAccount token signing key pair (TokenRequest needs only this, no controller).
    "${q[@]}" genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
    "${q[@]}" pkey -in sa.key -pubout -out sa.pub
    rm -f ./*.csr ./*.ext ./*.srl
    chmod 600 ./*.key
  ) >"$LOGS/pki.log" 2>&1 || { cat "$LOGS/pki.log" >&2; die "openssl failed"; }
}

b64() { base64 -w0 <"$1"; }

write_kubeconfig() { # embedded data, so the file can be copied anywhere
  local tmp="$KUBECONFIG_OUT.tmp"
  umask 077
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $1
    certificate-authority-data: $(b64 "$PKI/serving-ca.crt")
users:
- name: e2e-admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: e2e-admin
  context: {cluster: e2e, user: e2e-admin}
current-context: e2e-admin
EOF
  mv "$tmp" "$KUBECONFIG_OUT"
}

spawn() { # name, binary, args...: background, own session, output to a log file
  local name=$1; shift
  setsid "$@" </dev/null >"$LOGS/$name.log" 2>&1 8>&- &
  local pid=$!
  echo "$pid" >"$RUN/$name.pid"
  # Until the forked shell has exec'd the binary, /proc/PID/exe still names bash. (If it died
  # instead, the caller's wait reports that with its log.)
  for _ in $(seq 100); do
    if pid_of "$name" >/dev/null || ! kill -0 "$pid" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  die "$name did not start"
}

wait_for() { # what, name of process that must stay alive, command...
  local what=$1 proc=$2 deadline=$((SECONDS + START_TIMEOUT)); shift 2
  until "$@" >/dev/null 2>&1; do
    if ! pid_of "$proc" >/dev/null; then
      tail -n 30 "$LOGS/$proc.log" >&2 || true
      die "$proc exited while waiting for $what (log: $LOGS/$proc.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$LOGS/$proc.log" >&2 || true
      die "timed out after ${START_TIMEOUT}s waiting for $what (log: $LOGS/$proc.log)"
    fi
    sleep 0.5
  done
}

stop_all() { # in dependency order, each given time to shut down cleanly
  local c pid n=0 deadline
  for c in "${COMPONENTS[@]}"; do
    pid=$(pid_of "$c") || continue
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    n=$((n + 1))
  done
  rm -f "$RUN"/*.pid
  ((n == 0)) || log "stopped $n process(es)"
}

# kube-apiserver's flags, from the ports recorded in $RUN/ports (so a restart comes back at the
# same URL). --advertise-address/--endpoint-reconciler-type: hosts without a default route. The
# default admission plugins stay on, including ServiceAccount: the controller-manager below
# creates the default ServiceAccounts it relies on. The audit log (ServiceAccounts' requests,
# metadata only; e2e/audit-policy.yaml) feeds the RBAC check (e2e/src/bin/rbac-audit.rs); it is
# rotated at 100 MB, keeping 5 old files.
apiserver_args() {
  local etcd_port api_port
  etcd_port=$(awk -F= '$1=="ETCD_PORT"{print $2}' "$RUN/ports")
  api_port=$(awk -F= '$1=="API_PORT"{print $2}' "$RUN/ports")
  printf '%s\n' \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --secure-port="$api_port" \
    --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --cert-dir="$STATE/apiserver" \
    --client-ca-file="$PKI/client-ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=RBAC \
    --allow-privileged=true --profiling=false \
    --audit-policy-file="$STATE/audit-policy.yaml" \
    --audit-log-path="$LOGS/audit.log" --audit-log-format=json --audit-log-mode=blocking \
    --audit-log-maxsize=100 --audit-log-maxbackup=5
}

# What the running kube-apiserver was started with: its flags and audit policy. `up` restarts
# an apiserver whose configuration differs (e.g. one started before audit logging existed).
apiserver_config_hash() {
  { apiserver_args; cat "$ROOT/e2e/audit-policy.yaml"; } | sha256sum | cut -c1-16
}

start_apiserver() {
  local bin api_port args started
  bin=$(awk -F= '$1=="BIN_DIR"{print $2}' "$RUN/ports")
  api_port=$(awk -F= '$1=="API_PORT"{print $2}' "$RUN/ports")
  cp "$ROOT/e2e/audit-policy.yaml" "$STATE/audit-policy.yaml"
  mapfile -t args < <(apiserver_args)
  started=$(date -u +%FT%T.%NZ)
  spawn kube-apiserver "$bin/kube-apiserver" "${args[@]}"
  apiserver_config_hash >"$RUN/apiserver.config"
  wait_for "kube-apiserver /readyz" kube-apiserver \
    curl -fsS --cacert "$PKI/serving-ca.crt" "https://127.0.0.1:$api_port/readyz"
  # When it started and became ready: the RBAC check excuses refusals while it loads RBAC.
  printf '%s %s\n' "$started" "$(date -u +%FT%T.%NZ)" >>"$LOGS/apiserver-starts"
}

apiserver_config_current() {
  [[ -f "$RUN/apiserver.config" && "$(<"$RUN/apiserver.config")" == "$(apiserver_config_hash)" ]]
}

# Stops kube-apiserver (etcd and the controller-manager keep running), keeps it down for
# $1 seconds, and starts it again on the same port: clients see refused connections, then a
# fresh server whose watches must be re-established.
restart_apiserver() {
  local down=${1:-0} pid
  healthy || die "no healthy control plane; run: e2e/cluster.sh up"
  pid=$(pid_of kube-apiserver)
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  sleep "$down"
  start_apiserver
  log "kube-apiserver restarted after ${down}s down"
}

up() {
  if healthy; then
    if ! apiserver_config_current; then
      log "kube-apiserver runs with an older configuration (flags or audit policy); restarting it"
      restart_apiserver 0
    fi
    log "reusing the running control plane at $(api_url)"
    echo "$KUBECONFIG_OUT"
    return
  fi
  stop_all # leftovers of a crashed or half-started cluster
  command -v openssl >/dev/null || die "openssl is required"
  command -v python3 >/dev/null || die "python3 is required (free port discovery)"
  local bin t0=$SECONDS
  bin=$("$ROOT/e2e/build-tools.sh")
  rm -rf "$STATE/etcd" "$STATE/apiserver" "$KUBECONFIG_OUT"
  mkdir -p "$LOGS" "$RUN" "$STATE/apiserver"
  make_pki

  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  printf 'ETCD_PORT=%s\nAPI_PORT=%s\nBIN_DIR=%s\n' "$etcd_port" "$api_port" "$bin" >"$RUN/ports"

  spawn etcd "$bin/etcd" --name=e2e --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="e2e=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync --log-level=warn
  wait_for "etcd health" etcd curl -fsS "http://127.0.0.1:$etcd_port/health"

  start_apiserver
  write_kubeconfig "https://127.0.0.1:$api_port"

  spawn kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$KUBECONFIG_OUT" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
    --use-service-account-credentials=false \
    --controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,clusterrole-aggregation-controller
  # The default ServiceAccount appearing proves the controller-manager is working.
  wait_for "kube-controller-manager (default ServiceAccount)" kube-controller-manager \
    "$bin/kubectl" --kubeconfig="$KUBECONFIG_OUT" -n default get serviceaccount default
  log "control plane ready at https://127.0.0.1:$api_port in $((SECONDS - t0))s (logs: $LOGS)"
  echo "$KUBECONFIG_OUT"
}

env_cmd() {
  healthy || die "no healthy control plane; run: e2e/cluster.sh up"
  local bin
  bin=$(awk -F= '$1=="BIN_DIR"{print $2}' "$RUN/ports")
  # shellcheck disable=SC2016 # $PATH is expanded by the eval of this output
  printf 'export KUBECONFIG=%q\nexport E2E_KUBECONFIG=%q\nexport PATH=%q:"$PATH"\n' \
    "$KUBECONFIG_OUT" "$KUBECONFIG_OUT" "$bin"
}

mkdir -p "$STATE"
case "${1:-}" in
  up | down | env | restart-apiserver) ;;
  *) echo "usage: $0 up|down|env|restart-apiserver [seconds down]" >&2; exit 2 ;;
esac
# One `up`/`down` at a time (concurrent test processes may all ask for a cluster).
exec 8>"$STATE/.lock"
flock 8
case "$1" in
  up) up ;;
  down) stop_all ;;
  env) env_cmd ;;
  restart-apiserver) restart_apiserver "${2:-0}" ;;
esac
