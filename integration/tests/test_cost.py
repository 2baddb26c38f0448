"""Pricing and cost budgets end to end: a real Envoy with two workers prices each answer from
its reported usage (`pricing`), counts micro-dollars by route, provider and model, logs
`aigate.cost_usd`, and enforces dollar budgets (`limits.cost`) on the local backend and through
a gRPC rate limit service (integration/mocks/ratelimit.py), plus token budgets that count
input or output only (`limits.tokens[].count`).

Every answer of the priced mock reports 1000 prompt tokens (400 of them cached) and 500
completion tokens and names the snapshot `gpt-4o-mini-2024-07-18`; the route sends
`gpt-4o-mini`, whose price is 0.15 / 0.60 / cached 0.075 dollars per million tokens:
600 × 0.15 + 400 × 0.075 + 500 × 0.60 = 420 micro-dollars an answer.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from integration.harness import Cluster, Envoy
from integration.mocks import MockServer, llm
from integration.mocks.ratelimit import RateLimitServer, Rule
from integration.mocks.server import Reply
from integration.mocks.sse import sse_event

ANSWER_MICROS = 420
SNAPSHOT = "gpt-4o-mini-2024-07-18"
USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 500,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 400},
}
PRICING = {
    "gpt-4o-mini": {"input": 0.15, "output": 0.60, "cached_input": 0.075},
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cached_input": 0.30, "cache_write": 3.75},
}
RULES = {("cost-rls", "team"): Rule(1_000, 600_000)}  # the service counts micro-dollars

# Anthropic Messages passed through: input_tokens excludes the cache reads and writes, so the
# prompt is 200 + 700 read + 100 written; at claude-sonnet-4-5's prices
# 200 × 3.0 + 700 × 0.30 + 100 × 3.75 + 500 × 15.0 = 8685 micro-dollars an answer.
CLAUDE = "claude-sonnet-4-5"
CLAUDE_USAGE = {"input_tokens": 200, "cache_read_input_tokens": 700, "cache_creation_input_tokens": 100, "output_tokens": 500}
CLAUDE_MICROS = 8685


def priced_message(req) -> Reply:
    body = req.json or {}
    if body.get("stream"):
        start_usage = dict(CLAUDE_USAGE, output_tokens=1)
        events = [
            ("message_start", {"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": CLAUDE_USAGE["output_tokens"]}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        return llm.sse_reply(b"".join(sse_event(data, event=name) for name, data in events))
    return Reply(200, {
        "id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE,
        "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": CLAUDE_USAGE,
    })


def priced_response(req) -> Reply:
    """A Responses answer (passthrough) with the chat answers' usage: 420 micro-dollars."""
    usage = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 400},
             "output_tokens": 500, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1500}
    response = {"id": "resp_1", "object": "response", "status": "completed", "model": SNAPSHOT,
                "output": [{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                            "content": [{"type": "output_text", "annotations": [], "text": "Hi"}]}],
                "usage": usage}
    if (req.json or {}).get("stream"):
        events = [
            {"type": "response.created", "sequence_number": 0, "response": dict(response, status="in_progress", output=[], usage=None)},
            {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1", "output_index": 0,
             "content_index": 0, "delta": "Hi", "logprobs": []},
            {"type": "response.completed", "sequence_number": 2, "response": response},
        ]
        return llm.sse_reply(b"".join(sse_event(e, event=e["type"]) for e in events))
    return Reply(200, response)


def priced_answer(req) -> Reply:
    body = req.json or {}
    if body.get("stream"):
        chunks = [
            {"id": "c1", "object": "chat.completion.chunk", "model": SNAPSHOT,
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]},
            {"id": "c1", "object": "chat.completion.chunk", "model": SNAPSHOT,
             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"id": "c1", "object": "chat.completion.chunk", "model": SNAPSHOT, "choices": [], "usage": USAGE},
        ]
        stream = b"".join(llm.sse_event(c) for c in chunks) + llm.sse_event("[DONE]")
        return llm.sse_reply(stream)
    return Reply(200, {
        "id": "c1", "object": "chat.completion", "model": SNAPSHOT,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": USAGE,
    })


def route(name: str, limits: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "match": {"headers": {"x-test": name}},
        "provider": {"kind": "openai", "authority": "llm.local", "path": "/priced/chat/completions", "auth": {"none": True}},
    }
    if limits is not None:
        out["limits"] = limits
    return out


def team_budget(limit_usd: float) -> dict[str, Any]:
    return {"name": "team", "key": {"header": "x-team"}, "limit_usd": limit_usd, "window_ms": 600_000}


@pytest.fixture(scope="module")
def llm_mock(mock_factory) -> MockServer:
    server = mock_factory(name="cost-llm")
    server.add_route("POST", r"/priced/chat/completions", priced_answer)
    server.add_route("POST", r"/priced/responses", priced_response)
    server.add_route("POST", r"/priced-anthropic/v1/messages", priced_message)
    return server


@pytest.fixture(scope="module")
def rls() -> RateLimitServer:
    server = RateLimitServer(RULES).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def envoy(envoy_factory, llm_mock: MockServer, rls: RateLimitServer) -> Envoy:
    tokens = lambda name, limit, count: {  # noqa: E731
        "name": name, "key": {"header": "x-team"}, "limit": limit, "window_ms": 600_000, "count": count,
    }
    routes = [
        route("cost-metrics"),
        route("cost-stream"),
        route("cost-local", {"cost": [team_budget(0.001)]}),
        route("cost-burst", {"cost": [team_budget(0.002)]}),
        route("cost-rls", {"cost": [team_budget(0.001)],
                           "backend": {"rls": {"cluster": "ratelimit", "timeout_ms": 2_000, "failure_mode": "closed"}}}),
        route("tokens-input", {"tokens": [tokens("in", 2_500, "input")]}),
        route("tokens-output", {"tokens": [tokens("out", 900, "output")]}),
        route("cost-responses"),
        {
            "name": "cost-messages",
            "match": {"headers": {"x-test": "cost-messages"}},
            "provider": {"kind": "anthropic", "authority": "llm.local", "path": "/priced-anthropic/v1/messages",
                         "auth": {"none": True}},
        },
        {
            "name": "unpriced",
            "match": {"headers": {"x-test": "unpriced"}},
            "provider": {"kind": "openai", "authority": "llm.local", "auth": {"none": True}},
        },
    ]
    return envoy_factory(
        plugin_config={"pricing": PRICING, "routes": routes},
        clusters={"mock_llm": llm_mock, "ratelimit": Cluster(rls.port, http2=True)},
        concurrency=2,
    )


def team() -> str:
    return "t-" + uuid.uuid4().hex[:10]


def chat(envoy: Envoy, test: str, who: str = "", *, stream: bool = False, model: str = "gpt-4o-mini") -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return httpx.post(
        envoy.base_url + "/v1/chat/completions",
        json=body,
        headers={"x-test": test, "x-team": who or team()},
        timeout=30,
    )


def cost(envoy: Envoy, route_name: str, model: str = "gpt-4o-mini") -> int:
    return envoy.metric_total(
        "aigate.cost.usd_micros_total",
        {"route": route_name, "gen_ai.provider.name": "openai", "gen_ai.response.model": model},
    )


def access_entries(envoy: Envoy, route_name: str, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        entries = [e for e in envoy.access_log() if e.get("aigate_route") == route_name]
        if len(entries) >= n or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


def test_a_json_answer_is_priced_from_its_usage_and_logged(envoy: Envoy) -> None:
    r = chat(envoy, "cost-metrics")
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 400
    assert cost(envoy, "cost-metrics") == ANSWER_MICROS
    r = chat(envoy, "cost-metrics")
    assert r.status_code == 200
    assert cost(envoy, "cost-metrics") == 2 * ANSWER_MICROS
    entries = access_entries(envoy, "cost-metrics", 2)
    assert [e["aigate_cost_usd"] for e in entries] == ["0.000420", "0.000420"]
    assert entries[-1]["aigate_total_tokens"] == "1500"
    assert envoy.metric_total("aigate.cost.unpriced_total", {"route": "cost-metrics"}) == 0
    # The tag rule makes the model a label of the metric (Prometheus: dots become `_`).
    prometheus = envoy.stats_prometheus()
    assert 'gen_ai_response_model="gpt-4o-mini"' in prometheus, prometheus[-2000:]


def test_a_streamed_answer_is_priced_from_its_usage_event(envoy: Envoy) -> None:
    r = chat(envoy, "cost-stream", stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert '"cached_tokens":400' in r.text
    assert cost(envoy, "cost-stream") == ANSWER_MICROS
    (entry,) = access_entries(envoy, "cost-stream", 1)
    assert entry["aigate_cost_usd"] == "0.000420"


def test_a_model_without_a_price_costs_nothing_and_is_counted(envoy: Envoy) -> None:
    r = chat(envoy, "unpriced", model="llama-3-70b")
    assert r.status_code == 200, r.text
    assert envoy.metric_total(
        "aigate.cost.unpriced_total",
        {"route": "unpriced", "gen_ai.provider.name": "openai", "gen_ai.response.model": "llama-3-70b"},
    ) == 1
    assert envoy.metric_total("aigate.cost.usd_micros_total", {"route": "unpriced"}) == 0
    (entry,) = access_entries(envoy, "unpriced", 1)
    assert entry["aigate_cost_usd"] == "0.000000"


def test_a_local_dollar_budget_refuses_once_spent(envoy: Envoy) -> None:
    who = team()
    remaining = []
    for _ in range(3):
        r = chat(envoy, "cost-local", who)
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit-usd"] == "0.001000"
        assert r.headers["x-ratelimit-reset-usd"].endswith("s")
        remaining.append(r.headers["x-ratelimit-remaining-usd"])
    assert remaining == ["0.001000", "0.000580", "0.000160"]
    # 1260 micro-dollars spent of 1000: over by less than one answer, and refused now.
    r = chat(envoy, "cost-local", who, stream=True)
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "cost_budget_exceeded")
    assert "team" in error["message"] and "0.001000 USD" in error["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 600
    assert r.headers["x-ratelimit-remaining-usd"] == "0.000000"
    assert "x-ratelimit-limit-tokens" not in r.headers
    # Another team has its own budget.
    assert chat(envoy, "cost-local").status_code == 200


def test_a_dollar_budget_holds_under_concurrency(envoy: Envoy) -> None:
    """Eight requests at once on a budget of 2000 micro-dollars (answers of 420): the first
    answer of a key holds the whole budget until measured, then each request holds one
    answer's cost, so however they interleave on the two workers the budget is passed by
    less than one answer."""
    import concurrent.futures

    who = team()
    chat(envoy, "cost-burst", who)  # measures the key's first answer
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = [f.result().status_code for f in [pool.submit(chat, envoy, "cost-burst", who) for _ in range(8)]]
    ok = 1 + statuses.count(200)
    assert set(statuses) <= {200, 429}
    assert ok * ANSWER_MICROS < 2_000 + ANSWER_MICROS, statuses
    assert ok * ANSWER_MICROS >= 2_000 or 429 in statuses


def test_a_dollar_budget_on_the_rate_limit_service(envoy: Envoy, rls: RateLimitServer) -> None:
    who = team()
    for n in range(1, 4):
        r = chat(envoy, "cost-rls", who)
        assert r.status_code == 200, r.text
        # The report (hits_addend = the answer's micro-dollars) is not awaited by the request.
        deadline = time.monotonic() + 5
        while rls.used("cost-rls", "team", who) < n * ANSWER_MICROS and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rls.used("cost-rls", "team", who) == n * ANSWER_MICROS
    assert r.headers["x-ratelimit-limit-usd"] == "0.001000"
    assert r.headers["x-ratelimit-remaining-usd"] == "0.000160"
    r = chat(envoy, "cost-rls", who)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "cost_budget_exceeded"
    assert r.headers["x-ratelimit-remaining-usd"] == "0.000000"


def test_token_budgets_can_count_input_or_output_only(envoy: Envoy) -> None:
    who = team()
    # Input: 1000 prompt tokens an answer against 2500.
    remaining = []
    for _ in range(3):
        r = chat(envoy, "tokens-input", who)
        assert r.status_code == 200, r.text
        remaining.append(int(r.headers["x-ratelimit-remaining-tokens"]))
    assert remaining == [2500, 1500, 500]
    r = chat(envoy, "tokens-input", who)
    assert r.status_code == 429 and r.json()["error"]["code"] == "token_budget_exceeded"
    # Output: 500 completion tokens an answer against 900.
    who = team()
    remaining = []
    for _ in range(2):
        r = chat(envoy, "tokens-output", who, stream=True)
        assert r.status_code == 200, r.text
        remaining.append(int(r.headers["x-ratelimit-remaining-tokens"]))
    assert remaining == [900, 400]
    r = chat(envoy, "tokens-output", who)
    assert r.status_code == 429, r.text


def test_bad_prices_and_cost_budgets_are_refused_with_their_json_path(expect_rejected, mock) -> None:
    openai_route = {"name": "r", "provider": {"kind": "openai", "auth": {"none": True}}}
    negative = {"pricing": {"gpt-4o": {"input": -1.0, "output": 10.0}}, "routes": [openai_route]}
    result = expect_rejected(plugin_config=negative, clusters={"mock_llm": mock})
    assert result.rejected and "pricing.gpt-4o.input: must not be negative" in result.log
    unknown = {"pricing": {"gpt-4o": {"input": 1.0, "output": 10.0, "cached": 0.5}}, "routes": [openai_route]}
    result = expect_rejected(plugin_config=unknown, clusters={"mock_llm": mock})
    assert result.rejected and "unknown field `cached`" in result.log
    unpriced_budget = {"routes": [dict(openai_route, limits={"cost": [team_budget(5.0)]})]}
    result = expect_rejected(plugin_config=unpriced_budget, clusters={"mock_llm": mock})
    assert result.rejected and "routes[0].limits.cost[0]: a cost budget needs prices" in result.log


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_anthropic_messages_answer_is_priced_with_its_cache_reads_and_writes(envoy: Envoy, stream: bool) -> None:
    before = envoy.metric_total("aigate.cost.usd_micros_total", {"route": "cost-messages"})
    body: dict[str, Any] = {"model": CLAUDE, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    r = httpx.post(envoy.base_url + "/v1/messages", json=body,
                   headers={"x-test": "cost-messages", "anthropic-version": "2023-06-01"}, timeout=30)
    assert r.status_code == 200, r.text
    # Passed through: the client gets Anthropic's own usage, cache fields included.
    assert '"cache_read_input_tokens":700' in r.text.replace(" ", "")
    after = envoy.metric_total(
        "aigate.cost.usd_micros_total",
        {"route": "cost-messages", "gen_ai.provider.name": "anthropic", "gen_ai.response.model": CLAUDE},
    )
    assert after - before == CLAUDE_MICROS
    entries = access_entries(envoy, "cost-messages", 2 if stream else 1)
    assert entries[-1]["aigate_cost_usd"] == "0.008685"
    assert entries[-1]["aigate_prompt_tokens"] == "1000"


def test_a_streamed_responses_answer_is_priced_from_response_completed(envoy: Envoy) -> None:
    r = httpx.post(envoy.base_url + "/v1/responses",
                   json={"model": "gpt-4o-mini", "input": "hi", "stream": True},
                   headers={"x-test": "cost-responses"}, timeout=30)
    assert r.status_code == 200, r.text
    assert '"type":"response.completed"' in r.text.replace(" ", "")
    assert cost(envoy, "cost-responses") == ANSWER_MICROS
    (entry,) = access_entries(envoy, "cost-responses", 1)
    assert entry["aigate_cost_usd"] == "0.000420"
