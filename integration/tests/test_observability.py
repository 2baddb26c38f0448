"""Metrics and access logs after a known sequence of requests, through a real Envoy with
the `stats_config` and the access-log format of envoy/envoy.yaml.

The sequence (route "obs", budget 60 tokens; every answer reports 11 + 7 = 18 tokens):
  1. JSON answer            200   used 18
  2. JSON answer            200   used 36
  3. streamed answer        200   used 54   (time to first token recorded)
  4. upstream error 500     500   used 54   (admitted, no usage)
  5. body is not JSON       400             (refused before the budget check)
  6. JSON answer            200   used 72   (54 < 60: admitted, one answer over)
  7. JSON request           429             (budget spent)
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from integration.harness import REPO_ROOT, Envoy
from integration.harness.envoy import SECONDS_BUCKETS, TOKEN_BUCKETS
from integration.mocks import MockServer

# server_port is the mock's port (Envoy's upstream.port), written PORT in these names.
LABELS = 'route="obs",gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",server_address="llm.local",server_port="PORT"'


def repo_access_log_format() -> str:
    """The access-log line of envoy/envoy.yaml."""
    config = yaml.safe_load((REPO_ROOT / "envoy" / "envoy.yaml").read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["access_log"][0]["typed_config"]["log_format"]["text_format_source"]["inline_string"]


@pytest.fixture(scope="module")
def obs_mock(mock_factory) -> MockServer:
    return mock_factory(name="obs-llm")


@pytest.fixture(scope="module")
def envoy(envoy_factory, obs_mock: MockServer, tmp_path_factory) -> Envoy:
    log_path = tmp_path_factory.mktemp("obs-log") / "access.log"
    access_log = {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(log_path),
            "log_format": {"text_format_source": {"inline_string": repo_access_log_format()}},
        },
    }
    config = {
        "routes": [
            {
                # Unlimited, any model (labels bounded per worker), for the later tests.
                "name": "free",
                "match": {"headers": {"x-route": "free"}},
                "provider": {"kind": "openai", "authority": "llm.local", "auth": {"none": True}},
            },
            {
                "name": "obs",
                "match": {"route_name": "llm"},
                "provider": {"kind": "openai", "authority": "llm.local", "auth": {"none": True}},
                "limits": {
                    "tokens": [{"name": "budget", "key": {"fixed": "all"}, "limit": 60, "window_ms": 3_600_000}],
                    "backend": "local",
                },
            }
        ]
    }
    return envoy_factory(
        plugin_config=config,
        clusters={"mock_llm": obs_mock},
        access_log=False,
        hcm_extra={"access_log": [access_log]},
        # Histograms reach /stats only when stats are flushed.
        patch=lambda bootstrap: bootstrap.update(stats_flush_interval="0.1s"),
    )


def post(envoy: Envoy, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else None
    return httpx.post(
        envoy.base_url + "/v1/chat/completions",
        json=None if content is not None else body,
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
        **kwargs,
    )


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def sequence(envoy: Envoy, obs_mock: MockServer) -> list[httpx.Response]:
    out = [post(envoy, CHAT), post(envoy, CHAT)]
    stream = dict(CHAT, stream=True, stream_options={"include_usage": True})
    out.append(post(envoy, stream))
    obs_mock.enqueue(500, {"error": {"message": "upstream exploded", "type": "server_error"}}, path="/v1/chat/completions")
    out.append(post(envoy, CHAT))
    out.append(post(envoy, b"{not json"))
    out.append(post(envoy, CHAT))
    out.append(post(envoy, CHAT))
    return out


def test_statuses_of_the_sequence(sequence: list[httpx.Response]) -> None:
    assert [r.status_code for r in sequence] == [200, 200, 200, 500, 400, 200, 429]


SERIES = re.compile(r"^(?P<name>(?:aigate|gen_ai)_[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def series(text: str) -> str:
    """`name{labels}` with its labels sorted: Envoy does not promise an order."""
    m = re.match(r"^([^{]+)\{(.*)\}$", text)
    assert m, text
    labels = sorted(re.sub(r'^server_port="\d+"$', 'server_port="PORT"', label) for label in re.findall(r'[a-z_]+="[^"]*"', m.group(2)))
    return f"{m.group(1)}{{{','.join(labels)}}}"


def prometheus(envoy: Envoy) -> dict[str, float]:
    """`name{labels}` (labels sorted) -> value for the filter's series."""
    out = {}
    for line in envoy.stats_prometheus().splitlines():
        m = SERIES.match(line)
        if m:
            out[series(f"{m['name']}{{{m['labels']}}}")] = float(m["value"])
    return out


def wait_for(envoy: Envoy, series: str, value: float, timeout_s: float = 5.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = prometheus(envoy)
        if metrics.get(series) == value or time.monotonic() > deadline:
            return metrics
        time.sleep(0.05)


FAILED = LABELS + ',error_type="upstream_500"'
# The usage and duration of an answer also carry the model it names (the mock's: the one asked for).
ANSWERED = LABELS + ',gen_ai_response_model="gpt-4o-mini"'


def test_metrics_have_prometheus_labels_and_the_expected_values(envoy: Envoy, sequence: list[httpx.Response]) -> None:
    duration_count = series(f"gen_ai_client_operation_duration_count{{{ANSWERED}}}")
    metrics = wait_for(envoy, duration_count, 4)
    expected = {
        # answers from upstream: 1, 2, 3, 6 and the 500 (4), which carries error.type
        f"aigate_requests_total{{{LABELS}}}": 4,
        f"aigate_requests_total{{{FAILED}}}": 1,
        f'aigate_tokens_total{{{LABELS},gen_ai_token_type="input"}}': 4 * 11,
        f'aigate_tokens_total{{{LABELS},gen_ai_token_type="output"}}': 4 * 7,
        f'gen_ai_client_token_usage_count{{{ANSWERED},gen_ai_token_type="input"}}': 4,
        f'gen_ai_client_token_usage_count{{{ANSWERED},gen_ai_token_type="output"}}': 4,
        duration_count: 4,
        f"gen_ai_client_operation_duration_count{{{FAILED}}}": 1,
        f"gen_ai_client_operation_time_to_first_chunk_count{{{LABELS}}}": 1,
        'aigate_errors_total{route="obs",code="upstream_500"}': 1,
        'aigate_errors_total{route="obs",code="invalid_json"}': 1,
        'aigate_errors_total{route="obs",code="token_budget_exceeded"}': 1,
        # the local budget is checked from the headers, before the body is parsed: the
        # invalid-JSON request (5) was allowed by the budget too
        'aigate_limit_outcomes_total{route="obs",limit="budget",outcome="allowed"}': 6,
        'aigate_limit_outcomes_total{route="obs",limit="budget",outcome="over_limit"}': 1,
    }
    expected = {series(name): value for name, value in expected.items()}
    for name, value in expected.items():
        assert metrics.get(name) == value, (name, {k: v for k, v in metrics.items() if "_bucket" not in k})
    # Nothing else of ours: every series is one of the above (or a histogram's buckets/sum).
    ours = {re.sub(r"_(bucket|sum)\{.*", "", k) for k in metrics if "_bucket{" in k or "_sum{" in k}
    assert ours == {
        "gen_ai_client_operation_duration",
        "gen_ai_client_operation_time_to_first_chunk",
        "gen_ai_client_token_usage",
    }
    # The VM's memory, a gauge set as requests start: some 64 KiB pages.
    memory = metrics.pop("aigate_wasm_memory_bytes{}", 0)
    assert memory > 0 and memory % 65_536 == 0, memory
    plain = {k for k in metrics if "_bucket{" not in k and "_sum{" not in k}
    assert plain == set(expected), plain ^ set(expected)


def test_histograms_have_the_genai_bucket_boundaries(envoy: Envoy, sequence: list[httpx.Response]) -> None:
    """The spec's ExplicitBucketBoundaries, from the stats_config of envoy/envoy.yaml."""
    text = envoy.stats_prometheus()

    def bounds(name: str) -> list[float]:
        line_re = re.compile(rf'^{name}_bucket\{{.*le="([^"]+)"\}}')
        found: list[float] = []
        for line in text.splitlines():
            m = line_re.match(line)
            if m and m.group(1) != "+Inf" and float(m.group(1)) not in found:
                found.append(float(m.group(1)))
        return found

    assert bounds("gen_ai_client_token_usage") == [float(b) for b in TOKEN_BUCKETS]
    assert bounds("gen_ai_client_operation_duration") == SECONDS_BUCKETS
    assert bounds("gen_ai_client_operation_time_to_first_chunk") == SECONDS_BUCKETS


UNIT_ABBREVIATIONS = ("_ms", "_us", "_ns", "_s", "_sec", "_secs", "_b", "_kb", "_mb")
NON_BASE_UNITS = ("milliseconds", "microseconds", "nanoseconds", "minutes", "hours", "kilobytes", "megabytes")


def test_prometheus_output_passes_the_promtool_lint_rules(envoy: Envoy, sequence: list[httpx.Response]) -> None:
    """What `promtool check metrics` checks of our families (promtool is not installed here):
    counters end in `_total`, names are snake_case with no abbreviated or non-base units, a
    histogram has `_bucket` (with `le`), `_sum` and `_count`."""
    text = envoy.stats_prometheus()
    types = dict(re.findall(r"^# TYPE ((?:aigate|gen_ai)_\S+) (\S+)$", text, re.M))
    assert types, "no families of ours"
    problems = []
    for name, kind in types.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            problems.append(f"{name}: not snake_case")
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f"{name}: counter without _total")
        if any(name.endswith(u) or f"{u}_" in name for u in UNIT_ABBREVIATIONS):
            problems.append(f"{name}: abbreviated unit")
        if any(u in name for u in NON_BASE_UNITS):
            problems.append(f"{name}: not a base unit")
        if kind == "histogram":
            for part in ("_bucket{", "_sum{", "_count{"):
                if not re.search(rf"^{name}{part}", text, re.M):
                    problems.append(f"{name}: no {part}")
    assert problems == [], problems


def test_the_raw_stat_names_encode_the_labels(envoy: Envoy, obs_mock: MockServer, sequence: list[httpx.Response]) -> None:
    labels = (
        "route=obs;gen_ai.operation.name=chat;gen_ai.provider.name=openai;gen_ai.request.model=gpt-4o-mini;"
        f"server.address=llm.local;server.port={obs_mock.port}"
    )
    assert envoy.counter(f"wasmcustom.aigate.requests_total;{labels}") == 4
    assert envoy.counter(f"wasmcustom.aigate.tokens_total;{labels};gen_ai.token.type=output") == 28
    assert envoy.counter("wasmcustom.aigate.limit.outcomes_total;route=obs;limit=budget;outcome=allowed") == 6


LINE = re.compile(
    r'"POST /v1/chat/completions HTTP/1.1" (?P<status>\d+) \S+ \d+ms route=(?P<route>\S+) provider=(?P<provider>\S+) '
    r"model=(?P<model>\S+) prompt_tokens=(?P<prompt>\S+) completion_tokens=(?P<completion>\S+) "
    r"total_tokens=(?P<total>\S+) cost_usd=(?P<cost>\S+) outcome=(?P<outcome>\S+) upstream=\S+"
)


def test_access_log_line_of_envoy_yaml_shows_route_model_tokens_and_outcome(envoy: Envoy, sequence: list[httpx.Response]) -> None:
    path = Path(envoy.bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["access_log"][0]["typed_config"]["path"])
    deadline = time.monotonic() + 5
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= len(sequence) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    parsed = [m.groupdict() for m in map(LINE.search, lines) if m]
    assert len(parsed) == len(sequence), lines
    got = [(p["status"], p["route"], p["provider"], p["model"], p["prompt"], p["completion"], p["total"], p["outcome"]) for p in parsed]
    ok = ("obs", "openai", "gpt-4o-mini", "11", "7", "18", "ok")
    assert got == [
        ("200", *ok),
        ("200", *ok),
        ("200", *ok),
        ("500", "obs", "openai", "gpt-4o-mini", "-", "-", "-", "upstream_500"),
        ("400", "obs", "openai", "-", "-", "-", "-", "invalid_json"),
        ("200", *ok),
        # refused from the headers: the body (and so the model) was never read
        ("429", "obs", "openai", "-", "-", "-", "-", "token_budget_exceeded"),
    ]
    # No `pricing` in this config: nothing is priced, the field stays unset.
    assert {p["cost"] for p in parsed} == {"-"}


# Runs last: it sends more requests than the sequence above.
def test_model_labels_keep_their_dots_and_stay_bounded(envoy: Envoy, sequence: list[httpx.Response]) -> None:
    """`gpt-4.1` stays `gpt-4.1` (not `gpt-4_1`); invented names end up as `other` once each
    worker has labelled 16 (issue 12 item 15)."""
    def free(model: str) -> httpx.Response:
        return httpx.post(
            envoy.base_url + "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-route": "free"},
            timeout=30,
        )

    assert free("gpt-4.1").status_code == 200
    for i in range(60):
        assert free(f"invented-{i}").status_code == 200
    deadline = time.monotonic() + 5
    while True:
        models = set(re.findall(r'^aigate_requests_total\{[^}]*route="free"[^}]*gen_ai_request_model="([^"]*)"', envoy.stats_prometheus(), re.M))
        if "other" in models or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert "gpt-4.1" in models
    assert "other" in models
    assert len(models) <= 2 * 16 + 1, sorted(models)  # two workers, 16 names each, and other
