"""Token budgets end to end: a real Envoy with two workers, the local backend (shared data)
and the `rls` backend against a gRPC rate limit service with envoyproxy/ratelimit's
fixed-window counting (integration/mocks/ratelimit.py).

Budgets count the provider's reported tokens; the mock answers every request with 18.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import uuid
from typing import Any

from pathlib import Path

import grpc
import httpx
import openai
import pytest
import yaml

from integration.harness import Cluster, Envoy
from integration.harness.envoy import REPO_ROOT
from integration.mocks import MockServer, llm
from integration.mocks.ratelimit import (
    CODE_OK,
    CODE_OVER_LIMIT,
    METHOD,
    SERVICE,
    FixedWindowCounters,
    RateLimitServer,
    Rule,
    decode_response,
    encode_request,
)

TOKENS = llm.USAGE.total  # 18 per answer
SLOW_S = 0.15  # upstream latency on the "slow" routes: concurrent requests overlap
THREADS = 8

RULES = {
    ("rls", "per-user"): Rule(200, 600_000),
    ("rls-window", "everyone"): Rule(30, 2_000),
    ("rls-slow", "per-user"): Rule(1_000, 600_000),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def route(name: str, tokens: list[dict[str, Any]], backend: Any = "local", *, slow: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "match": {"headers": {"x-test": name}},
        "provider": {
            "kind": "openai",
            "authority": "llm.local",
            "path": "/slow/chat/completions" if slow else "/v1/chat/completions",
            "auth": {"none": True},
        },
        "limits": {"tokens": tokens, "backend": backend},
    }


def per_user(limit: int, window_ms: int = 600_000) -> dict[str, Any]:
    return {"name": "per-user", "key": {"header": "x-user-id"}, "limit": limit, "window_ms": window_ms}


def rls_backend(cluster: str, failure_mode: str = "closed", timeout_ms: int = 2_000) -> dict[str, Any]:
    return {"rls": {"cluster": cluster, "domain": "aigate", "timeout_ms": timeout_ms, "failure_mode": failure_mode}}


@pytest.fixture(scope="module")
def llm_mock(mock_factory) -> MockServer:
    server = mock_factory(name="limits-llm")

    def slow(req):
        reply = llm.openai_chat(req)
        reply.delay_s = SLOW_S
        return reply

    server.add_route("POST", r"/slow/chat/completions", slow)
    return server


@pytest.fixture(scope="module")
def rls() -> RateLimitServer:
    server = RateLimitServer(RULES).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def envoy(envoy_factory, llm_mock: MockServer, rls: RateLimitServer) -> Envoy:
    everyone = {"name": "everyone", "key": {"fixed": "all"}, "limit": 30, "window_ms": 2_000}
    routes = [
        route("local-basic", [per_user(50)]),
        route("local-ip", [{"name": "per-ip", "key": {"client_address": True}, "limit": 30, "window_ms": 600_000}]),
        route("local-burst", [per_user(360)], slow=True),
        route("local-window", [everyone]),
        route("local-release", [per_user(1_000)]),
        route("rls", [per_user(200)], rls_backend("ratelimit"), slow=True),
        route("rls-window", [everyone], rls_backend("ratelimit")),
        route("rls-open", [per_user(200)], rls_backend("rls_dead", "open")),
        route("rls-closed", [per_user(200)], rls_backend("rls_dead", "closed")),
        route("rls-unknown", [per_user(200)], rls_backend("no_such_cluster", "closed")),
        route("rls-slow", [per_user(1_000)], rls_backend("ratelimit", "closed", timeout_ms=100)),
    ]
    return envoy_factory(
        plugin_config={"routes": routes},
        clusters={
            "mock_llm": llm_mock,
            "ratelimit": Cluster(rls.port, http2=True),
            "rls_dead": Cluster(free_port(), http2=True),
        },
        concurrency=2,
    )


def user() -> str:
    return "u-" + uuid.uuid4().hex[:10]


def chat(envoy: Envoy, test: str, who: str, *, stream: bool = False, client: httpx.Client | None = None) -> httpx.Response:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    post = client.post if client is not None else httpx.post
    return post(
        envoy.base_url + "/v1/chat/completions",
        json=body,
        headers={"x-test": test, "x-user-id": who},
        timeout=30,
    )


def code(r: httpx.Response) -> str | None:
    try:
        return r.json()["error"]["code"]
    except Exception:
        return None


def ratelimit_headers(r: httpx.Response) -> tuple[int, int, str]:
    return (
        int(r.headers["x-ratelimit-limit-tokens"]),
        int(r.headers["x-ratelimit-remaining-tokens"]),
        r.headers["x-ratelimit-reset-tokens"],
    )


def outcome(envoy: Envoy, route_name: str, limit: str, what: str) -> int:
    return envoy.counter(f"wasmcustom.aigate.limit.outcomes_total;route={route_name};limit={limit};outcome={what}")


# ---------------------------------------------------------------------------
# the test rate limit service itself
# ---------------------------------------------------------------------------


def test_rate_limit_service_speaks_the_protocol(rls: RateLimitServer) -> None:
    key = user()
    with grpc.insecure_channel(f"127.0.0.1:{rls.port}") as channel:
        call = channel.unary_unary(f"/{SERVICE}/{METHOD}", request_serializer=lambda b: b, response_deserializer=lambda b: b)
        descriptors = [[("route", "rls"), ("limit", "per-user"), ("key", key)], [("route", "x"), ("limit", "y"), ("key", key)]]
        overall, statuses = decode_response(call(encode_request("aigate", descriptors, 0)))
        assert overall == CODE_OK
        assert statuses[0] == {"code": CODE_OK, "limit": 200, "remaining": 200}
        assert statuses[1] == {"code": CODE_OK}  # no rule: no limit
        overall, statuses = decode_response(call(encode_request("aigate", descriptors[:1], 150)))
        assert (overall, statuses[0]["remaining"]) == (CODE_OK, 50)
        overall, _ = decode_response(call(encode_request("aigate", descriptors[:1], 60)))
        assert overall == CODE_OVER_LIMIT
        overall, statuses = decode_response(call(encode_request("aigate", descriptors[:1], 0)))
        assert overall == CODE_OVER_LIMIT and statuses[0].get("remaining", 0) == 0
    assert rls.used("rls", "per-user", key) == 210


def test_rate_limit_service_counters_expire_like_redis_keys() -> None:
    now = [100.0]
    counters = FixedWindowCounters(clock=lambda: now[0])
    assert counters.get("k") == 0
    assert counters.incrby("k", 5, 1_000) == 5
    assert counters.incrby("k", 7, 1_000) == 12  # INCRBY adds
    now[0] = 100.5
    assert counters.get("k") == 12
    assert counters.incrby("other", 1, 500) == 1
    now[0] = 101.0  # 1 s after the last INCRBY of "k", 0.5 s after "other": both gone
    assert counters.get("k") == 0 and counters.get("other") == 0
    assert counters.incrby("k", 3, 1_000) == 3  # counting starts again from 0


# ---------------------------------------------------------------------------
# local backend
# ---------------------------------------------------------------------------


def test_local_budget_counts_json_and_stream_answers_then_refuses_with_429(envoy: Envoy) -> None:
    who = user()
    r = chat(envoy, "local-basic", who)
    assert r.status_code == 200, r.text
    limit, remaining, reset = ratelimit_headers(r)
    assert (limit, remaining) == (50, 50)
    assert reset.endswith("s") and 1 <= int(reset[:-1]) <= 600

    r = chat(envoy, "local-basic", who, stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert '"total_tokens":18' in r.text  # the usage chunk is what gets charged
    assert ratelimit_headers(r)[1] == 50 - TOKENS

    r = chat(envoy, "local-basic", who)
    assert r.status_code == 200
    assert ratelimit_headers(r)[1] == 50 - 2 * TOKENS

    # 54 tokens used: the budget of 50 is spent (by less than one answer too many).
    r = chat(envoy, "local-basic", who)
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "token_budget_exceeded")
    assert "per-user" in error["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 600
    assert ratelimit_headers(r)[:2] == (50, 0)

    # What an OpenAI SDK user sees.
    client = openai.OpenAI(
        base_url=envoy.base_url + "/v1",
        api_key="sk-x",
        max_retries=0,
        default_headers={"x-test": "local-basic", "x-user-id": who},
    )
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "token_budget_exceeded"

    # Someone else still has a whole budget.
    r = chat(envoy, "local-basic", user())
    assert r.status_code == 200 and ratelimit_headers(r)[1] == 50


def test_client_address_is_a_budget_key(envoy: Envoy) -> None:
    statuses = [chat(envoy, "local-ip", user()).status_code for _ in range(3)]
    # Different users, one address (127.0.0.1): 18 + 18 >= 30.
    assert statuses == [200, 200, 429]


def shipped_xff_settings() -> dict[str, Any]:
    """Envoy's defaults overlaid with what the shipped envoy/envoy.yaml sets for client addresses."""
    config = yaml.safe_load(Path(REPO_ROOT, "envoy", "envoy.yaml").read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    settings: dict[str, Any] = {"use_remote_address": False, "xff_num_trusted_hops": 0}
    settings.update({k: hcm[k] for k in settings if k in hcm})
    return settings


def test_forged_x_forwarded_for_does_not_escape_a_client_address_budget(envoy_factory, llm_mock: MockServer) -> None:
    """Issue 12 item 13: under the shipped HCM settings a client that sends a new
    X-Forwarded-For on every request still has one budget (its TCP address)."""
    forwarded = envoy_factory(
        plugin_config={
            "routes": [
                route("local-ip", [{"name": "per-ip", "key": {"client_address": True}, "limit": 30, "window_ms": 600_000}])
            ]
        },
        clusters={"mock_llm": llm_mock},
        hcm_extra=shipped_xff_settings(),
    )
    statuses = []
    for i in range(3):
        r = httpx.post(
            forwarded.base_url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-test": "local-ip", "x-forwarded-for": f"203.0.113.{i + 1}"},
        )
        statuses.append(r.status_code)
    assert statuses == [200, 200, 429]


def burst(envoy: Envoy, test: str, who: str, deadline_s: float = 60.0) -> tuple[int, dict[str, int]]:
    """THREADS clients send requests for one key until the budget says it is spent.
    Each request opens its own connection, so the two workers share the traffic.
    Returns (answers admitted, count of each refusal code)."""
    admitted = 0
    refusals: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s

    def client() -> None:
        nonlocal admitted
        for _ in range(500):
            if time.monotonic() > stop_at:
                return
            r = chat(envoy, test, who)
            with lock:
                if r.status_code == 200:
                    admitted += 1
                    continue
                refusals[code(r) or str(r.status_code)] = refusals.get(code(r) or str(r.status_code), 0) + 1
            if code(r) == "token_budget_exceeded":
                return
            time.sleep(0.02)

    threads = [threading.Thread(target=client) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return admitted, refusals


def overlapped(mock: MockServer, path: str) -> bool:
    """True if two requests reached the upstream less than its latency apart."""
    times = sorted(r.received_at for r in mock.requests_to(path))
    return any(b - a < SLOW_S for a, b in itertools.pairwise(times))


def worker_connections(envoy: Envoy) -> dict[str, int]:
    stats = envoy.stats(filter=r"^listener\..*\.worker_\d+\.downstream_cx_total$")
    return {name: value for name, value in stats.items() if isinstance(value, int)}


def test_local_budget_holds_under_concurrent_clients_on_two_workers(envoy: Envoy, llm_mock: MockServer) -> None:
    before = worker_connections(envoy)
    admitted, refusals = burst(envoy, "local-burst", user())
    tokens = admitted * TOKENS
    # Never more than one answer over the budget, and the budget is usable to its end.
    assert 360 <= tokens <= 360 + TOKENS, (admitted, refusals)
    assert refusals.get("token_budget_exceeded") == THREADS, refusals
    assert set(refusals) <= {"token_budget_exceeded", "token_budget_in_flight"}, refusals
    # It really was concurrent, and both workers took part.
    assert overlapped(llm_mock, "/slow/chat/completions")
    after = worker_connections(envoy)
    grew = [name for name, value in after.items() if value > before.get(name, 0)]
    assert len(grew) >= 2, after


def test_local_window_expires(envoy: Envoy) -> None:
    windows(envoy, "local-window", None)


def windows(envoy: Envoy, test: str, rls: RateLimitServer | None) -> None:
    """Budget 30 per 2 s window for everyone: two answers, a 429, then a fresh window."""
    window_ms = 2_000
    # Start right after a window boundary (windows are aligned to the epoch), so the three
    # requests below land in one window.
    while not 50 <= time.time() * 1000 % window_ms < 400:
        time.sleep(0.01)
    reports = len(rls.reports()) if rls else 0
    first = chat(envoy, test, user())
    assert first.status_code == 200, first.text
    assert ratelimit_headers(first)[:2] == (30, 30)
    if rls:
        rls.wait_reports(reports + 1)
    second = chat(envoy, test, user())
    assert second.status_code == 200
    assert ratelimit_headers(second)[:2] == (30, 30 - TOKENS)
    if rls:
        rls.wait_reports(reports + 2)
    third = chat(envoy, test, user())
    assert third.status_code == 429, third.text
    assert int(third.headers["retry-after"]) <= 2
    # The next window restores the budget.
    time.sleep(window_ms / 1000 - time.time() % (window_ms / 1000) + 0.05)
    fourth = chat(envoy, test, user())
    assert fourth.status_code == 200, fourth.text
    assert ratelimit_headers(fourth)[:2] == (30, 30)


def test_a_request_that_ends_unanswered_gives_back_what_it_held(envoy: Envoy, llm_mock: MockServer) -> None:
    who = user()
    # A stream that takes a long time; the client leaves after its first bytes. Its request
    # held the whole budget (no answer of this key has been measured yet).
    stream = llm.openai_stream("gpt-4o-mini", "a long answer that never finishes", include_usage=True)
    llm_mock.enqueue(
        200,
        headers={"content-type": "text/event-stream"},
        chunks=[stream[:40], stream[40:]],
        chunk_delay_s=5,
        path="/v1/chat/completions",
    )
    body = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=10) as raw:
        raw.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b"x-test: local-release\r\nx-user-id: %s\r\ncontent-length: %d\r\n\r\n%s" % (who.encode(), len(body), body)
        )
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    # Envoy ends the stream (log phase) and the hold is released; until then the budget is
    # held. Without the release it would stay held for 15 minutes.
    deadline = time.monotonic() + 4
    while True:
        r = chat(envoy, "local-release", who)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        assert code(r) == "token_budget_in_flight", r.text
        time.sleep(0.05)
    assert r.status_code == 200, r.text
    # What it held is back; it is charged the estimate of an answer whose usage never came
    # (CONFIG.md Limits: the request's bytes, and no generated text was relayed yet, at 4 a token).
    assert ratelimit_headers(r)[1] == 1_000 - -(-len(body) // 4)


# ---------------------------------------------------------------------------
# rls backend
# ---------------------------------------------------------------------------


def test_rls_checks_before_and_reports_tokens_after_each_answer(envoy: Envoy, rls: RateLimitServer) -> None:
    who = user()
    start = len(rls.calls)
    seen = len(rls.reports())
    r = chat(envoy, "rls", who)
    assert r.status_code == 200, r.text
    assert ratelimit_headers(r)[:2] == (200, 200)
    reports = rls.wait_reports(seen + 1)
    mine = [c for c in rls.calls[start:] if ("key", who) in c.descriptors[0]]
    assert [c.hits for c in mine] == [0, TOKENS], mine
    assert mine[0].domain == "aigate"
    assert mine[0].descriptors == [[("route", "rls"), ("limit", "per-user"), ("key", who)]]
    assert reports[-1].descriptors == mine[0].descriptors
    assert rls.used("rls", "per-user", who) == TOKENS

    # Sequentially up to the budget: the service's numbers come back in the headers.
    answered = 1
    while True:
        seen = len(rls.reports())
        r = chat(envoy, "rls", who)
        if r.status_code != 200:
            break
        answered += 1
        rls.wait_reports(seen + 1)
        assert answered < 20
    assert r.status_code == 429, r.text
    assert code(r) == "token_budget_exceeded"
    assert ratelimit_headers(r)[:2] == (200, 0)
    assert 1 <= int(r.headers["retry-after"]) <= 600
    assert answered * TOKENS >= 200 and (answered - 1) * TOKENS < 200
    assert rls.used("rls", "per-user", who) == answered * TOKENS
    assert outcome(envoy, "rls", "per-user", "over_limit") >= 1


def test_rls_budget_under_concurrent_clients(envoy: Envoy, rls: RateLimitServer) -> None:
    who = user()
    admitted, refusals = burst(envoy, "rls", who)
    tokens = admitted * TOKENS
    # Checks do not reserve anything (hits_addend 0), so requests already admitted when the
    # budget runs out still finish: at most one answer per concurrent client over.
    assert 200 <= tokens <= 200 + THREADS * TOKENS, (admitted, refusals)
    assert set(refusals) == {"token_budget_exceeded"}, refusals
    # Every answer was reported, although the streams ended before the reports' replies.
    deadline = time.monotonic() + 5
    while rls.used("rls", "per-user", who) < tokens and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rls.used("rls", "per-user", who) == tokens


def test_rls_window_expires(envoy: Envoy, rls: RateLimitServer) -> None:
    windows(envoy, "rls-window", rls)


@pytest.mark.parametrize(
    ("test", "status", "what"),
    [
        ("rls-closed", 503, "backend_failed_closed"),
        ("rls-open", 200, "backend_failed_open"),
        ("rls-unknown", 503, "backend_failed_closed"),
    ],
)
def test_rls_failure_follows_failure_mode(envoy: Envoy, test: str, status: int, what: str) -> None:
    before = outcome(envoy, test, "per-user", what)
    for _ in range(2):  # both workers, most likely; none of them breaks
        r = chat(envoy, test, user())
        assert r.status_code == status, r.text
        if status == 503:
            assert code(r) == "limit_backend_unavailable"
            assert "x-ratelimit-limit-tokens" not in r.headers
    assert outcome(envoy, test, "per-user", what) == before + 2
    # The filter is still healthy on every route.
    assert chat(envoy, "local-basic", user()).status_code == 200


def test_rls_timeout_follows_failure_mode(envoy: Envoy, rls: RateLimitServer) -> None:
    r = chat(envoy, "rls-slow", "slow")
    assert r.status_code == 503, r.text
    assert code(r) == "limit_backend_unavailable"
    assert outcome(envoy, "rls-slow", "per-user", "backend_failed_closed") >= 1
