"""Hostile input through a real Envoy: malformed, deep, huge or invalid-UTF-8 bodies, bodies
over the limit (content-length and chunked), partial bodies and clients that hang up, CRLF
in values that end up in headers, and upstreams that send garbage SSE, die mid-stream,
answer gzip or fail with 429/5xx.

Each case gets its documented status and an OpenAI-shaped error (or the documented pass-
through), and after every test Envoy's log shows no Wasm panic and Envoy still serves.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import time
from typing import Any, Iterator

import httpx
import pytest

from integration.harness import Envoy

SECRET = "sk-hostile-secret-1"
MAX_BODY = 256 * 1024
CHAT = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
CONFIG = {
    "routes": [
        {
            "name": "free",
            "match": {"path_prefix": "/free/"},
            # The client's model goes upstream as written (no models map).
            "provider": {"kind": "openai_compatible", "authority": "vllm.test", "auth": {"none": True}},
        },
        {
            "name": "chat",
            "match": {"route_name": "llm"},
            "provider": {
                "kind": "openai",
                "authority": "upstream.test",
                "auth": {"key": {"env": "OPENAI_API_KEY"}},
                "models": {"fast": "gpt-4o-mini"},
            },
            "request": {"max_body_bytes": MAX_BODY},
        },
    ]
}

# What a dying or panicking Wasm VM leaves in Envoy's log.
BAD_LOG = re.compile(r"panicked|Uncaught|RuntimeError|unreachable|wasm.*(failed|crash)|\[critical\]", re.IGNORECASE)


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock) -> Envoy:
    return envoy_factory(plugin_config=CONFIG, env={"OPENAI_API_KEY": SECRET}, clusters={"mock_llm": mock})


@pytest.fixture(autouse=True)
def still_healthy(envoy: Envoy, mock) -> Iterator[None]:
    """After every hostile case: no Wasm panic in the log, and a normal request still works."""
    before = len(envoy.log_text())
    yield
    mock.reset()
    r = httpx.post(envoy.base_url + "/v1/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 200, f"Envoy stopped serving: {r.status_code} {r.text}"
    new_log = envoy.log_text()[before:]
    bad = [line for line in new_log.splitlines() if BAD_LOG.search(line)]
    assert not bad, "Wasm trouble in Envoy's log:\n" + "\n".join(bad[:20])
    assert SECRET not in new_log
    assert envoy.running


def post(envoy: Envoy, body: bytes | str, path: str = "/v1/chat/completions", **headers: str) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx.post(
        envoy.base_url + path, content=content, headers={"content-type": "application/json", **headers}, timeout=30
    )


def assert_not_forwarded(mock) -> None:
    """No body reached the provider. In mode B the upstream request starts when the headers
    are done, so a rejected request may show up there as headers with nothing after them
    (Envoy resets it): never as a body."""
    time.sleep(0.1)
    assert all(not r.body for r in mock.requests), mock.requests


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    if code is not None:
        assert error["code"] == code, error
    return error


def raw(envoy: Envoy, data: bytes, *, read: bool = True, timeout_s: float = 10.0) -> bytes:
    """Sends raw bytes on a fresh connection; returns what came back until close or timeout."""
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=timeout_s) as s:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out and _complete(out):
                    break
        except socket.timeout:
            pass
        return out


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    m = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    if m:
        return len(body) >= int(m.group(1))
    return body.endswith(b"0\r\n\r\n")


# ------------------------------------------------------------------------ bad bodies


@pytest.mark.parametrize(
    "body",
    [
        "{",
        '{"messages": [}',
        "null",
        "[]",
        '"just a string"',
        "\x00\x01\x02",
        '{"messages": [{"role": "user", "content": "hi"}]} trailing',
        " " * 100,
    ],
)
def test_malformed_json_is_400(envoy: Envoy, mock, body: str) -> None:
    error = assert_error(post(envoy, body), 400)
    assert error["code"] in ("invalid_json", "invalid_body")
    assert_not_forwarded(mock)


def test_deeply_nested_json_is_400_not_a_stack_overflow(envoy: Envoy, mock) -> None:
    for depth in (200, 10_000, 100_000):
        body = '{"messages": [{"role": "user", "content": "x", "deep": ' + "[" * depth + "]" * depth + "}]}"
        assert_error(post(envoy, body), 400, "invalid_json")
    assert_not_forwarded(mock)


def test_invalid_utf8_is_400(envoy: Envoy, mock) -> None:
    body = b'{"model": "fast", "messages": [{"role": "user", "content": "\xff\xfe\xc3("}]}'
    assert_error(post(envoy, body), 400, "invalid_json")
    lone_surrogate = b'{"model": "fast", "messages": [{"role": "user", "content": "\\ud800"}]}'
    r = post(envoy, lone_surrogate)
    assert r.status_code in (200, 400), r.text  # serde_json refuses lone surrogates: 400
    if r.status_code == 400:
        assert r.json()["error"]["code"] == "invalid_json"


def test_wrong_types_are_400_with_the_parameter(envoy: Envoy) -> None:
    for body, param in [
        ({"model": "fast", "messages": "hi"}, "messages"),
        ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "fast", "messages": [{"role": "root", "content": "x"}]}, "messages[0].role"),
        ({"model": "fast", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}, "stream"),
    ]:
        error = assert_error(post(envoy, json.dumps(body)), 400)
        assert param in error["message"]


def test_thousands_of_messages(envoy: Envoy, mock) -> None:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"} for i in range(5000)]
    r = post(envoy, json.dumps({"model": "fast", "messages": messages}))
    assert r.status_code == 200, r.text
    assert len(mock.last.json["messages"]) == 5000
    assert r.json()["usage"]["total_tokens"] > 0


# ------------------------------------------------------------------------ limits


def test_body_over_the_limit_with_content_length_is_413(envoy: Envoy, mock) -> None:
    body = json.dumps({"model": "fast", "messages": [{"role": "user", "content": "x" * (MAX_BODY + 10)}]})
    error = assert_error(post(envoy, body), 413, "request_too_large")
    assert str(MAX_BODY) in error["message"]
    assert_not_forwarded(mock)


def test_body_over_the_limit_chunked_is_413(envoy: Envoy, mock) -> None:
    piece = b'{"model": "fast", "messages": [{"role": "user", "content": "' + b"y" * 4096
    chunks = [piece] + [b"y" * 8192] * ((MAX_BODY // 8192) + 2) + [b'"}]}']

    def gen() -> Iterator[bytes]:
        yield from chunks

    r = httpx.post(
        envoy.base_url + "/v1/chat/completions", content=gen(), headers={"content-type": "application/json"}, timeout=30
    )
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "request_too_large")
    assert_not_forwarded(mock)


def test_lying_content_length_under_the_limit_is_still_caught(envoy: Envoy, mock) -> None:
    """The header says small; the chunked body is big: the body phase counts real bytes."""
    big = b'{"model":"fast","messages":[{"role":"user","content":"' + b"z" * (MAX_BODY + 100) + b'"}]}'
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (big[i : i + 65536] for i in range(0, len(big), 65536)))
    response = raw(
        envoy,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n",
    )
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"request_too_large" in response
    assert_not_forwarded(mock)


# ------------------------------------------------------------------------ clients that misbehave


def test_partial_body_then_disconnect(envoy: Envoy, mock) -> None:
    for _ in range(20):
        raw(
            envoy,
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b'content-length: 5000\r\n\r\n{"model": "fast", "messages": [',
            read=False,
        )
    assert_not_forwarded(mock)


def test_client_disconnects_mid_stream(envoy: Envoy, mock) -> None:
    mock.enqueue(
        200,
        headers={"content-type": "text/event-stream"},
        chunks=[
            b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
            b'data: {"choices":[{"index":0,"delta":{"content":"b"}}]}\n\n',
            b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\n',
            b"data: [DONE]\n\n",
        ],
        chunk_delay_s=0.3,
    )
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=10) as s:
        body = json.dumps({**CHAT, "stream": True}).encode()
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    # The upstream finishes into a closed client; the next requests are served (fixture).
    mock.wait_for_requests(1)
    time.sleep(1.5)


def test_slowloris_headers_then_close(envoy: Envoy) -> None:
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n")
        time.sleep(0.2)


# ------------------------------------------------------------------------ header injection


def test_crlf_in_the_model_never_becomes_a_header(envoy: Envoy, mock) -> None:
    # The model also lands in filter state (access logs): control characters are refused.
    evil = "llama\r\nx-injected: 1\r\n\r\nGET /admin HTTP/1.1"
    r = post(envoy, json.dumps({"model": evil, "messages": [{"role": "user", "content": "x"}]}), path="/free/v1/chat/completions")
    assert_error(r, 400, "invalid_value")
    assert all("x-injected" not in req.headers for req in mock.requests)
    assert_not_forwarded(mock)


def test_crlf_in_a_mapped_model_name_is_refused(envoy: Envoy, mock) -> None:
    r = post(envoy, json.dumps({"model": "fast\r\nx-injected: 1", "messages": [{"role": "user", "content": "x"}]}))
    assert_error(r, 400, "model_not_found")
    assert_not_forwarded(mock)


def test_header_smuggling_attempts_are_refused_by_envoy(envoy: Envoy, mock) -> None:
    response = raw(
        envoy,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
    )
    assert response.startswith(b"HTTP/1.1 400"), response[:200]
    assert_not_forwarded(mock)


# ------------------------------------------------------------------------ hostile upstreams


def test_upstream_garbage_sse(envoy: Envoy, mock) -> None:
    garbage = [b"\xff\xfe\x00garbage\n", b"data: {not json\n\n", b"event: x\r\ndata:" + b"\x00" * 100 + b"\r\n\r\n", b"data: [DONE]\n\n"]
    mock.enqueue(200, headers={"content-type": "text/event-stream"}, chunks=garbage)
    r = post(envoy, json.dumps({**CHAT, "stream": True}))
    assert r.status_code == 200
    # The client did not ask for usage, so the filter re-serialises the stream; whatever the
    # garbage, it ends and carries no usage chunk of the filter's own.
    assert b"[DONE]" in r.content


def test_upstream_endless_line_is_bounded(envoy: Envoy, mock) -> None:
    mock.enqueue(200, headers={"content-type": "text/event-stream"}, chunks=[b"data: " + b"a" * 65536] * 80)
    r = post(envoy, json.dumps({**CHAT, "stream": True}))
    assert r.status_code == 200


def test_upstream_closes_mid_stream(envoy: Envoy, mock) -> None:
    mock.enqueue(
        200,
        headers={"content-type": "text/event-stream"},
        chunks=[b'data: {"choices":[{"index":0,"delta":{"content":"par"}}]}\n\n', b"data: {\"choi"],
        abort_after_chunks=2,
    )
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", envoy.base_url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30) as s:
            assert s.status_code == 200
            for _ in s.iter_bytes():
                pass


def test_upstream_resets_before_answering(envoy: Envoy, mock) -> None:
    mock.enqueue(abort=True)
    r = post(envoy, json.dumps(CHAT))
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "api_error"


def test_upstream_answers_gzip(envoy: Envoy, mock) -> None:
    answer = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "zip"}}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    mock.enqueue(200, gzip.compress(json.dumps(answer).encode()), {"content-type": "application/json", "content-encoding": "gzip"})
    r = post(envoy, json.dumps(CHAT))
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "zip"  # httpx decodes; bytes passed intact
    assert mock.last.headers.get("accept-encoding") == "identity", "the filter asks for an uncompressed answer"


def test_upstream_gzip_error_is_reshaped(envoy: Envoy, mock) -> None:
    mock.enqueue(500, gzip.compress(b'{"error":{"message":"boom"}}'), {"content-type": "application/json", "content-encoding": "gzip"})
    r = post(envoy, json.dumps(CHAT))
    assert r.status_code == 500
    assert "content-encoding" not in r.headers
    assert r.json()["error"]["type"] == "api_error"


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_upstream_failures_keep_status_and_openai_shape(envoy: Envoy, mock, status: int) -> None:
    mock.enqueue(status, "<html>upstream says no</html>", {"content-type": "text/html", "retry-after": "3"})
    error = assert_error(post(envoy, json.dumps(CHAT)), status)
    assert error["type"] == ("rate_limit_error" if status == 429 else "api_error")
    if status == 429:
        assert mock.requests and post(envoy, json.dumps(CHAT)).status_code == 200


def test_upstream_error_while_streaming(envoy: Envoy, mock) -> None:
    mock.enqueue(503, {"error": {"message": "overloaded", "type": "server_error"}})
    r = post(envoy, json.dumps({**CHAT, "stream": True}))
    error = assert_error(r, 503)
    assert error["message"] == "overloaded"


def test_upstream_hangs_until_the_route_timeout(envoy_factory, mock) -> None:
    """A provider that never answers: Envoy's route timeout ends it with 504, OpenAI-shaped."""
    short = envoy_factory(
        plugin_config=CONFIG, env={"OPENAI_API_KEY": SECRET}, clusters={"mock_llm": mock}, route_timeout_s=1, concurrency=1
    )
    mock.enqueue(200, {"never": "sent"}, delay_s=30)
    r = post(short, json.dumps(CHAT))
    error = assert_error(r, 504)
    assert error["type"] == "api_error"
    mock.reset()
    assert post(short, json.dumps(CHAT)).status_code == 200
    assert not BAD_LOG.search(short.log_text())


def test_crlf_in_a_model_that_becomes_the_path(envoy_factory, mock) -> None:
    """Mode A, Azure without a fixed deployment: the client's model is the deployment in the
    upstream :path. CR/LF there must not split the request or add a header."""
    config = {
        "allow_on_headers_stop_iteration": True,
        "routes": [
            {
                "name": "azure",
                "provider": {"kind": "azure_openai", "authority": "r.openai.azure.test", "auth": {"key": {"value": SECRET}}},
            }
        ],
    }
    mode_a = envoy_factory(
        plugin_config=config, allow_on_headers_stop_iteration=True, clusters={"mock_llm": mock}, concurrency=1
    )
    for model in ["dep\r\nx-injected: 1\r\n", "../../admin", "dep?api-version=evil", "a b"]:
        r = post(mode_a, json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]}))
        assert_error(r, 400, "invalid_value")
    assert mock.requests == [], "mode A: a refused request never reaches the upstream"
    mock.reset()
    ok = post(mode_a, json.dumps({"model": "dep", "messages": [{"role": "user", "content": "x"}]}))
    assert ok.status_code == 200, ok.text
    assert mock.last.path.startswith("/openai/deployments/dep/chat/completions")
    assert not BAD_LOG.search(mode_a.log_text())
