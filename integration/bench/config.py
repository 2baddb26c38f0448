"""The Envoy bootstrap of `make bench`: one Envoy, one listener per side, one upstream.

    plain   listener "main"    router only
    noop    listener "noop"    the do-nothing proxy-wasm filter, then the router
    filter  listener "filter"  aigate (plugin config from a route JSON file), then the router

Every listener has the same HTTP connection manager and one route named `bench` to the
same cluster `upstream` (the bench upstream server), so the only difference between the
sides is the Wasm filter. No access logs anywhere (they would cost every side the same).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from integration.harness import REPO_ROOT, Cluster, render_cluster, render_wasm_filter
from integration.harness.envoy import aigate_stats_config

BENCH_DIR = Path(__file__).resolve().parent
ROUTE_FULL = BENCH_DIR / "route.json"
ROUTE_NO_GUARDS = BENCH_DIR / "route-noguards.json"
# route.json's chat route, plus an `anthropic` route (same guards) for /v1/messages.
ROUTE_MESSAGES = BENCH_DIR / "route-messages.json"
TARGET_DIR = REPO_ROOT / "target" / "bench"
NOOP_WASM = TARGET_DIR / "wasm32-wasip1" / "release" / "aigate_bench_noop.wasm"
UPSTREAM_BIN = TARGET_DIR / "release" / "bench-upstream"
# aigate built with `--features phase-profile` (make bench-profile).
PROFILE_WASM = TARGET_DIR / "profile" / "wasm32-wasip1" / "release" / "aigate.wasm"

# Side name -> listener name (the harness' Envoy class looks for a listener called "main").
SIDES = ("plain", "noop", "filter")
LISTENERS = {"plain": "main", "noop": "noop", "filter": "filter"}
ROUTE_NAME = "bench"
UPSTREAM_CLUSTER = "upstream"


def load_route_config(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _router() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }


def _listener(name: str, http_filters: list[dict[str, Any]]) -> dict[str, Any]:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "codec_type": "AUTO",
        "route_config": {
            "name": name,
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "name": ROUTE_NAME,
                            "match": {"prefix": "/"},
                            "route": {"cluster": UPSTREAM_CLUSTER, "timeout": "300s"},
                        }
                    ],
                }
            ],
        },
        "http_filters": [*http_filters, _router()],
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }


def noop_filter(wasm: Path = NOOP_WASM) -> dict[str, Any]:
    return render_wasm_filter(plugin_config=None, wasm=wasm, vm_id="noop", root_id="", plugin_extra={"name": "noop"})


def aigate_filter(route_config: dict[str, Any], wasm: Path) -> dict[str, Any]:
    return render_wasm_filter(plugin_config=route_config, wasm=wasm)


def render(
    *,
    upstream_port: int,
    route_config: dict[str, Any],
    aigate_wasm: Path,
    noop_wasm: Path = NOOP_WASM,
    sides: tuple[str, ...] = SIDES,
) -> dict[str, Any]:
    """The bootstrap with a listener for each of `sides` (all three by default; one alone
    for the memory and profile runs)."""
    filters: dict[str, list[dict[str, Any]]] = {
        "plain": [],
        "noop": [noop_filter(noop_wasm)],
        "filter": [aigate_filter(route_config, aigate_wasm)],
    }
    listeners = [_listener(LISTENERS[side], filters[side]) for side in sides]
    # The harness' Envoy class reads the port of the listener named "main".
    listeners[0]["name"] = "main"
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "stats_config": aigate_stats_config(),
        "static_resources": {
            "listeners": listeners,
            "clusters": [render_cluster(UPSTREAM_CLUSTER, Cluster(upstream_port))],
        },
    }


def listener_ports(admin_listeners_json: str, sides: tuple[str, ...]) -> dict[str, int]:
    """Side -> port, from the admin `/listeners?format=json` answer."""
    by_name = {
        st["name"]: int(st["local_address"]["socket_address"]["port_value"])
        for st in json.loads(admin_listeners_json).get("listener_statuses", [])
    }
    names = {side: LISTENERS[side] for side in sides}
    names[sides[0]] = "main"
    return {side: by_name[name] for side, name in names.items()}
