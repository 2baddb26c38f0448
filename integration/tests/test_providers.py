"""Anthropic and Gemini behind the OpenAI API, through a real Envoy.

The official `openai` SDK talks to Envoy; the mock answers in each provider's native wire
format (Anthropic Messages, Gemini generateContent / streamGenerateContent?alt=sse). Each
test checks what the client got AND what the provider received (path, credential and
version headers, body shape), and usage is read back from Envoy's /stats.

Header modes: mode B (default) writes the upstream path in the headers phase, so a Gemini
route needs a fixed `model` and is always asked for a stream (aggregated for JSON
clients); mode A (`allow_on_headers_stop_iteration` in both the Envoy PluginConfig and
the plugin config) takes the model and the method from the body.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from integration.mocks import llm, sse

ANTHROPIC_KEY = "sk-ant-server-111"
GEMINI_KEY = "g-server-222"
CLIENT_KEY = "client-key-333"
ENV = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "GEMINI_API_KEY": GEMINI_KEY}

CLAUDE = "claude-sonnet-4-5"
GEMINI = "gemini-2.5-flash"

ANTHROPIC_ROUTE = {
    "name": "claude",
    "match": {"path_prefix": "/anthropic/"},
    "provider": {
        "kind": "anthropic",
        "auth": {"key": {"env": "ANTHROPIC_API_KEY"}},
        "anthropic": {"version": "2023-06-01", "max_tokens": 512},
    },
}
GEMINI_FIXED_ROUTE = {
    "name": "gemini",
    "match": {"path_prefix": "/gemini/"},
    "provider": {"kind": "gemini", "auth": {"key": {"env": "GEMINI_API_KEY"}}, "model": GEMINI},
}
# Gemini's own OpenAI-compatible endpoint: the simple alternative (no translation).
GEMINI_COMPAT_ROUTE = {
    "name": "gemini-compat",
    "match": {"path_prefix": "/gemini-openai/"},
    "provider": {
        "kind": "openai_compatible",
        "authority": "generativelanguage.googleapis.com",
        "path": "/v1beta/openai/chat/completions",
        "auth": {"key": {"env": "GEMINI_API_KEY"}},
    },
}
GEMINI_OPEN_ROUTE = {
    "name": "gemini-open",
    "match": {"path_prefix": "/gemini/"},
    "provider": {"kind": "gemini", "auth": {"key": {"env": "GEMINI_API_KEY"}}},
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock):
    # Gemini's OpenAI-compatible endpoint speaks OpenAI: the mock's OpenAI behaviour.
    mock.add_route("POST", r"/v1beta/openai/chat/completions", llm.openai_chat)
    return envoy_factory(
        plugin_config={"routes": [ANTHROPIC_ROUTE, GEMINI_FIXED_ROUTE, GEMINI_COMPAT_ROUTE]},
        env=ENV,
        clusters={"mock_llm": mock},
    )


@pytest.fixture(scope="module")
def envoy_mode_a(envoy_factory, mock):
    return envoy_factory(
        plugin_config={"allow_on_headers_stop_iteration": True, "routes": [ANTHROPIC_ROUTE, GEMINI_OPEN_ROUTE]},
        env=ENV,
        clusters={"mock_llm": mock},
        allow_on_headers_stop_iteration=True,
    )


def sdk(envoy, prefix: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{envoy.base_url}/{prefix}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def stream_text(chunks) -> tuple[str, str | None, object]:
    text, finish, usage = "", None, None
    for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish, usage


PROVIDER_NAMES = {"gemini": "gcp.gemini", "azure_openai": "azure.ai.openai"}


def token_counter(envoy, route: str, provider: str, model: str, kind: str) -> int:
    labels = {"route": route, "gen_ai.provider.name": PROVIDER_NAMES.get(provider, provider), "gen_ai.request.model": model}
    if kind == "total":
        return sum(token_counter(envoy, route, provider, model, k) for k in ("input", "output"))
    return envoy.metric_total("aigate.tokens_total", {**labels, "gen_ai.token.type": kind})


def access_log_entry(envoy, request_id: str, timeout_s: float = 5.0) -> dict:
    """The access-log entry of one request (Envoy flushes the log every 50 ms)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [e for e in envoy.access_log() if e.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            assert found, f"no access-log entry for {request_id}"
            return found[-1]
        time.sleep(0.02)


def assert_native_anthropic_request(seen) -> None:
    assert seen.path == "/v1/messages"
    assert seen.headers["host"] == "api.anthropic.com"
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen.headers, "the client's credential must not reach the provider"
    assert CLIENT_KEY not in json.dumps(seen.headers)


def assert_native_gemini_request(seen, path: str) -> None:
    assert seen.path == path
    assert seen.headers["host"] == "generativelanguage.googleapis.com"
    assert seen.headers["x-goog-api-key"] == GEMINI_KEY
    assert "authorization" not in seen.headers
    assert CLIENT_KEY not in json.dumps(seen.headers)


# --- Anthropic ----------------------------------------------------------------------------


def test_anthropic_chat(envoy, mock):
    reply = sdk(envoy, "anthropic").chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi claude"}],
        temperature=0.2,
        stop=["END"],
        extra_headers={"x-request-id": "providers-anthropic-chat"},
    )
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == CLAUDE
    assert reply.choices[0].message.content == "Hello from mock: hi claude"
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (11, 7, 18)
    seen = mock.last
    assert_native_anthropic_request(seen)
    assert seen.json == {
        "model": CLAUDE,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi claude"}]}],
        "max_tokens": 512,
        "temperature": 0.2,
        "stop_sequences": ["END"],
    }
    entry = access_log_entry(envoy, "providers-anthropic-chat")
    assert (entry["aigate_route"], entry["aigate_provider"], entry["aigate_model"]) == ("claude", "anthropic", CLAUDE)
    assert (entry["aigate_prompt_tokens"], entry["aigate_completion_tokens"], entry["aigate_total_tokens"]) == ("11", "7", "18")


def test_anthropic_client_max_tokens_wins(envoy, mock):
    sdk(envoy, "anthropic").chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "x"}], max_completion_tokens=33
    )
    assert mock.last.json["max_tokens"] == 33


def test_anthropic_stream(envoy, mock):
    client = sdk(envoy, "anthropic")
    chunks = list(
        client.chat.completions.create(
            model=CLAUDE,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "stream it please"}],
        )
    )
    text, finish, usage = stream_text(chunks)
    assert text == "Hello from mock: stream it please"
    assert finish == "stop"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 7, 18)
    assert all(c.object == "chat.completion.chunk" and c.model == CLAUDE for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert mock.last.json["stream"] is True
    assert_native_anthropic_request(mock.last)

    # Without include_usage the usage chunk is not shown (OpenAI's behaviour).
    chunks = list(client.chat.completions.create(model=CLAUDE, stream=True, messages=[{"role": "user", "content": "s"}]))
    assert all(c.choices for c in chunks)
    assert stream_text(chunks)[0] == "Hello from mock: s"


def test_anthropic_tool_call_round_trip(envoy, mock):
    client = sdk(envoy, "anthropic")
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=CLAUDE, messages=messages, tools=[WEATHER_TOOL], tool_choice="auto")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock", "unit": "celsius"}
    sent = mock.last.json
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert sent["tool_choice"] == {"type": "auto"}

    messages += [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "18C, sunny"}]
    second = client.chat.completions.create(model=CLAUDE, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content.startswith("Hello from mock")
    sent = mock.last.json["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "mock", "unit": "celsius"}}],
    }
    assert sent[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C, sunny"}]}


def test_anthropic_streamed_tool_call(envoy):
    chunks = list(
        sdk(envoy, "anthropic").chat.completions.create(
            model=CLAUDE, stream=True, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL]
        )
    )
    calls = [tc for c in chunks for ch in c.choices for tc in (ch.delta.tool_calls or [])]
    assert calls[0].id and calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "mock", "unit": "celsius"}
    assert stream_text(chunks)[1] == "tool_calls"


@pytest.mark.parametrize(
    "status,error_type,message,sdk_error",
    [
        (529, "overloaded_error", "Overloaded", openai.InternalServerError),
        (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", openai.RateLimitError),
        (401, "authentication_error", "invalid x-api-key", openai.AuthenticationError),
    ],
)
def test_anthropic_errors_keep_status(envoy, mock, status, error_type, message, sdk_error):
    mock.enqueue(status, {"type": "error", "error": {"type": error_type, "message": message}}, path="/v1/messages")
    with pytest.raises(sdk_error) as info:
        sdk(envoy, "anthropic").chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    assert info.value.body["message"] == message
    assert info.value.body["code"] == error_type
    assert ANTHROPIC_KEY not in str(info.value.body)


def test_anthropic_error_event_mid_stream_reaches_the_sdk(envoy, mock):
    start = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE,
             "content": [], "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 1}}}
    stream = b"".join(
        [
            sse.sse_event(start, event="message_start"),
            sse.sse_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, event="content_block_start"),
            sse.sse_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "partial"}}, event="content_block_delta"),
            sse.sse_event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, event="error"),
        ]
    )
    mock.enqueue_reply(llm.sse_reply(stream), path="/v1/messages")
    received = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in sdk(envoy, "anthropic").chat.completions.create(
            model=CLAUDE, stream=True, messages=[{"role": "user", "content": "x"}]
        ):
            received += "".join(c.delta.content or "" for c in chunk.choices)
    assert received == "partial", "what came before the error reaches the client"
    assert "Overloaded" in str(info.value)


def test_untranslatable_request_is_400_before_the_provider(envoy, mock):
    client = sdk(envoy, "anthropic")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=CLAUDE, n=2, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "unsupported_parameter" and "'n'" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=CLAUDE,
            messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}],
        )
    assert "audio" in info.value.body["message"]
    # Mode B sent the headers on already; the refused body never reaches the provider.
    assert all(r.body == b"" for r in mock.requests_to("/v1/messages"))


def test_anthropic_images(envoy, mock):
    sdk(envoy, "anthropic").chat.completions.create(
        model=CLAUDE,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    assert mock.last.json["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


# --- Gemini, mode B (fixed model; upstream always streams) ---------------------------------

STREAM_PATH = f"/v1beta/models/{GEMINI}:streamGenerateContent?alt=sse"


def test_gemini_chat_is_aggregated_from_the_stream(envoy, mock):
    reply = sdk(envoy, "gemini").chat.completions.create(
        model="anything",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello gemini friend"}],
        max_tokens=64,
        temperature=0.1,
    )
    assert reply.object == "chat.completion"
    assert reply.model == GEMINI
    assert reply.choices[0].message.content == "Hello from mock: hello gemini friend"
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (11, 7, 18)
    seen = mock.last
    assert_native_gemini_request(seen, STREAM_PATH)
    assert seen.json == {
        "contents": [{"role": "user", "parts": [{"text": "hello gemini friend"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0.1},
    }


def test_gemini_stream(envoy, mock):
    chunks = list(
        sdk(envoy, "gemini").chat.completions.create(
            model=GEMINI,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "stream from gemini"}],
            extra_headers={"x-request-id": "providers-gemini-stream"},
        )
    )
    text, finish, usage = stream_text(chunks)
    assert text == "Hello from mock: stream from gemini"
    assert finish == "stop"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 7, 18)
    assert_native_gemini_request(mock.last, STREAM_PATH)
    entry = access_log_entry(envoy, "providers-gemini-stream")
    assert (entry["aigate_route"], entry["aigate_model"], entry["aigate_total_tokens"]) == ("gemini", GEMINI, "18")


def test_gemini_tool_call_round_trip(envoy, mock):
    client = sdk(envoy, "gemini")
    messages = [{"role": "user", "content": "Weather in Rome?"}]
    first = client.chat.completions.create(model=GEMINI, messages=messages, tools=[WEATHER_TOOL], tool_choice="required")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id
    assert json.loads(call.function.arguments) == {"city": "mock", "unit": "celsius"}
    sent = mock.last.json
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
                }
            ]
        }
    ]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    messages += [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    second = client.chat.completions.create(model=GEMINI, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    contents = mock.last.json["contents"]
    # The mock's call carried no thoughtSignature: Google's placeholder goes back in its place.
    assert contents[1] == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "mock", "unit": "celsius"}},
                "thoughtSignature": "skip_thought_signature_validator",
            }
        ],
    }
    assert contents[2] == {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]}


def test_gemini_streamed_tool_call(envoy):
    chunks = list(
        sdk(envoy, "gemini").chat.completions.create(
            model=GEMINI, stream=True, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL]
        )
    )
    calls = [tc for c in chunks for ch in c.choices for tc in (ch.delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "mock", "unit": "celsius"}
    assert stream_text(chunks)[1] == "tool_calls"


def test_gemini_errors_keep_status(envoy, mock):
    mock.enqueue(
        429,
        {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}},
        path=f"/v1beta/models/{GEMINI}:",
    )
    with pytest.raises(openai.RateLimitError) as info:
        sdk(envoy, "gemini").chat.completions.create(model=GEMINI, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 429
    assert info.value.body["code"] == "RESOURCE_EXHAUSTED"
    assert info.value.body["message"] == "Resource has been exhausted (e.g. check quota)."


def test_gemini_openai_compatible_alternative(envoy, mock):
    reply = sdk(envoy, "gemini-openai").chat.completions.create(model=GEMINI, messages=[{"role": "user", "content": "compat"}])
    assert reply.choices[0].message.content == "Hello from mock: compat"
    seen = mock.last
    assert seen.path == "/v1beta/openai/chat/completions"
    assert seen.headers["host"] == "generativelanguage.googleapis.com"
    assert seen.headers["authorization"] == f"Bearer {GEMINI_KEY}"
    assert seen.json["model"] == GEMINI and seen.json["messages"] == [{"role": "user", "content": "compat"}]


def test_usage_is_counted_in_stats(envoy):
    kinds = ("input", "output", "total")

    def counters() -> dict[str, dict[str, int]]:
        return {
            "claude": {k: token_counter(envoy, "claude", "anthropic", CLAUDE, k) for k in kinds},
            "gemini": {k: token_counter(envoy, "gemini", "gemini", GEMINI, k) for k in kinds},
        }

    before = counters()
    anthropic_client, gemini_client = sdk(envoy, "anthropic"), sdk(envoy, "gemini")
    anthropic_client.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "a"}])
    list(anthropic_client.chat.completions.create(model=CLAUDE, stream=True, messages=[{"role": "user", "content": "b"}]))
    gemini_client.chat.completions.create(model=GEMINI, messages=[{"role": "user", "content": "c"}])
    list(gemini_client.chat.completions.create(model=GEMINI, stream=True, messages=[{"role": "user", "content": "d"}]))
    # Two answers per provider, 11 + 7 tokens each.
    expected = {"input": 22, "output": 14, "total": 36}
    deadline = time.monotonic() + 5
    while True:
        after = counters()
        deltas = {route: {k: after[route][k] - before[route][k] for k in kinds} for route in after}
        if deltas == {"claude": expected, "gemini": expected} or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert deltas == {"claude": expected, "gemini": expected}
    prom = envoy.stats_prometheus()
    assert any(
        l.startswith("gen_ai_client_token_usage_count{") and 'gen_ai_provider_name="anthropic"' in l and 'gen_ai_token_type="output"' in l
        for l in prom.splitlines()
    )


def test_no_secret_or_panic_in_log(envoy):
    sdk(envoy, "anthropic").chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "log"}])
    log = envoy.log_text()
    assert ANTHROPIC_KEY not in log and GEMINI_KEY not in log
    assert "panicked" not in log and "wasm trap" not in log.lower()


def test_gemini_without_fixed_model_needs_mode_a(expect_rejected, mock):
    result = expect_rejected(plugin_config={"routes": [GEMINI_OPEN_ROUTE]}, env=ENV, clusters={"mock_llm": mock})
    assert result.rejected and "allow_on_headers_stop_iteration" in result.log


# --- mode A: model and method from the body ------------------------------------------------


def test_mode_a_gemini_model_and_method_from_the_body(envoy_mode_a, mock):
    client = sdk(envoy_mode_a, "gemini")
    reply = client.chat.completions.create(model="gemini-2.0-flash", messages=[{"role": "user", "content": "json please"}])
    assert reply.choices[0].message.content == "Hello from mock: json please"
    assert reply.usage.total_tokens == 18
    assert_native_gemini_request(mock.last, "/v1beta/models/gemini-2.0-flash:generateContent")

    chunks = list(client.chat.completions.create(model="gemini-2.5-pro", stream=True, messages=[{"role": "user", "content": "sse please"}]))
    assert stream_text(chunks)[:2] == ("Hello from mock: sse please", "stop")
    assert_native_gemini_request(mock.last, "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse")

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="../v1/files?x=", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "invalid_value" and "upstream path" in info.value.body["message"]


def test_mode_a_tools_and_errors(envoy_mode_a, mock):
    client = sdk(envoy_mode_a, "gemini")
    reply = client.chat.completions.create(model=GEMINI, messages=[{"role": "user", "content": "w"}], tools=[WEATHER_TOOL])
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert mock.last.path == f"/v1beta/models/{GEMINI}:generateContent"

    mock.enqueue(
        503,
        {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
        path="/v1beta/models/",
    )
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=GEMINI, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503 and info.value.body["code"] == "UNAVAILABLE"

    anthropic_client = sdk(envoy_mode_a, "anthropic")
    chunks = list(anthropic_client.chat.completions.create(model=CLAUDE, stream=True, messages=[{"role": "user", "content": "a"}]))
    assert stream_text(chunks)[:2] == ("Hello from mock: a", "stop")
    assert_native_anthropic_request(mock.last)
    mock.enqueue(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, path="/v1/messages")
    with pytest.raises(openai.InternalServerError) as info:
        anthropic_client.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 529 and info.value.body["code"] == "overloaded_error"


def test_raw_http_answer_shapes(envoy):
    """What the SDK parses, checked on the wire: JSON content type, SSE framing, [DONE]."""
    body = {"model": CLAUDE, "messages": [{"role": "user", "content": "raw"}]}
    r = httpx.post(envoy.base_url + "/anthropic/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert set(r.json()) >= {"id", "object", "created", "model", "choices", "usage"}
    with httpx.stream("POST", envoy.base_url + "/gemini/v1/chat/completions", json={**body, "stream": True}, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(r.iter_raw())
    assert raw.endswith(b"data: [DONE]\n\n")


# --- Translation fidelity and guards on translated routes (issue 12) ------------------------

GUARD = {
    "regex": {
        "builtins": ["ssn"],
        "patterns": [{"name": "codename", "pattern": "(?i)project\\s+falcon"}],
        "action": "mask",
    }
}


@pytest.fixture(scope="module")
def envoy_guarded(envoy_factory, mock):
    mock.add_route("POST", r"/v1beta/openai/embeddings", llm.openai_chat)
    routes = [
        {**ANTHROPIC_ROUTE, "name": "claude-guarded", "guards": {"request": [GUARD]}},
        {**GEMINI_FIXED_ROUTE, "name": "gemini-guarded", "guards": {"request": [GUARD]}},
        {**GEMINI_COMPAT_ROUTE, "name": "compat-guarded", "guards": {"request": [GUARD]}},
    ]
    return envoy_factory(plugin_config={"routes": routes}, env=ENV, clusters={"mock_llm": mock})


ESCAPED_ARGUMENTS = '{"ssn": "\\u0031\\u0032\\u0033-45-6789", "q": "pr\\u006fject falcon"}'


@pytest.mark.parametrize("prefix", ["anthropic", "gemini"])
def test_guards_read_tool_arguments_as_the_provider_gets_them(envoy_guarded, mock, prefix):
    messages = [
        {"role": "user", "content": "look it up"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ESCAPED_ARGUMENTS}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"owner": "pr\\u006fject falcon"}'},
        {"role": "user", "content": "thanks"},
    ]
    sdk(envoy_guarded, prefix).chat.completions.create(model=CLAUDE if prefix == "anthropic" else GEMINI, messages=messages)
    sent = mock.last.json
    if prefix == "anthropic":
        call = sent["messages"][1]["content"][0]["input"]
    else:
        call = sent["contents"][1]["parts"][0]["functionCall"]["args"]
        # Gemini gets the tool result decoded too: masked as well.
        assert sent["contents"][2]["parts"][0]["functionResponse"]["response"] == {"owner": "<CODENAME>"}
    assert call == {"ssn": "<SSN>", "q": "<CODENAME>"}
    assert "6789" not in mock.last.text and "falcon" not in json.dumps(call)


@pytest.mark.parametrize(
    ("prefix", "path", "body", "field"),
    [
        ("gemini-openai", "embeddings", {"model": "m", "input": [["SSN 123-45-6789"]]}, "input"),
        (
            "gemini-openai",
            "chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": ["SSN 123-45-6789"]}]}]},
            "messages[0].content[0].text",
        ),
        (
            "anthropic",
            "chat/completions",
            {
                "model": CLAUDE,
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": None, "tool_calls": {"id": "c", "type": "function", "function": {"name": "f", "arguments": "123-45-6789"}}},
                ],
            },
            "messages[1].tool_calls",
        ),
    ],
)
def test_malformed_text_shapes_are_refused(envoy_guarded, mock, prefix, path, body, field):
    before = len(mock.requests)
    response = httpx.post(
        f"{envoy_guarded.base_url}/{prefix}/v1/{path}", json=body, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=30
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and f"'{field}'" in error["message"]
    assert all(b"6789" not in r.body for r in mock.requests[before:])


def _anthropic_odd_stream() -> bytes:
    start = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE,
             "content": [], "stop_reason": None, "usage": {"input_tokens": 3, "cache_read_input_tokens": 10, "output_tokens": 1}}}
    events = [
        start,
        start,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7, "cache_read_input_tokens": 10}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    return b"".join(sse.sse_event(e, event=e["type"]) for e in events)


def test_anthropic_stream_repeats_and_cumulative_usage(envoy, mock):
    mock.enqueue_reply(llm.sse_reply(_anthropic_odd_stream()), path="/v1/messages")
    chunks = list(
        sdk(envoy, "anthropic").chat.completions.create(
            model=CLAUDE,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[WEATHER_TOOL],
        )
    )
    roles = [ch.delta.role for c in chunks for ch in c.choices if ch.delta.role]
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert roles == ["assistant"], "one role chunk per choice"
    assert finishes == ["tool_calls"], "one finish_reason per choice"
    arguments = "".join(tc.function.arguments or "" for c in chunks for ch in c.choices for tc in (ch.delta.tool_calls or []))
    assert json.loads(arguments) == {}
    usage = [c.usage for c in chunks if c.usage is not None][-1]
    # message_delta left the input count out: it keeps its message_start value.
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (13, 9, 22)
    assert usage.prompt_tokens_details.cached_tokens == 10
