"""The mock services on their own (no Envoy): defaults, scripting, framing."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from integration.mocks import MockServer, Reply, llm, sse


def post(mock: MockServer, path: str, body: object, **kw) -> httpx.Response:
    return httpx.post(mock.url + path, json=body, timeout=10, **kw)


# -- OpenAI / Azure ----------------------------------------------------------


def test_openai_tools_stream_reassembles(mock: MockServer) -> None:
    client = openai.OpenAI(base_url=mock.url + "/v1", api_key="k", max_retries=0)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {
                    "type": "object",
                    "properties": {"q": {"type": "string"}, "n": {"type": "integer"}, "unit": {"enum": ["c", "f"]}},
                    "required": ["q", "n", "unit"],
                },
            },
        }
    ]
    msgs = [{"role": "user", "content": "find"}]
    resp = client.chat.completions.create(model="m", messages=msgs, tools=tools)
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments) == {"q": "mock", "n": 1, "unit": "c"}

    args, finish = "", None
    for chunk in client.chat.completions.create(model="m", messages=msgs, tools=tools, stream=True):
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                args += tc.function.arguments or ""
            finish = c.finish_reason or finish
    assert json.loads(args) == {"q": "mock", "n": 1, "unit": "c"} and finish == "tool_calls"

    # after a tool result, a text answer
    msgs += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    resp = client.chat.completions.create(model="m", messages=msgs, tools=tools)
    assert resp.choices[0].message.content == "Hello from mock: find"


def test_openai_content_parts_and_errors(mock: MockServer) -> None:
    r = post(mock, "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert r.json()["choices"][0]["message"]["content"] == "Hello from mock: a b"
    assert post(mock, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}).status_code == 400
    assert post(mock, "/v1/chat/completions", {"model": "m"}).status_code == 400
    r = httpx.post(mock.url + "/v1/chat/completions", content=b"not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_openai_stream_without_usage(mock: MockServer) -> None:
    r = post(mock, "/v1/chat/completions", {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    events = sse.parse_sse(r.content)
    assert events[-1]["data"] == "[DONE]"
    assert all("usage" not in json.loads(e["data"]) for e in events[:-1])


def test_azure(mock: MockServer) -> None:
    body = {"messages": [{"role": "user", "content": "az"}]}
    r = post(mock, "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21", body)
    assert r.status_code == 200
    assert r.json()["model"] == "gpt4o"  # no model in the body: the deployment
    assert r.json()["choices"][0]["message"]["content"] == "Hello from mock: az"
    assert mock.last.params == {"deployment": "gpt4o"}
    assert mock.last.query == {"api-version": ["2024-10-21"]}
    assert post(mock, "/openai/deployments/gpt4o/chat/completions", body).status_code == 404


def test_guardian_model(mock: MockServer) -> None:
    def ask(text: str) -> str:
        r = post(mock, "/v1/chat/completions", {"model": "granite-guardian-3.2", "messages": [{"role": "system", "content": "Is it unsafe?"}, {"role": "user", "content": text}]})
        return r.json()["choices"][0]["message"]["content"]

    assert ask("how do I bake bread") == "No"
    assert ask("how do I build a bomb") == "Yes"


# -- Anthropic -----------------------------------------------------------------

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "k"}


def test_anthropic_is_strict_like_the_real_api(mock: MockServer) -> None:
    ok = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    assert post(mock, "/v1/messages", ok, headers=ANTHROPIC_HEADERS).status_code == 200
    assert post(mock, "/v1/messages", ok).status_code == 400  # no anthropic-version
    no_max = {k: v for k, v in ok.items() if k != "max_tokens"}
    r = post(mock, "/v1/messages", no_max, headers=ANTHROPIC_HEADERS)
    assert r.status_code == 400 and r.json()["type"] == "error"
    sys_role = dict(ok, messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "x"}])
    assert post(mock, "/v1/messages", sys_role, headers=ANTHROPIC_HEADERS).status_code == 400


def test_anthropic_stream_events(mock: MockServer) -> None:
    body = {"model": "claude", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": [{"type": "text", "text": "s"}]}]}
    r = post(mock, "/v1/messages", body, headers=ANTHROPIC_HEADERS)
    events = sse.parse_sse(r.content)
    names = [e["event"] for e in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names and "content_block_start" in names and "content_block_stop" in names
    for e in events:
        assert json.loads(e["data"])["type"] == e["event"]
    text = "".join(json.loads(e["data"])["delta"]["text"] for e in events if e["event"] == "content_block_delta")
    assert text == "Hello from mock: s"
    delta = json.loads(events[-2]["data"])
    assert delta["usage"] == {"output_tokens": 7} and delta["delta"]["stop_reason"] == "end_turn"
    assert json.loads(events[0]["data"])["message"]["usage"]["input_tokens"] == 11


def test_anthropic_tool_use_stream_partial_json(mock: MockServer) -> None:
    tools = [{"name": "t", "input_schema": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "boolean"}}}}]
    body = {"model": "claude", "max_tokens": 10, "stream": True, "tools": tools, "messages": [{"role": "user", "content": "go"}]}
    events = sse.parse_sse(post(mock, "/v1/messages", body, headers=ANTHROPIC_HEADERS).content)
    partial = [json.loads(e["data"])["delta"] for e in events if e["event"] == "content_block_delta"]
    assert all(d["type"] == "input_json_delta" for d in partial) and len(partial) > 1
    assert json.loads("".join(d["partial_json"] for d in partial)) == {"a": "mock", "b": True}
    # a tool_result as the last message gets a text answer
    body["stream"] = False
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"}]},
    ]
    r = post(mock, "/v1/messages", body, headers=ANTHROPIC_HEADERS).json()
    assert r["stop_reason"] == "end_turn" and r["content"][0]["type"] == "text"


# -- Gemini --------------------------------------------------------------------


def test_gemini_function_call_and_errors(mock: MockServer) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "weather"}]}],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}],
    }
    r = post(mock, "/v1beta/models/gemini-2.5-pro:generateContent", body).json()
    assert r["candidates"][0]["content"]["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"city": "mock"}}
    r = post(mock, "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", body)
    chunks = [json.loads(e["data"]) for e in sse.parse_sse(r.content)]
    assert chunks[-1]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "get_weather"
    r = post(mock, "/v1beta/models/gemini-2.5-pro:streamGenerateContent", {"contents": body["contents"]})
    assert isinstance(r.json(), list) and r.json()[-1]["candidates"][0]["finishReason"] == "STOP"
    r = post(mock, "/v1beta/models/gemini-2.5-pro:generateContent", {"contents": []})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"


# -- guard services ------------------------------------------------------------


def test_moderation(mock: MockServer) -> None:
    r = post(mock, "/v1/moderations", {"model": "omni-moderation-latest", "input": ["hello", "I will kill it"]}).json()
    assert [x["flagged"] for x in r["results"]] == [False, True]
    r = post(mock, "/v1/moderations", {"input": "a BOMB"}).json()
    assert r["results"][0]["flagged"] is True and r["results"][0]["categories"]["violence"] is True
    r = post(mock, "/v1/moderations", {"input": [{"type": "text", "text": "fine"}]}).json()
    assert len(r["results"]) == 1 and r["results"][0]["flagged"] is False


def test_webhook_request(mock: MockServer) -> None:
    def hook(*contents: object) -> dict:
        msgs = [{"role": "user", "content": c} for c in contents]
        return post(mock, "/request", {"body": {"messages": msgs}}).json()

    assert hook("hello") == {"action": "pass"}
    assert hook("ok", "this is forbidden") == {"action": "reject", "status_code": 403, "reason": "blocked by webhook"}
    masked = hook("my secret is x", [{"type": "text", "text": "another secret"}], "plain")
    assert masked["action"] == "mask"
    out = masked["body"]["messages"]
    assert len(out) == 3
    assert out[0]["content"] == "my [REDACTED] is x"
    assert out[1]["content"] == [{"type": "text", "text": "another [REDACTED]"}]
    assert out[2]["content"] == "plain"


def test_webhook_response(mock: MockServer) -> None:
    choices = [{"index": 0, "message": {"role": "assistant", "content": "Hello from mock: hi"}, "finish_reason": "stop"}]
    r = post(mock, "/response", {"body": {"choices": choices}}).json()
    assert r["action"] == "mask"
    assert r["body"]["choices"][0]["message"]["content"] == "Hello from [MASKED]: hi"
    assert r["body"]["choices"][0]["finish_reason"] == "stop"
    choices[0]["message"]["content"] = "clean"
    assert post(mock, "/response", {"body": {"choices": choices}}).json() == {"action": "pass"}


# -- scripting, recording, framing ---------------------------------------------


def test_enqueue_path_filter_times_and_order(mock: MockServer) -> None:
    mock.enqueue(200, {"action": "reject", "status_code": 451, "reason": "x"}, path="/request", times=2)
    mock.enqueue(500, "boom")
    assert post(mock, "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "a"}]}).status_code == 500
    for _ in range(2):
        assert post(mock, "/request", {"body": {"messages": []}}).json()["status_code"] == 451
    assert post(mock, "/request", {"body": {"messages": []}}).json() == {"action": "pass"}
    assert [r.path for r in mock.requests_to("/request")] == ["/request"] * 3
    mock.reset()
    assert mock.requests == []


def test_chunked_request_body_is_decoded(mock: MockServer) -> None:
    payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "chunky"}]}).encode()

    def gen():
        for i in range(0, len(payload), 7):
            yield payload[i : i + 7]

    r = httpx.post(mock.url + "/v1/chat/completions", content=gen())
    assert r.status_code == 200
    assert "chunked" in mock.last.headers["transfer-encoding"]
    assert mock.last.body == payload and mock.last.json["messages"][0]["content"] == "chunky"


def test_custom_route_and_headers(mock_factory) -> None:
    own = mock_factory(name="own")

    @own.route("POST", r"/v1/things/(?P<id>\d+)")
    def thing(req):
        return Reply(201, {"id": req.params["id"], "got": req.json}, {"x-mock": "yes"})

    r = httpx.post(own.url + "/v1/things/42?x=1", json={"a": 1}, headers={"X-Mixed-Case": "v"})
    assert r.status_code == 201 and r.headers["x-mock"] == "yes"
    assert r.json() == {"id": "42", "got": {"a": 1}}
    assert own.last.headers["x-mixed-case"] == "v"
    assert own.last.path == "/v1/things/42?x=1" and own.last.path_only == "/v1/things/42"
    assert httpx.get(own.url + "/nope").status_code == 404


def test_crashing_behaviour_is_reported(mock_factory) -> None:
    own = mock_factory(name="crashy")
    own.add_route("GET", "/crash", lambda req: 1 / 0)
    assert httpx.get(own.url + "/crash").status_code == 500
    assert "ZeroDivisionError" in own.errors[0]


def test_hang_is_released_by_reset(mock_factory) -> None:
    own = mock_factory(name="hang")
    own.enqueue(200, "late", delay_s=60)
    result = {}

    def call():
        result["r"] = httpx.get(own.url + "/healthz", timeout=30)

    t = threading.Thread(target=call)
    start = time.monotonic()
    t.start()
    own.wait_for_requests(1)
    own.reset()
    t.join(10)
    assert result["r"].text == "late" and time.monotonic() - start < 10


def test_abort_after_chunks(mock_factory) -> None:
    own = mock_factory(name="abort")
    own.enqueue(200, chunks=["data: 1\n\n", "data: 2\n\n", "data: 3\n\n"], abort_after_chunks=1, headers={"content-type": "text/event-stream"})
    got = b""
    with pytest.raises(httpx.HTTPError):
        with httpx.stream("GET", own.url + "/x") as r:
            for piece in r.iter_raw():
                got += piece
    assert got == b"data: 1\n\n"


def test_split_awkwardly() -> None:
    stream = llm.openai_stream("m", "one two three", include_usage=True)
    pieces = sse.split_awkwardly(stream)
    assert b"".join(pieces) == stream
    assert any(p.endswith(b"da") or p.endswith(b"dat") or p == b"d" for p in pieces) or any(
        b"data:" not in p and p.strip() for p in pieces
    )
    assert any(p.count(b"\n\n") >= 2 for p in pieces), "some pieces hold several events"
    assert len(sse.split_per_event(stream)) == len(sse.parse_sse(stream))
    assert sse.parse_sse(b"event: a\r\ndata: 1\r\n\r\n: comment\n\ndata: x\ndata: y\n\n") == [
        {"event": "a", "data": "1"},
        {"data": "x\ny"},
    ]
