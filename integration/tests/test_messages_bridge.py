"""Anthropic Messages clients on chat-completions providers, through a real Envoy.

The official `anthropic` SDK (and Claude Code itself) talk to Envoy on routes whose provider
speaks chat completions (`openai`, `gemini`); the mock answers as those providers do. Each
test checks what the client got AND what the provider received: a chat-completions request
with the gateway's key, never the client's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import anthropic
import httpx
import pytest

from integration.mocks import llm, sse
from integration.mocks.server import RecordedRequest, Reply

OPENAI_KEY = "sk-openai-gateway-4444"
GEMINI_KEY = "g-gateway-key-5555"
CLIENT_KEY = "sk-ant-client-6666"
ENV = {"OPENAI_API_KEY": OPENAI_KEY, "GEMINI_API_KEY": GEMINI_KEY}

OPENAI_ROUTE = {
    "name": "oa",
    "match": {"path_prefix": "/oa/"},
    "provider": {"kind": "openai", "auth": {"key": {"env": "OPENAI_API_KEY"}}},
}
MASK_ROUTE = {
    "name": "oa-mask",
    "match": {"path_prefix": "/mask/"},
    "provider": {"kind": "openai", "auth": {"key": {"env": "OPENAI_API_KEY"}}},
    "guards": {"response": [{"regex": {"name": "answer-pii", "builtins": ["email"], "action": "mask"}}]},
}
PROMPT_MASK_ROUTE = {
    "name": "oa-prompt-mask",
    "match": {"path_prefix": "/pmask/"},
    "provider": {"kind": "openai", "auth": {"key": {"env": "OPENAI_API_KEY"}}},
    "guards": {"request": [{"regex": {"name": "prompt-pii", "builtins": ["email"], "action": "mask"}}]},
}
# A chat-completions server (vLLM, llama.cpp, ...) that does not serve /v1/messages itself.
COMPATIBLE_ROUTE = {
    "name": "oc",
    "match": {"path_prefix": "/oc/"},
    "provider": {"kind": "openai_compatible", "authority": "vllm.internal", "auth": {"key": {"env": "OPENAI_API_KEY"}}},
}
GEMINI_ROUTE = {
    "name": "gm",
    "match": {"path_prefix": "/gm/"},
    "provider": {"kind": "gemini", "auth": {"key": {"env": "GEMINI_API_KEY"}}, "model": "gemini-2.5-flash"},
}
# Claude Code's own upstream: a chat-completions server on its own path, so its handler
# (plain text answers, every request recorded) does not change the other routes.
CC_PATH = "/cc/v1/chat/completions"
CC_ROUTE = {
    "name": "cc",
    "match": {"path_prefix": "/cc/"},
    "provider": {"kind": "openai", "path": CC_PATH, "auth": {"key": {"env": "OPENAI_API_KEY"}}},
}
CC_ANSWER = "PONG-7 from the chat upstream"

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def cc_chat(req: RecordedRequest) -> Reply:
    """A chat-completions server that always answers CC_ANSWER (streamed when asked)."""
    body = req.json if isinstance(req.json, dict) else {}
    model = body.get("model") or "m"
    if body.get("stream"):
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        return llm.sse_reply(llm.openai_stream(model, CC_ANSWER, include_usage=include))
    return Reply(200, llm.openai_completion(model, CC_ANSWER))


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock):
    mock.add_route("POST", CC_PATH, cc_chat)
    return envoy_factory(
        plugin_config={"routes": [OPENAI_ROUTE, MASK_ROUTE, PROMPT_MASK_ROUTE, COMPATIBLE_ROUTE, GEMINI_ROUTE, CC_ROUTE]},
        env=ENV,
        clusters={"mock_llm": mock},
    )


def client(envoy, prefix: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{envoy.base_url}/{prefix}", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def assert_chat_request(seen: RecordedRequest, path: str = "/v1/chat/completions") -> dict:
    """The provider got a chat-completions request with the gateway's key and no trace of
    the client's credential or Anthropic's protocol headers."""
    assert seen.path == path, seen
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert CLIENT_KEY not in json.dumps(seen.headers)
    assert "x-api-key" not in seen.headers
    body = seen.json
    assert isinstance(body, dict) and isinstance(body.get("messages"), list), seen
    assert "max_tokens" not in body and "system" not in body
    return body


def test_create_on_an_openai_route(envoy, mock):
    message = client(envoy, "oa").messages.create(
        model="gpt-4o-mini",
        max_tokens=64,
        system="Be terse.",
        stop_sequences=["END"],
        extra_body={"temperature": 0.2},  # the 2.x SDK no longer has it as an argument
        metadata={"user_id": "user-42"},
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi there"}]}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello from mock: hi there"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    body = assert_chat_request(mock.last)
    assert body["model"] == "gpt-4o-mini"
    assert body["max_completion_tokens"] == 64
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "hi there"}]},
    ]
    assert (body["temperature"], body["stop"], body["user"]) == (0.2, ["END"], "user-42")
    assert "stream" not in body


def tokens(envoy, kind: str) -> int:
    return envoy.metric_total("aigate.tokens_total", {"route": "oa", "gen_ai.token.type": kind})


def test_stream_on_an_openai_route(envoy, mock):
    before = (tokens(envoy, "input"), tokens(envoy, "output"))
    with client(envoy, "oa").messages.stream(
        model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "stream me please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from mock: stream me please"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 7)
    body = assert_chat_request(mock.last)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    # The usage the chat stream ended with is what the gateway counts (from message_delta).
    deadline = time.monotonic() + 5
    while tokens(envoy, "input") == before[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tokens(envoy, "input") - before[0], tokens(envoy, "output") - before[1]) == (11, 7)
    # The raw events: Anthropic's grammar, named events, one message.
    with httpx.stream(
        "POST",
        f"{envoy.base_url}/oa/v1/messages",
        json={"model": "gpt-4o-mini", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "a b c"}]},
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse.parse_sse(response.read())
    kinds = [event["event"] for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
    assert all(json.loads(event["data"])["type"] == event["event"] for event in events)


def test_tools_round_trip(envoy, mock):
    anthropic_client = client(envoy, "oa")
    question = {"role": "user", "content": "Weather in Paris?"}
    with anthropic_client.messages.stream(
        model="gpt-4o", max_tokens=128, tools=[WEATHER], messages=[question]
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    calls = [block for block in first.content if block.type == "tool_use"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather" and calls[0].input == {"city": "mock"}
    sent = assert_chat_request(mock.last)
    assert sent["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": WEATHER["description"], "parameters": WEATHER["input_schema"]}}
    ]
    # The result goes back; the mock answers with text.
    second = anthropic_client.messages.create(
        model="gpt-4o",
        max_tokens=128,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "18C, sunny"}]},
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "Hello from mock: Weather in Paris?"
    body = assert_chat_request(mock.last)
    assistant, tool = body["messages"][-2], body["messages"][-1]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"] == [
        {"id": calls[0].id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"mock"}'}}
    ]
    assert tool == {"role": "tool", "tool_call_id": calls[0].id, "content": "18C, sunny"}


def test_a_chat_providers_error_reaches_the_client_in_anthropics_shape(envoy, mock):
    mock.enqueue(429, {"error": {"message": "Rate limit reached for gpt-4o", "type": "requests", "code": "rate_limit_exceeded"}})
    with pytest.raises(anthropic.RateLimitError) as caught:
        client(envoy, "oa").messages.create(model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 429
    assert caught.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached for gpt-4o"}}
    mock.enqueue(400, {"error": {"message": "max_tokens is too large", "type": "invalid_request_error", "code": None}})
    response = httpx.post(
        f"{envoy.base_url}/oa/v1/messages",
        json={"model": "gpt-4o", "max_tokens": 999999, "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 400
    assert response.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens is too large"}}
    assert OPENAI_KEY not in response.text


def test_a_chat_stream_cut_before_its_finish_ends_with_an_anthropic_error_event(envoy, mock):
    cut = llm.openai_stream("gpt-4o", "half an answer", include_usage=True)
    cut = cut[: cut.index(b'"finish_reason":"stop"')]
    cut = cut[: cut.rindex(b"\n\n") + 2]  # whole events, none with a finish reason
    mock.enqueue_reply(llm.sse_reply(cut))
    with httpx.stream(
        "POST",
        f"{envoy.base_url}/oa/v1/messages",
        json={"model": "gpt-4o", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
    ) as response:
        assert response.status_code == 200
        events = sse.parse_sse(response.read())
    assert events[0]["event"] == "message_start"
    said = "".join(json.loads(e["data"])["delta"].get("text", "") for e in events if e["event"] == "content_block_delta")
    assert said == "half an answer"
    assert events[-1]["event"] == "error"
    assert json.loads(events[-1]["data"])["error"]["type"] == "api_error"
    assert "message_stop" not in [e["event"] for e in events]
    # The SDK raises it.
    mock.enqueue_reply(llm.sse_reply(cut))
    with pytest.raises(anthropic.APIError):
        with client(envoy, "oa").messages.stream(model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as stream:
            stream.get_final_message()


def test_what_chat_cannot_carry_is_refused_before_the_provider(envoy, mock):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(envoy, "oa").messages.create(
            model="gpt-4o",
            max_tokens=5,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "a contract"}},
                        {"type": "text", "text": "summarise"},
                    ],
                }
            ],
        )
    assert caught.value.status_code == 400
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert 'messages[0].content[0]: a block of type "document"' in error["message"]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(envoy, "oa").messages.create(
            model="gpt-4o",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "m"}]},
        )
    assert "'mcp_servers'" in caught.value.body["error"]["message"]
    # Mode B sends the headers upstream before the body is read; the body never follows.
    assert all(seen.body == b"" for seen in mock.requests), mock.requests


def test_a_guard_masks_the_translated_answer(envoy, mock):
    prompt = "write to alice@example.com"
    message = client(envoy, "mask").messages.create(model="gpt-4o", max_tokens=32, messages=[{"role": "user", "content": prompt}])
    assert message.content[0].text == "Hello from mock: write to <EMAIL>"
    # The provider got the prompt as sent (no request guard on this route): the answer
    # guard is what masked it.
    assert mock.last.json["messages"][-1]["content"] == prompt
    with client(envoy, "mask").messages.stream(model="gpt-4o", max_tokens=32, messages=[{"role": "user", "content": prompt}]) as stream:
        text = "".join(stream.text_stream)
    assert text == "Hello from mock: write to <EMAIL>"
    assert "alice@" not in text


def test_a_guard_masks_every_text_of_the_request_before_it_is_translated(envoy, mock):
    email = "bob@example.org"
    message = client(envoy, "pmask").messages.create(
        model="gpt-4o",
        max_tokens=32,
        system=[{"type": "text", "text": f"Operator is {email}"}],
        tools=[{"name": "mail", "input_schema": {"type": "object", "properties": {"to": {"type": "string"}}}}],
        messages=[
            {"role": "user", "content": f"mail {email}"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "mail", "input": {"to": email}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": f"sent to {email}"}, {"type": "text", "text": "thanks"}]},
        ],
    )
    sent = assert_chat_request(mock.last)
    assert email not in mock.last.text
    assert sent["messages"] == [
        {"role": "system", "content": "Operator is <EMAIL>"},
        {"role": "user", "content": "mail <EMAIL>"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "mail", "arguments": '{"to":"<EMAIL>"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sent to <EMAIL>"},
        {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
    ]
    # The mock calls the offered tool again.
    assert message.stop_reason == "tool_use" and message.content[0].input == {"to": "mock"}


def test_gemini_route(envoy, mock):
    anthropic_client = client(envoy, "gm")
    message = anthropic_client.messages.create(model="any", max_tokens=32, system="Be brief.", messages=[{"role": "user", "content": "hello gemini"}])
    assert message.content[0].text == "Hello from mock: hello gemini"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    seen = mock.last
    assert seen.path_only == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert seen.headers["x-goog-api-key"] == GEMINI_KEY
    assert CLIENT_KEY not in json.dumps(seen.headers)
    assert seen.json["systemInstruction"]["parts"][0]["text"] == "Be brief."
    with anthropic_client.messages.stream(model="any", max_tokens=32, messages=[{"role": "user", "content": "stream gemini"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from mock: stream gemini"
    assert final.usage.output_tokens == 7


def test_openai_compatible_route_without_messages(envoy, mock):
    message = client(envoy, "oc").messages.create(model="qwen3", max_tokens=16, messages=[{"role": "user", "content": "hello vllm"}])
    assert message.content[0].text == "Hello from mock: hello vllm"
    seen = mock.last
    assert_chat_request(seen)
    assert seen.headers["host"] == "vllm.internal"


def test_gemini_tools_round_trip(envoy, mock):
    anthropic_client = client(envoy, "gm")
    question = {"role": "user", "content": "Weather in Oslo?"}
    with anthropic_client.messages.stream(model="any", max_tokens=64, tools=[WEATHER], messages=[question]) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "mock"}
    assert mock.last.json["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    second = anthropic_client.messages.create(
        model="any",
        max_tokens=64,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "-3C"}]},
        ],
    )
    assert second.stop_reason == "end_turn"
    contents = mock.last.json["contents"]
    assert contents[1]["role"] == "model" and contents[1]["parts"][0]["functionCall"]["name"] == "get_weather"
    response = contents[2]["parts"][0]["functionResponse"]
    assert response["name"] == "get_weather"
    assert "-3C" in json.dumps(response["response"])


CLAUDE = Path(__file__).resolve().parents[1] / "agents" / "node_modules" / ".bin" / "claude"


def test_claude_code_on_a_chat_completions_provider(envoy, mock, tmp_path):
    if not CLAUDE.exists():
        pytest.skip(f"Claude Code is not installed at {CLAUDE} (run `make agents`)")
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": f"{envoy.base_url}/cc",
        "ANTHROPIC_API_KEY": "dummy",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    node = shutil.which("node")
    if node:
        env["PATH"] = f"{Path(node).parent}:{env['PATH']}"
    run = subprocess.run(
        [str(CLAUDE), "-p", "Reply with the word pong."],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    seen = mock.requests_to(CC_PATH)
    assert run.returncode == 0, f"stdout={run.stdout!r} stderr={run.stderr[-2000:]!r} upstream={seen}"
    assert CC_ANSWER in run.stdout
    assert seen, "Claude Code's request never reached the chat upstream"
    for request in seen:
        body = assert_chat_request(request, CC_PATH)
        assert "dummy" not in json.dumps(request.headers)
    main = next(r.json for r in seen if any("Reply with the word pong." in json.dumps(m) for m in r.json["messages"]))
    assert main["stream"] is True and main["stream_options"] == {"include_usage": True}
    assert main["messages"][0]["role"] == "system"
    assert all(tool["type"] == "function" for tool in main.get("tools", []))
    # Claude Code's user_id (a JSON object of ids) becomes a `user` OpenAI takes.
    assert len(main["user"]) <= 64 and main["user"].startswith("user-")
