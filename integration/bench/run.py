"""`make bench`: plain Envoy vs Envoy + a do-nothing Wasm filter vs Envoy + aigate, side by
side in one Envoy (concurrency 1), driven in alternation by wrk.

Per scenario (1 KB, 32 KB, 1 MB prompts; a 200-event stream) and round, each side gets a
throughput run (`BENCH_CONNECTIONS` connections, saturating the one worker; Envoy CPU per
request from /proc/<pid>/stat) and a latency run (one connection: the time a request takes
when nothing queues). The order of the sides rotates every round. Then time to first byte
of streams (a client that timestamps the first event, with a pause in the upstream after
that event, so a filter that holds the stream back shows), memory of one Envoy per side, and
where the time goes: the filter built with `phase-profile` logs its time inside the VM per
phase and per host call.

Knobs (environment): BENCH_QUICK=1 (about a minute), BENCH_ROUNDS, BENCH_DURATION (seconds
per throughput run), BENCH_LATENCY_DURATION, BENCH_CONNECTIONS, BENCH_TTFB_SAMPLES,
BENCH_ROUTE (plugin config file; default integration/bench/route.json), BENCH_SCENARIOS
(comma-separated names, e.g. "1 KB,stream 200"; the Anthropic Messages passthrough scenarios
"msg 1 KB", "msg 32 KB", "msg stream 200" run only when named, with
integration/bench/route-messages.json unless BENCH_ROUTE says otherwise), BENCH_PIN (1: Envoy on the last CPU, the
load generator and upstream on the others; 0: no pinning; default 1 when there are >= 2 CPUs),
BENCH_WRITE (1: update BENCHMARKS.md; default on for full runs, off for quick ones),
BENCH_PROFILE_ONLY=1 (only the phase-profile pass: seconds, for trying a change).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from integration.harness import REPO_ROOT, Envoy, EnvoyStartError, envoy_binary, wasm_path

from . import config, report, workload
from .workload import MESSAGES_SCENARIOS, SCENARIOS, Scenario

POST_LUA = config.BENCH_DIR / "post.lua"
RESULTS_JSON = config.TARGET_DIR / "results.json"
STREAM_EVENTS = 200


# --------------------------------------------------------------------------- settings


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


@dataclass
class Settings:
    quick: bool
    rounds: int
    throughput_s: int
    latency_s: int
    warmup_s: int
    connections: int
    ttfb_samples: int
    ttfb_gap_ms: int
    rss_load_s: int
    profile_s: int
    route_path: Path
    route_explicit: bool
    scenarios: tuple[Scenario, ...]
    pin: bool
    write: bool
    profile_only: bool

    @classmethod
    def from_env(cls) -> "Settings":
        quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
        route = os.environ.get("BENCH_ROUTE", "").strip()
        route_path = Path(route) if route else config.ROUTE_FULL
        if not route_path.is_absolute():
            route_path = REPO_ROOT / route_path
        wanted = [s.strip() for s in os.environ.get("BENCH_SCENARIOS", "").split(",") if s.strip()]
        scenarios = tuple(s for s in SCENARIOS + MESSAGES_SCENARIOS if (not wanted and s.api == "chat") or s.name in wanted)
        if not scenarios:
            raise SystemExit(f"BENCH_SCENARIOS matches none of {[s.name for s in SCENARIOS + MESSAGES_SCENARIOS]}")
        if not route and any(s.api == "messages" for s in scenarios):
            route_path = config.ROUTE_MESSAGES
        pin_env = os.environ.get("BENCH_PIN", "").strip()
        pin = (len(os.sched_getaffinity(0)) >= 2) if pin_env == "" else pin_env != "0"
        write_env = os.environ.get("BENCH_WRITE", "").strip()
        return cls(
            quick=quick,
            rounds=_env_int("BENCH_ROUNDS", 1 if quick else 5),
            throughput_s=_env_int("BENCH_DURATION", 1 if quick else 3),
            latency_s=_env_int("BENCH_LATENCY_DURATION", 1 if quick else 2),
            warmup_s=1,
            connections=_env_int("BENCH_CONNECTIONS", 16),
            ttfb_samples=_env_int("BENCH_TTFB_SAMPLES", 15 if quick else 100),
            ttfb_gap_ms=20,
            rss_load_s=1 if quick else 3,
            profile_s=2 if quick else 4,
            route_path=route_path,
            route_explicit=bool(route),
            scenarios=scenarios,
            pin=pin,
            write=(not quick) if write_env == "" else write_env != "0",
            profile_only=os.environ.get("BENCH_PROFILE_ONLY", "") not in ("", "0"),
        )


# --------------------------------------------------------------------------- processes


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _pin_process(pid: int, cpus: set[int]) -> None:
    """Pins every thread of `pid` (affinity is per thread; Envoy's workers already run)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


class Placement:
    """Where things run: Envoy alone on the last CPU, everything else on the others."""

    def __init__(self, pin: bool) -> None:
        cpus = _cpus()
        self.pin = pin and len(cpus) >= 2
        self.envoy_cpus = {cpus[-1]} if self.pin else set(cpus)
        self.load_cpus = set(cpus[:-1]) if self.pin else set(cpus)

    def preexec(self) -> Any:
        if not self.pin:
            return None
        cpus = self.load_cpus
        return lambda: os.sched_setaffinity(0, cpus)

    def place_envoy(self, envoy: Envoy) -> None:
        if self.pin and envoy.proc is not None:
            _pin_process(envoy.proc.pid, self.envoy_cpus)

    def describe(self) -> str:
        if not self.pin:
            return "not pinned"
        return f"Envoy on CPU {sorted(self.envoy_cpus)}, wrk + upstream + clients on CPU {sorted(self.load_cpus)}"


class Upstream:
    def __init__(self, placement: Placement) -> None:
        self.proc = subprocess.Popen(
            [str(config.UPSTREAM_BIN), "0"],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,  # it exits when this closes, even if the benchmark is killed
            text=True,
            preexec_fn=placement.preexec(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("port "):
            self.stop()
            raise RuntimeError(f"bench upstream did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RouteRefused(RuntimeError):
    pass


def start_envoy(
    settings: Settings,
    placement: Placement,
    upstream: Upstream,
    route_config: dict[str, Any],
    workdir: Path,
    sides: tuple[str, ...] = config.SIDES,
    name: str = "bench",
    aigate_wasm: Path | None = None,
) -> tuple[Envoy, dict[str, int]]:
    bootstrap = config.render(
        upstream_port=upstream.port,
        route_config=route_config,
        aigate_wasm=aigate_wasm or wasm_path(),
        sides=sides,
    )
    envoy = Envoy(
        bootstrap,
        workdir=workdir / name,
        concurrency=1,
        log_level="warning",
        component_log_level=None,
        name=name,
    )
    try:
        envoy.start(timeout_s=60)
    except EnvoyStartError as error:
        if "not supported by this build" in error.log or "invalid plugin configuration" in error.log:
            raise RouteRefused(_refusal(error.log)) from error
        raise
    placement.place_envoy(envoy)
    ports = config.listener_ports(envoy.admin("/listeners?format=json"), sides)
    return envoy, ports


def _refusal(log: str) -> str:
    for line in log.splitlines():
        if "invalid plugin configuration" in line:
            return line.split("invalid plugin configuration:", 1)[-1].strip()
    return "the filter refused the plugin configuration"


# --------------------------------------------------------------------------- measurements


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    errors: dict[str, int]
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def run_wrk(
    placement: Placement,
    port: int,
    body_path: Path,
    headers: str,
    connections: int,
    duration_s: int,
    path: str = workload.CHAT_PATH,
) -> WrkResult:
    env = dict(os.environ, BENCH_BODY=str(body_path), BENCH_HEADERS=headers, BENCH_PATH=path)
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "30s",
        "-s",
        str(POST_LUA),
        f"http://127.0.0.1:{port}",
    ]
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=duration_s + 90, preexec_fn=placement.preexec()
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            data = json.loads(line[len("BENCH_RESULT ") :])
            lat = data["latency_us"]
            return WrkResult(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                errors=data["errors"],
                p50_us=lat["p50"],
                p90_us=lat["p90"],
                p99_us=lat["p99"],
                mean_us=lat["mean"],
            )
    raise RuntimeError(f"wrk gave no result (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def _headers(scenario: Scenario, gap_ms: int = 0) -> str:
    if not scenario.stream:
        return ""
    lines = [f"x-bench-stream: {scenario.stream_events}"]
    if gap_ms:
        lines.append(f"x-bench-gap-ms: {gap_ms}")
    return "\n".join(lines)


def _post(port: int, body: bytes, headers: str, timeout_s: float = 30, path: str = workload.CHAT_PATH) -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        method="POST",
        headers={"content-type": "application/json", "authorization": "Bearer sk-client-key"},
    )
    for line in headers.splitlines():
        name, _, value = line.partition(":")
        req.add_header(name.strip(), value.strip())
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 - loopback only
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Check:
    """What one request per side and scenario showed before measuring."""

    usage_counted: bool = False
    response_masked: bool = False
    problems: list[str] = field(default_factory=list)


def check_sides(envoy: Envoy, ports: dict[str, int], scenarios: tuple[Scenario, ...], bodies: dict[str, Path]) -> Check:
    check = Check()
    for scenario in scenarios:
        body = bodies[scenario.name].read_bytes()
        for side, port in ports.items():
            status, answer = _post(port, body, _headers(scenario), path=scenario.path)
            where = f"{side} / {scenario.name}"
            if status != 200:
                check.problems.append(f"{where}: status {status}: {answer[:300]!r}")
                continue
            if scenario.stream:
                content_events = answer.count(b'"delta":{')
                end = b'data: {"type":"message_stop"}' if scenario.api == "messages" else b"data: [DONE]"
                if content_events < scenario.stream_events or not answer.rstrip().endswith(end):
                    check.problems.append(f"{where}: incomplete stream ({content_events} content events)")
            else:
                try:
                    parsed = json.loads(answer)
                except ValueError:
                    check.problems.append(f"{where}: answer is not JSON: {answer[:300]!r}")
                    continue
                if "usage" not in parsed:
                    check.problems.append(f"{where}: answer has no usage")
                if side == "filter" and b"<EMAIL>" in answer:
                    check.response_masked = True
    stats = envoy.stats(filter="aigate\\.tokens_total")
    check.usage_counted = any(isinstance(v, int) and v > 0 for v in stats.values())
    if not check.usage_counted:
        check.problems.append("the filter counted no token usage (usage parsing not exercised)")
    return check


def ttfb_sample(port: int, body: bytes, events: int, gap_ms: int, path: str = workload.CHAT_PATH) -> tuple[float, float]:
    """(time to the first SSE event, time to the end), in microseconds from the request's
    first byte. Headers alone do not count: the first `data:` does."""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer sk-client-key\r\ncontent-length: {len(body)}\r\n"
        f"x-bench-stream: {events}\r\nx-bench-gap-ms: {gap_ms}\r\nconnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        first = None
        start = time.perf_counter_ns()
        sock.sendall(head + body)
        while True:
            data = sock.recv(65536)
            now = time.perf_counter_ns()
            if not data:
                break
            buf += data
            if first is None:
                end_of_head = buf.find(b"\r\n\r\n")
                if end_of_head >= 0 and buf.find(b"data:", end_of_head) >= 0:
                    first = now
        end = time.perf_counter_ns()
    if not buf.startswith(b"HTTP/1.1 200") or first is None:
        raise RuntimeError(f"stream request failed: {bytes(buf[:300])!r}")
    return (first - start) / 1e3, (end - start) / 1e3


# --------------------------------------------------------------------------- the run


def _rotate(items: tuple[str, ...], by: int) -> list[str]:
    by %= len(items)
    return list(items[by:] + items[:by])


def _log(message: str) -> None:
    print(message, flush=True)


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    envoy_version = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True).stdout.strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=REPO_ROOT)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "envoy": envoy_version.split("version:")[-1].strip(),
        "wrk": (wrk_version.stdout + wrk_version.stderr).splitlines()[0] if wrk_version.stdout + wrk_version.stderr else "wrk",
        "commit": commit.stdout.strip() + (" (dirty)" if dirty.stdout.strip() else ""),
        "filter_wasm_bytes": wasm_path().stat().st_size,
        "loadavg_start": os.getloadavg(),
    }


def command_line() -> str:
    knobs = [f"{k}={shlex.quote(os.environ[k])}" for k in sorted(os.environ) if k.startswith("BENCH_")]
    return " ".join(["make bench", *knobs]) if knobs else "make bench"


def main() -> int:
    # SIGTERM unwinds like Ctrl-C, so the Envoys and the upstream are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = Settings.from_env()
    for path, what in ((config.UPSTREAM_BIN, "bench upstream"), (config.NOOP_WASM, "noop filter"), (wasm_path(), "aigate")):
        if not path.exists():
            raise SystemExit(f"{what} not built: {path} (run `make bench`)")
    placement = Placement(settings.pin)
    info = machine_info()
    started = dt.datetime.now(dt.timezone.utc)
    _log(f"bench: {command_line()}  ({placement.describe()})")
    _log(f"bench: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, load average {info['loadavg_start'][0]:.2f}")

    workdir = Path(tempfile.mkdtemp(prefix="aigate-bench-"))
    bodies = {}
    for scenario in settings.scenarios:
        path = workdir / f"body-{scenario.body_bytes}-{scenario.stream_events}.json"
        path.write_bytes(workload.body(scenario))
        bodies[scenario.name] = path

    route_path = settings.route_path
    if settings.profile_only:
        upstream = Upstream(placement)
        try:
            profile = measure_profile(settings, placement, upstream, config.load_route_config(route_path), workdir, bodies)
        finally:
            upstream.stop()
        print("\n".join(report.profile_lines(profile)))
        return 0
    notes: list[str] = []
    upstream = Upstream(placement)
    envoy = None
    try:
        try:
            envoy, ports = start_envoy(settings, placement, upstream, config.load_route_config(route_path), workdir)
        except RouteRefused as refused:
            if settings.route_explicit:
                raise SystemExit(f"bench: the filter refused {route_path}: {refused}")
            note = (
                f"{route_path.relative_to(REPO_ROOT)} was refused by this build ({refused}); "
                f"measured with {config.ROUTE_NO_GUARDS.relative_to(REPO_ROOT)} instead (no guards)"
            )
            _log("bench: WARNING: " + note)
            notes.append(note)
            route_path = config.ROUTE_NO_GUARDS
            envoy, ports = start_envoy(settings, placement, upstream, config.load_route_config(route_path), workdir)
        route_config = config.load_route_config(route_path)
        has_guards = any(r.get("guards") for r in route_config.get("routes", []))

        check = check_sides(envoy, ports, settings.scenarios, bodies)
        for problem in check.problems:
            _log("bench: PROBLEM: " + problem)
        if any("status" in p or "incomplete" in p or "not JSON" in p for p in check.problems):
            raise SystemExit("bench: a side does not answer correctly; not measuring")
        if has_guards and not check.response_masked:
            notes.append("the response guard did not mask the e-mail address in the answer")

        pid = envoy.proc.pid if envoy.proc else 0
        _log("bench: warm-up")
        for scenario in settings.scenarios:
            for side in config.SIDES:
                run_wrk(placement, ports[side], bodies[scenario.name], _headers(scenario), settings.connections, settings.warmup_s, scenario.path)

        runs: list[dict[str, Any]] = []
        for round_index in range(settings.rounds):
            for scenario in settings.scenarios:
                order = _rotate(config.SIDES, round_index)
                line = [f"round {round_index + 1}/{settings.rounds} {scenario.name:>10}:"]
                for kind, connections, duration in (
                    ("throughput", settings.connections, settings.throughput_s),
                    ("latency", 1, settings.latency_s),
                ):
                    for side in order:
                        cpu_before = cpu_seconds(pid)
                        result = run_wrk(
                            placement, ports[side], bodies[scenario.name], _headers(scenario), connections, duration, scenario.path
                        )
                        cpu = cpu_seconds(pid) - cpu_before
                        runs.append(
                            {
                                "round": round_index,
                                "scenario": scenario.name,
                                "side": side,
                                "kind": kind,
                                "connections": connections,
                                "cpu_s": cpu,
                                **asdict(result),
                                "rps": result.rps,
                            }
                        )
                        if result.error_count:
                            _log(f"bench: PROBLEM: {side} {scenario.name} {kind}: errors {result.errors}")
                        if kind == "throughput":
                            line.append(f"{side} {result.rps:8.0f} rps")
                        else:
                            line.append(f"{side} p50 {result.p50_us:7.0f}us")
                _log("  ".join(line))

        ttfb = measure_ttfb(settings, ports)
        envoy.stop()
        envoy = None
        memory = measure_memory(settings, placement, upstream, config.load_route_config(route_path), workdir, bodies)
        profile = measure_profile(settings, placement, upstream, config.load_route_config(route_path), workdir, bodies)
    finally:
        if envoy is not None:
            envoy.stop()
        upstream.stop()

    info["loadavg_end"] = os.getloadavg()
    results = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(),
        "machine": info,
        "placement": placement.describe(),
        "settings": {
            "rounds": settings.rounds,
            "throughput_s": settings.throughput_s,
            "latency_s": settings.latency_s,
            "connections": settings.connections,
            "ttfb_samples": settings.ttfb_samples,
            "ttfb_gap_ms": settings.ttfb_gap_ms,
            "quick": settings.quick,
        },
        "route": str(route_path.relative_to(REPO_ROOT)),
        "guards": has_guards,
        "check": asdict(check),
        "notes": notes,
        "scenarios": [s.name for s in settings.scenarios],
        "runs": runs,
        "ttfb": ttfb,
        "memory": memory,
        "profile": profile,
        "elapsed_s": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds()),
    }
    config.TARGET_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(results, indent=1))
    summary = report.summarise(results)
    text = report.markdown(results, summary)
    print()
    print(text)
    print(f"bench: raw results in {RESULTS_JSON.relative_to(REPO_ROOT)}")
    if settings.write:
        report.update_benchmarks_md(REPO_ROOT / "BENCHMARKS.md", text)
        print("bench: BENCHMARKS.md updated")
    else:
        print("bench: BENCHMARKS.md left alone (quick run; BENCH_WRITE=1 to write it)")
    return 0


def measure_ttfb(settings: Settings, ports: dict[str, int]) -> dict[str, Any]:
    """Streams with a pause after the first event: time to that event per side."""
    scenario = next((s for s in settings.scenarios if s.stream), None)
    if scenario is None:
        return {}
    body = workload.body(scenario)
    _log(f"bench: time to first byte ({settings.ttfb_samples} streams per side, upstream pauses {settings.ttfb_gap_ms} ms after the first event)")
    samples: dict[str, list[tuple[float, float]]] = {side: [] for side in ports}
    for side in ports:  # warm the connection pools
        ttfb_sample(ports[side], body, scenario.stream_events, 0, scenario.path)
    for index in range(settings.ttfb_samples):
        for side in _rotate(tuple(ports), index):
            samples[side].append(ttfb_sample(ports[side], body, scenario.stream_events, settings.ttfb_gap_ms, scenario.path))
    return {
        "gap_ms": settings.ttfb_gap_ms,
        "samples": {side: [list(s) for s in values] for side, values in samples.items()},
    }


def measure_memory(
    settings: Settings,
    placement: Placement,
    upstream: Upstream,
    route_config: dict[str, Any],
    workdir: Path,
    bodies: dict[str, Path],
) -> dict[str, Any]:
    """One Envoy per side: RSS when idle, and after load (32 KB, then 1 MB prompts)."""
    _log("bench: memory (one Envoy per side)")
    out: dict[str, Any] = {}
    loads = [s for s in SCENARIOS if s.name in ("32 KB", "1 MB")]
    for side in config.SIDES:
        envoy, ports = start_envoy(settings, placement, upstream, route_config, workdir, sides=(side,), name=f"rss-{side}")
        try:
            pid = envoy.proc.pid if envoy.proc else 0
            time.sleep(1.0)
            idle = memory_kib(pid)
            for scenario in loads:
                path = bodies.get(scenario.name) or workdir / f"rss-{scenario.body_bytes}.json"
                if not path.exists():
                    path.write_bytes(workload.body(scenario))
                run_wrk(placement, ports[side], path, "", settings.connections, settings.rss_load_s)
            loaded = memory_kib(pid)
            out[side] = {"idle_rss_kib": idle["VmRSS"], "loaded_rss_kib": loaded["VmRSS"], "peak_rss_kib": loaded["VmHWM"]}
        finally:
            envoy.stop()
    return out


PROFILE_LINE = re.compile(
    r"aigate profile: (?P<requests>\d+) requests, clock read (?P<clock>[\d.]+) us; "
    r"in-VM us/request: total (?P<total>[\d.]+), (?P<phases>.*?); host us/call: (?P<host>.*)$"
)


def parse_profile_line(line: str) -> dict[str, Any] | None:
    """The numbers of one `aigate profile:` log line (see filter/src/plugin/profile.rs)."""
    match = PROFILE_LINE.search(line)
    if not match:
        return None
    phases = {}
    for part in match["phases"].split(", "):
        phase = re.match(r"(\w+) ([\d.]+) \(([\d.]+) host calls\)", part)
        if phase:
            phases[phase[1]] = {"us": float(phase[2]), "host_calls": float(phase[3])}
    host = {}
    for part in match["host"].split(", "):
        call = re.match(r"(\w+) ([\d.]+)x([\d.]+)", part)
        if call:
            host[call[1]] = {"per_request": float(call[2]), "us_per_call": float(call[3])}
    return {"requests": int(match["requests"]), "total_us": float(match["total"]), "phases": phases, "host": host}


def measure_profile(
    settings: Settings,
    placement: Placement,
    upstream: Upstream,
    route_config: dict[str, Any],
    workdir: Path,
    bodies: dict[str, Path],
) -> dict[str, Any]:
    """aigate built with `phase-profile` alone in an Envoy: time inside the VM per phase and
    per host call, for each scenario."""
    if not config.PROFILE_WASM.exists():
        _log(f"bench: no profile pass ({config.PROFILE_WASM} missing: make bench-profile)")
        return {}
    _log("bench: where the time goes (phase-profile build)")
    envoy, ports = start_envoy(
        settings, placement, upstream, route_config, workdir, sides=("filter",), name="profile",
        aigate_wasm=config.PROFILE_WASM,
    )
    out: dict[str, Any] = {}
    try:
        for scenario in settings.scenarios:
            seen = len(envoy.log_text().splitlines())
            run_wrk(placement, ports["filter"], bodies[scenario.name], _headers(scenario), settings.connections, settings.profile_s, scenario.path)
            time.sleep(0.2)
            lines = [line for line in envoy.log_text().splitlines()[seen:] if "aigate profile:" in line]
            parsed = [p for p in map(parse_profile_line, lines) if p]
            if parsed:
                out[scenario.name] = parsed[-1]
    finally:
        envoy.stop()
    return out


if __name__ == "__main__":
    sys.exit(main())
