"""However an exchange ends, through a real Envoy, the filter finishes it (issue 12, items
1, 7, 11, 12, 16, 17):

- an HTTP/2 request whose END_STREAM comes on a trailers frame is guarded, gets the
  provider's key and is accounted, in both header modes;
- an answer that ends with trailers is masked and accounted (JSON and stream);
- an upstream error without a body reaches the client as an error object;
- a gzip-encoded event stream reaches the client decoded, with its usage read;
- a stream that ends in an in-band error is logged and counted as a failure;
- a client that hangs up before the usage event is charged an estimate;
- usage is read at the end of an answer larger than the observe limit.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import socket
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from integration.harness import Cluster, Envoy
from integration.mocks import MockServer
from integration.mocks.server import Reply
from integration.mocks.sse import sse_event

SERVER_KEY = "sk-server-flow-1"
SSN = "123-45-6789"

MASK_SSN = {"regex": {"builtins": ["ssn"], "action": "mask"}}


def route(name: str, prefix: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "match": {"path_prefix": prefix},
        "provider": {"kind": "openai", "authority": "llm.local", "auth": {"key": {"value": SERVER_KEY}}},
    }
    out.update(extra)
    return out


CONFIG = {
    "routes": [
        route("guarded", "/guarded/", guards={"request": [MASK_SSN], "response": [MASK_SSN]}),
        route(
            "budget",
            "/budget/",
            limits={"tokens": [{"name": "all", "key": {"fixed": "all"}, "limit": 60, "window_ms": 3_600_000}]},
        ),
        {
            "name": "claude",
            "match": {"path_prefix": "/anthropic/"},
            "provider": {
                "kind": "anthropic",
                "auth": {"key": {"value": "sk-ant-flow"}},
                "anthropic": {"version": "2023-06-01", "max_tokens": 64},
            },
        },
        route("plain", "/"),
    ]
}


def cluster_with_trailers(mock: MockServer) -> Cluster:
    """The mock as an HTTP/1.1 upstream whose chunked trailers Envoy passes on."""
    return Cluster(
        mock.port,
        extra={
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}},
                }
            }
        },
    )


@pytest.fixture(scope="module")
def flow_mock(mock_factory) -> MockServer:
    return mock_factory(name="flow-llm")


@pytest.fixture(autouse=True)
def _fresh(flow_mock: MockServer):
    flow_mock.reset()
    yield


@pytest.fixture(scope="module", params=[False, True], ids=["mode_b", "mode_a"])
def envoy(request, envoy_factory, flow_mock: MockServer) -> Envoy:
    return envoy_factory(
        plugin_config=CONFIG,
        clusters={"mock_llm": cluster_with_trailers(flow_mock)},
        allow_on_headers_stop_iteration=request.param,
    )


_ids = itertools.count(1)


def new_id() -> str:
    return f"flow-ends-{os.getpid()}-{next(_ids)}"


def log_of(envoy: Envoy, request_id: str) -> dict[str, Any]:
    """The access-log entry of the request sent with `x-request-id: request_id`."""
    deadline = time.monotonic() + 5
    while True:
        entries = [e for e in envoy.access_log() if e.get("request_id") == request_id]
        if entries or time.monotonic() > deadline:
            assert entries, f"no access-log entry for {request_id}"
            return entries[-1]
        time.sleep(0.05)


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


def h2_post(
    port: int, path: str, body: bytes, *, trailers: list[tuple[str, str]], request_id: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """POST over cleartext HTTP/2 (prior knowledge): HEADERS, DATA in two frames, none
    with END_STREAM, then a trailers HEADERS frame that ends the stream."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [
            (":method", "POST"),
            (":path", path),
            (":scheme", "http"),
            (":authority", "gw.local"),
            ("content-type", "application/json"),
            ("authorization", "Bearer client-key"),
            ("x-request-id", request_id or new_id()),
        ],
    )
    half = len(body) // 2
    conn.send_data(sid, body[:half])
    conn.send_data(sid, body[half:])
    conn.send_headers(sid, trailers, end_stream=True)
    sock.sendall(conn.data_to_send())
    status, headers, out = 0, {}, bytearray()
    ended = False
    try:
        while not ended:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    headers = dict(event.headers)
                    status = int(headers[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    out += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    ended = True
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    return status, headers, bytes(out)


# ------------------------------------------------------------------ item 1: trailers


def test_request_ending_with_trailers_is_guarded_keyed_and_accounted(envoy: Envoy, flow_mock: MockServer):
    rid = new_id()
    body = json.dumps(chat(f"my ssn is {SSN}")).encode()
    status, headers, answer = h2_post(
        envoy.port, "/guarded/v1/chat/completions", body, trailers=[("x-end", "1")], request_id=rid
    )
    assert status == 200, answer
    upstream = flow_mock.requests[-1]
    assert SSN not in upstream.text, upstream.text
    assert "<SSN>" in upstream.text
    assert upstream.headers["authorization"] == f"Bearer {SERVER_KEY}"
    entry = log_of(envoy, rid)
    assert entry["aigate_total_tokens"] == "18", entry


def test_request_ending_with_trailers_is_charged_to_the_budget(envoy: Envoy, flow_mock: MockServer):
    # Budget 60, each answer 18 tokens: the fourth request finds it spent.
    body = json.dumps(chat("hi")).encode()
    statuses = [h2_post(envoy.port, "/budget/v1/chat/completions", body, trailers=[("x-end", "1")])[0] for _ in range(5)]
    assert statuses[:4] == [200] * 4
    assert statuses[4] == 429, statuses


def test_answer_ending_with_trailers_is_masked_and_accounted(envoy: Envoy, flow_mock: MockServer):
    rid = new_id()
    answer = {
        "id": "chatcmpl-t",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"it is {SSN}"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23},
    }
    raw = json.dumps(answer).encode()
    flow_mock.enqueue_reply(
        Reply(200, headers={"content-type": "application/json"}, chunks=[raw[:50], raw[50:]], trailers={"x-checksum": "abc"})
    )
    r = httpx.post(envoy.base_url + "/guarded/v1/chat/completions", json=chat("hi"), timeout=10, headers={"x-request-id": rid})
    assert r.status_code == 200, r.text
    assert SSN not in r.text
    assert r.json()["choices"][0]["message"]["content"] == "it is <SSN>"
    assert log_of(envoy, rid)["aigate_total_tokens"] == "23"


def stream_chunk(content: str) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }


STREAM_USAGE = {**stream_chunk(""), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}


def streamed_text(body: str) -> str:
    out = ""
    for line in body.splitlines():
        if line.startswith("data: {"):
            data = json.loads(line[6:])
            for choice in data.get("choices") or []:
                out += choice["delta"].get("content") or ""
    return out


def test_stream_ending_with_trailers_is_masked_and_accounted(envoy: Envoy, flow_mock: MockServer):
    rid = new_id()
    stream = sse_event(stream_chunk(f"ssn {SSN}")) + sse_event(stream_chunk(" ok")) + sse_event(STREAM_USAGE)
    stream += b"data: [DONE]\n\n"
    flow_mock.enqueue_reply(
        Reply(200, headers={"content-type": "text/event-stream"}, chunks=[stream[:60], stream[60:]], trailers={"x-end": "1"})
    )
    r = httpx.post(
        envoy.base_url + "/guarded/v1/chat/completions", json=chat("hi", stream=True), timeout=10, headers={"x-request-id": rid}
    )
    assert r.status_code == 200
    assert streamed_text(r.text) == "ssn <SSN> ok", r.text
    assert log_of(envoy, rid)["aigate_total_tokens"] == "13"


def test_stream_ended_by_trailers_with_text_held_back_fails_clearly(envoy: Envoy, flow_mock: MockServer):
    """No [DONE]: only the trailers end the stream, while the masker holds back "12" (it may
    begin an SSN). Envoy lets nothing be added to the body from the trailers callback, so
    the stream must end in an error the client sees, not silently short."""
    rid = new_id()
    stream = sse_event(stream_chunk(f"ssn {SSN}")) + sse_event(STREAM_USAGE) + sse_event(stream_chunk(" ok 12"))
    flow_mock.enqueue_reply(
        Reply(200, headers={"content-type": "text/event-stream"}, chunks=[stream[:60], stream[60:]], trailers={"x-end": "1"})
    )
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream(
            "POST",
            envoy.base_url + "/guarded/v1/chat/completions",
            json=chat("hi", stream=True),
            timeout=10,
            headers={"x-request-id": rid},
        ) as r:
            for piece in r.iter_raw():
                received += piece
    assert SSN.encode() not in received and b"6789" not in received, received
    entry = log_of(envoy, rid)
    assert entry["aigate_outcome"] == "stream_end_undeliverable", entry
    assert entry["aigate_total_tokens"] == "13", entry


# ------------------------------------------------------------------ item 16: bodiless errors


@pytest.mark.parametrize("status", [401, 429, 503])
def test_upstream_error_without_a_body_becomes_an_error_object(envoy: Envoy, flow_mock: MockServer, status: int):
    rid = new_id()
    flow_mock.enqueue(status, b"", {"content-type": "application/json"})
    r = httpx.post(envoy.base_url + "/v1/chat/completions", json=chat("hi"), timeout=10, headers={"x-request-id": rid})
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == f"upstream_{status}", r.text
    assert log_of(envoy, rid)["aigate_outcome"] == f"upstream_{status}"


def test_upstream_error_with_a_text_body_becomes_an_error_object(envoy: Envoy, flow_mock: MockServer):
    flow_mock.enqueue(502, "upstream connect error", {"content-type": "text/plain"})
    r = httpx.post(envoy.base_url + "/v1/chat/completions", json=chat("hi"), timeout=10)
    assert r.status_code == 502
    assert r.json()["error"]["message"] == "upstream connect error"


# ------------------------------------------------------------------ item 7: gzip streams


def openai_stream(text: str, usage: tuple[int, int]) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    out = b""
    for word in text.split(" "):
        out += sse_event({**chunk, "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]})
    out += sse_event(
        {**chunk, "choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}
    )
    return out + b"data: [DONE]\n\n"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/guarded/v1/chat/completions"])
def test_gzip_event_stream_reaches_the_client_decoded(envoy: Envoy, flow_mock: MockServer, path: str):
    rid = new_id()
    zipped = gzip.compress(openai_stream("a compressed answer", (5, 3)))
    pieces = [zipped[i : i + 13] for i in range(0, len(zipped), 13)]
    flow_mock.enqueue(200, headers={"content-type": "text/event-stream", "content-encoding": "gzip"}, chunks=pieces)
    with httpx.stream(
        "POST", envoy.base_url + path, json=chat("hi", stream=True), headers={"accept-encoding": "identity", "x-request-id": rid}, timeout=10
    ) as r:
        assert r.status_code == 200
        assert "content-encoding" not in r.headers
        text = b"".join(r.iter_raw()).decode()
    assert "compressed" in text and text.endswith("data: [DONE]\n\n"), text
    assert log_of(envoy, rid)["aigate_total_tokens"] == "8"


# ------------------------------------------------------------------ item 17: in-band errors


def test_stream_ending_in_an_error_event_is_a_failure(envoy: Envoy, flow_mock: MockServer):
    rid = new_id()
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]
    stream = b"".join(sse_event(data, event=name) for name, data in events)
    flow_mock.enqueue(200, headers={"content-type": "text/event-stream"}, chunks=[stream])
    before = envoy.metric_total("aigate.errors_total", {"route": "claude", "code": "upstream_529"})
    r = httpx.post(
        envoy.base_url + "/anthropic/v1/chat/completions",
        json={"model": "claude-x", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
        headers={"x-request-id": rid},
    )
    assert "Overloaded" in r.text
    assert log_of(envoy, rid)["aigate_outcome"] == "upstream_529"
    assert envoy.metric_total("aigate.errors_total", {"route": "claude", "code": "upstream_529"}) == before + 1


# ------------------------------------------------------------------ item 11: hang-up


def test_client_gone_before_the_usage_event_is_charged(envoy_factory, flow_mock: MockServer):
    config = {
        "routes": [
            route(
                "hangup",
                "/",
                limits={"tokens": [{"name": "all", "key": {"fixed": "all"}, "limit": 100, "window_ms": 3_600_000}]},
            )
        ]
    }
    envoy = envoy_factory(plugin_config=config, clusters={"mock_llm": flow_mock})
    rid = new_id()
    content = "word " * 200  # about 250 tokens by estimate: over the budget of 100
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    first = sse_event({**chunk, "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]})
    usage = sse_event({**chunk, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 50, "total_tokens": 55}})
    flow_mock.enqueue(200, headers={"content-type": "text/event-stream"}, chunks=[first, usage, b"data: [DONE]\n\n"], chunk_delay_s=3)
    with httpx.stream(
        "POST", envoy.base_url + "/v1/chat/completions", json=chat("hi", stream=True), timeout=10, headers={"x-request-id": rid}
    ) as r:
        assert r.status_code == 200
        for piece in r.iter_raw():
            if b"word" in piece:
                break  # hang up after the content, before the usage event
    log_of(envoy, rid)
    r = httpx.post(envoy.base_url + "/v1/chat/completions", json=chat("again"), timeout=10)
    assert r.status_code == 429, r.text


# ------------------------------------------------------------------ item 12: large answers


def test_usage_at_the_end_of_a_10_mb_answer_is_read(envoy: Envoy, flow_mock: MockServer):
    rid = new_id()
    logprob = {"token": "abc", "logprob": -0.25, "bytes": [97, 98, 99], "top_logprobs": []}
    count = 10 * 1024 * 1024 // len(json.dumps(logprob))
    answer = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "logprobs": {"content": [logprob] * count},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 140000, "total_tokens": 140009},
    }
    raw = json.dumps(answer).encode()
    assert len(raw) > 10 * 1024 * 1024
    flow_mock.enqueue(200, raw, {"content-type": "application/json"})
    r = httpx.post(envoy.base_url + "/v1/chat/completions", json=chat("hi"), timeout=30, headers={"x-request-id": rid})
    assert r.status_code == 200
    assert len(r.content) == len(raw)
    assert log_of(envoy, rid)["aigate_total_tokens"] == "140009"
