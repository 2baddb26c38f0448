"""The OpenAI Responses API (`POST .../responses`) through a real Envoy.

The official `openai` SDK (`client.responses.create`, `client.responses.stream`) talks to
Envoy; the mock upstream answers as the Responses API does (`integration/mocks/responses.py`).
Passthrough routes (`openai`, `azure_openai`): the body reaches the provider as the client
sent it (byte for byte when no stage changed it), with the gateway's credential; answers,
streams and upstream errors come back unchanged but for masking. Guards mask or reject every
text field, both ways, streamed or not; budgets count Responses usage. Codex itself is run
against the gateway at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from integration.mocks import responses as rmock
from integration.mocks.sse import parse_sse, split_awkwardly

UPSTREAM_KEY = "sk-upstream-resp-1"
CLIENT_KEY = "sk-client-resp-2"
ALL_BUILTINS = ["ssn", "credit_card", "email", "phone_number", "ipv4"]
PROVIDER = {"kind": "openai", "authority": "api.openai.test", "auth": {"key": {"env": "OPENAI_KEY"}}}
MODEL = "gpt-5-mini"
REPO = Path(__file__).resolve().parents[2]
CODEX = REPO / "integration" / "agents" / "node_modules" / ".bin" / "codex"


def route(name: str, **extra) -> dict:
    return {"name": name, "match": {"path_prefix": f"/{name}/"}, "provider": PROVIDER, **extra}


MASK = {
    "request": [{"regex": {"builtins": ALL_BUILTINS, "patterns": [{"name": "codename", "pattern": "(?i)project\\s+falcon"}]}}],
    "response": [{"regex": {"name": "answer-pii", "builtins": ALL_BUILTINS}}],
}
ROUTES = [
    route("plain"),
    route("mask", guards=MASK),
    route("answers", guards={"response": [{"regex": {"name": "answer-pii", "builtins": ALL_BUILTINS}}]}),
    route(
        "reject",
        guards={
            "request": [{"regex": {"name": "pii", "builtins": ["ssn", "credit_card"], "action": "reject"}}],
            "reject": {"status": 422, "message": "Sensitive data is not allowed."},
        },
    ),
    route("answer-reject", guards={"response": [{"regex": {"name": "pii-out", "builtins": ["ssn"], "action": "reject"}}]}),
    route("budget", limits={"tokens": [{"name": "per-user", "key": {"header": "x-user-id"}, "limit": 30, "window_ms": 600_000}]}),
    route(
        "shaped",
        request={
            "prepend": [{"role": "system", "content": "You are terse."}],
            "append": [{"role": "user", "content": "Answer in English."}],
            "defaults": {"max_output_tokens": 300},
            "overrides": {"store": False},
        },
    ),
    {
        "name": "azure",
        "match": {"path_prefix": "/azure/"},
        "provider": {"kind": "azure_openai", "authority": "res.openai.azure.test", "auth": {"key": {"env": "AZURE_KEY"}}, "model": "my-deployment"},
    },
    {
        "name": "chatonly",
        "match": {"path_prefix": "/chatonly/"},
        "provider": {"kind": "openai_compatible", "authority": "vllm.test", "auth": {"none": True}, "responses": False},
    },
]


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock):
    return envoy_factory(
        # Mode A (headers held until the body is read): a rejecting response guard needs it.
        plugin_config={"allow_on_headers_stop_iteration": True, "routes": ROUTES},
        env={"OPENAI_KEY": UPSTREAM_KEY, "AZURE_KEY": "az-key-3"},
        clusters={"mock_llm": mock},
        allow_on_headers_stop_iteration=True,
    )


def sdk(envoy, prefix: str, **headers) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{envoy.base_url}/{prefix}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30, default_headers=headers or None
    )


def upstream(mock):
    return [r for r in mock.requests if r.path_only.endswith("/responses")]


def post(envoy, prefix: str, body: bytes | dict, **headers) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}", **headers}
    return httpx.post(f"{envoy.base_url}/{prefix}/v1/responses", content=data, headers=hdrs, timeout=30)


def guard_counter(envoy, route_name: str, guard: str, side: str, outcome: str) -> int:
    return envoy.counter(f"wasmcustom.aigate.guard.outcomes_total;route={route_name};guard={guard};side={side};outcome={outcome}")


def scripted(mock, response: dict, *, stream: bool) -> None:
    if stream:
        mock.enqueue(200, chunks=split_awkwardly(rmock.response_stream(response)), headers={"content-type": "text/event-stream"}, path="/v1/responses")
    else:
        mock.enqueue(200, response, path="/v1/responses")


# ---------------------------------------------------------------- passthrough


def test_passthrough_json_is_byte_for_byte_with_the_gateways_key(envoy, mock):
    sent = b'{ "model":"gpt-5-mini", "instructions":"Be brief.",\n "input":"caf\\u00e9 time", "store":false, "metadata":{"k":"v"} }'
    r = post(envoy, "plain", sent, **{"openai-beta": "responses=experimental", "x-request-id": "resp-plain-1"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["object"] == "response"
    assert answer["output"][0]["content"][0]["text"] == "Hello from mock: café time"
    seen = upstream(mock)[-1]
    assert seen.path == "/v1/responses"
    assert seen.body == sent, "an unchanged body goes upstream as the client sent it"
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert seen.headers["openai-beta"] == "responses=experimental"
    assert CLIENT_KEY not in json.dumps(seen.headers)
    # Usage, metrics and the access log count Responses usage.
    assert answer["usage"]["total_tokens"] == 18


def test_sdk_create_and_stream(envoy, mock):
    client = sdk(envoy, "plain")
    reply = client.responses.create(model=MODEL, instructions="Be brief.", input="hi there")
    assert reply.output_text == "Hello from mock: hi there"
    assert (reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.total_tokens) == (11, 7, 18)
    assert reply.usage.input_tokens_details.cached_tokens == 3
    with client.responses.stream(model=MODEL, input=[{"role": "user", "content": "stream me please"}]) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Hello from mock: stream me please"
    assert final.output_text == "Hello from mock: stream me please"
    assert final.usage.total_tokens == 18
    assert upstream(mock)[-1].json["stream"] is True
    assert "stream_options" not in upstream(mock)[-1].json


def test_function_call_round_trip(envoy, mock):
    client = sdk(envoy, "mask")
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
        "strict": True,
    }
    first = client.responses.create(model=MODEL, input="weather in Paris?", tools=[tool], tool_choice="required")
    call = next(item for item in first.output if item.type == "function_call")
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "mock"})
    second = client.responses.create(
        model=MODEL,
        tools=[tool],
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, call me at (555) 123-4567"},
        ],
    )
    # The tool result was masked on its way up; the echo of it comes back masked.
    assert second.output_text == "Tool said: sunny, call me at <PHONE_NUMBER>"
    assert upstream(mock)[-1].json["input"][2]["output"] == "sunny, call me at <PHONE_NUMBER>"


def test_shaping_uses_instructions_and_input(envoy, mock):
    reply = sdk(envoy, "shaped").responses.create(model=MODEL, instructions="Client rules.", input="hola", store=True)
    sent = upstream(mock)[-1].json
    assert sent["instructions"] == "You are terse.\n\nClient rules."
    assert sent["input"] == [
        {"role": "user", "content": "hola"},
        {"type": "message", "role": "user", "content": "Answer in English."},
    ]
    assert (sent["max_output_tokens"], sent["store"]) == (300, False)
    assert reply.output_text == "Hello from mock: Answer in English."


# ---------------------------------------------------------------- guards


def test_request_guard_masks_every_text_field(envoy, mock):
    before = guard_counter(envoy, "mask", "regex", "request", "masked")
    body = {
        "model": MODEL,
        "instructions": "Never mention Project Falcon.",
        "input": [
            {"role": "developer", "content": "ops mail ops@example.com"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "my card 4111 1111 1111 1111"}]},
            {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{\"ip\":\"10.20.30.40\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "ssn 123-45-6789"}]},
            {"type": "custom_tool_call", "call_id": "c2", "name": "patch", "input": "mail bob@example.com"},
            {"type": "custom_tool_call_output", "call_id": "c2", "output": "ok 192.168.1.20"},
            {"type": "local_shell_call", "call_id": "c3", "id": "ls1", "status": "completed", "action": {"type": "exec", "command": ["curl", "http://192.168.7.7"], "env": {}}},
            {"type": "local_shell_call_output", "call_id": "c3", "output": "reach (555) 123-4567"},
            {"role": "user", "content": "summarise"},
        ],
    }
    r = post(envoy, "mask", body)
    assert r.status_code == 200, r.text
    got = upstream(mock)[-1].json
    assert got["instructions"] == "Never mention <CODENAME>."
    items = got["input"]
    assert items[0]["content"] == "ops mail <EMAIL>"
    assert items[1]["content"][0]["text"] == "my card <CREDIT_CARD>"
    assert items[2]["arguments"] == "{\"ip\":\"<IPV4>\"}"
    assert items[3]["output"][0]["text"] == "ssn <SSN>"
    assert items[4]["input"] == "mail <EMAIL>"
    assert items[5]["output"] == "ok <IPV4>"
    assert items[6]["action"]["command"] == ["curl", "http://<IPV4>"]
    assert items[7]["output"] == "reach <PHONE_NUMBER>"
    assert guard_counter(envoy, "mask", "regex", "request", "masked") == before + 1


def test_a_repeated_key_is_no_way_past_the_guards(envoy, mock):
    # Parsers differ on which of two `input` keys wins: the provider gets exactly what the
    # guards read (re-serialised), never the client's two-faced bytes.
    sent = b'{"model":"gpt-5-mini","input":"mail bob@example.com","input":"harmless"}'
    r = post(envoy, "mask", sent)
    assert r.status_code == 200, r.text
    seen = upstream(mock)[-1]
    assert b"bob@" not in seen.body
    assert seen.body.count(b'"input"') == 1
    nested = b'{"model":"gpt-5-mini","input":[{"role":"user","content":"call (555) 123-4567","content":"x"}]}'
    r = post(envoy, "plain", nested)
    assert r.status_code == 200, r.text
    assert b"555" not in upstream(mock)[-1].body


def secret_response() -> dict:
    return rmock.response_object(
        MODEL,
        [
            rmock.message_item("Reach jane@example.org or 4111 1111 1111 1111 today"),
            rmock.function_call_item("notify", "{\"phone\":\"(555) 123-4567\"}"),
        ],
    )


def test_response_guard_masks_a_json_answer(envoy, mock):
    scripted(mock, secret_response(), stream=False)
    reply = sdk(envoy, "answers").responses.create(model=MODEL, input="contact?")
    assert reply.output_text == "Reach <EMAIL> or <CREDIT_CARD> today"
    call = next(item for item in reply.output if item.type == "function_call")
    assert call.arguments == "{\"phone\":\"<PHONE_NUMBER>\"}"


def test_response_guard_masks_every_event_of_a_stream(envoy, mock):
    scripted(mock, secret_response(), stream=True)
    with httpx.stream("POST", f"{envoy.base_url}/answers/v1/responses", json={"model": MODEL, "input": "x", "stream": True}, timeout=30) as r:
        raw = b"".join(r.iter_bytes())
    assert r.status_code == 200
    for secret in (b"jane@", b"4111", b"555) 123"):
        assert secret not in raw, raw
    events = [json.loads(e["data"]) for e in parse_sse(raw)]
    numbers = [e["sequence_number"] for e in events]
    assert numbers == sorted(set(numbers)), numbers
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Reach <EMAIL> or <CREDIT_CARD> today"
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == text
    completed = events[-1]
    assert completed["type"] == "response.completed"
    assert completed["response"]["output"][0]["content"][0]["text"] == text
    # The SDK's accumulated view agrees.
    scripted(mock, secret_response(), stream=True)
    with sdk(envoy, "answers").responses.stream(model=MODEL, input="x") as stream:
        final = stream.get_final_response()
    assert final.output_text == text
    assert final.output[1].arguments == "{\"phone\":\"<PHONE_NUMBER>\"}"


def test_request_guard_rejects_in_openai_shape(envoy, mock):
    count = len(upstream(mock))
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        sdk(envoy, "reject").responses.create(
            model=MODEL, input=[{"type": "function_call_output", "call_id": "c", "output": "ssn 123-45-6789"}]
        )
    assert raised.value.status_code == 422
    assert raised.value.body["code"] == "pii"
    assert raised.value.body["message"] == "Sensitive data is not allowed."
    assert "6789" not in json.dumps(raised.value.body)
    assert len(upstream(mock)) == count, "nothing reaches the provider"


def test_response_guard_rejects_a_stream_in_band(envoy, mock):
    response = rmock.response_object(MODEL, [rmock.message_item("your ssn is 123-45-6789 ok")])
    scripted(mock, response, stream=True)
    with pytest.raises(openai.APIError) as raised:
        with sdk(envoy, "answer-reject").responses.stream(model=MODEL, input="x") as stream:
            for _ in stream:
                pass
    assert "6789" not in str(raised.value.body)


def test_compaction_passes_with_guards(envoy, mock):
    body = {"model": MODEL, "instructions": "x", "input": [{"role": "user", "content": "mail bob@example.com"}, {"type": "function_call_output", "call_id": "c", "output": "ok"}]}
    r = httpx.post(f"{envoy.base_url}/mask/v1/responses/compact", json=body, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=30)
    assert r.status_code == 200, r.text
    seen = mock.last
    assert seen.path == "/v1/responses/compact"
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert seen.json["input"][0]["content"] == "mail <EMAIL>"
    answer = r.json()
    assert answer["output"][-1] == {"id": answer["output"][-1]["id"], "type": "compaction", "encrypted_content": "gAAAAmock"}
    assert answer["usage"]["total_tokens"] == 18
    # Other Responses endpoints (retrieval, input items) are not served: 404, never a bypass.
    r = httpx.get(f"{envoy.base_url}/mask/v1/responses/resp_123", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_endpoint"


# ---------------------------------------------------------------- errors and budgets


def test_gateway_errors_name_the_field(envoy, mock):
    for body, field in (
        ({"model": MODEL, "input": 5}, "'input'"),
        ({"model": MODEL, "input": [{"content": "x"}]}, "'input[0].type'"),
        ({"model": MODEL, "input": [{"role": "user", "content": {"t": 1}}]}, "'input[0].content'"),
        ({"model": MODEL, "input": "x", "instructions": ["a"]}, "'instructions'"),
        ({"model": MODEL, "input": "x", "stream": "yes"}, "'stream'"),
        ({"model": MODEL, "input": [{"type": "function_call", "arguments": {"a": "b"}}]}, "'input[0].arguments'"),
    ):
        r = post(envoy, "mask", body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and field in error["message"], error


def test_upstream_errors_reach_the_client_unchanged(envoy, mock):
    body = b'{"error":{"message":"Invalid value: \'bogus\'. Supported values are: \'auto\'.","type":"invalid_request_error","param":"truncation","code":"invalid_value"}}'
    mock.enqueue(400, body, headers={"content-type": "application/json", "x-request-id": "up-1"}, path="/v1/responses")
    r = post(envoy, "plain", {"model": MODEL, "input": "x", "truncation": "bogus"})
    assert r.status_code == 400
    assert r.content == body


def test_token_budget_counts_responses_usage(envoy, mock):
    client = sdk(envoy, "budget", **{"x-user-id": "resp-budget-user"})
    client.responses.create(model=MODEL, input="one")  # 18 tokens
    with client.responses.stream(model=MODEL, input="two") as stream:  # 36: over 30
        stream.get_final_response()
    with pytest.raises(openai.RateLimitError) as raised:
        client.responses.create(model=MODEL, input="three")
    assert raised.value.code == "token_budget_exceeded"


def test_azure_v1_path_and_key(envoy, mock):
    reply = sdk(envoy, "azure").responses.create(model="anything", input="hi azure")
    assert reply.output_text == "Hello from mock: hi azure"
    seen = upstream(mock)[-1]
    assert seen.path_only == "/openai/v1/responses"
    assert seen.headers["api-key"] == "az-key-3"
    assert "authorization" not in seen.headers
    assert seen.json["model"] == "my-deployment"


def test_chat_only_server_never_gets_a_responses_request(envoy, mock):
    count = len(upstream(mock))
    r = post(envoy, "chatonly", {"model": "m", "input": "hi"})
    # Without the chat bridge: 400 unsupported_operation; with it, chat completions upstream.
    if r.status_code == 400:
        assert r.json()["error"]["code"] == "unsupported_operation"
    assert len(upstream(mock)) == count


# ---------------------------------------------------------------- Codex


def run_codex(envoy, mock, tmp_path, prompt: str) -> subprocess.CompletedProcess:
    if not CODEX.exists():
        pytest.skip(f"Codex is not installed at {CODEX} (run `make agents`)")
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f"""
model = "{MODEL}"
model_provider = "aigate"

[model_providers.aigate]
name = "aigate"
base_url = "{envoy.base_url}/mask/v1"
wire_api = "responses"
env_key = "AIGATE_DUMMY_KEY"
request_max_retries = 0
stream_max_retries = 0
http_headers = {{ "x-user-id" = "codex-dev" }}
"""
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "CODEX"))}
    env.update({"CODEX_HOME": str(home), "AIGATE_DUMMY_KEY": CLIENT_KEY, "HOME": str(tmp_path), "NO_COLOR": "1"})
    done = subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", prompt],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    # What Codex asked for (`-s` shows it): one streamed Responses call per model turn.
    for r in mock.requests:
        print("codex ->", r.method, r.path, sorted(r.json) if isinstance(r.json, dict) else None)
    return done


def test_codex_exec_through_the_gateway(envoy, mock, tmp_path):
    done = run_codex(envoy, mock, tmp_path, "Say hi. My email is dev@example.com")
    calls = upstream(mock)
    assert calls, f"Codex made no Responses request: {done.stdout}\n{done.stderr}\n{[r.path for r in mock.requests]}"
    seen = calls[-1]
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in json.dumps(seen.headers) and CLIENT_KEY not in seen.text
    assert "dev@example.com" not in seen.text, "the prompt reached the provider unmasked"
    assert "<EMAIL>" in seen.text
    assert seen.json["stream"] is True
    assert seen.headers.get("originator"), "Codex's protocol headers pass"
    assert seen.headers.get("x-user-id") == "codex-dev", "the README's http_headers setting works"
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Hello from mock: Say hi. My email is <EMAIL>" in done.stdout


def test_codex_runs_a_tool_and_its_output_is_guarded(envoy, mock, tmp_path):
    # The first turn answers with a call of Codex's `exec_command` tool; Codex runs it and
    # sends its output back in a second request, where the guard masks it.
    call = rmock.function_call_item("exec_command", json.dumps({"cmd": "printf '%s@%s' bob example.com"}))
    scripted(mock, rmock.response_object(MODEL, [call]), stream=True)
    done = run_codex(envoy, mock, tmp_path, "run the tool")
    calls = upstream(mock)
    assert len(calls) == 2, f"{done.stdout}\n{done.stderr}"
    items = calls[1].json["input"]
    sent_call = next(i for i in items if i.get("type") == "function_call")
    output = next(i for i in items if i.get("type") == "function_call_output")
    assert sent_call["call_id"] == output["call_id"] == call["call_id"]
    assert "bob@example.com" not in calls[1].text, "the tool's output reached the provider unmasked"
    assert "<EMAIL>" in json.dumps(output["output"])
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Tool said:" in done.stdout and "<EMAIL>" in done.stdout
