#!/usr/bin/env bash
# A real, local Kubernetes control plane for tests and the demo: etcd + kube-apiserver (RBAC and
# the Node authorizer on, its own PKI, loopback only) + kube-controller-manager (garbage
# collection, namespace deletion, default ServiceAccounts, ClusterRole aggregation, Deployments,
# ReplicaSets, EndpointSlices, PodDisruptionBudgets, kube-root-ca.crt). kube-apiserver writes an
# audit log of ServiceAccounts' requests to $STATE/logs/audit.log (e2e/audit-policy.yaml).
#
# With --node it also runs a node, so pods run: kube-scheduler, and a kubelet (node "localhost")
# on its own containerd and runc from the distribution's packages, with a loopback-only CNI
# configuration. Pods on it use hostNetwork and reach everything on 127.0.0.1; the sandbox
# (pause) image is built locally by e2e/image.sh. See docs/e2e-node.md.
#
#   e2e/cluster.sh up [--node]   start it in the background (or reuse a healthy one); prints the admin kubeconfig path
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
# What a Deployment needs to become running Pods behind a Service, besides the basics (the node
# lifecycle controller lifts the not-ready taint a kubelet registers with).
CONTROLLERS=(garbage-collector-controller namespace-controller serviceaccount-controller
  clusterrole-aggregation-controller deployment-controller replicaset-controller
  endpointslice-controller disruption-controller root-ca-certificate-publisher-controller
  node-lifecycle-controller)
NODE_NAME=localhost # the API server reaches the kubelet by this name (address type Hostname)
NODE="$STATE/node"

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

# A leaf certificate $1.crt/$1.key in $PKI signed by CA $3, with extensions $4 (a leaf, not a CA:
# rustls rejects CA leafs).
leaf_cert() { # name, subject, CA name, extensions
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$PKI/$1.key" -out "$PKI/$1.csr"
  printf '%s\nbasicConstraints=CA:FALSE\n' "$4" >"$PKI/$1.ext"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$3.crt" -CAkey "$PKI/$3.key" -CAcreateserial -days 7 \
    -extfile "$PKI/$1.ext" -out "$PKI/$1.crt"
  rm -f "$PKI/$1.csr" "$PKI/$1.ext" "$PKI"/*.srl
  chmod 600 "$PKI/$1.key"
}

make_pki() {
  rm -rf "$PKI" && mkdir -p "$PKI"
  {
    # Serving CA and the apiserver's certificate.
    openssl req -x509 -newkey rsa:2048 -days 7 -nodes -subj /CN=e2e-serving-ca \
      -keyout "$PKI/serving-ca.key" -out "$PKI/serving-ca.crt"
    leaf_cert apiserver /CN=kube-apiserver serving-ca \
      $'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth'
    # Client CA and the admin user (CN = user, O = group; system:masters bypasses RBAC).
    openssl req -x509 -newkey rsa:2048 -days 7 -nodes -subj /CN=e2e-client-ca \
      -keyout "$PKI/client-ca.key" -out "$PKI/client-ca.crt"
    leaf_cert admin "/O=system:masters/CN=e2e-admin" client-ca extendedKeyUsage=clientAuth
    # ServiceAccount token signing key pair (TokenRequest needs only this, no controller).
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key"
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
    chmod 600 "$PKI"/*.key
  } >"$LOGS/pki.log" 2>&1 || { cat "$LOGS/pki.log" >&2; die "openssl failed"; }
}

# The node's certificates, made when missing (a control plane started before the node existed
# has none): the kubelet's serving certificate, its client certificate (user
# system:node:<name>, which the Node authorizer scopes to its own pods), and the API server's
# client certificate for calling the kubelet (logs).
node_pki() {
  [[ -f "$PKI/kubelet.crt" && -f "$PKI/node.crt" && -f "$PKI/apiserver-kubelet-client.crt" ]] && return
  {
    leaf_cert kubelet "/CN=$NODE_NAME" serving-ca \
      $'subjectAltName=DNS:'"$NODE_NAME"$',IP:127.0.0.1\nextendedKeyUsage=serverAuth'
    leaf_cert node "/O=system:nodes/CN=system:node:$NODE_NAME" client-ca extendedKeyUsage=clientAuth
    leaf_cert apiserver-kubelet-client /CN=kube-apiserver-kubelet-client client-ca \
      extendedKeyUsage=clientAuth
  } >>"$LOGS/pki.log" 2>&1 || { cat "$LOGS/pki.log" >&2; die "openssl failed"; }
}

b64() { base64 -w0 <"$1"; }

write_kubeconfig() { # file, server URL, certificate name in $PKI (embedded, so the file can be copied anywhere)
  local tmp="$1.tmp"
  (umask 077 && : >"$tmp")
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $2
    certificate-authority-data: $(b64 "$PKI/serving-ca.crt")
users:
- name: e2e-$3
  user:
    client-certificate-data: $(b64 "$PKI/$3.crt")
    client-key-data: $(b64 "$PKI/$3.key")
contexts:
- name: e2e-$3
  context: {cluster: e2e, user: e2e-$3}
current-context: e2e-$3
EOF
  mv "$tmp" "$1"
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

stop_component() { # name: TERM, up to 15 s to shut down cleanly, then KILL; fails if not running
  local pid deadline
  pid=$(pid_of "$1") || return 1
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$RUN/$1.pid"
}

stop_all() { # in dependency order: the node and its containers, then the control plane
  local c n=0
  stop_component kubelet && n=$((n + 1))
  stop_component kube-scheduler && n=$((n + 1))
  remove_containers
  stop_component containerd && n=$((n + 1))
  release_node_mounts
  for c in "${COMPONENTS[@]}"; do stop_component "$c" && n=$((n + 1)); done
  rm -f "$RUN"/*.pid
  ((n == 0)) || log "stopped $n process(es)"
}

# kube-apiserver's flags, from the ports recorded in $RUN/ports (so a restart comes back at the
# same URL). --advertise-address/--endpoint-reconciler-type: hosts without a default route. It
# reaches a kubelet by the node's name (Hostname), verified against the serving CA. The
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
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/serving-ca.crt" \
    --kubelet-preferred-address-types=Hostname \
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
  local with_node=$1
  if healthy; then
    node_pki
    if ! apiserver_config_current; then
      log "kube-apiserver runs with an older configuration (flags or audit policy); restarting it"
      restart_apiserver 0
    fi
    log "reusing the running control plane at $(api_url)"
    [[ -z "$with_node" ]] || node_up
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
  node_pki

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
  write_kubeconfig "$KUBECONFIG_OUT" "https://127.0.0.1:$api_port" admin

  spawn kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$KUBECONFIG_OUT" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
    --use-service-account-credentials=false --root-ca-file="$PKI/serving-ca.crt" \
    --controllers="$(IFS=,; echo "${CONTROLLERS[*]}")"
  # The default ServiceAccount appearing proves the controller-manager is working.
  wait_for "kube-controller-manager (default ServiceAccount)" kube-controller-manager \
    "$bin/kubectl" --kubeconfig="$KUBECONFIG_OUT" -n default get serviceaccount default
  log "control plane ready at https://127.0.0.1:$api_port in $((SECONDS - t0))s (logs: $LOGS)"
  [[ -z "$with_node" ]] || node_up
  echo "$KUBECONFIG_OUT"
}

# --- the node ------------------------------------------------------------------------------------
# containerd keeps all its state under $NODE (its own socket, root, state and runc root), so it
# never meets a system containerd. Everything listens on loopback only.

ports_value() { awk -F= -v k="$1" '$1 == k { print $2 }' "$RUN/ports"; }

# Its processes run, and the node is Ready and schedulable (no taint left).
node_healthy() {
  local c
  for c in containerd kube-scheduler kubelet; do pid_of "$c" >/dev/null || return 1; done
  [[ "$("$(ports_value BIN_DIR)/kubectl" --kubeconfig="$KUBECONFIG_OUT" get node "$NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}' 2>/dev/null)" == True/ ]]
}

# Kills every container of this node's runc root, then the shims of its containerd.
remove_containers() {
  local root="$NODE/runc/k8s.io" id # the shim adds the containerd namespace
  if [[ -d "$root" ]] && command -v runc >/dev/null; then
    for id in $(runc --root "$root" list -q 2>/dev/null); do
      runc --root "$root" kill "$id" KILL 2>/dev/null || true
      runc --root "$root" delete --force "$id" 2>/dev/null || true
    done
  fi
  pkill -KILL -f -- "-address $NODE/containerd.sock" 2>/dev/null || true
}

# Unmounts what the kubelet and containerd left mounted under $NODE (volumes, rootfs, shm).
release_node_mounts() {
  local m
  [[ -d "$NODE" ]] || return 0
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(
    awk -v p="$NODE/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
}

write_containerd_config() { # sandbox image
  cat >"$NODE/containerd.toml" <<EOF
version = 2
root = "$NODE/containerd"
state = "$NODE/containerd-state"
[grpc]
  address = "$NODE/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$1"
  # The sandbox's oom_score_adj of -998 needs CAP_SYS_RESOURCE, which a container host may lack.
  restrict_oom_score_adj = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$NODE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$NODE/cni"
EOF
  mkdir -p "$NODE/cni"
  # Pods use hostNetwork; the runtime only needs some network configured to report itself ready.
  printf '{"cniVersion": "0.4.0", "name": "loopback-only", "plugins": [{"type": "loopback"}]}\n' \
    >"$NODE/cni/10-loopback.conflist"
}

# failCgroupV1: Kubernetes 1.35 refuses cgroup v1 hosts unless told otherwise. cgroupsPerQOS and
# node allocatable enforcement stay off: the node may itself run inside a container's cgroup.
# Image garbage collection is off, so the locally imported images are never removed.
write_kubelet_config() { # kubelet port, healthz port
  cat >"$NODE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix://$NODE/containerd.sock
address: 127.0.0.1
port: $1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $2
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/client-ca.crt}
authorization:
  mode: AlwaysAllow
podLogsDir: $NODE/pod-logs
failSwapOn: false
resolvConf: ""
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
EOF
}

node_up() {
  if node_healthy; then
    log "reusing the running node $NODE_NAME"
    return
  fi
  local c bin pause_ref pause_archive kubelet_port healthz_port t0=$SECONDS
  for c in containerd runc ctr; do
    command -v "$c" >/dev/null || die "$c is required for --node (Debian: apt-get install containerd runc)"
  done
  CNI_BIN=${E2E_CNI_BIN:-/usr/lib/cni}
  [[ -x "$CNI_BIN/loopback" ]] ||
    die "the CNI loopback plugin is required in $CNI_BIN (Debian: apt-get install containernetworking-plugins)"
  stop_component kubelet || true
  stop_component kube-scheduler || true
  remove_containers
  stop_component containerd || true
  release_node_mounts
  rm -rf "$NODE"
  mkdir -p "$NODE"
  bin=$(ports_value BIN_DIR)
  read -r pause_ref pause_archive < <("$ROOT/e2e/image.sh" pause)
  write_containerd_config "$pause_ref"
  kubelet_port=$(free_port); healthz_port=$(free_port)
  write_kubelet_config "$kubelet_port" "$healthz_port"
  write_kubeconfig "$NODE/kubelet.kubeconfig" "$(api_url)" node
  sed -i '/^CONTAINERD_ADDRESS=/d; /^RUNC_ROOT=/d; /^NODE_NAME=/d' "$RUN/ports"
  printf 'CONTAINERD_ADDRESS=%s\nRUNC_ROOT=%s\nNODE_NAME=%s\n' \
    "$NODE/containerd.sock" "$NODE/runc/k8s.io" "$NODE_NAME" >>"$RUN/ports"

  spawn containerd containerd --config "$NODE/containerd.toml"
  wait_for "containerd" containerd ctr --address "$NODE/containerd.sock" version
  ctr --address "$NODE/containerd.sock" -n k8s.io images import "$pause_archive" >>"$LOGS/containerd.log" 2>&1 ||
    die "importing the pause image failed (log: $LOGS/containerd.log)"

  spawn kube-scheduler "$bin/kube-scheduler" --kubeconfig="$KUBECONFIG_OUT" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=0
  spawn kubelet "$bin/kubelet" --config="$NODE/kubelet.yaml" --kubeconfig="$NODE/kubelet.kubeconfig" \
    --root-dir="$NODE/kubelet" --hostname-override="$NODE_NAME"
  START_TIMEOUT=$((START_TIMEOUT * 2)) wait_for "node $NODE_NAME Ready" kubelet node_healthy
  log "node $NODE_NAME ready in $((SECONDS - t0))s (containerd socket: $NODE/containerd.sock)"
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
  *) echo "usage: $0 up [--node]|down|env|restart-apiserver [seconds down]" >&2; exit 2 ;;
esac
# One `up`/`down` at a time (concurrent test processes may all ask for a cluster).
exec 8>"$STATE/.lock"
flock 8
case "$1" in
  up) up "$([[ "${2:-}" == --node ]] && echo node)" ;;
  down) stop_all ;;
  env) env_cmd ;;
  restart-apiserver) restart_apiserver "${2:-0}" ;;
esac
