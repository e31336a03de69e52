#!/usr/bin/env bash
# Builds the e2e control-plane tools (kube-apiserver, kube-controller-manager, kubectl, etcd, helm)
# from the pinned Go wrapper modules in e2e/tools/, the node (kubelet, kube-scheduler, from
# e2e/tools/node at the same Kubernetes version) and the GitOps status checker (gitops-check,
# e2e/tools/gitops-check), and prints a directory holding all of them.
#
# Binaries are cached outside the work tree under a key derived from the go.mod/go.sum files, the
# Go version and the build flags, so a warm run only checks a stamp file. The node and the checker
# have keys of their own, so changing them never rebuilds the control plane. Ready-made
# binaries are used instead of building when `E2E_BIN_DIR` or `KUBEBUILDER_ASSETS`
# (setup-envtest layout) holds them; whatever is missing there is still built.
#
# Usage: e2e/build-tools.sh            (progress on stderr, the bin dir on stdout)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/e2e/tools"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/keeper-operator-e2e"
ALL_TOOLS=(kube-apiserver kube-controller-manager kubectl etcd helm)

log() { printf '[build-tools] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- ready-made binaries -------------------------------------------------------------------------
external_dir() {
  if [[ -n "${E2E_BIN_DIR:-}" ]]; then echo "$E2E_BIN_DIR"
  elif [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then echo "$KUBEBUILDER_ASSETS"
  fi
}
EXT=$(external_dir)
missing=()
for t in "${ALL_TOOLS[@]}"; do
  [[ -n "$EXT" && -x "$EXT/$t" ]] || missing+=("$t")
done

# --- tools with their own cache keys ---------------------------------------------------------------
# The GitOps checker and the node (kubelet, kube-scheduler) each have their own key, which covers
# their module files, sources, Go version and flags, so changing them never rebuilds the control
# plane and vice versa.

# Builds `packages` of the Go module in `dir` into $CACHE/bin/<name>-<key> (once, under a lock of
# its own) and prints that directory.
keyed_build() { # name, module dir, go install arguments (flags, then packages)...
  local name=$1 src=$2 key dir
  shift 2
  command -v go >/dev/null || die "Go is required to build $name (or put it in E2E_BIN_DIR)"
  key=$( { cat "$src"/go.mod "$src"/go.sum; cat "$src"/*.go 2>/dev/null || true; go version
    echo "$GOFLAGS|$*"; } | sha256sum | cut -c1-16)
  dir="$CACHE/bin/$name-$key"
  if [[ ! -f "$dir/.complete" ]]; then
    mkdir -p "$CACHE/bin"
    # Its own lock: a cold control-plane build elsewhere must not hold it up.
    exec 7>"$CACHE/bin/.lock-$name"
    flock 7
    if [[ ! -f "$dir/.complete" ]]; then
      log "$name: building (a cold build takes minutes)"
      rm -rf "$dir.tmp"
      (cd "$src" && GOBIN="$dir.tmp" go install "$@" >&2) || die "$name: go build failed"
      touch "$dir.tmp/.complete"
      mv "$dir.tmp" "$dir"
    fi
    exec 7>&-
  fi
  echo "$dir"
}

# Prints the path of tool `name`: ready-made in $EXT, else built under its own key.
keyed_tool() { # name, then keyed_build's arguments
  local name=$1
  shift
  if [[ -n "$EXT" && -x "$EXT/$name" ]]; then echo "$EXT/$name"; return; fi
  echo "$(keyed_build "$@")/$name"
}

# Prints a directory of symlinks to the control-plane tools (each from $EXT when it has it, else
# from $BIN_DIR) and the checker. Links are only (re)made when wrong, so concurrent runs never
# see a tool missing.
publish() {
  local -A own
  local merged t target
  own[gitops-check]=$(keyed_tool gitops-check gitops-check "$TOOLS/gitops-check" -ldflags="-s -w" .)
  for t in kubelet kube-scheduler; do
    own[$t]=$(keyed_tool "$t" node "$TOOLS/node" -tags="$K8S_TAGS" -pgo=off -ldflags="$K8S_LDFLAGS" \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler)
  done
  merged="$CACHE/bin/tools-$(printf '%s|%s|%s' "$EXT" "${BIN_DIR:-}" "${own[*]}" | sha256sum | cut -c1-16)"
  mkdir -p "$merged"
  for t in "${ALL_TOOLS[@]}" "${!own[@]}"; do
    if [[ -n "${own[$t]:-}" ]]; then target=${own[$t]}
    elif [[ -n "$EXT" && -x "$EXT/$t" ]]; then target="$EXT/$t"
    else target="$BIN_DIR/$t"
    fi
    [[ "$(readlink "$merged/$t" 2>/dev/null)" == "$target" ]] || ln -sfn "$target" "$merged/$t"
  done
  [[ -z "$EXT" ]] || log "using ready-made binaries from $EXT, built: ${missing[*]:-none}"
  echo "$merged"
}

# --- build flags (kept identical across runs so GOCACHE and the stamp stay valid) ----------------
modver() { awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$TOOLS/$1/go.mod"; }
KV=$(modver k8s k8s.io/kubernetes)
HV=$(modver helm helm.sh/helm/v3)
[[ -n "$KV" && -n "$HV" ]] || die "cannot read pinned versions from e2e/tools/*/go.mod"
KMINOR=$(cut -d. -f2 <<<"$KV")

# Version stamping as Kubernetes' hack/lib/version.sh does; a constant buildDate keeps links cacheable.
K8S_LDFLAGS="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $p.gitVersion=$KV -X $p.gitMajor=1 -X $p.gitMinor=$KMINOR -X $p.gitTreeState=clean"
  K8S_LDFLAGS+=" -X $p.gitCommit=unknown -X $p.buildDate=1970-01-01T00:00:00Z"
done
K8S_TAGS="selinux,notest,grpcnotrace"
# Without these, helm assumes Kubernetes 1.20 for capabilities and lint deprecation checks.
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HV"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  HELM_LDFLAGS+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$KMINOR"
done
ETCD_LDFLAGS="-s -w"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -modcacherw"

if [[ ${#missing[@]} -eq 0 ]]; then
  publish
  exit 0
fi
needs() { local t; for t in "$@"; do [[ " ${missing[*]} " == *" $t "* ]] && return 0; done; return 1; }

command -v go >/dev/null || die "Go is required to build the control plane (or set E2E_BIN_DIR / KUBEBUILDER_ASSETS)"

# The control-plane modules only (in the order a glob would list them, which keeps earlier keys).
KEY=$( { cat "$TOOLS"/{etcd,helm,k8s}/go.mod "$TOOLS"/{etcd,helm,k8s}/go.sum; go version
  echo "$GOFLAGS|$K8S_LDFLAGS|$K8S_TAGS|$HELM_LDFLAGS|$ETCD_LDFLAGS"; } | sha256sum | cut -c1-16)
BIN_DIR="$CACHE/bin/$KEY"

have_all() { local t; for t in "${missing[@]}"; do [[ -x "$BIN_DIR/$t" ]] || return 1; done; }
if [[ -f "$BIN_DIR/.complete" ]] && have_all; then publish; exit 0; fi

mkdir -p "$CACHE/bin"
exec 9>"$CACHE/bin/.lock"
log "waiting for the build lock"; flock 9
if [[ -f "$BIN_DIR/.complete" ]] && have_all; then publish; exit 0; fi

# --- cold build, with progress ---------------------------------------------------------------------
STAGE="$BIN_DIR.tmp"
mkdir -p "$STAGE"
# Keep what an earlier partial build finished (go install then skips relinking).
[[ -d "$BIN_DIR" ]] && cp -a "$BIN_DIR"/. "$STAGE"/ && rm -rf "$BIN_DIR"
START=$SECONDS

# `go build -v` names each package it actually compiles; report every 100 and the elapsed time.
progress() {
  local what=$1 n=0 line
  while IFS= read -r line; do
    case "$line" in
      *" "* | *:*) printf '%s\n' "$line" >&2 ;; # diagnostics; package paths have neither
      *) n=$((n + 1)); ((n % 100 == 0)) && log "$what: $n packages compiled ($((SECONDS - START))s)" ;;
    esac
  done
  log "$what: done, $n packages compiled ($((SECONDS - START))s)"
}

run_go() { # what, dir, go args...
  local what=$1 dir=$2; shift 2
  log "$what: building ($KV / helm $HV); a cold build takes minutes to tens of minutes"
  if ! (cd "$dir" && go "$1" -v "${@:2}" 2>&1) | progress "$what"; then die "$what: go build failed"; fi
}

if needs etcd; then
  run_go etcd "$TOOLS/etcd" build -ldflags="$ETCD_LDFLAGS" -o "$STAGE/etcd" go.etcd.io/etcd/server/v3
fi
k8s_pkgs=()
needs kube-apiserver && k8s_pkgs+=(k8s.io/kubernetes/cmd/kube-apiserver)
needs kube-controller-manager && k8s_pkgs+=(k8s.io/kubernetes/cmd/kube-controller-manager)
needs kubectl && k8s_pkgs+=(k8s.io/kubernetes/cmd/kubectl)
if [[ ${#k8s_pkgs[@]} -gt 0 ]]; then
  GOBIN="$STAGE" run_go kubernetes "$TOOLS/k8s" install -tags="$K8S_TAGS" -pgo=off -ldflags="$K8S_LDFLAGS" "${k8s_pkgs[@]}"
fi
if needs helm; then
  GOBIN="$STAGE" run_go helm "$TOOLS/helm" install -ldflags="$HELM_LDFLAGS" helm.sh/helm/v3/cmd/helm
fi

for t in "${missing[@]}"; do [[ -x "$STAGE/$t" ]] || die "$t was not produced"; done
touch "$STAGE/.complete"
mv "$STAGE" "$BIN_DIR"
log "tools ready in $BIN_DIR ($((SECONDS - START))s)"
publish
