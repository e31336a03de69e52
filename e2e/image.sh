#!/usr/bin/env bash
umask 022 # reproducible modes whatever the caller (a 077 umask would also hide files from non-root users)
# Builds container images without Docker and without a registry, as OCI archives that
# `ctr images import` (and podman, skopeo, crane) load:
#
#   e2e/image.sh operator   the operator: the release binary on a runtime base that holds what the
#                           distroless cc base holds (glibc and libgcc as the binary links them,
#                           CA certificates, the nonroot user, /tmp), with the USER, ENTRYPOINT,
#                           CMD, EXPOSE and LABELs of the Dockerfile's final stage
#   e2e/image.sh pause      the pod sandbox image of the e2e node: a static pause binary
#
# Each prints "<image reference> <archive path>". The tag is derived from the image's content, so
# an unchanged build gives the same reference. Archives are kept in
# ${XDG_CACHE_HOME:-$HOME/.cache}/keeper-operator-e2e/images.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="${XDG_CACHE_HOME:-$HOME/.cache}/keeper-operator-e2e/images"
PACK="$ROOT/e2e/tools/oci-archive.py"
NONROOT=65532

log() { printf '[image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Packs rootfs $1 with runtime config $2 as repository $3, tagged by content; prints the
# reference and the archive.
pack() { # rootfs, config.json, repository, owner specs...
  python3 "$PACK" --rootfs "$1" --config "$2" --repository "$3" --out-dir "$OUT" "${@:4}"
}

# The final stage of the Dockerfile as an OCI runtime config (JSON), and the path its
# `COPY --from=builder` puts the binary at, on the last line.
dockerfile_runtime() {
  python3 - "$ROOT/Dockerfile" <<'EOF'
import json, re, shlex, sys

text = re.sub(r"\\\n", " ", open(sys.argv[1]).read())
lines = [l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
stage = lines[max(i for i, l in enumerate(lines) if l.upper().startswith("FROM ")) + 1:]
config, binary = {"Labels": {}}, None
for line in stage:
    op, _, rest = line.partition(" ")
    op = op.upper()
    if op == "USER":
        config["User"] = rest.strip()
    elif op in ("ENTRYPOINT", "CMD"):
        config[op.capitalize() if op == "CMD" else "Entrypoint"] = json.loads(rest)
    elif op == "EXPOSE":
        config["ExposedPorts"] = {p if "/" in p else p + "/tcp": {} for p in rest.split()}
    elif op == "LABEL":
        for item in shlex.split(rest):
            key, _, value = item.partition("=")
            config["Labels"][key] = value
    elif op == "COPY" and "--from=builder" in rest:
        binary = rest.split()[-1]
    elif op in ("ENV", "WORKDIR", "RUN", "ADD", "VOLUME"):
        sys.exit(f"Dockerfile: the offline image does not handle {op} in the final stage")
if not binary or "Entrypoint" not in config:
    sys.exit("Dockerfile: the final stage needs COPY --from=builder and ENTRYPOINT")
config["Env"] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"]
print(json.dumps(config, sort_keys=True))
print(binary)
EOF
}

# Copies a file into the rootfs at the same path, with each symlink on the way (ld.so and the
# libraries are reached through links such as /lib64 -> /usr/lib64).
install_host_file() { # rootfs, absolute path
  local root=$1 path=$2 target
  while [[ -L "$path" ]]; do
    mkdir -p "$root$(dirname "$path")"
    target=$(readlink "$path")
    ln -sfn "$target" "$root$path"
    [[ $target == /* ]] || target="$(dirname "$path")/$target"
    path=$target
  done
  install -D -m "$(stat -c %a "$path")" "$path" "$root$path"
}

operator() {
  command -v cargo >/dev/null || die "cargo is required"
  log "operator: cargo build --release"
  (cd "$ROOT" && cargo build --quiet --release --locked -p keeper-operator --bin keeper-operator) >&2
  local bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/keeper-operator" work runtime dest lib
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  runtime=$(dockerfile_runtime) || die "cannot read the Dockerfile's final stage"
  head -n1 <<<"$runtime" >"$work/config.json"
  dest=$(tail -n1 <<<"$runtime")
  local root="$work/rootfs"
  install -D -m 0755 "$bin" "$root$dest"
  # The shared libraries the binary links, and the dynamic loader.
  while read -r lib; do install_host_file "$root" "$lib"; done < <(
    ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
  install_host_file "$root" /etc/ssl/certs/ca-certificates.crt
  mkdir -p "$root/etc" "$root/tmp" "$root/home/nonroot"
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/home/nonroot"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
    "$NONROOT" "$NONROOT" >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:%s:\n' "$NONROOT" >"$root/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
  pack "$root" "$work/config.json" docker.io/library/keeper-operator \
    --owner "home/nonroot=$NONROOT:$NONROOT"
}

pause() {
  command -v gcc >/dev/null || die "gcc is required (the pause binary is C, linked statically)"
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  mkdir -p "$work/rootfs"
  gcc -static -Os -s -Wall -Wextra -Werror -o "$work/rootfs/pause" "$ROOT/e2e/tools/pause/pause.c" \
    || die "pause: static link failed (needs libc6-dev)"
  printf '{"Entrypoint": ["/pause"], "User": "65535:65535"}\n' >"$work/config.json"
  pack "$work/rootfs" "$work/config.json" localhost/keeper-e2e/pause
}

case "${1:-}" in
  operator) operator ;;
  pause) pause ;;
  *) echo "usage: $0 operator|pause" >&2; exit 2 ;;
esac
