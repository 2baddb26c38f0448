"""Responses clients on providers without the Responses API, through a real Envoy.

The official `openai` SDK (`client.responses.create`) and Codex itself talk to Envoy on
`.../v1/responses`; the route's provider is a chat-completions-only server
(`openai_compatible` with `"responses": false`) or Anthropic. The gateway turns the Responses
request into chat completions (`client_api/responses_bridge.rs`), the provider's codec does the
rest, and the answer comes back as a Responses `response` object or event stream. Each test
checks what the client got AND what the provider received.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import openai
import pytest

from integration.mocks import llm
from integration.mocks.server import RecordedRequest

COMPAT_KEY = "sk-compat-server-444"
ANTHROPIC_KEY = "sk-ant-server-555"
CLIENT_KEY = "client-key-666"
ENV = {"COMPAT_KEY": COMPAT_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY, "GEMINI_API_KEY": "g-server-777"}
MODEL = "chat-only-model"
CLAUDE = "claude-sonnet-4-5"

COMPAT_ROUTE = {
    "name": "compat",
    "match": {"path_prefix": "/compat/"},
    "provider": {
        "kind": "openai_compatible",
        "authority": "vllm.internal",
        "responses": False,
        "auth": {"key": {"env": "COMPAT_KEY"}},
    },
}
MASKED_ROUTE = {
    "name": "compat-masked",
    "match": {"path_prefix": "/masked/"},
    "provider": COMPAT_ROUTE["provider"],
    "guards": {"response": [{"regex": {"builtins": ["ssn"], "action": "mask"}}]},
}
# Codex's own route: a chat-only server at its own upstream path, whose mock answers in text
# (the default chat mock calls the first tool of any request that has tools, and Codex always
# sends its tools).
CODEX_ROUTE = {
    "name": "codex",
    "match": {"path_prefix": "/codex/"},
    "provider": {**COMPAT_ROUTE["provider"], "path": "/codex-upstream/v1/chat/completions"},
}
CODEX_ANSWER = "Hello from the chat-only model behind aigate"
ANTHROPIC_ROUTE = {
    "name": "claude",
    "match": {"path_prefix": "/anthropic/"},
    "provider": {
        "kind": "anthropic",
        "auth": {"key": {"env": "ANTHROPIC_API_KEY"}},
        "anthropic": {"version": "2023-06-01", "max_tokens": 512},
    },
}

GEMINI = "gemini-2.5-flash"
GEMINI_ROUTE = {
    "name": "gemini",
    "match": {"path_prefix": "/gemini/"},
    "provider": {"kind": "gemini", "auth": {"key": {"env": "GEMINI_API_KEY"}}, "model": GEMINI},
}
GEMINI_KEY = "g-server-777"

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock):
    mock.add_route("POST", r"/codex-upstream/v1/chat/completions", codex_chat)
    return envoy_factory(
        plugin_config={"routes": [COMPAT_ROUTE, MASKED_ROUTE, CODEX_ROUTE, ANTHROPIC_ROUTE, GEMINI_ROUTE]},
        env=ENV,
        clusters={"mock_llm": mock},
    )


def sdk(envoy, prefix: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{envoy.base_url}/{prefix}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def chat_requests(mock) -> list[RecordedRequest]:
    return [r for r in mock.requests if r.path_only.endswith("/chat/completions")]


def assert_compat_upstream(seen: RecordedRequest, path: str = "/v1/chat/completions") -> None:
    assert seen.path == path, "a Responses request goes to the chat endpoint"
    assert seen.headers["host"] == "vllm.internal"
    assert seen.headers["authorization"] == f"Bearer {COMPAT_KEY}"
    assert CLIENT_KEY not in json.dumps(seen.headers), "the client's key must not reach the provider"


def check_events(events) -> object:
    """The Responses event grammar as the SDK parsed it; returns the final response."""
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[1] == "response.in_progress", kinds
    assert kinds[-1] == "response.completed", kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added = {e.item.id for e in events if e.type == "response.output_item.added"}
    done = {e.item.id for e in events if e.type == "response.output_item.done"}
    assert added == done and added, (added, done)
    return events[-1].response


# --- chat-completions-only server ---------------------------------------------------------


def test_json_answer_over_chat_completions(envoy, mock):
    reply = sdk(envoy, "compat").responses.create(
        model=MODEL,
        instructions="Be brief.",
        input="hi there",
        max_output_tokens=50,
        temperature=0.3,
        store=True,
        reasoning={"effort": "low"},
        extra_headers={"x-request-id": "respbridge-json"},
    )
    assert reply.object == "response"
    assert reply.id.startswith("resp_")
    assert reply.status == "completed"
    assert reply.output_text == "Hello from mock: hi there"
    assert reply.output[0].type == "message" and reply.output[0].id.startswith("msg_")
    assert (reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.total_tokens) == (11, 7, 18)
    assert reply.store is False, "nothing is stored: the answer says so"
    assert (reply.instructions, reply.temperature, reply.max_output_tokens) == ("Be brief.", 0.3, 50), "echoed"
    [seen] = chat_requests(mock)
    assert_compat_upstream(seen)
    assert seen.json == {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}],
        "max_tokens": 50,
        "temperature": 0.3,
    }
    # Usage reached the gateway's accounting.
    labels = {"route": "compat", "gen_ai.token.type": "output"}
    assert envoy.metric_total("aigate.tokens_total", labels) >= 7


def test_stream_over_chat_completions(envoy, mock):
    with sdk(envoy, "compat").responses.create(model=MODEL, input="stream this please", stream=True) as stream:
        events = list(stream)
    response = check_events(events)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "Hello from mock: stream this please"
    assert response.output_text == deltas
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    [seen] = chat_requests(mock)
    assert_compat_upstream(seen)
    assert seen.json["stream"] is True
    assert seen.json["stream_options"] == {"include_usage": True}
    assert seen.json["messages"] == [{"role": "user", "content": "stream this please"}]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_function_call_round_trip(envoy, mock, stream):
    client = sdk(envoy, "compat")
    first_input = [{"role": "user", "content": "Weather in Paris?"}]

    def create(input_items):
        if not stream:
            return client.responses.create(model=MODEL, input=input_items, tools=[WEATHER_TOOL], tool_choice="auto")
        events = list(client.responses.create(model=MODEL, input=input_items, tools=[WEATHER_TOOL], stream=True))
        return check_events(events)

    first = create(first_input)
    assert [t.name for t in first.tools] == ["get_weather"], "the response echoes the request's tools"
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "mock"}
    assert call.id.startswith("fc_") and call.call_id.startswith("call_mock")
    upstream = chat_requests(mock)[-1].json
    assert upstream["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": WEATHER_TOOL["parameters"],
                "strict": True,
            },
        }
    ]

    second = create(
        first_input
        + [
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"},
        ]
    )
    assert second.output_text == "Hello from mock: Weather in Paris?"
    seen = chat_requests(mock)[-1]
    assert_compat_upstream(seen)
    assert seen.json["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.call_id, "type": "function", "function": {"name": "get_weather", "arguments": call.arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": "18C and sunny"},
    ]


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "web_search"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "item_reference"),
    ],
    ids=["previous_response_id", "web_search", "item_reference"],
)
def test_server_state_is_refused(envoy, mock, extra, field):
    kwargs = {"model": MODEL, "input": "hello", **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(envoy, "compat").responses.create(**kwargs)
    assert caught.value.status_code == 400
    body = caught.value.body
    assert body["code"] == "unsupported_operation", body
    assert field in body["message"]
    # Envoy may have opened the upstream request in the headers phase: no body ever follows.
    assert all(r.body == b"" for r in mock.requests), mock.requests


def test_streamed_answer_is_masked_after_bridging(envoy, mock):
    """The response guard sees the Responses events (the client's form), split deltas too."""
    events = list(
        sdk(envoy, "masked").responses.create(model=MODEL, input="my number is 123-45-6789 ok", stream=True)
    )
    response = check_events(events)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "123-45-6789" not in deltas and "<SSN>" in deltas, deltas
    assert "123-45-6789" not in response.output_text and "<SSN>" in response.output_text
    done = [e.text for e in events if e.type == "response.output_text.done"]
    assert done == [deltas]


def test_upstream_cut_short_fails_the_response(envoy, mock):
    stream = llm.openai_stream(MODEL, "one two three four", include_usage=True, finish_reason=None, done=False)
    cut = stream[: stream.index(b"three")]
    cut = cut[: cut.rindex(b"\n\n") + 2]
    mock.enqueue(200, headers={"content-type": "text/event-stream"}, chunks=[cut], path="/v1/chat/completions")
    with pytest.raises(openai.APIError) as caught:
        for _ in sdk(envoy, "compat").responses.create(model=MODEL, input="x", stream=True):
            pass
    assert "ended before the answer was complete" in str(caught.value)


# --- Anthropic ----------------------------------------------------------------------------


def test_anthropic_json_and_stream(envoy, mock):
    client = sdk(envoy, "anthropic")
    reply = client.responses.create(model=CLAUDE, instructions="Be brief.", input="hi claude")
    assert reply.output_text == "Hello from mock: hi claude"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (11, 7)
    seen = mock.last
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY
    assert CLIENT_KEY not in json.dumps(seen.headers)
    assert seen.json["system"] == "Be brief."
    assert seen.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi claude"}]}]

    events = list(client.responses.create(model=CLAUDE, input="stream claude", stream=True))
    response = check_events(events)
    assert response.output_text == "Hello from mock: stream claude"
    assert mock.last.json["stream"] is True


def test_anthropic_function_call_round_trip(envoy, mock):
    client = sdk(envoy, "anthropic")
    events = list(
        client.responses.create(model=CLAUDE, input="Weather in Rome?", tools=[WEATHER_TOOL], stream=True)
    )
    first = check_events(events)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.call_id.startswith("toolu_mock") and json.loads(call.arguments) == {"city": "mock"}
    assert mock.last.json["tools"][0]["name"] == "get_weather"
    second = client.responses.create(
        model=CLAUDE,
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "Weather in Rome?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "21C"},
        ],
    )
    # The mock echoes the last user turn's text: the tool_result turn has none.
    assert second.status == "completed" and second.output_text.startswith("Hello from mock:")
    messages = mock.last.json["messages"]
    assert messages[1]["content"][0] == {"type": "tool_use", "id": call.call_id, "name": "get_weather", "input": {"city": "mock"}}
    assert messages[2]["content"][0]["type"] == "tool_result"
    assert messages[2]["content"][0]["tool_use_id"] == call.call_id


def test_anthropic_refuses_previous_response_id(envoy, mock):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(envoy, "anthropic").responses.create(model=CLAUDE, input="x", previous_response_id="resp_1")
    assert caught.value.body["code"] == "unsupported_operation"
    assert all(r.body == b"" for r in mock.requests), mock.requests


# --- Gemini -------------------------------------------------------------------------------


def test_gemini_json_and_stream(envoy, mock):
    """Mode B: the Gemini route always streams upstream; the JSON client's answer is the
    stream folded by the codec, then bridged."""
    client = sdk(envoy, "gemini")
    reply = client.responses.create(model=GEMINI, instructions="Be brief.", input="hi gemini")
    assert reply.status == "completed"
    assert reply.output_text == "Hello from mock: hi gemini"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (11, 7)
    seen = mock.last
    assert seen.path_only == f"/v1beta/models/{GEMINI}:streamGenerateContent"
    assert seen.headers["x-goog-api-key"] == GEMINI_KEY
    assert CLIENT_KEY not in json.dumps(seen.headers)
    assert seen.json["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert seen.json["contents"] == [{"role": "user", "parts": [{"text": "hi gemini"}]}]

    events = list(client.responses.create(model=GEMINI, input="stream gemini", stream=True))
    response = check_events(events)
    assert response.output_text == "Hello from mock: stream gemini"


# --- Codex --------------------------------------------------------------------------------

CODEX = Path(__file__).resolve().parents[1] / "agents" / "node_modules" / ".bin" / "codex"


TOOL_MARK = "aigate-tool-ok"


def codex_chat(req: RecordedRequest):
    """A chat-only server for Codex: asked to run something, it calls Codex's `exec_command`
    tool; given the tool's result (a `tool` message), it answers with what the tool printed;
    otherwise it answers in text. Streamed with usage, as Codex (through the gateway) asks."""
    body = req.json or {}
    model = body.get("model", MODEL)
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    tool_calls = None
    if last.get("role") == "tool":
        content = llm.text_of(last.get("content"))
        text = f"The command printed: {TOOL_MARK}" if TOOL_MARK in content else f"Tool said: {content[:200]}"
    elif "run the check" in json.dumps(last):
        text, tool_calls = None, [{"name": "exec_command", "arguments": {"cmd": f"echo {TOOL_MARK}"}}]
    else:
        text = CODEX_ANSWER
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return llm.sse_reply(llm.openai_stream(model, text, tool_calls=tool_calls, include_usage=include_usage))
    return llm.Reply(200, llm.openai_completion(model, text, tool_calls=tool_calls))


def run_codex(envoy, prompt: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    (home / "config.toml").write_text(
        f"""
model = "{MODEL}"
model_provider = "aigate"
# web_search is a tool OpenAI's servers run: a chat-only provider has none (the gateway
# would answer 400 unsupported_operation), so Codex is told not to offer it.
web_search = "disabled"

[model_providers.aigate]
name = "aigate"
base_url = "{envoy.base_url}/codex/v1"
wire_api = "responses"
env_key = "AIGATE_TEST_CODEX_KEY"
request_max_retries = 0
stream_max_retries = 0
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update({"CODEX_HOME": str(home), "AIGATE_TEST_CODEX_KEY": CLIENT_KEY, "NO_COLOR": "1"})
    workdir = home / "work"
    workdir.mkdir(exist_ok=True)
    return subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", prompt],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_codex_over_chat_completions(envoy, mock):
    if not CODEX.exists():
        pytest.skip(f"Codex is not installed at {CODEX} (run `make agents`)")
    home = Path(tempfile.mkdtemp(prefix="aigate-codex-"))
    try:
        done = run_codex(envoy, "Say hello to the gateway", home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    requests = [r for r in mock.requests if r.path_only.startswith("/codex-upstream/")]
    detail = f"mock saw {mock.requests}\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-3000:]}"
    assert requests, f"Codex reached no chat endpoint; {detail}"
    for seen in requests:
        assert_compat_upstream(seen, "/codex-upstream/v1/chat/completions")
        body = seen.json
        assert body["model"] == MODEL
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert "input" not in body and "instructions" not in body, "a chat request, not a Responses one"
        assert body["messages"][0]["role"] == "system", "Codex's instructions lead the conversation"
        assert "Say hello to the gateway" in json.dumps(body["messages"][-1])
    assert done.returncode == 0, detail
    assert CODEX_ANSWER in done.stdout, detail


def test_codex_function_call_round_trip(envoy, mock):
    """Codex runs the tool the chat-only model calls and sends its output back as a
    `function_call_output`, which reaches the model as a `tool` message."""
    if not CODEX.exists():
        pytest.skip(f"Codex is not installed at {CODEX} (run `make agents`)")
    home = Path(tempfile.mkdtemp(prefix="aigate-codex-"))
    try:
        done = run_codex(envoy, "Please run the check", home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    requests = [r for r in mock.requests if r.path_only.startswith("/codex-upstream/")]
    detail = f"mock saw {requests}\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-3000:]}"
    assert len(requests) >= 2, detail
    follow_up = requests[1].json["messages"]
    calls = [m for m in follow_up if m.get("role") == "assistant" and m.get("tool_calls")]
    assert calls and calls[-1]["tool_calls"][0]["function"]["name"] == "exec_command", follow_up[-3:]
    call_id = calls[-1]["tool_calls"][0]["id"]
    results = [m for m in follow_up if m.get("role") == "tool"]
    assert results and results[-1]["tool_call_id"] == call_id, follow_up[-3:]
    assert TOOL_MARK in llm.text_of(results[-1]["content"]), results[-1]
    assert done.returncode == 0, detail
    assert f"The command printed: {TOOL_MARK}" in done.stdout, detail
