"""`make bench` stays runnable: its Envoy bootstrap (plain, do-nothing Wasm and aigate
listeners) loads in Envoy with its plugin configs (`envoy --mode validate` loads the Wasm
modules and runs the filter's on_configure), its upstream answers as the benchmark expects,
and its request bodies have the advertised sizes. No timing is measured here.
"""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from integration.bench import config, workload
from integration.bench.run import Placement, Upstream
from integration.harness import envoy_binary, wasm_path


def _validate(tmp_path: Path, route: Path) -> subprocess.CompletedProcess[str]:
    if not config.NOOP_WASM.exists():
        pytest.fail(f"{config.NOOP_WASM} is missing: run `make bench-tools`", pytrace=False)
    bootstrap = config.render(upstream_port=1, route_config=config.load_route_config(route), aigate_wasm=wasm_path())
    path = tmp_path / f"{route.stem}.json"
    path.write_text(json.dumps(bootstrap))
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "info"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bench_bootstrap_loads_with_the_guardless_route(tmp_path: Path, wasm: Path) -> None:
    result = _validate(tmp_path, config.ROUTE_NO_GUARDS)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "configured 1 route(s)" in log
    listeners = [listener["name"] for listener in json.loads((tmp_path / "route-noguards.json").read_text())["static_resources"]["listeners"]]
    assert listeners == ["main", "noop", "filter"]


def test_bench_bootstrap_loads_with_the_full_route(tmp_path: Path, wasm: Path) -> None:
    result = _validate(tmp_path, config.ROUTE_FULL)
    log = result.stdout + result.stderr
    if result.returncode != 0 and "not supported by this build" in log:
        pytest.skip("this build has no guards yet; make bench measures route-noguards.json")
    assert result.returncode == 0, log[-3000:]
    assert "configured 1 route(s)" in log


def test_route_configs_differ_only_by_guards() -> None:
    full = config.load_route_config(config.ROUTE_FULL)
    bare = config.load_route_config(config.ROUTE_NO_GUARDS)
    guards = full["routes"][0].pop("guards")
    assert full == bare
    for side in ("request", "response"):
        assert guards[side] == [
            {"regex": {"builtins": ["ssn", "credit_card", "email", "phone_number", "ipv4"], "action": "mask"}}
        ]


def test_bench_bodies_have_their_sizes() -> None:
    for scenario in workload.SCENARIOS:
        body = workload.body(scenario)
        assert len(body) == scenario.body_bytes, scenario
        parsed = json.loads(body)
        assert parsed["messages"][-1]["role"] == "user"
        assert parsed.get("stream", False) is scenario.stream
        assert b"@example.com" in body  # something for a regex guard to mask


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    if not config.UPSTREAM_BIN.exists():
        pytest.fail(f"{config.UPSTREAM_BIN} is missing: run `make bench-tools`", pytrace=False)
    server = Upstream(Placement(pin=False))
    yield server
    server.stop()


def _post(port: int, headers: dict[str, str], chunked_body: bytes | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = chunked_body if chunked_body is not None else b'{"messages":[]}'
    if chunked_body is not None:
        conn.putrequest("POST", "/v1/chat/completions")
        for name, value in {**headers, "transfer-encoding": "chunked"}.items():
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    else:
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
    return conn.getresponse()


def test_bench_upstream_answers_json_and_streams(upstream: Upstream) -> None:
    answer = _post(upstream.port, {"content-type": "application/json"}, chunked_body=b'{"messages":[]}')
    assert answer.status == 200
    completion = json.loads(answer.read())
    assert completion["usage"]["total_tokens"] == 271
    assert "@example.com" in completion["choices"][0]["message"]["content"]

    stream = _post(upstream.port, {"x-bench-stream": "5"})
    assert stream.status == 200
    assert stream.getheader("content-type") == "text/event-stream"
    events = [e for e in stream.read().decode().split("\n\n") if e]
    assert len(events) == 7  # 5 content events, the usage-only event, [DONE]
    assert json.loads(events[0].removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
    assert json.loads(events[5].removeprefix("data: "))["usage"]["completion_tokens"] == 5
    assert events[6] == "data: [DONE]"


def test_bench_messages_route_loads_and_differs_only_by_provider(tmp_path: Path, wasm: Path) -> None:
    result = _validate(tmp_path, config.ROUTE_MESSAGES)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "configured 2 route(s)" in log
    messages, chat = config.load_route_config(config.ROUTE_MESSAGES)["routes"]
    assert chat == config.load_route_config(config.ROUTE_FULL)["routes"][0]
    assert messages["guards"] == chat["guards"]
    assert messages["provider"]["kind"] == "anthropic"
    assert messages["match"] == {"route_name": "bench", "path_prefix": "/v1/messages"}


def test_bench_messages_bodies_have_their_sizes() -> None:
    for scenario in workload.MESSAGES_SCENARIOS:
        body = workload.body(scenario)
        assert len(body) == scenario.body_bytes, scenario
        parsed = json.loads(body)
        assert parsed["messages"][-1]["role"] == "user"
        assert {m["role"] for m in parsed["messages"]} <= {"user", "assistant"}
        assert parsed["max_tokens"] > 0 and isinstance(parsed["system"], str)
        assert parsed.get("stream", False) is scenario.stream
        assert scenario.path == "/v1/messages"
        assert b"@example.com" in body


def test_bench_upstream_answers_messages(upstream: Upstream) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=10)
    conn.request("POST", "/v1/messages?beta=true", body=b"{}", headers={"content-type": "application/json"})
    answer = conn.getresponse()
    message = json.loads(answer.read())
    assert message["type"] == "message" and message["usage"] == {"input_tokens": 250, "output_tokens": 21}
    conn.request("POST", "/v1/messages", body=b"{}", headers={"x-bench-stream": "3"})
    stream = conn.getresponse()
    assert stream.getheader("content-type") == "text/event-stream"
    events = [e for e in stream.read().decode().split("\n\n") if e]
    names = [e.split("\n")[0].removeprefix("event: ") for e in events]
    assert names == ["message_start", "content_block_start"] + ["content_block_delta"] * 3 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert json.loads(events[-2].split("data: ")[1])["usage"]["output_tokens"] == 3
