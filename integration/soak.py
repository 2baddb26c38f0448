"""Soak: minutes of mixed traffic through a real Envoy with the filter, watching memory.

    python -m integration.soak --seconds 300 --workers 6      (make soak SOAK_ARGS='...')

Traffic (every worker, in a loop): chat JSON, streams with and without usage, bad JSON,
unknown models, bodies over the limit, model listing, and upstream 429/500 answers. Every
`--sample-s` seconds it records Envoy's RSS (/proc) and the filter's Wasm linear memory
(the `wasmcustom.aigate.wasm_memory_bytes` gauge), and at the end prints the figures and
whether memory stayed flat after warm-up. Only loopback traffic; bounded in time.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from integration.harness import start_envoy
from integration.mocks import MockServer

CONFIG = {
    "routes": [
        {
            "name": "chat",
            "match": {"route_name": "llm"},
            "provider": {
                "kind": "openai",
                "authority": "upstream.soak",
                "auth": {"key": {"env": "OPENAI_API_KEY"}},
                "models": {"fast": "gpt-4o-mini", "smart": "gpt-4o"},
            },
            "request": {"max_body_bytes": 65536},
        }
    ]
}
MEMORY_GAUGE = "wasmcustom.aigate.wasm_memory_bytes"


@dataclass
class Sample:
    t: float
    requests: int
    rss_bytes: int
    wasm_bytes: int


@dataclass
class SoakResult:
    seconds: float
    workers: int
    requests: int
    by_status: dict[int, int]
    failures: int
    samples: list[Sample] = field(default_factory=list)
    warmup_s: float = 5.0

    def after_warmup(self) -> list[Sample]:
        return [s for s in self.samples if s.t >= self.warmup_s] or self.samples

    @property
    def rss_start(self) -> int:
        return self.after_warmup()[0].rss_bytes

    @property
    def rss_end(self) -> int:
        return self.samples[-1].rss_bytes

    @property
    def wasm_start(self) -> int:
        return self.after_warmup()[0].wasm_bytes

    @property
    def wasm_end(self) -> int:
        return self.samples[-1].wasm_bytes

    def report(self) -> str:
        mib = 1024 * 1024
        lines = [
            f"soak: {self.seconds:.0f} s, {self.workers} workers, {self.requests} requests "
            f"({self.requests / max(self.seconds, 1):.0f}/s), statuses {dict(sorted(self.by_status.items()))}, "
            f"client failures {self.failures}",
            f"{'t (s)':>7} {'requests':>9} {'Envoy RSS (MiB)':>16} {'Wasm memory (MiB)':>18}",
        ]
        for s in self.samples:
            lines.append(f"{s.t:7.0f} {s.requests:9d} {s.rss_bytes / mib:16.1f} {s.wasm_bytes / mib:18.2f}")
        lines.append(
            f"after warm-up ({self.warmup_s:.0f} s): RSS {self.rss_start / mib:.1f} -> {self.rss_end / mib:.1f} MiB, "
            f"Wasm memory {self.wasm_start / mib:.2f} -> {self.wasm_end / mib:.2f} MiB"
        )
        return "\n".join(lines)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _one_request(client: httpx.Client, base: str, rng: random.Random, mock: MockServer) -> int:
    kind = rng.random()
    url = base + "/v1/chat/completions"
    chat = {"model": rng.choice(["fast", "smart"]), "messages": [{"role": "user", "content": "hello " * rng.randint(1, 40)}]}
    if kind < 0.35:
        return client.post(url, json=chat).status_code
    if kind < 0.60:
        body = {**chat, "stream": True}
        if rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
        with client.stream("POST", url, json=body) as r:
            for _ in r.iter_bytes():
                pass
            return r.status_code
    if kind < 0.68:
        return client.post(url, content=b'{"messages": [', headers={"content-type": "application/json"}).status_code
    if kind < 0.74:
        return client.post(url, json={**chat, "model": "nope"}).status_code
    if kind < 0.80:
        big = {**chat, "messages": [{"role": "user", "content": "x" * 70000}]}
        return client.post(url, json=big).status_code
    if kind < 0.86:
        return client.get(base + "/v1/models").status_code
    if kind < 0.93:
        mock.enqueue(rng.choice([429, 500, 503]), {"error": {"message": "soak says no"}}, path="/v1/chat/completions")
        return client.post(url, json=chat).status_code
    return client.post(url, json={**chat, "messages": [{"role": "user", "content": "x"}] * rng.randint(50, 400)}).status_code


def run_soak(seconds: float, workers: int, sample_s: float = 2.0, warmup_s: float = 5.0, concurrency: int = 2) -> SoakResult:
    mock = MockServer(name="soak-mock", chunk_delay_s=0.0).start()
    envoy = start_envoy(
        plugin_config=CONFIG,
        env={"OPENAI_API_KEY": "sk-soak"},
        clusters={"mock_llm": mock},
        concurrency=concurrency,
        component_log_level="wasm:info",
        access_log=False,
    )
    assert envoy.proc is not None
    stop = threading.Event()
    lock = threading.Lock()
    counts: dict[int, int] = {}
    failures = [0]
    total = [0]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    status = _one_request(client, envoy.base_url, rng, mock)
                except httpx.HTTPError:
                    status = -1
                with lock:
                    total[0] += 1
                    counts[status] = counts.get(status, 0) + 1
                    if status == -1:
                        failures[0] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    result = SoakResult(seconds=seconds, workers=workers, requests=0, by_status=counts, failures=0, warmup_s=warmup_s)
    start = time.monotonic()
    try:
        for t in threads:
            t.start()
        while True:
            elapsed = time.monotonic() - start
            result.samples.append(Sample(elapsed, total[0], _rss(envoy.proc.pid), envoy.counter(MEMORY_GAUGE)))
            if elapsed >= seconds:
                break
            time.sleep(min(sample_s, max(seconds - elapsed, 0.05)))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=35)
        log = envoy.log_text()
        envoy.stop()
        mock.stop()
    result.requests = total[0]
    result.failures = failures[0]
    result.log_has_panic = "panicked" in log  # type: ignore[attr-defined]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--sample-s", type=float, default=5)
    parser.add_argument("--warmup-s", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads")
    parser.add_argument("--json", type=Path, help="also write the samples here")
    args = parser.parse_args(argv)
    result = run_soak(args.seconds, args.workers, args.sample_s, args.warmup_s, args.concurrency)
    print(result.report())
    if args.json:
        args.json.write_text(json.dumps({"samples": [s.__dict__ for s in result.samples], "statuses": result.by_status}))
    grew = result.wasm_end > result.wasm_start * 1.5 or result.rss_end > result.rss_start * 1.5 + 64 * 1024 * 1024
    if result.log_has_panic or grew or result.failures:  # type: ignore[attr-defined]
        print("soak: FAILED (panic in log, memory growth, or client failures)")
        return 1
    print("soak: memory steady, no panic")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
