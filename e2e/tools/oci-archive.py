#!/usr/bin/env python3
"""Packs a root filesystem directory into a single-layer OCI image archive (an OCI layout in a
tar file, as `docker save`/`buildah push oci-archive:` write it), reproducibly: files are sorted,
every timestamp is zero, and ownership comes from the command line, not from the disk.

    oci-archive.py --rootfs DIR --config CONFIG.json --repository REPO --out-dir DIR \
        [--owner PATH=UID:GID ...]

CONFIG.json is the image's runtime config (the "config" object of the OCI image config: User,
Entrypoint, Cmd, ExposedPorts, Labels, ...). Every entry is owned by 0:0 unless an --owner
names it (paths relative to the root, e.g. home/nonroot=65532:65532). The image is tagged by its
content, REPO:e2e-<first 12 hex digits of the manifest digest>; that reference is recorded in the
index (so `ctr images import` names the image), and the archive is written to
OUT_DIR/<last part of REPO>-<those 12 digits>.tar. Prints the reference and the archive path.
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile


def layer_tar(rootfs, owners):
    """The rootfs as an uncompressed tar with normalised metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = []
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in dirnames + sorted(filenames):
                paths.append(os.path.join(dirpath, name))
        for path in sorted(paths, key=lambda p: os.path.relpath(p, rootfs)):
            rel = os.path.relpath(path, rootfs)
            info = tar.gettarinfo(path, arcname=rel)
            info.mtime = 0
            info.uid, info.gid = owners.get(rel, (0, 0))
            info.uname = info.gname = ""
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rootfs", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--repository", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--owner", action="append", default=[], metavar="PATH=UID:GID")
    args = p.parse_args()

    owners = {}
    for spec in args.owner:
        path, _, ids = spec.partition("=")
        uid, _, gid = ids.partition(":")
        owners[path.strip("/")] = (int(uid), int(gid))

    with open(args.config) as f:
        runtime = json.load(f)
    layer_digest, layer = blob(layer_tar(args.rootfs, owners))
    config_digest, config = blob(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": runtime,
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
                "history": [{"created_by": "e2e/tools/oci-archive.py"}],
            },
            sort_keys=True,
        ).encode()
    )
    manifest_digest, manifest = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            },
            sort_keys=True,
        ).encode()
    )
    short = manifest_digest.split(":")[1][:12]
    tag = "e2e-" + short
    name = f"{args.repository}:{tag}"
    out = os.path.join(args.out_dir, f"{args.repository.rsplit('/', 1)[-1]}-{short}.tar")
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    files = [
        ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
        ("index.json", json.dumps(index, sort_keys=True).encode()),
    ] + [
        ("blobs/sha256/" + digest.split(":")[1], data)
        for digest, data in ((layer_digest, layer), (config_digest, config), (manifest_digest, manifest))
    ]
    os.makedirs(args.out_dir, exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    print(name, out)


if __name__ == "__main__":
    sys.exit(main())
