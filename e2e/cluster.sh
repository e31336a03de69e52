#!/usr/bin/env bash
# A real, local Kubernetes control plane for tests and the demo: etcd + kube-apiserver (RBAC and
# the Node authorizer on, its own PKI, loopback only) + kube-controller-manager (garbage
# collection, namespace deletion, default ServiceAccounts, ClusterRole aggregation, Deployments,
# ReplicaSets, EndpointSlices, PodDisruptionBudgets, kube-root-ca.crt). kube-apiserver writes an
# audit log of ServiceAccounts' requests to $STATE/logs/audit.log (e2e/audit-policy.yaml).
#
# With --node it also runs two nodes, so pods run: kube-scheduler, and two kubelets ("localhost"
# on this host's network, "node-b" in a network namespace of its own), each on its own
# containerd and runc from the distribution's packages, with a loopback-only CNI configuration.
# Pods on them use hostNetwork and reach everything on 127.0.0.1; the sandbox (pause) image is
# built locally by e2e/image.sh. See docs/dev/e2e-node.md.
#
#   e2e/cluster.sh up [--node]   start it in the background (or reuse a healthy one); prints the admin kubeconfig path
#   e2e/cluster.sh down   stop every process by its PID
#   e2e/cluster.sh env    print `export` lines (KUBECONFIG, E2E_KUBECONFIG, PATH with kubectl/helm)
#   e2e/cluster.sh restart-apiserver [SECONDS]   stop kube-apiserver, wait, start it again (fault tests)
#
# etcd may grow to 8 GiB (its default 2 GiB quota does not hold a 50,000-object bench run).
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

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pid_of() { # prints the PID of a component we started, if it is still that process
  local f="$RUN/$1.pid" pid exe
  [[ -f "$f" ]] || return 1
  pid=$(<"$f")
  case $1 in
    relay-*) exe='python3*' ;;
    *-b) exe=${1%-b} ;; # node-b's containerd and kubelet
    *) exe=$1 ;;
  esac
  # shellcheck disable=SC2053 # $exe is a pattern
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */$exe ]] && echo "$pid"
}

# A value recorded in $RUN/ports (ports, the tools' directory, the nodes).
ports_value() { awk -F= -v k="$1" '$1 == k { print $2 }' "$RUN/ports"; }

api_url() { [[ -f "$RUN/ports" ]] && echo "https://127.0.0.1:$(ports_value API_PORT)"; }

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
  [[ -f "$PKI/node-b.crt" && -f "$PKI/apiserver-kubelet-client.crt" ]] && return
  {
    leaf_cert kubelet /CN=localhost serving-ca \
      $'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth'
    leaf_cert node /O=system:nodes/CN=system:node:localhost client-ca extendedKeyUsage=clientAuth
    leaf_cert kubelet-b /CN=node-b serving-ca \
      $'subjectAltName=DNS:node-b,IP:127.0.0.1\nextendedKeyUsage=serverAuth'
    leaf_cert node-b /O=system:nodes/CN=system:node:node-b client-ca extendedKeyUsage=clientAuth
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

stop_all() { # in dependency order: the nodes and their containers, then the control plane
  local c n
  n=$(stop_nodes)
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
# rotated at 100 MB, keeping 5 old files. E2E_AUDIT_LOG=off leaves it out (the scale bench: it
# would charge the operator's ServiceAccount a blocking log write per request that the bench's
# raw baselines, made as admin, never pay).
apiserver_args() {
  local etcd_port api_port
  etcd_port=$(ports_value ETCD_PORT)
  api_port=$(ports_value API_PORT)
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
    --allow-privileged=true --profiling=false
  [[ "${E2E_AUDIT_LOG:-on}" == off ]] || printf '%s\n' \
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
  bin=$(ports_value BIN_DIR)
  api_port=$(ports_value API_PORT)
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
    [[ -z "$with_node" ]] || nodes_up
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
    --unsafe-no-fsync --log-level=warn \
    --quota-backend-bytes=8589934592
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
  [[ -z "$with_node" ]] || nodes_up
  echo "$KUBECONFIG_OUT"
}

# --- the nodes -------------------------------------------------------------------------------------
# Two nodes. "localhost" shares this host's network namespace. "node-b" has a network namespace of
# its own, so its hostNetwork Pods have ports of their own (a second replica can bind the same
# metrics port); e2e/tools/ns-relay.py joins its 127.0.0.1 to this host's for the API server
# (and the tests add their KSM test server's port). Each node has its own containerd, with all
# its state (socket, root, state, runc root) under $STATE/<node>/, so it never meets a system
# containerd. Everything listens on loopback only.
#
# Per node: its directory, and for node-b the network namespace and the node IP (kubelet refuses
# a loopback one, so node-b's sits on its namespace's loopback device; nothing connects to it).
node_dir() { [[ $1 == localhost ]] && echo "$STATE/node" || echo "$STATE/$1"; }
NETNS="ke2e-$(printf '%s' "$STATE" | sha256sum | cut -c1-8)"
NODE_B_IP=10.255.0.2

# The node's processes run, and it is Ready and schedulable (no taint left).
node_healthy() { # node name
  local c suffix=${1#localhost}
  suffix=${suffix:+-b}
  for c in containerd kubelet; do pid_of "$c$suffix" >/dev/null || return 1; done
  [[ "$("$(ports_value BIN_DIR)/kubectl" --kubeconfig="$KUBECONFIG_OUT" get node "$1" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}' 2>/dev/null)" == True/ ]]
}

# Kills every container of a node's runc root, then the shims of its containerd.
remove_containers() { # node directory
  local root="$1/runc/k8s.io" id # the shim adds the containerd namespace
  if [[ -d "$root" ]] && command -v runc >/dev/null; then
    for id in $(runc --root "$root" list -q 2>/dev/null); do
      runc --root "$root" kill "$id" KILL 2>/dev/null || true
      runc --root "$root" delete --force "$id" 2>/dev/null || true
    done
  fi
  pkill -KILL -f -- "-address $1/containerd.sock" 2>/dev/null || true
}

# Unmounts what a kubelet and containerd left mounted under a node directory.
release_node_mounts() { # node directory
  local m
  [[ -d "$1" ]] || return 0
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(
    awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
}

stop_nodes() { # prints how many processes it stopped
  local n=0 c dir
  for c in kubelet kubelet-b kube-scheduler relay-b; do stop_component "$c" && n=$((n + 1)); done
  for dir in "$(node_dir localhost)" "$(node_dir node-b)"; do remove_containers "$dir"; done
  for c in containerd containerd-b; do stop_component "$c" && n=$((n + 1)); done
  for dir in "$(node_dir localhost)" "$(node_dir node-b)"; do release_node_mounts "$dir"; done
  ip netns del "$NETNS" 2>/dev/null || true
  echo "$n"
}

write_containerd_config() { # node directory, sandbox image
  cat >"$1/containerd.toml" <<EOF
version = 2
root = "$1/containerd"
state = "$1/containerd-state"
[grpc]
  address = "$1/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$2"
  # The sandbox's oom_score_adj of -998 needs CAP_SYS_RESOURCE, which a container host may lack.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$1/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$1/cni"
EOF
  mkdir -p "$1/cni"
  # Pods use hostNetwork; the runtime only needs some network configured to report itself ready.
  printf '{"cniVersion": "0.4.0", "name": "loopback-only", "plugins": [{"type": "loopback"}]}\n' \
    >"$1/cni/10-loopback.conflist"
}

# failCgroupV1: Kubernetes 1.35 refuses cgroup v1 hosts unless told otherwise. cgroupsPerQOS and
# node allocatable enforcement stay off: the node may itself run inside a container's cgroup.
# Image garbage collection is off, so the locally imported images are never removed.
write_kubelet_config() { # node directory, certificate name, kubelet port, healthz port
  cat >"$1/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix://$1/containerd.sock
address: 127.0.0.1
port: $3
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $4
tlsCertFile: $PKI/$2.crt
tlsPrivateKeyFile: $PKI/$2.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/client-ca.crt}
authorization:
  mode: AlwaysAllow
podLogsDir: $1/pod-logs
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

# Starts one node's containerd and kubelet: "localhost" on this host's network, "node-b" inside
# $NETNS (made here).
start_node() { # node name, sandbox image reference, its archive
  local name=$1 dir suffix="" run_in=() extra=() bin
  dir=$(node_dir "$name")
  bin=$(ports_value BIN_DIR)
  if [[ $name != localhost ]]; then
    suffix=-b
    ip netns add "$NETNS" || die "cannot create network namespace $NETNS (needs CAP_SYS_ADMIN)"
    ip netns exec "$NETNS" ip link set lo up
    ip netns exec "$NETNS" ip addr add "$NODE_B_IP/32" dev lo
    run_in=(nsenter "--net=/var/run/netns/$NETNS")
    extra=(--node-ip="$NODE_B_IP")
    spawn relay-b python3 "$ROOT/e2e/tools/ns-relay.py" "/var/run/netns/$NETNS" "$(ports_value API_PORT)"
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  write_containerd_config "$dir" "$2"
  write_kubelet_config "$dir" "kubelet$suffix" "$(free_port)" "$(free_port)"
  write_kubeconfig "$dir/kubelet.kubeconfig" "$(api_url)" "node$suffix"
  spawn "containerd$suffix" "${run_in[@]}" containerd --config "$dir/containerd.toml"
  wait_for "containerd of $name" "containerd$suffix" ctr --address "$dir/containerd.sock" version
  ctr --address "$dir/containerd.sock" -n k8s.io images import "$3" >>"$LOGS/containerd$suffix.log" 2>&1 ||
    die "importing the pause image into $name failed (log: $LOGS/containerd$suffix.log)"
  spawn "kubelet$suffix" "${run_in[@]}" "$bin/kubelet" --config="$dir/kubelet.yaml" \
    --kubeconfig="$dir/kubelet.kubeconfig" --root-dir="$dir/kubelet" --hostname-override="$name" \
    "${extra[@]}"
}

nodes_up() {
  if node_healthy localhost && node_healthy node-b && pid_of kube-scheduler >/dev/null; then
    log "reusing the running nodes"
    return
  fi
  local c pause_ref pause_archive t0=$SECONDS
  for c in containerd runc ctr nsenter ip; do
    command -v "$c" >/dev/null ||
      die "$c is required for --node (Debian: apt-get install containerd runc iproute2 util-linux)"
  done
  CNI_BIN=${E2E_CNI_BIN:-/usr/lib/cni}
  [[ -x "$CNI_BIN/loopback" ]] ||
    die "the CNI loopback plugin is required in $CNI_BIN (Debian: apt-get install containernetworking-plugins)"
  stop_nodes >/dev/null
  read -r pause_ref pause_archive < <("$ROOT/e2e/image.sh" pause) && [[ -f "$pause_archive" ]] ||
    die "building the pause image failed"
  sed -i '/^NODE/d' "$RUN/ports"
  printf 'NODES=localhost node-b\nNODE_DIR_localhost=%s\nNODE_DIR_node-b=%s\nNODE_NETNS_node-b=%s\n' \
    "$(node_dir localhost)" "$(node_dir node-b)" "/var/run/netns/$NETNS" >>"$RUN/ports"
  spawn kube-scheduler "$(ports_value BIN_DIR)/kube-scheduler" --kubeconfig="$KUBECONFIG_OUT" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=0
  start_node localhost "$pause_ref" "$pause_archive"
  start_node node-b "$pause_ref" "$pause_archive"
  START_TIMEOUT=$((START_TIMEOUT * 2)) wait_for "node localhost Ready" kubelet node_healthy localhost
  START_TIMEOUT=$((START_TIMEOUT * 2)) wait_for "node node-b Ready" kubelet-b node_healthy node-b
  log "nodes localhost and node-b ready in $((SECONDS - t0))s"
}

env_cmd() {
  healthy || die "no healthy control plane; run: e2e/cluster.sh up"
  local bin
  bin=$(ports_value BIN_DIR)
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
