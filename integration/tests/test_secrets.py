"""Issue 12 item 9 through a real Envoy: a provider that echoes the credential it received
(401 "Incorrect API key provided: Bearer sk-...", a plain-text 403, the key inside a streamed
or passed-through answer, split across chunks, JSON-escaped) never gets it to the client, the
Envoy log or the metrics."""

from __future__ import annotations

import json

import httpx
import pytest

from integration.harness import Envoy
from integration.mocks.server import RecordedRequest, Reply

KEY = "sk-proj-e2e-echoed-key-0123456789abcdef"
CONFIG = {
    "routes": [
        {
            "name": "echo",
            "match": {"headers": {"x-echo": "1"}},
            "provider": {"kind": "openai", "authority": "api.openai.test", "path": "/echo/chat/completions",
                         "auth": {"key": {"env": "OPENAI_API_KEY"}}},
        },
        {
            "name": "chat",
            "provider": {"kind": "openai", "authority": "api.openai.test", "auth": {"key": {"env": "OPENAI_API_KEY"}}},
        }
    ]
}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def echo_401(req: RecordedRequest) -> Reply:
    # What OpenAI answers, with the credential as the gateway sent it.
    auth = req.headers.get("authorization", "")
    return Reply(401, {"error": {"message": f"Incorrect API key provided: {auth}.", "type": "invalid_request_error",
                                 "param": None, "code": "invalid_api_key"}})


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock) -> Envoy:
    mock.add_route("POST", r"/echo/chat/completions", echo_401)
    return envoy_factory(plugin_config=CONFIG, env={"OPENAI_API_KEY": KEY}, clusters={"mock_llm": mock})


def post(envoy: Envoy, body: dict, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(envoy.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def assert_nowhere(envoy: Envoy, text: str | bytes) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    assert KEY not in text and "e2e-echoed-key" not in text, text
    log = envoy.log_text()
    assert KEY not in log, "the key reached Envoy's log"
    stats = httpx.get(envoy.admin_url + "/stats?filter=aigate", timeout=10).text
    assert KEY not in stats and "echoed" not in stats


def test_upstream_401_echoing_the_sent_key(envoy: Envoy, mock) -> None:
    r = post(envoy, CHAT, {"x-echo": "1"})
    assert mock.last.headers["authorization"] == f"Bearer {KEY}", "the key did go upstream"
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["message"].startswith("Incorrect API key provided: Bearer ***"), error
    assert_nowhere(envoy, r.content)


def test_plain_text_403_and_escaped_key(envoy: Envoy, mock) -> None:
    mock.enqueue(403, f"forbidden: key {KEY} is not allowed here", {"content-type": "text/plain"})
    r = post(envoy, CHAT)
    assert r.status_code == 403
    assert_nowhere(envoy, r.content)
    escaped = KEY.replace("-", "\\u002d")
    mock.enqueue(401, f'{{"error":{{"message":"bad key {escaped}","type":"x"}}}}', {"content-type": "application/json"})
    r = post(envoy, CHAT)
    assert r.status_code == 401
    assert_nowhere(envoy, r.content)
    assert KEY not in r.json()["error"]["message"]


def test_passed_through_answer_with_the_key_split_across_chunks(envoy: Envoy, mock) -> None:
    answer = json.dumps({"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": f"your key is {KEY}"}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
    at = answer.index(KEY) + 9
    mock.enqueue(200, headers={"content-type": "application/json"}, chunks=[answer[:at], answer[at:]], chunk_delay_s=0.05)
    r = post(envoy, CHAT)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "your key is " + "*" * len(KEY)
    assert_nowhere(envoy, r.content)


def test_streamed_answer_with_the_key_split_across_chunks(envoy: Envoy, mock) -> None:
    def chunk(content: str) -> str:
        return "data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                                      "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}) + "\n\n"

    stream = chunk(f"echo {KEY} done") + "data: [DONE]\n\n"
    at = stream.index(KEY) + 12
    mock.enqueue(200, headers={"content-type": "text/event-stream"}, chunks=[stream[:at], stream[at:]], chunk_delay_s=0.05)
    with httpx.stream("POST", envoy.base_url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30) as s:
        assert s.status_code == 200
        body = b"".join(s.iter_bytes())
    assert b"[DONE]" in body
    assert ("*" * len(KEY)).encode() in body
    assert_nowhere(envoy, body)
