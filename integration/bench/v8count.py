"""`make bench-v8`: instructions per request of the filter's pipeline inside V8, counted.

`make bench` times the filter in Envoy, and on a shared machine those times move by a
factor of two from one minute to the next. This counts instead: `examples/pipeline_bench.rs`,
built for wasm32-wasip1 (integration/bench/v8), runs inside Node.js's V8 (the engine Envoy
embeds) under `valgrind --tool=callgrind`, which counts instructions, the same for the same
build whatever else the machine does. Per scenario it runs N and 2N requests; the
difference divided by N is one request's instructions, V8's start and JIT warm-up cancelled.
Host calls cost nothing here (the in-memory host): this measures the filter's own code.

    python -m integration.bench.v8count [WASM ...]     # default: the bench-v8 build

Knobs (environment): BENCH_V8_SCENARIOS ("1 KB,32 KB,stream 200"), BENCH_ROUTE.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from integration.harness import REPO_ROOT

from . import config

V8_DIR = config.BENCH_DIR / "v8"
DEFAULT_WASM = config.TARGET_DIR / "v8" / "wasm32-wasip1" / "release" / "pipeline_bench.wasm"
# Envoy's V8 compiles every Wasm function with TurboFan up front (proxy-wasm-cpp-host turns
# Liftoff off); so does this, which also keeps tier-up compilations out of the counts.
V8_FLAGS = ("--no-liftoff", "--no-wasm-tier-up")
REQUESTS = {"1 KB": 100, "32 KB": 20, "1 MB": 2, "stream 200": 10}


def instructions(wasm: Path, route: Path, scenario: str, requests: int) -> int:
    env = dict(os.environ, PIPELINE_BENCH_ONLY=scenario, PIPELINE_BENCH_ITERS=str(requests))
    command = [
        "valgrind", "--tool=callgrind", "--smc-check=all-non-file", "--callgrind-out-file=/dev/null",
        "node", "--no-warnings", "--single-threaded", *V8_FLAGS, str(V8_DIR / "run.mjs"), str(wasm), str(route),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"bench-v8: {wasm.name} {scenario}: run failed\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(wasm: Path, route: Path, scenario: str) -> int:
    n = REQUESTS.get(scenario, 20)
    return (instructions(wasm, route, scenario, 2 * n) - instructions(wasm, route, scenario, n)) // n


def main() -> int:
    for tool in ("valgrind", "node"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench-v8: {tool} is missing (make bench-v8 installs it from Debian)")
    wasms = [Path(arg) for arg in sys.argv[1:]] or [DEFAULT_WASM]
    route = Path(os.environ.get("BENCH_ROUTE", "") or config.ROUTE_FULL)
    if not route.is_absolute():
        route = REPO_ROOT / route
    scenarios = [s.strip() for s in os.environ.get("BENCH_V8_SCENARIOS", "1 KB,32 KB,stream 200").split(",") if s.strip()]
    print(f"bench-v8: instructions per request inside V8 (node {subprocess.getoutput('node --version')}), route {route.name}")
    print("| build | " + " | ".join(scenarios) + " |")
    print("|---|" + "---:|" * len(scenarios))
    for wasm in wasms:
        if not wasm.exists():
            raise SystemExit(f"bench-v8: {wasm} not built (make bench-v8)")
        counts = [per_request(wasm, route, scenario) for scenario in scenarios]
        print(f"| {wasm.name} | " + " | ".join(f"{count:,}" for count in counts) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
