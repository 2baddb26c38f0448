#!/usr/bin/env python3
"""Packs plugin.wasm as an OCI image layout, without Docker (`make oci` runs it).

    python3 deploy/oci_image.py dist/plugin.wasm dist/oci --tag 0.1.0

The image is the *compat* variant of the Wasm image spec (solo-io/wasm, spec-compat.md), the
one both Istio's agent and Envoy Gateway read (`pkg/wasm/imagefetcher.go`, in both):

- one layer, media type `application/vnd.oci.image.layer.v1.tar+gzip`, a tar holding
  `plugin.wasm` (the fetchers take the image's last layer, gunzip it and return the entry
  named `plugin.wasm`);
- the manifest annotation `module.wasm.image/variant: compat`, which the spec requires for
  that media type;
- an ordinary OCI image config (`os`/`architecture` `wasip1`/`wasm`, `rootfs.diff_ids`), so
  registries and tools (skopeo, crane, oras, docker) treat it as any image.

The one-layer `oras push` artifact (`application/vnd.module.wasm.content.layer.v1+wasm`) is
refused by both fetchers: their *oci* variant wants exactly two layers.

Output, a directory per the OCI image-layout spec: `oci-layout`, `index.json` (one manifest,
tagged with `org.opencontainers.image.ref.name`) and `blobs/sha256/<hex>`. The build is
reproducible: same plugin.wasm, same digests. The manifest digest printed at the end is what
Istio's `WasmPlugin.spec.sha256` and Envoy Gateway's `code.image.sha256` compare against (bare
hex, no `sha256:`), NOT the sha256 of plugin.wasm. Push with a tool that copies the manifest
as it is, e.g. `skopeo copy oci:dist/oci:TAG docker://REGISTRY/aigate:TAG`, and check the
registry's digest (`skopeo inspect --format '{{.Digest}}' docker://REGISTRY/aigate:TAG`).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
VARIANT_ANNOTATION = "module.wasm.image/variant"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
WASM_FILE = "plugin.wasm"
WASM_MAGIC = b"\0asm"


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _layer_tar(wasm: bytes) -> bytes:
    """An uncompressed tar with plugin.wasm at its root; fixed owner, mode and time."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(WASM_FILE)
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return out.getvalue()


def _gzip(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return out.getvalue()


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"

    def put(self, media_type: str, data: bytes, annotations: dict[str, str] | None = None) -> dict[str, object]:
        """Stores a blob under its digest; returns its OCI descriptor."""
        digest = hashlib.sha256(data).hexdigest()
        self.blobs.mkdir(parents=True, exist_ok=True)
        (self.blobs / digest).write_bytes(data)
        descriptor: dict[str, object] = {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}
        if annotations:
            descriptor["annotations"] = annotations
        return descriptor


def build(wasm: bytes, root: Path, tag: str, version: str | None = None) -> str:
    """Writes the layout; returns the manifest digest as bare hex."""
    if not wasm.startswith(WASM_MAGIC):
        raise ValueError(f"not a Wasm module (no {WASM_MAGIC!r} magic)")
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} exists and is not empty")
    layout = Layout(root)
    tar = _layer_tar(wasm)
    layer = layout.put(LAYER_MEDIA_TYPE, _gzip(tar))
    config = {
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]},
    }
    manifest_annotations = {VARIANT_ANNOTATION: "compat", "org.opencontainers.image.title": WASM_FILE}
    if version:
        manifest_annotations["org.opencontainers.image.version"] = version
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": layout.put(CONFIG_MEDIA_TYPE, _json(config)),
        "layers": [layer],
        "annotations": manifest_annotations,
    }
    manifest_descriptor = layout.put(MANIFEST_MEDIA_TYPE, _json(manifest), {REF_NAME_ANNOTATION: tag})
    index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [manifest_descriptor]}
    (root / "index.json").write_bytes(_json(index))
    (root / "oci-layout").write_bytes(_json(OCI_LAYOUT))
    return str(manifest_descriptor["digest"]).removeprefix("sha256:")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wasm", type=Path, help="the filter, e.g. dist/plugin.wasm")
    parser.add_argument("out", type=Path, help="the layout directory to create, e.g. dist/oci")
    parser.add_argument("--tag", required=True, help="the tag recorded in index.json, e.g. 0.1.0")
    args = parser.parse_args(argv)
    wasm = args.wasm.read_bytes()
    try:
        digest = build(wasm, args.out, args.tag, version=args.tag)
    except ValueError as err:
        print(f"oci_image: {err}", file=sys.stderr)
        return 1
    print(f"{args.out}: OCI image layout, tag {args.tag}, one layer ({WASM_FILE}, {len(wasm)} bytes)")
    print(f"sha256 of {args.wasm.name}:   {hashlib.sha256(wasm).hexdigest()}  (Envoy/Envoy Gateway HTTP code sources)")
    print(f"image manifest digest: {digest}  (WasmPlugin sha256, EnvoyExtensionPolicy image.sha256)")
    (args.out.parent / f"{args.out.name}.manifest-digest").write_text(digest + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
