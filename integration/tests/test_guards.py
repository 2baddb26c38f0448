"""Guards through a real Envoy: the regex guard on requests (string and array parts, a
text/plain body), on JSON answers and on streamed answers split across chunks; webhook
pass/mask/reject; moderation; llm_check; every callout failing (503 from the service,
connection refused, hanging past the timeout) in closed and open modes; response-side
callouts (whole answer, re-streamed) and rejections in mode A; metrics in /stats.

Routes are told apart by the `x-case` header, so one Envoy per header mode serves all."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest

from integration.mocks.sse import parse_sse, split_awkwardly, split_per_event, sse_event

GUARD_KEY = "gk-guard-secret"
ALL_BUILTINS = ["ssn", "credit_card", "email", "phone_number", "ipv4"]
PROVIDER = {"kind": "openai", "authority": "api.openai.test", "auth": {"key": {"value": "sk-up"}}}
CALLOUT_KINDS = ("webhook", "moderation", "llm_check")


def dead_port() -> int:
    """A local port with nothing listening (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def route(name: str, guards: dict, **extra) -> dict:
    return {"name": name, "match": {"headers": {"x-case": name}}, "provider": PROVIDER, "guards": guards, **extra}


def callout_guard(kind: str, cluster: str, mode: str | None = None, timeout_ms: int = 2000) -> dict:
    endpoint: dict = {"cluster": cluster, "timeout_ms": timeout_ms}
    guard: dict = {"endpoint": endpoint}
    if kind == "webhook":
        endpoint["auth"] = {"key": {"env": "GUARD_KEY"}}
        guard["forward_headers"] = ["x-user-id"]
    if kind == "moderation":
        guard["model"] = "omni-moderation-latest"
    if kind == "llm_check":
        guard["model"] = "granite-guardian"
    if mode:
        guard["failure_mode"] = mode
    return {kind: guard}


MODE_B_ROUTES = [
    route(
        "mask",
        {
            "request": [{"regex": {"builtins": ALL_BUILTINS, "patterns": [{"name": "codename", "pattern": "(?i)project\\s+falcon"}]}}],
            "response": [{"regex": {"name": "answer-pii", "builtins": ALL_BUILTINS}}],
        },
    ),
    route(
        "reject",
        {
            "request": [{"regex": {"name": "pii", "builtins": ["ssn", "credit_card"], "action": "reject"}}],
            "reject": {"status": 422, "message": "Sensitive data is not allowed."},
        },
    ),
    route("webhook", {"request": [callout_guard("webhook", "guard_webhook")]}),
    route("moderation", {"request": [callout_guard("moderation", "moderation")]}),
    route("llm_check", {"request": [callout_guard("llm_check", "guardian")]}),
    route("response-webhook-open", {"response": [{"webhook": {"endpoint": {"cluster": "guard_webhook"}, "failure_mode": "open"}}]}),
]
for kind in CALLOUT_KINDS:
    for mode in ("closed", "open"):
        MODE_B_ROUTES.append(route(f"{kind}-{mode}", {"request": [callout_guard(kind, "guard_svc", mode, timeout_ms=300)]}))
        MODE_B_ROUTES.append(route(f"{kind}-{mode}-refused", {"request": [callout_guard(kind, "dead", mode)]}))

MODE_A_ROUTES = [
    route("resp-reject", {"response": [{"regex": {"builtins": ["ssn"], "action": "reject"}}]}),
    route("resp-moderation", {"response": [callout_guard("moderation", "moderation")]}),
    route("resp-llm-check", {"response": [callout_guard("llm_check", "guardian")]}),
    route("resp-webhook", {"response": [{"webhook": {"endpoint": {"cluster": "guard_webhook"}}}]}),
]


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock):
    clusters = {"mock_llm": mock, "guard_webhook": mock, "moderation": mock, "guardian": mock, "guard_svc": mock, "dead": dead_port()}
    return envoy_factory(plugin_config={"routes": MODE_B_ROUTES}, env={"GUARD_KEY": GUARD_KEY}, clusters=clusters)


@pytest.fixture(scope="module")
def envoy_a(envoy_factory, mock):
    clusters = {"mock_llm": mock, "guard_webhook": mock, "moderation": mock, "guardian": mock}
    return envoy_factory(
        plugin_config={"allow_on_headers_stop_iteration": True, "routes": MODE_A_ROUTES},
        env={"GUARD_KEY": GUARD_KEY},
        clusters=clusters,
        allow_on_headers_stop_iteration=True,
    )


def post(envoy, case: str, body=None, *, content: bytes | None = None, content_type="application/json", headers=None):
    hdrs = {"x-case": case, "content-type": content_type, **(headers or {})}
    data = content if content is not None else json.dumps(body).encode()
    return httpx.post(envoy.base_url + "/v1/chat/completions", content=data, headers=hdrs, timeout=30)


def chat(text, **extra):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def client(envoy, case: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=envoy.base_url + "/v1", api_key="client", max_retries=0, timeout=30, default_headers={"x-case": case}
    )


def provider_requests(mock):
    """Requests to the provider (the guardian model shares its path)."""
    return [r for r in mock.requests_to("/v1/chat/completions") if not (r.json and r.json.get("model") == "granite-guardian")]


def assert_nothing_forwarded(mock):
    # Mode B sends the headers upstream before the body is read; a request refused after
    # reading the body is reset upstream, so the provider never sees a body.
    assert all(r.body == b"" for r in provider_requests(mock)), mock.requests


def upstream_chats(mock):
    return [r for r in mock.requests_to("/v1/chat/completions") if r.json and r.json.get("model") == "gpt-4o-mini"]


def guard_counter(envoy, route_name: str, guard: str, side: str, outcome: str) -> int:
    return envoy.counter(f"wasmcustom.aigate.guard.outcomes_total;route={route_name};guard={guard};side={side};outcome={outcome}")


def assert_guard_error(response, status: int, code: str, *, kind: str = "guardrail_violation"):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == kind, error
    return error


def completion(content: str) -> dict:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
    }


def stream_chunks(pieces: list[str]) -> list[bytes]:
    base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    events = [sse_event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})]
    events += [sse_event({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}) for p in pieces]
    events.append(sse_event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    events.append(sse_event({**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}))
    events.append(sse_event("[DONE]"))
    return split_awkwardly(b"".join(events))


# ---------------------------------------------------------------- regex on requests


def test_regex_masks_string_content(envoy, mock):
    before = guard_counter(envoy, "mask", "regex", "request", "masked")
    text = "Mail bob@example.com, card 4111 1111 1111 1111, about Project Falcon."
    response = post(envoy, "mask", chat(text))
    assert response.status_code == 200, response.text
    sent = upstream_chats(mock)[-1].json["messages"][0]["content"]
    assert sent == "Mail <EMAIL>, card <CREDIT_CARD>, about <CODENAME>."
    assert guard_counter(envoy, "mask", "regex", "request", "masked") == before + 1


def test_regex_edits_the_body_in_place_and_leaves_the_rest_byte_for_byte(envoy, mock):
    # On this route (OpenAI provider, no shaping, only regex guards) the filter splices the
    # masked strings into the client's bytes: spacing, key order and the escapes of strings
    # it did not change reach the provider as sent.
    clean = b'{ "temperature" : 0.5,\n  "model":"gpt-4o-mini",  "messages":[{"role":"user","content":"caf\\u00e9 at 9"}], "user":"u1" }'
    response = post(envoy, "mask", content=clean)
    assert response.status_code == 200, response.text
    assert upstream_chats(mock)[-1].body == clean

    dirty = b'{"messages":[{"role":"system","content":"keep \\u0041"},{"role":"user","content":"mail bob@example.com"}],"model":"gpt-4o-mini"}'
    response = post(envoy, "mask", content=dirty)
    assert response.status_code == 200, response.text
    assert upstream_chats(mock)[-1].body == dirty.replace(b"bob@example.com", b"<EMAIL>")


def test_regex_masks_array_parts_and_tool_arguments_of_a_text_plain_body(envoy, mock):
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "SSN 123-45-6789 please"}, {"type": "image_url", "image_url": {"url": "https://img/x.png"}}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "lookup", "arguments": "{\"ip\":\"10.20.30.40\"}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "call (555) 123-4567"},
        ],
    }
    # The label says text/plain: the filter parses the body anyway (no bypass).
    response = post(envoy, "mask", content=json.dumps(body).encode(), content_type="text/plain")
    assert response.status_code == 200, response.text
    sent = upstream_chats(mock)[-1].json["messages"]
    assert sent[0]["content"][0]["text"] == "SSN <SSN> please"
    assert sent[0]["content"][1]["image_url"]["url"] == "https://img/x.png"
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == "{\"ip\":\"<IPV4>\"}"
    assert sent[2]["content"] == "call <PHONE_NUMBER>"


def test_regex_reject_answers_with_the_configured_error(envoy, mock):
    before = guard_counter(envoy, "reject", "pii", "request", "blocked")
    for body in (
        chat("my ssn is 123-45-6789"),
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "text", "text": "card 4111111111111111"}]}]},
    ):
        response = post(envoy, "reject", content=json.dumps(body).encode(), content_type="text/plain")
        error = assert_guard_error(response, 422, "pii")
        assert error["message"] == "Sensitive data is not allowed."
        assert "6789" not in response.text and "4111" not in response.text
    assert_nothing_forwarded(mock)
    assert guard_counter(envoy, "reject", "pii", "request", "blocked") == before + 2
    ok = post(envoy, "reject", chat("card 4111111111111112 fails Luhn"))
    assert ok.status_code == 200, ok.text


# ---------------------------------------------------------------- regex on answers


def test_regex_masks_a_json_answer(envoy, mock):
    mock.enqueue(200, completion("Reach me at jane@example.org or +44 20 7946 0958."), path="/v1/chat/completions")
    reply = client(envoy, "mask").chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "contact?"}])
    assert reply.choices[0].message.content == "Reach me at <EMAIL> or <PHONE_NUMBER>."
    assert guard_counter(envoy, "mask", "answer-pii", "response", "masked") >= 1


def test_regex_masks_a_stream_split_across_chunks(envoy, mock):
    pieces = ["Your card: 41", "11 1111 11", "11 1111. Mail: ali", "ce@exam", "ple.com", " bye"]
    mock.enqueue(200, chunks=stream_chunks(pieces), headers={"content-type": "text/event-stream"}, path="/v1/chat/completions")
    stream = client(envoy, "mask").chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "tell"}]
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Your card: <CREDIT_CARD>. Mail: <EMAIL> bye"
    assert chunks[-1].choices and chunks[-1].choices[0].finish_reason == "stop"
    assert upstream_chats(mock)[-1].json["stream"] is True, "the regex guard keeps the upstream streaming"


def test_regex_masks_the_mocks_own_echo_stream(envoy, mock):
    # The mock streams "Hello from mock: <prompt>" in pieces cut at awkward offsets.
    with httpx.stream(
        "POST",
        envoy.base_url + "/v1/chat/completions",
        json=chat("server 192.168.100.200 now", stream=True),
        headers={"x-case": "mask"},
        timeout=30,
    ) as response:
        raw = b"".join(response.iter_bytes())
    assert b"192.168" not in raw
    # The request side masked it first; the answer echoes the placeholder.
    assert b"<IPV4>" in raw


def test_regex_guard_is_linear_on_a_long_email_like_prompt(envoy, mock):
    # Issue 12: one long e-mail-like token made the detectors quadratic: a 24 KB prompt held
    # the worker for seconds, the 1 MiB limit would have taken hours.
    for size in (24 * 1024, 900 * 1024):
        token = "ab.c" * (size // 4) + "@example.com"
        started = time.monotonic()
        response = post(envoy, "mask", chat(token))
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text[:300]
        assert elapsed < 5, f"{size} bytes took {elapsed:.1f} s"
        sent = upstream_chats(mock)[-1].json["messages"][0]["content"]
        assert sent.endswith("<EMAIL>") and "@example.com" not in sent


def stream_of(choices: list[dict], split=split_awkwardly) -> list[bytes]:
    """An OpenAI stream with one event per given choice, then usage and [DONE]."""
    base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    events = [sse_event({**base, "choices": [choice]}) for choice in choices]
    events.append(sse_event({**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}))
    events.append(sse_event("[DONE]"))
    return split(b"".join(events))


def test_regex_masks_streamed_legacy_function_call_arguments(envoy, mock):
    def call(arguments, finish=None):
        return {"index": 0, "delta": {"function_call": {"arguments": arguments}}, "finish_reason": finish}

    choices = [
        {"index": 0, "delta": {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": ""}}, "finish_reason": None},
        call('{"ssn": "123-4'),
        call('5-6789", "mail": "jane@exa'),
        call('mple.com"}'),
        {"index": 0, "delta": {}, "finish_reason": "function_call"},
    ]
    mock.enqueue(200, chunks=stream_of(choices), headers={"content-type": "text/event-stream"}, path="/v1/chat/completions")
    with httpx.stream("POST", envoy.base_url + "/v1/chat/completions", json=chat("x", stream=True), headers={"x-case": "mask"}, timeout=30) as response:
        raw = b"".join(response.iter_bytes())
    arguments = ""
    for event in parse_sse(raw):
        if event["data"] != "[DONE]":
            for choice in json.loads(event["data"]).get("choices", []):
                arguments += (choice.get("delta", {}).get("function_call") or {}).get("arguments") or ""
    assert arguments == '{"ssn": "<SSN>", "mail": "<EMAIL>"}'
    assert b"6789" not in raw and b"jane@" not in raw


@pytest.mark.parametrize("bad", ["\\ud800", "NaN"])
def test_an_unreadable_stream_event_ends_the_stream_unrelayed(envoy, mock, bad):
    before = guard_counter(envoy, "mask", "answer-pii", "response", "failed_closed")
    base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    good = sse_event({**base, "choices": [{"index": 0, "delta": {"content": "Hello. "}, "finish_reason": None}]})
    if bad == "NaN":
        data = '{"choices":[{"index":0,"delta":{"content":"ssn 123-45-6789"},"finish_reason":null}],"x":NaN}'
    else:
        data = '{"choices":[{"index":0,"delta":{"content":"\\ud800 ssn 123-45-6789"},"finish_reason":null}]}'
    events = good + sse_event(data) + sse_event("[DONE]")
    mock.enqueue(200, chunks=split_awkwardly(events), headers={"content-type": "text/event-stream"}, path="/v1/chat/completions")
    with httpx.stream("POST", envoy.base_url + "/v1/chat/completions", json=chat("x", stream=True), headers={"x-case": "mask"}, timeout=30) as response:
        raw = b"".join(response.iter_bytes())
    assert b"6789" not in raw, raw
    parsed = [json.loads(e["data"]) for e in parse_sse(raw) if e["data"] != "[DONE]"]
    assert parsed[-1]["error"]["code"] == "invalid_upstream_response", parsed
    assert guard_counter(envoy, "mask", "answer-pii", "response", "failed_closed") == before + 1


def test_a_hit_split_after_a_very_large_delta_is_masked(envoy, mock):
    big = "word " * (80 * 1024 // 5) + "ssn 123-45-"
    choices = [
        {"index": 0, "delta": {"role": "assistant", "content": big}, "finish_reason": None},
        {"index": 0, "delta": {"content": "6789 ok"}, "finish_reason": None},
        {"index": 0, "delta": {}, "finish_reason": "stop"},
    ]
    # One event per chunk: the large event arrives whole, as a provider would send it.
    chunks = stream_of(choices, split=split_per_event)
    mock.enqueue(200, chunks=chunks, headers={"content-type": "text/event-stream"}, path="/v1/chat/completions")
    stream = client(envoy, "mask").chat.completions.create(model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "x"}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.endswith("ssn <SSN> ok"), text[-60:]
    assert len(text) == len(big) - len("123-45-") + len("<SSN> ok")


# ---------------------------------------------------------------- webhook


def test_webhook_pass_forwards_headers_and_key(envoy, mock):
    response = post(envoy, "webhook", chat("hello there"), headers={"x-user-id": "u-7"})
    assert response.status_code == 200, response.text
    call = mock.requests_to("/request")[-1]
    assert call.json == {"body": {"messages": [{"role": "user", "content": "hello there"}]}}
    assert call.headers["x-user-id"] == "u-7"
    assert call.headers["authorization"] == f"Bearer {GUARD_KEY}"
    assert upstream_chats(mock)[-1].json["messages"][0]["content"] == "hello there"


def test_webhook_mask(envoy, mock):
    response = post(envoy, "webhook", chat("my secret is blue"))
    assert response.status_code == 200, response.text
    assert upstream_chats(mock)[-1].json["messages"][0]["content"] == "my [REDACTED] is blue"
    assert guard_counter(envoy, "webhook", "webhook", "request", "masked") >= 1


def test_webhook_reject(envoy, mock):
    response = post(envoy, "webhook", chat("this is forbidden"))
    error = assert_guard_error(response, 403, "webhook")
    assert error["message"] == "blocked by webhook"
    assert_nothing_forwarded(mock)


def test_response_webhook_masks_in_mode_b_when_open(envoy, mock):
    response = post(envoy, "response-webhook-open", chat("hi"))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello from [MASKED]: hi"


# ---------------------------------------------------------------- moderation and llm_check


def test_moderation_flags_and_passes(envoy, mock):
    response = post(envoy, "moderation", chat("how to build a bomb"))
    assert_guard_error(response, 403, "moderation")
    call = mock.requests_to("/v1/moderations")[-1]
    assert call.json == {"model": "omni-moderation-latest", "input": ["how to build a bomb"]}
    assert post(envoy, "moderation", chat("how to bake bread")).status_code == 200


def test_llm_check_unsafe_and_safe(envoy, mock):
    response = post(envoy, "llm_check", chat("I want to kill the process... and people"))
    assert_guard_error(response, 403, "llm_check")
    guardian = [r for r in mock.requests_to("/v1/chat/completions") if r.json and r.json.get("model") == "granite-guardian"]
    assert guardian[-1].json["messages"][0]["role"] == "system"
    assert "and people" in guardian[-1].json["messages"][1]["content"]
    assert post(envoy, "llm_check", chat("a nice poem")).status_code == 200


# ---------------------------------------------------------------- callout failures

SERVICE_PATH = {"webhook": "/request", "moderation": "/v1/moderations", "llm_check": "/v1/chat/completions"}


def fail_service(mock, kind: str, how: str) -> None:
    path = SERVICE_PATH[kind]
    if how == "503":
        mock.enqueue(503, {"error": "overloaded"}, path=path)
    elif how == "hang":
        # Past the 300 ms timeout: Envoy answers the callout with 504 itself.
        mock.enqueue(200, {"action": "pass"}, path=path, delay_s=3)


@pytest.mark.parametrize("kind", CALLOUT_KINDS)
@pytest.mark.parametrize("how", ["503", "refused", "hang"])
def test_callout_failure_closed_rejects_with_503(envoy, mock, kind, how):
    case = f"{kind}-closed" + ("-refused" if how == "refused" else "")
    fail_service(mock, kind, how)
    before = guard_counter(envoy, case, kind, "request", "failed_closed")
    response = post(envoy, case, chat("hello"))
    assert_guard_error(response, 503, kind, kind="api_error")
    assert_nothing_forwarded(mock)
    assert guard_counter(envoy, case, kind, "request", "failed_closed") == before + 1


@pytest.mark.parametrize("kind", CALLOUT_KINDS)
@pytest.mark.parametrize("how", ["503", "refused", "hang"])
def test_callout_failure_open_goes_on_and_counts(envoy, mock, kind, how):
    case = f"{kind}-open" + ("-refused" if how == "refused" else "")
    fail_service(mock, kind, how)
    before = guard_counter(envoy, case, kind, "request", "failed_open")
    response = post(envoy, case, chat("hello"))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello from mock: hello"
    assert guard_counter(envoy, case, kind, "request", "failed_open") == before + 1


# ---------------------------------------------------------------- mode A: response rejections


def test_response_regex_reject_sets_status_on_json(envoy_a, mock):
    mock.enqueue(200, completion("The SSN is 123-45-6789."), path="/v1/chat/completions")
    response = post(envoy_a, "resp-reject", chat("ssn?"))
    assert_guard_error(response, 403, "regex")
    assert "6789" not in response.text


def test_response_regex_reject_on_a_stream_ends_it_in_band(envoy_a, mock):
    pieces = ["Fine so far. The SSN is 123-4", "5-6789 and more."]
    mock.enqueue(200, chunks=stream_chunks(pieces), headers={"content-type": "text/event-stream"}, path="/v1/chat/completions")
    stream = client(envoy_a, "resp-reject").chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "x"}]
    )
    seen = ""
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            seen += "".join(c.delta.content or "" for c in chunk.choices)
    assert "Fine so far." in seen and "6789" not in seen and "123-4" not in seen
    assert "regex" in str(raised.value.body) or "rejected" in str(raised.value)


def test_response_moderation_rejects_a_flagged_answer(envoy_a, mock):
    response = post(envoy_a, "resp-moderation", chat("say bomb"))
    assert_guard_error(response, 403, "moderation")
    assert "bomb" not in response.text
    assert mock.requests_to("/v1/moderations")[-1].json["input"] == ["Hello from mock: say bomb"]
    assert post(envoy_a, "resp-moderation", chat("say hi")).status_code == 200


def test_response_moderation_failure_closed(envoy_a, mock):
    mock.enqueue(503, {"error": "down"}, path="/v1/moderations")
    response = post(envoy_a, "resp-moderation", chat("say hi"))
    assert_guard_error(response, 503, "moderation", kind="api_error")


def test_response_llm_check_rejects_a_streamed_request_as_a_whole(envoy_a, mock):
    # The guard needs the whole answer: upstream is asked without streaming, the client
    # gets the rejection (status already held in mode A).
    response = post(envoy_a, "resp-llm-check", chat("kill it", stream=True))
    assert_guard_error(response, 403, "llm_check")
    provider_call = [r for r in upstream_chats(mock)][-1]
    assert provider_call.json["stream"] is False
    ok = client(envoy_a, "resp-llm-check").chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "hug it"}]
    )
    assert "".join(c.choices[0].delta.content or "" for c in ok if c.choices) == "Hello from mock: hug it"


def test_response_webhook_masks_and_restreams(envoy_a, mock):
    stream = client(envoy_a, "resp-webhook").chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "hi"}]
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello from [MASKED]: hi"
    assert mock.requests_to("/response")[-1].json["body"]["choices"][0]["message"]["content"] == "Hello from mock: hi"


# ---------------------------------------------------------------- metrics


def test_guard_metrics_have_prometheus_labels(envoy, mock):
    post(envoy, "reject", chat("ssn 123-45-6789"))
    prom = envoy.stats_prometheus()
    line = next(
        l for l in prom.splitlines() if l.startswith("aigate_guard_outcomes_total{") and 'route="reject"' in l and 'outcome="blocked"' in l
    )
    assert 'guard="pii"' in line and 'side="request"' in line
    assert GUARD_KEY not in prom
