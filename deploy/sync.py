#!/usr/bin/env python3
"""Copies what the platform manifests repeat from their sources, so they stay in step:

- aigate's `stats_tags` (source: `stats_config.stats_tags` of envoy/envoy.yaml) into the Istio
  bootstrap-override ConfigMap (deploy/istio/observability.yaml) and the Envoy Gateway
  bootstrap JSON patches (deploy/envoy-gateway/envoyproxy.yaml);
- the JSON access-log fields (source: deploy/envoy/access-log-json.yaml) into the istiod
  values (deploy/istio/istiod-values.yaml) and the EnvoyProxy's access log.

    python3 deploy/sync.py           # rewrite the generated blocks in place
    python3 deploy/sync.py --check   # exit 1 if any file is out of step (what make test checks too)

Only the generated blocks change; the comments around them stay. Needs PyYAML (.venv).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def stats_tags() -> list[dict[str, str]]:
    return yaml.safe_load((ROOT / "envoy/envoy.yaml").read_text())["stats_config"]["stats_tags"]


def access_log_fields() -> dict[str, str]:
    (logger,) = yaml.safe_load((ROOT / "deploy/envoy/access-log-json.yaml").read_text())
    return logger["typed_config"]["log_format"]["json_format"]


def replace_block(text: str, start: str, end: str | None, body: str) -> str:
    """Replaces the lines after the line `start` up to (not including) the line `end` (or EOF)."""
    head, sep, rest = text.partition(start + "\n")
    if not sep:
        raise ValueError(f"marker line not found: {start!r}")
    if end is None:
        return head + sep + body
    _, sep2, tail = rest.partition(end + "\n")
    if not sep2:
        raise ValueError(f"marker line not found: {end!r}")
    return head + sep + body + end + "\n" + tail


def indented(lines: list[str], spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in lines)


def expected() -> dict[Path, str]:
    tags, fields = stats_tags(), access_log_fields()
    out: dict[Path, str] = {}

    path = ROOT / "deploy/istio/observability.yaml"
    bootstrap = json.dumps({"stats_config": {"stats_tags": tags}}, indent=2).splitlines()
    out[path] = replace_block(path.read_text(), "  custom_bootstrap.json: |", "---", indented(bootstrap, 4))

    path = ROOT / "deploy/istio/istiod-values.yaml"
    labels = [f"{k}: {json.dumps(v)}" for k, v in fields.items()]
    out[path] = replace_block(path.read_text(), "        labels:", None, indented(labels, 10))

    path = ROOT / "deploy/envoy-gateway/envoyproxy.yaml"
    patches: list[str] = []
    for tag in tags:
        patches += [
            "- op: add",
            "  path: /stats_config/stats_tags/-",
            f"  value: {{ tag_name: {tag['tag_name']}, regex: {json.dumps(tag['regex'])} }}",
        ]
    text = replace_block(path.read_text(), "    jsonPatches:", "  telemetry:", indented(patches, 4))
    json_fields = [f"{k}: {json.dumps(v)}" for k, v in fields.items()]
    out[path] = replace_block(text, "          json:", "        sinks:", indented(json_fields, 14))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files out of step")
    args = parser.parse_args(argv)
    stale = [path for path, text in expected().items() if path.read_text() != text]
    for path in stale:
        rel = path.relative_to(ROOT)
        if args.check:
            print(f"{rel} is out of step with its sources: run python3 deploy/sync.py", file=sys.stderr)
        else:
            path.write_text(expected()[path])
            print(f"updated {rel}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
