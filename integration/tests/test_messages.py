"""Anthropic Messages clients through a real Envoy, on passthrough (`anthropic`) routes.

The official `anthropic` SDK (and Claude Code itself) talks to Envoy; the mock plays the
Anthropic API. Each test checks what the client got AND what the provider received: the
gateway's key instead of the client's, the protocol headers, the query string, the body
(byte for byte when no stage changed it), masked texts in every field, and errors in
Anthropic's shape (the gateway's own) or unchanged (the provider's).

Every route runs in mode A (`allow_on_headers_stop_iteration`), so a response guard may
reject (it sets the status after reading the answer).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import anthropic
import httpx
import pytest

from integration.mocks import Reply, llm, sse

GATEWAY_KEY = "sk-ant-gateway-777"
CLIENT_KEY = "dummy-client-key"
ENV = {"ANTHROPIC_API_KEY": GATEWAY_KEY}
MODEL = "claude-sonnet-4-5"
EMAIL = "jane.doe@example.com"

PROVIDER = {"kind": "anthropic", "auth": {"key": {"env": "ANTHROPIC_API_KEY"}}}


def route(name: str, **extra) -> dict:
    return {"name": name, "match": {"path_prefix": f"/{name}/"}, "provider": PROVIDER, **extra}


EMAIL_MASK = {"regex": {"builtins": ["email"], "action": "mask"}}
EMAIL_REJECT = {"regex": {"builtins": ["email"], "action": "reject"}}
ROUTES = [
    route("plain"),
    route("maskreq", guards={"request": [EMAIL_MASK]}),
    route("maskresp", guards={"response": [EMAIL_MASK]}),
    route("rejectreq", guards={"request": [EMAIL_REJECT]}),
    route("rejectresp", guards={"response": [EMAIL_REJECT]}),
    route(
        "budget",
        limits={"tokens": [{"name": "per-user", "key": {"header": "x-user-id"}, "limit": 20, "window_ms": 600000}]},
    ),
    route("webhook", guards={
        "request": [{"webhook": {"endpoint": {"cluster": "guard_webhook"}}}, {"moderation": {"endpoint": {"cluster": "moderation"}}}],
        "response": [{"webhook": {"endpoint": {"cluster": "guard_webhook"}}}],
    }),
    route("llmcheck", guards={"request": [{"llm_check": {"endpoint": {"cluster": "guardian"}, "model": "granite-guardian"}}]}),
    # Claude Code: ANTHROPIC_BASE_URL is the gateway's root.
    {"name": "claude-code", "match": {"path_prefix": "/v1/"}, "provider": PROVIDER,
     "guards": {"request": [EMAIL_MASK], "response": [EMAIL_MASK]}},
]

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock):
    return envoy_factory(
        plugin_config={"allow_on_headers_stop_iteration": True, "routes": ROUTES},
        env=ENV,
        clusters={"mock_llm": mock, "guard_webhook": mock, "moderation": mock, "guardian": mock},
        allow_on_headers_stop_iteration=True,
    )


def client(envoy, prefix: str, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{envoy.base_url}/{prefix}", api_key=CLIENT_KEY, max_retries=0, timeout=30, **kwargs
    )


def assert_gateway_credential(seen) -> None:
    assert seen.headers["x-api-key"] == GATEWAY_KEY
    assert "authorization" not in seen.headers
    assert CLIENT_KEY not in json.dumps(seen.headers)
    assert seen.headers["host"] == "api.anthropic.com"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# --- passthrough ---------------------------------------------------------------------------


def test_create_passes_through_with_the_gateways_key(envoy, mock):
    reply = client(envoy, "plain").messages.create(
        model=MODEL, max_tokens=64, system="Be brief.", messages=user("hi there"),
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31", "anthropic-version": "2099-01-01"},
    )
    assert reply.content[0].text == llm.ECHO_PREFIX + "hi there"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (11, 7)
    seen = mock.last
    assert seen.path == "/v1/messages"
    assert_gateway_credential(seen)
    assert seen.headers["anthropic-version"] == "2099-01-01", "the client's version must pass"
    assert seen.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert seen.json["system"] == "Be brief."


def test_body_and_query_pass_byte_for_byte(envoy, mock):
    raw = b'{ "max_tokens": 64,"model":"' + MODEL.encode() + b'",\n "messages":[{"role":"user","content":"raw"}],"metadata":{"user_id":"u-1"} }'
    answer = httpx.post(
        f"{envoy.base_url}/plain/v1/messages?beta=true",
        content=raw,
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    seen = mock.last
    assert seen.body == raw
    assert seen.path == "/v1/messages?beta=true"
    # Without a version from the client, the provider's is set.
    httpx.post(f"{envoy.base_url}/plain/v1/messages", content=raw, headers={"x-api-key": CLIENT_KEY}, timeout=30)
    assert mock.last.headers["anthropic-version"] == "2023-06-01"


def test_stream(envoy, mock):
    with client(envoy, "plain").messages.stream(model=MODEL, max_tokens=64, messages=user("stream this please")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == llm.ECHO_PREFIX + "stream this please"
    assert final.usage.output_tokens == 7
    assert final.stop_reason == "end_turn"
    assert mock.last.json["stream"] is True
    assert_gateway_credential(mock.last)
    tokens = envoy.metric_total("aigate.tokens_total", {"route": "plain", "gen_ai.token.type": "input", "gen_ai.operation.name": "chat"})
    assert tokens >= 11


def test_count_tokens_is_its_own_operation_and_charges_nothing(envoy, mock):
    before = envoy.metric_total("aigate.tokens_total", {"route": "plain", "gen_ai.operation.name": "count_tokens"})
    client(envoy, "plain").messages.count_tokens(model=MODEL, messages=user("count"))
    assert envoy.metric_total("aigate.tokens_total", {"route": "plain", "gen_ai.operation.name": "count_tokens"}) == before
    assert envoy.metric_total("aigate.requests_total", {"route": "plain", "gen_ai.operation.name": "count_tokens"}) >= 1


def test_model_list_in_anthropics_shape(envoy, mock):
    answer = httpx.get(f"{envoy.base_url}/plain/v1/models", headers={"anthropic-version": "2023-06-01", "x-api-key": CLIENT_KEY}, timeout=30)
    assert answer.status_code == 200
    assert answer.json() == {"data": [], "has_more": False, "first_id": None, "last_id": None}
    page = client(envoy, "plain").models.list()
    assert list(page) == []


def test_tools_round_trip(envoy, mock):
    c = client(envoy, "plain")
    first = c.messages.create(model=MODEL, max_tokens=64, tools=[WEATHER], messages=user("Weather in Paris?"))
    call = next(b for b in first.content if b.type == "tool_use")
    assert (call.name, call.input) == ("get_weather", {"city": "mock"})
    assert first.stop_reason == "tool_use"
    messages = user("Weather in Paris?") + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}]},
    ]
    with c.messages.stream(model=MODEL, max_tokens=64, tools=[WEATHER], messages=messages) as stream:
        final = stream.get_final_message()
    assert final.content[0].text.startswith(llm.ECHO_PREFIX)
    sent = mock.last.json["messages"]
    assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}
    # A streamed tool call arrives whole through the SDK's partial-JSON accumulation.
    with c.messages.stream(model=MODEL, max_tokens=64, tools=[WEATHER], messages=user("Weather in Rome?")) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "mock"}


def test_count_tokens(envoy, mock):
    counted = client(envoy, "plain").messages.count_tokens(model=MODEL, system="sys", messages=user("count these words"))
    assert counted.input_tokens > 0
    assert mock.last.path == "/v1/messages/count_tokens"
    assert_gateway_credential(mock.last)
    with pytest.raises(anthropic.PermissionDeniedError):
        client(envoy, "rejectreq").messages.count_tokens(model=MODEL, messages=user(f"mail {EMAIL}"))


# --- guards ----------------------------------------------------------------------------


def every_field_request() -> dict:
    return {
        "model": MODEL,
        "max_tokens": 64,
        "system": [{"type": "text", "text": f"owner {EMAIL}"}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": f"text {EMAIL}"},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": f"doc {EMAIL}"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": f"thought {EMAIL}", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "send", "input": {"to": EMAIL, "cc": [EMAIL]}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": f"sent {EMAIL}"}]},
                {"type": "text", "text": "and?"},
            ]},
        ],
    }


def test_request_mask_reaches_every_field_but_thinking(envoy, mock):
    client(envoy, "maskreq").messages.create(**every_field_request())
    sent = mock.last.json
    assert sent["system"][0]["text"] == "owner <EMAIL>"
    assert sent["messages"][0]["content"][0]["text"] == "text <EMAIL>"
    assert sent["messages"][0]["content"][1]["source"]["data"] == "doc <EMAIL>"
    assert sent["messages"][1]["content"][0]["thinking"] == f"thought {EMAIL}"
    assert sent["messages"][1]["content"][1]["input"] == {"to": "<EMAIL>", "cc": ["<EMAIL>"]}
    assert sent["messages"][2]["content"][0]["content"][0]["text"] == "sent <EMAIL>"
    assert mock.last.text.count(EMAIL) == 1  # the thinking block only


@pytest.mark.parametrize("field", ["system", "text", "document", "tool_use", "tool_result"])
def test_request_reject_on_each_field(envoy, mock, field):
    body = every_field_request()
    clean = json.loads(json.dumps(body).replace(EMAIL, "nobody"))
    where = {
        "system": lambda b: b["system"][0],
        "text": lambda b: b["messages"][0]["content"][0],
        "document": lambda b: b["messages"][0]["content"][1]["source"],
        "tool_use": lambda b: b["messages"][1]["content"][1]["input"],
        "tool_result": lambda b: b["messages"][2]["content"][0]["content"][0],
    }[field]
    key = {"system": "text", "text": "text", "document": "data", "tool_use": "to", "tool_result": "text"}[field]
    where(clean)[key] = f"x {EMAIL}"
    before = len(mock.requests)
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        client(envoy, "rejectreq").messages.create(**clean)
    assert raised.value.status_code == 403
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "permission_error"
    assert len(mock.requests) == before, "a rejected request reached the provider"


def test_response_mask_json_and_stream(envoy, mock):
    c = client(envoy, "maskresp")
    reply = c.messages.create(model=MODEL, max_tokens=64, messages=user(f"echo {EMAIL} back"))
    assert reply.content[0].text == llm.ECHO_PREFIX + "echo <EMAIL> back"
    # The mock cuts its stream at awkward byte offsets: the address is split across events.
    with c.messages.stream(model=MODEL, max_tokens=64, messages=user(f"echo {EMAIL} back")) as stream:
        text = "".join(stream.text_stream)
    assert text == llm.ECHO_PREFIX + "echo <EMAIL> back"
    # A streamed tool input: the address split into partial JSON pieces, one \\u-escaped.
    tool = llm.anthropic_stream(MODEL, None, tool_use={"name": "send", "input": {"to": EMAIL}})
    tool = tool.replace(b"jane", b"\\\\u006aane")
    mock.enqueue_reply(llm.sse_reply(tool), path="/v1/messages")
    with c.messages.stream(model=MODEL, max_tokens=64, tools=[WEATHER], messages=user("send it")) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == {"to": "<EMAIL>"}


def test_response_reject_json_and_stream(envoy, mock):
    c = client(envoy, "rejectresp")
    with pytest.raises(anthropic.PermissionDeniedError):
        c.messages.create(model=MODEL, max_tokens=64, messages=user(f"echo {EMAIL}"))
    with pytest.raises(anthropic.APIStatusError) as raised:
        with c.messages.stream(model=MODEL, max_tokens=64, messages=user(f"echo {EMAIL}")) as stream:
            for _ in stream.text_stream:
                pass
    assert "jane" not in str(raised.value.body)


def test_callout_guards_read_messages(envoy, mock):
    c = client(envoy, "webhook")
    # The webhook masks the system text; the answer's "mock" is masked by the response
    # webhook, and a streaming client gets the whole (masked) answer as Anthropic events.
    with c.messages.stream(model=MODEL, max_tokens=64, system="keep the secret", messages=user("hi")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from [MASKED]: hi"
    assert final.usage.output_tokens == 7
    sent = mock.requests_to("/v1/messages")[-1].json
    assert sent["system"] == "keep the [REDACTED]"
    assert sent["stream"] is False, "the answer is needed whole upstream"
    webhook_calls = mock.requests_to("/request")
    assert webhook_calls[-1].json["body"]["system"] == "keep the secret"
    # A rejection in the system text, and by moderation in a tool result.
    with pytest.raises(anthropic.PermissionDeniedError):
        c.messages.create(model=MODEL, max_tokens=64, system="forbidden", messages=user("hi"))
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "how to build a bomb"}]},
    ]
    with pytest.raises(anthropic.PermissionDeniedError):
        c.messages.create(model=MODEL, max_tokens=64, messages=messages)
    assert mock.requests_to("/v1/moderations")[-1].json["input"] == ["go", "how to build a bomb"]


def test_llm_check_reads_tool_input_and_system(envoy, mock):
    c = client(envoy, "llmcheck")
    reply = c.messages.create(model=MODEL, max_tokens=64, system="be kind", messages=user("hello"))
    assert reply.content[0].text.startswith(llm.ECHO_PREFIX)
    asked = mock.requests_to("/v1/chat/completions")[-1].json
    assert "be kind" in json.dumps(asked) and "hello" in json.dumps(asked)
    messages = [
        {"role": "user", "content": "plan"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "act", "input": {"step": "kill the process"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"}]},
    ]
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        c.messages.create(model=MODEL, max_tokens=64, messages=messages)
    assert raised.value.body["type"] == "error"
    with pytest.raises(anthropic.PermissionDeniedError):
        c.messages.create(model=MODEL, max_tokens=64, system="how to build a bomb", messages=user("hi"))


def test_token_budget(envoy, mock):
    c = client(envoy, "budget", default_headers={"x-user-id": "budget-user"})
    c.messages.create(model=MODEL, max_tokens=64, messages=user("one"))  # 11 + 7 = 18 of 20
    c.messages.create(model=MODEL, max_tokens=64, messages=user("two"))  # admitted: 2 left
    with pytest.raises(anthropic.RateLimitError) as raised:
        c.messages.create(model=MODEL, max_tokens=64, messages=user("three"))
    assert raised.value.body["error"]["type"] == "rate_limit_error"


# --- errors ----------------------------------------------------------------------------


def test_upstream_errors_reach_the_client_unchanged(envoy, mock):
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "req_42"}
    mock.enqueue(529, error, path="/v1/messages")
    answer = httpx.post(
        f"{envoy.base_url}/plain/v1/messages",
        json={"model": MODEL, "max_tokens": 5, "messages": user("hi")},
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert answer.status_code == 529
    assert answer.json() == error
    mock.enqueue(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: too big"}}, path="/v1/messages")
    with pytest.raises(anthropic.BadRequestError) as raised:
        client(envoy, "plain").messages.create(model=MODEL, max_tokens=5, messages=user("hi"))
    assert raised.value.body["error"]["message"] == "max_tokens: too big"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"model": MODEL, "messages": user("x")}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 5}, "messages"),
        ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "developer", "content": "x"}]}, "messages.0.role"),
        ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages.0.content.0.type"),
        ({"model": MODEL, "max_tokens": 5, "system": 5, "messages": user("x")}, "system"),
        ({"model": MODEL, "max_tokens": 5, "stream": "yes", "messages": user("x")}, "stream"),
    ],
)
def test_gateway_errors_in_anthropics_shape(envoy, mock, body, field):
    before = len(mock.requests)
    answer = httpx.post(f"{envoy.base_url}/plain/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY}, timeout=30)
    assert answer.status_code == 400
    error = answer.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert field in error["error"]["message"]
    assert len(mock.requests) == before


# --- Claude Code ---------------------------------------------------------------------------

CLAUDE = Path(__file__).resolve().parents[1] / "agents" / "node_modules" / ".bin" / "claude"


def thinking_stream(model: str, thinking: str, text: str) -> bytes:
    """A streamed answer with a thinking block (Claude Code asks for thinking), then text,
    cut into small deltas the way Anthropic streams them."""
    ev = [sse.sse_event({"type": "message_start", "message": {
        "id": "msg_cc", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 30, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 12, "output_tokens": 1}}}, event="message_start")]
    ev.append(sse.sse_event({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}, event="content_block_start"))
    for i in range(0, len(thinking), 7):
        ev.append(sse.sse_event({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": thinking[i:i + 7]}}, event="content_block_delta"))
    ev.append(sse.sse_event({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}}, event="content_block_delta"))
    ev.append(sse.sse_event({"type": "content_block_stop", "index": 0}, event="content_block_stop"))
    ev.append(sse.sse_event({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}, event="content_block_start"))
    for i in range(0, len(text), 5):
        ev.append(sse.sse_event({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": text[i:i + 5]}}, event="content_block_delta"))
    ev.append(sse.sse_event({"type": "content_block_stop", "index": 1}, event="content_block_stop"))
    ev.append(sse.sse_event({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 42}}, event="message_delta"))
    ev.append(sse.sse_event({"type": "message_stop"}, event="message_stop"))
    return b"".join(ev)


CC_TEXT = f"PONG from the mock, mail {EMAIL} now"


def claude_code_messages(req):
    """Claude Code's requests, answered as Anthropic would: streamed (thinking when asked for,
    then text; never a tool call, so the agent runs no tool), or JSON when it does not stream."""
    body = req.json if isinstance(req.json, dict) else {}
    model = body.get("model", MODEL)
    if body.get("stream"):
        if isinstance(body.get("thinking"), dict) and body["thinking"].get("type") != "disabled":
            return llm.sse_reply(thinking_stream(model, f"The user wrote from {EMAIL}; answer PONG.", CC_TEXT))
        return llm.sse_reply(llm.anthropic_stream(model, CC_TEXT))
    return Reply(200, llm.anthropic_message(model, CC_TEXT))


@pytest.mark.skipif(not CLAUDE.exists(), reason=f"Claude Code is not installed at {CLAUDE} (run `make agents`)")
def test_claude_code_through_the_gateway(envoy, mock, tmp_path):
    mock.add_route("POST", r"/v1/messages", claude_code_messages)
    try:
        done = run_claude(envoy, tmp_path, f"Reply with PONG. My address is {EMAIL}.")
    finally:
        mock._routes = [r for r in mock._routes if r[2] is not claude_code_messages]
    messages = [r for r in mock.requests if r.path_only == "/v1/messages"]
    print("Claude Code's requests:", [(r.method, r.path, (r.json or {}).get("model"), (r.json or {}).get("stream")) for r in mock.requests])
    assert done.returncode == 0, done.stderr + done.stdout
    # The answer's address was masked on its way back, split across text deltas.
    assert "PONG from the mock, mail <EMAIL> now" in done.stdout, done.stdout
    assert EMAIL not in done.stdout
    assert messages, "Claude Code sent no Messages request"
    main = [r for r in messages if EMAIL in r.text or "<EMAIL>" in r.text]
    assert main, "the prompt never reached the provider"
    for seen in messages:
        assert_gateway_credential(seen)
        assert seen.headers.get("anthropic-version")
        assert EMAIL not in seen.text, "the prompt reached the provider unmasked"
    assert any("beta=true" in r.path for r in messages)
    assert any(r.headers.get("anthropic-beta") for r in messages)
    assert "<EMAIL>" in main[-1].text
    # What Claude Code sends (2.1.x): streamed, thinking, tools, system blocks.
    assert main[-1].json["stream"] is True
    assert main[-1].json.get("tools")
    assert "claude-code-" in main[-1].headers["anthropic-beta"]
    entry = [e for e in envoy.access_log() if e.get("aigate_route") == "claude-code"][-1]
    assert (entry["aigate_prompt_tokens"], entry["aigate_completion_tokens"]) in {("47", "42"), ("11", "7")}


def run_claude(envoy, cwd: Path, prompt: str, *extra: str) -> subprocess.CompletedProcess:
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": envoy.base_url,
        "ANTHROPIC_API_KEY": CLIENT_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CI": "1",
    }
    return subprocess.run(
        [str(CLAUDE), "-p", prompt, *extra], env=env, cwd=cwd, capture_output=True, text=True, timeout=180
    )


@pytest.mark.skipif(not CLAUDE.exists(), reason=f"Claude Code is not installed at {CLAUDE} (run `make agents`)")
def test_claude_code_tool_round_trip_is_guarded(envoy, mock, tmp_path):
    """The mock asks Claude Code to Read a file holding an address; Claude Code runs the tool
    and sends the file back as a tool_result, which reaches the provider masked."""
    notes = tmp_path / "notes.txt"
    notes.write_text(f"Contact: {EMAIL}\nRoom 4\n")

    def handler(req):
        body = req.json if isinstance(req.json, dict) else {}
        model = body.get("model", MODEL)
        last = (body.get("messages") or [{}])[-1]
        content = last.get("content") if isinstance(last, dict) else None
        answered = isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
        if answered:
            return llm.sse_reply(llm.anthropic_stream(model, "The file names a contact in room 4."))
        return llm.sse_reply(llm.anthropic_stream(model, None, tool_use={"name": "Read", "input": {"file_path": str(notes)}}))

    mock.add_route("POST", r"/v1/messages", handler)
    try:
        done = run_claude(envoy, tmp_path, "What is in notes.txt?", "--allowedTools", "Read")
    finally:
        mock._routes = [r for r in mock._routes if r[2] is not handler]
    messages = [r for r in mock.requests if r.path_only == "/v1/messages"]
    assert done.returncode == 0, done.stderr + done.stdout
    assert "room 4" in done.stdout
    assert len(messages) >= 2, messages
    result = [
        block
        for message in messages[-1].json["messages"]
        if isinstance(message.get("content"), list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    assert result, messages[-1].json["messages"]
    assert "<EMAIL>" in json.dumps(result) and "Room 4" in json.dumps(result)
    for seen in messages:
        assert EMAIL not in seen.text, "the file's address reached the provider"
        assert_gateway_credential(seen)
