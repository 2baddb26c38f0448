"""Fallbacks (issue 16) through a real Envoy wired exactly as envoy/envoy-fallbacks.yaml.

The shipped file is loaded and only what a test run must change is patched: ports (the two
providers are mocks), the filter's path, the plugin config's route (each test module's), the
per-try timeout (1 s here, in Envoy and the plugin config alike) and a JSON access log. The
listener's aigate runs the stages once; Envoy's retry policy over the aggregate cluster sends
each attempt to the next provider's cluster, where the same aigate, as an upstream filter,
translates and credentials it for that provider.

Primary: `openai` (mock `primary`); fallback: `anthropic` (mock `fallback`), so every answer
that fails over is translated back into the OpenAI shape the client speaks.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from integration.harness.envoy import REPO_ROOT, Envoy, access_log_format, wasm_path
from integration.mocks import MockServer, llm, sse

OPENAI_KEY = "sk-primary-openai-1111"
ANTHROPIC_KEY = "sk-fallback-anthropic-2222"
SHIPPED = REPO_ROOT / "envoy" / "envoy-fallbacks.yaml"
PER_TRY_MS = 1000


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def shipped_plugin_config() -> dict[str, Any]:
    doc = yaml.safe_load(SHIPPED.read_text())
    listener = doc["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return json.loads(hcm["http_filters"][0]["typed_config"]["config"]["configuration"]["value"])


def fallback_bootstrap(
    workdir: Path,
    openai_port: int,
    anthropic_port: int,
    route: dict[str, Any],
    extra_clusters: dict[str, int],
    buffer_limit: int | None = None,
    order: list[str] | None = None,
    pricing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    doc = yaml.safe_load(SHIPPED.read_text())
    doc["admin"]["address"]["socket_address"]["port_value"] = 0
    listener = doc["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = 0
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["access_log"] = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(workdir / "access.log"),
                "log_format": {"json_format": {**access_log_format(), "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "rid": "%REQ(X-TEST-ID)%"}},
            },
        }
    ]
    # The anchor makes the listener's and the aggregate cluster's filter one object: patched once.
    plugin = hcm["http_filters"][0]["typed_config"]["config"]
    plugin["vm_config"]["code"]["local"]["filename"] = str(wasm_path())
    plugin["vm_config"]["environment_variables"]["key_values"] = {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    plugin["configuration"]["value"] = json.dumps({"routes": [route], **({"pricing": pricing} if pricing else {})})
    http_route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    http_route["route"]["retry_policy"]["per_try_timeout"] = f"{PER_TRY_MS / 1000}s"
    if buffer_limit is not None:
        http_route["request_body_buffer_limit"] = buffer_limit
    ports = {"openai": openai_port, "anthropic": anthropic_port}
    clusters = doc["static_resources"]["clusters"]
    for cluster in clusters:
        if order is not None and cluster["name"] == "llm_fallbacks":
            cluster["cluster_type"]["typed_config"]["clusters"] = order
        if cluster["name"] in ports:
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            endpoint["address"]["socket_address"]["port_value"] = ports[cluster["name"]]
    for name, port in extra_clusters.items():
        clusters.append(
            {
                "name": name,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": name,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
                },
            }
        )
    return doc


def chat_route(**extra: Any) -> dict[str, Any]:
    """The shipped route, with the per-try timeout of this test run."""
    (route,) = shipped_plugin_config()["routes"]
    route["retry"]["per_try_timeout_ms"] = PER_TRY_MS
    route.update(extra)
    return route


@pytest.fixture(scope="module")
def primary(mock_factory) -> MockServer:
    return mock_factory(name="primary")


@pytest.fixture(scope="module")
def fallback(mock_factory) -> MockServer:
    return mock_factory(name="fallback")


@pytest.fixture(autouse=True)
def _fresh(primary: MockServer, fallback: MockServer):
    primary.reset()
    fallback.reset()
    yield


def start(
    tmp_path_factory,
    name: str,
    openai_port: int,
    anthropic_port: int,
    route: dict[str, Any],
    extra_clusters: dict[str, int] | None = None,
    buffer_limit: int | None = None,
    order: list[str] | None = None,
    pricing: dict[str, Any] | None = None,
) -> Envoy:
    workdir = tmp_path_factory.mktemp(f"envoy-fallbacks-{name}")
    bootstrap = fallback_bootstrap(workdir, openai_port, anthropic_port, route, extra_clusters or {}, buffer_limit, order, pricing)
    envoy = Envoy(bootstrap, workdir=workdir, name=f"fallbacks-{name}")
    return envoy.start()


@pytest.fixture(scope="module")
def envoy(tmp_path_factory, primary, fallback, mock):
    webhook_route = chat_route(
        limits={"tokens": [{"name": "per-user", "key": {"header": "x-user-id"}, "limit": 1000, "window_ms": 600_000}]},
        guards={"request": [{"webhook": {"endpoint": {"cluster": "guard", "path": "/request"}}}]},
    )
    e = start(tmp_path_factory, "main", primary.port, fallback.port, webhook_route, {"guard": mock.port})
    yield e
    e.stop()


@pytest.fixture(scope="module")
def envoy_refused(tmp_path_factory, fallback):
    e = start(tmp_path_factory, "refused", closed_port(), fallback.port, chat_route())
    yield e
    e.stop()


def post(envoy: Envoy, body: dict[str, Any], user: str = "u1", **kw: Any) -> httpx.Response:
    return httpx.post(
        envoy.base_url + "/v1/chat/completions",
        json=body,
        headers={"authorization": "Bearer client-key", "x-user-id": user, "x-test-id": kw.pop("rid", f"rid-{time.monotonic_ns()}")},
        timeout=20,
    )


def chat_body(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "any", "messages": [{"role": "user", "content": text}], **extra}


def attempts(envoy: Envoy, **labels: str) -> int:
    return envoy.metric_total("aigate.attempts_total", labels)


def log_entry(envoy: Envoy, rid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for entry in envoy.access_log():
            if entry.get("rid") == rid:
                return entry
        time.sleep(0.05)
    raise AssertionError(f"no access-log entry for {rid}")


def assert_anthropic_answered(fallback: MockServer, text: str = "hello there") -> None:
    (req,) = fallback.requests
    assert req.path == "/v1/messages"
    assert req.headers.get("x-api-key") == ANTHROPIC_KEY
    assert "authorization" not in req.headers
    assert req.json["model"] == "claude-sonnet-4-5"
    assert req.json["messages"][-1]["content"] in (text, [{"type": "text", "text": text}])


def test_503_fails_over_to_the_fallback_of_another_kind(envoy: Envoy, primary: MockServer, fallback: MockServer) -> None:
    primary.enqueue(503, {"error": {"message": "overloaded", "type": "server_error"}}, path="/v1/chat/completions")
    before_failed = attempts(envoy, route="chat", outcome="failed_over", **{"error.type": "5xx", "gen_ai.provider.name": "openai"})
    before_ok = attempts(envoy, route="chat", outcome="ok", **{"gen_ai.provider.name": "anthropic"})
    r = post(envoy, chat_body(), rid="rid-503")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == llm.ECHO_PREFIX + "hello there"
    assert "x-aigate-attempt" not in r.headers and "x-aigate-attempt-model" not in r.headers
    (first,) = primary.requests
    assert first.path == "/v1/chat/completions"
    assert first.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert first.json["model"] == "gpt-4o-mini"
    assert_anthropic_answered(fallback)
    entry = log_entry(envoy, "rid-503")
    assert entry["aigate_provider"] == "anthropic"
    assert entry["aigate_model"] == "claude-sonnet-4-5"
    assert entry["attempts"] == 2
    assert entry["aigate_outcome"] == "ok"
    assert int(entry["aigate_total_tokens"]) == llm.USAGE.total
    assert envoy.metric_total("aigate.tokens_total", {"gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5"}) >= llm.USAGE.total
    assert attempts(envoy, route="chat", outcome="failed_over", **{"error.type": "5xx", "gen_ai.provider.name": "openai"}) == before_failed + 1
    assert attempts(envoy, route="chat", outcome="ok", **{"gen_ai.provider.name": "anthropic"}) == before_ok + 1


@pytest.mark.parametrize("stream", [False, True])
def test_429_fails_over_json_and_streamed(envoy: Envoy, primary: MockServer, fallback: MockServer, stream: bool) -> None:
    primary.enqueue(429, {"error": {"message": "slow down", "type": "rate_limit_error"}}, headers={"retry-after": "1"}, path="/v1/chat/completions")
    client = openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="client-key", max_retries=0, default_headers={"x-user-id": "u429"})
    before = attempts(envoy, outcome="failed_over", **{"error.type": "429"})
    if stream:
        chunks = list(client.chat.completions.create(model="any", messages=[{"role": "user", "content": "hello there"}], stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert fallback.requests[0].json["stream"] is True
    else:
        text = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "hello there"}]).choices[0].message.content
    assert text == llm.ECHO_PREFIX + "hello there"
    assert len(primary.requests) == 1
    assert_anthropic_answered(fallback)
    assert attempts(envoy, outcome="failed_over", **{"error.type": "429"}) == before + 1


def test_refused_connections_fail_over(envoy_refused: Envoy, fallback: MockServer) -> None:
    r = post(envoy_refused, chat_body(), rid="rid-refused")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == llm.ECHO_PREFIX + "hello there"
    assert_anthropic_answered(fallback)
    assert log_entry(envoy_refused, "rid-refused")["aigate_provider"] == "anthropic"
    deadline = time.monotonic() + 3
    while attempts(envoy_refused, outcome="failed_over", **{"error.type": "connect-failure"}) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert attempts(envoy_refused, outcome="failed_over", **{"error.type": "connect-failure"}) == 1


def test_a_primary_hanging_past_the_per_try_timeout_fails_over(envoy: Envoy, primary: MockServer, fallback: MockServer) -> None:
    primary.enqueue(200, llm.openai_completion("gpt-4o-mini", "too late"), delay_s=5, path="/v1/chat/completions")
    before = attempts(envoy, outcome="failed_over", **{"error.type": "timeout"})
    started = time.monotonic()
    r = post(envoy, chat_body())
    took = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == llm.ECHO_PREFIX + "hello there"
    assert PER_TRY_MS / 1000 <= took < 4, took
    assert_anthropic_answered(fallback)
    deadline = time.monotonic() + 3
    while attempts(envoy, outcome="failed_over", **{"error.type": "timeout"}) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert attempts(envoy, outcome="failed_over", **{"error.type": "timeout"}) == before + 1


def test_a_primary_400_is_the_clients_answer(envoy: Envoy, primary: MockServer, fallback: MockServer) -> None:
    primary.enqueue(400, {"error": {"message": "bad temperature", "type": "invalid_request_error", "code": "bad_param"}}, path="/v1/chat/completions")
    r = post(envoy, chat_body(), rid="rid-400")
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "bad temperature"
    assert fallback.requests == []
    entry = log_entry(envoy, "rid-400")
    assert entry["aigate_provider"] == "openai"
    assert entry["attempts"] == 1


def test_when_every_attempt_fails_the_client_gets_the_last_error(envoy: Envoy, primary: MockServer, fallback: MockServer) -> None:
    primary.enqueue(503, {"error": {"message": "openai down", "type": "server_error"}}, path="/v1/chat/completions")
    fallback.enqueue(500, {"type": "error", "error": {"type": "api_error", "message": "anthropic down too"}}, path="/v1/messages")
    before = attempts(envoy, outcome="failed", **{"error.type": "5xx", "gen_ai.provider.name": "anthropic"})
    r = post(envoy, chat_body())
    assert r.status_code == 500, r.text
    error = r.json()["error"]  # OpenAI-shaped, from Anthropic's error
    assert "anthropic down too" in error["message"]
    assert attempts(envoy, outcome="failed", **{"error.type": "5xx", "gen_ai.provider.name": "anthropic"}) == before + 1


def test_the_webhook_guard_runs_once_and_the_budget_is_charged_once(envoy: Envoy, primary: MockServer, fallback: MockServer, mock: MockServer) -> None:
    user = f"budget-{time.monotonic_ns()}"
    primary.enqueue(503, {"error": {"message": "down", "type": "server_error"}}, path="/v1/chat/completions")
    r = post(envoy, chat_body(), user=user)
    assert r.status_code == 200, r.text
    hooks = [req for req in mock.requests if req.path == "/request"]
    assert len(hooks) == 1, hooks
    assert len(primary.requests) == 1 and len(fallback.requests) == 1
    # Charged once, with the answering attempt's usage: 1000 - 18 left.
    r = post(envoy, chat_body(), user=user)
    assert r.status_code == 200, r.text
    assert int(r.headers["x-ratelimit-remaining-tokens"]) == 1000 - llm.USAGE.total
    assert envoy.metric_total("aigate.requests_total", {"route": "chat"}) >= 2


def test_a_stream_that_failed_after_its_first_byte_is_not_failed_over(envoy: Envoy, primary: MockServer, fallback: MockServer) -> None:
    stream = llm.openai_stream("gpt-4o-mini", "one two three four five six")
    events = [e + b"\n\n" for e in stream.split(b"\n\n") if e.strip()]
    # Three whole events reach the client, then the provider dies.
    chunks = [b"".join(events[:3]), b"".join(events[3:])]
    primary.enqueue(200, headers={"content-type": "text/event-stream"}, chunks=chunks, chunk_delay_s=0.3, abort_after_chunks=1, path="/v1/chat/completions")
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):  # as without fallbacks: the stream breaks
        with httpx.stream(
            "POST",
            envoy.base_url + "/v1/chat/completions",
            json=chat_body(stream=True),
            headers={"authorization": "Bearer client-key", "x-user-id": "u-stream"},
            timeout=20,
        ) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                received += chunk
    assert b"data: " in received and b"one" in received  # the primary's first events reached the client
    assert len(primary.requests) == 1
    assert fallback.requests == []


def test_a_body_above_the_routes_buffer_limit_is_not_failed_over(tmp_path_factory, primary: MockServer, fallback: MockServer) -> None:
    """The router keeps at most the route's request_body_buffer_limit (here 4 KiB) of the body to
    re-send it: a larger request goes to the primary only, and its failure is the client's
    (Envoy counts retry_or_shadow_abandoned)."""
    e = start(tmp_path_factory, "buffer", primary.port, fallback.port, chat_route(), buffer_limit=4096)
    try:
        primary.enqueue(503, {"error": {"message": "primary down", "type": "server_error"}}, path="/v1/chat/completions", times=2)
        r = post(e, chat_body("x" * 8192))
        assert r.status_code == 503
        assert r.json()["error"]["message"] == "primary down"
        assert len(primary.requests) == 1 and fallback.requests == []
        assert e.counter("cluster.llm_fallbacks.retry_or_shadow_abandoned") == 1
        small = post(e, chat_body("hello there"))
        assert small.status_code == 200
        assert len(fallback.requests) == 1
    finally:
        e.stop()


def test_anthropic_first_then_openai_each_attempt_rewrites_the_shared_headers(tmp_path_factory, primary: MockServer, fallback: MockServer) -> None:
    """Envoy hands every attempt the same request headers: the OpenAI attempt starts from what
    the Anthropic attempt wrote (`:path` /v1/messages, `x-api-key`, `anthropic-version`) and must
    send none of it. Here `fallback` plays Anthropic (first) and `primary` OpenAI (second)."""
    (route,) = shipped_plugin_config()["routes"]
    route["provider"], route["fallbacks"] = route["fallbacks"][0], [route["provider"]]
    route["retry"]["per_try_timeout_ms"] = PER_TRY_MS
    e = start(tmp_path_factory, "reversed", primary.port, fallback.port, route, order=["anthropic", "openai"])
    try:
        fallback.enqueue(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, path="/v1/messages")
        r = post(e, chat_body(), rid="rid-reversed")
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == llm.ECHO_PREFIX + "hello there"
        (first,) = fallback.requests
        assert first.path == "/v1/messages" and first.headers["x-api-key"] == ANTHROPIC_KEY
        (second,) = primary.requests
        assert second.path == "/v1/chat/completions"
        assert second.headers["authorization"] == f"Bearer {OPENAI_KEY}"
        assert "x-api-key" not in second.headers
        assert "anthropic-version" not in second.headers
        assert second.json["model"] == "gpt-4o-mini"
        assert second.json["messages"][-1]["content"] == "hello there"
        entry = log_entry(e, "rid-reversed")
        assert entry["aigate_provider"] == "openai" and entry["attempts"] == 2
    finally:
        e.stop()


def test_the_answer_is_priced_at_the_price_of_the_model_that_answered(tmp_path_factory, primary: MockServer, fallback: MockServer) -> None:
    # Dollars per million tokens; the mocks report 11 prompt and 7 completion tokens.
    pricing = {"gpt-4o-mini": {"input": 1.0, "output": 2.0}, "claude-sonnet-4-5": {"input": 100.0, "output": 200.0}}
    e = start(tmp_path_factory, "priced", primary.port, fallback.port, chat_route(), pricing=pricing)
    try:
        r = post(e, chat_body(), rid="rid-priced-primary")
        assert r.status_code == 200, r.text
        assert log_entry(e, "rid-priced-primary")["aigate_cost_usd"] == "0.000025"  # 11 × 1 + 7 × 2
        primary.enqueue(503, {"error": {"message": "down", "type": "server_error"}}, path="/v1/chat/completions")
        r = post(e, chat_body(), rid="rid-priced-fallback")
        assert r.status_code == 200, r.text
        entry = log_entry(e, "rid-priced-fallback")
        assert entry["aigate_provider"] == "anthropic"
        assert entry["aigate_cost_usd"] == "0.002500"  # 11 × 100 + 7 × 200: the fallback's price
        # Counted under the provider that answered, not the listener's client-form provider.
        assert e.metric_total(
            "aigate.cost.usd_micros_total",
            {"gen_ai.provider.name": "anthropic", "gen_ai.response.model": "claude-sonnet-4-5"},
        ) == 2500
        assert e.metric_total(
            "aigate.cost.usd_micros_total",
            {"gen_ai.provider.name": "openai", "gen_ai.response.model": "gpt-4o-mini"},
        ) == 25
    finally:
        e.stop()
