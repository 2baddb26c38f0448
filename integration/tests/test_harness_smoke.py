"""The harness itself, with a plain Envoy (no Wasm filter) in front of the mock.

If these fail, the filter tests cannot be trusted: fix the harness first.
"""

from __future__ import annotations

import json
import socket

import anthropic
import httpx
import openai
import pytest

from integration.harness import Cluster, Envoy, render_bootstrap, start_envoy, wasm_path
from integration.harness.envoy import EnvoyStartError, envoy_binary
from integration.mocks import MockServer, sse

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock: MockServer) -> Envoy:
    return envoy_factory(with_filter=False, clusters={"mock_llm": mock})


def test_curl_style_post(envoy: Envoy, mock: MockServer) -> None:
    r = httpx.post(
        envoy.base_url + "/v1/chat/completions",
        json=CHAT,
        headers={"authorization": "Bearer sk-client", "x-user-id": "u1"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    assert body["choices"][0]["message"]["content"] == "Hello from mock: hi there"
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}

    req = mock.last
    assert req.method == "POST"
    assert req.path == "/v1/chat/completions"
    assert req.json == CHAT
    assert json.loads(req.body) == CHAT
    assert req.headers["authorization"] == "Bearer sk-client"
    assert req.headers["x-user-id"] == "u1"
    assert "x-request-id" in req.headers  # added by Envoy: the request went through it

    entry = envoy.wait_access_log(1)[-1]
    assert entry["route_name"] == "llm"
    assert entry["upstream_cluster"] == "mock_llm"
    assert entry["status"] == 200
    assert entry["aigate_route"] is None  # no filter here


def test_openai_sdk(envoy: Envoy, mock: MockServer) -> None:
    client = openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="sk-anything", max_retries=0)
    resp = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "ping"}])
    assert resp.choices[0].message.content == "Hello from mock: ping"
    assert resp.model == "gpt-4o"
    assert resp.usage is not None and resp.usage.total_tokens == 18
    assert mock.last.headers["authorization"] == "Bearer sk-anything"
    assert mock.last.json["model"] == "gpt-4o"


def test_openai_sdk_stream(envoy: Envoy, mock: MockServer) -> None:
    client = openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="sk-anything", max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "be terse"}, {"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "Hello from mock: stream me"
    assert finish == "stop"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 7, 18)
    assert mock.last.json["stream"] is True


def test_stream_reaches_client_in_pieces(envoy: Envoy, mock: MockServer) -> None:
    """The mock splits SSE at awkward offsets; Envoy passes the pieces on as they come."""
    pieces: list[bytes] = []
    with httpx.stream(
        "POST", envoy.base_url + "/v1/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        pieces = list(r.iter_raw())
    assert len(pieces) > 3, "the stream arrived in one piece: chunked writes are being coalesced"
    events = sse.parse_sse(b"".join(pieces))
    assert events[-1]["data"] == "[DONE]"
    deltas = [json.loads(e["data"])["choices"][0]["delta"].get("content") or "" for e in events[:-1]]
    assert "".join(deltas) == "Hello from mock: hi there"
    # at least one piece ends in the middle of an event
    assert any(not p.endswith(b"\n\n") for p in pieces)


def test_anthropic_sdk_native(envoy: Envoy, mock: MockServer) -> None:
    """The Anthropic mock speaks well enough for the real SDK (non-stream, stream, tools)."""
    client = anthropic.Anthropic(base_url=envoy.base_url, api_key="sk-ant-test", max_retries=0)
    msg = client.messages.create(model="claude-mock-1", max_tokens=64, messages=[{"role": "user", "content": "yo"}])
    assert msg.content[0].type == "text" and msg.content[0].text == "Hello from mock: yo"
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (11, 7)
    # the 2.x SDK sends the key as `authorization: Bearer`, older ones as `x-api-key`
    assert "sk-ant-test" in (mock.last.headers.get("x-api-key") or mock.last.headers.get("authorization", ""))
    assert mock.last.headers["anthropic-version"]

    with client.messages.stream(
        model="claude-mock-1", max_tokens=64, messages=[{"role": "user", "content": "streamed"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from mock: streamed"
    assert final.usage.output_tokens == 7 and final.usage.input_tokens == 11

    tools = [
        {
            "name": "get_weather",
            "description": "weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    with client.messages.stream(
        model="claude-mock-1", max_tokens=64, tools=tools, messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[-1]
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "mock"}


def test_gemini_native(envoy: Envoy, mock: MockServer) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "gem"}]}]}
    r = httpx.post(envoy.base_url + "/v1beta/models/gemini-2.5-flash:generateContent", json=body)
    assert r.status_code == 200, r.text
    cand = r.json()["candidates"][0]
    assert cand["content"]["parts"][0]["text"] == "Hello from mock: gem"
    assert cand["finishReason"] == "STOP"
    assert r.json()["usageMetadata"] == {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18}

    r = httpx.post(envoy.base_url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", json=body)
    assert r.status_code == 200
    assert b"\r\n\r\n" in r.content  # Gemini's CRLF event separator
    chunks = [json.loads(e["data"]) for e in sse.parse_sse(r.content)]
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "Hello from mock: gem"
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] == 18
    assert mock.last.query == {"alt": ["sse"]}


def test_scripted_reply_and_error_passthrough(envoy: Envoy, mock: MockServer) -> None:
    mock.enqueue(429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"retry-after": "7"})
    r = httpx.post(envoy.base_url + "/v1/chat/completions", json=CHAT)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7"
    assert r.json()["error"]["message"] == "slow down"
    # the script is used up: the next request gets the default answer
    r = httpx.post(envoy.base_url + "/v1/chat/completions", json=CHAT)
    assert r.status_code == 200


def test_upstream_reset_gives_503(envoy: Envoy, mock: MockServer) -> None:
    mock.enqueue(abort=True)
    r = httpx.post(envoy.base_url + "/v1/chat/completions", json=CHAT)
    assert r.status_code == 503
    assert len(mock.requests) == 1


def test_stats(envoy: Envoy, mock: MockServer) -> None:
    before = envoy.counter("cluster.mock_llm.upstream_rq_total")
    httpx.post(envoy.base_url + "/v1/chat/completions", json=CHAT)
    stats = envoy.stats()
    assert stats["cluster.mock_llm.upstream_rq_total"] == before + 1
    assert isinstance(stats["http.ingress.downstream_rq_total"], int)
    assert envoy.counter("no.such.stat") == 0
    assert "envoy_cluster_upstream_rq_total" in envoy.stats_prometheus()
    assert "starting main dispatch loop" in envoy.log_text()


def test_route_timeout_and_http2_cluster(envoy_factory, mock: MockServer) -> None:
    """A second config in the same module: a short route timeout, a hanging upstream,
    and an HTTP/2 cluster (as gRPC services will need) that Envoy accepts."""
    envoy = envoy_factory(
        with_filter=False,
        clusters={"mock_llm": mock, "grpc_svc": Cluster(mock.port, http2=True)},
        route_timeout_s=0.5,
        concurrency=1,
    )
    assert envoy_factory(
        with_filter=False,
        clusters={"mock_llm": mock, "grpc_svc": Cluster(mock.port, http2=True)},
        route_timeout_s=0.5,
        concurrency=1,
    ) is envoy, "identical configs share one Envoy"
    mock.enqueue(200, CHAT, delay_s=30)
    r = httpx.post(envoy.base_url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert r.status_code == 504
    entry = envoy.wait_access_log(1)[-1]
    assert entry["flags"] == "UT"
    assert envoy.counter("cluster.grpc_svc.upstream_cx_total") == 0


def test_rejected_config(expect_rejected, mock: MockServer) -> None:
    def bad(bootstrap: dict) -> None:
        bootstrap["static_resources"]["listeners"][0]["no_such_field"] = 1

    result = expect_rejected(with_filter=False, clusters={"mock_llm": mock}, patch=bad)
    assert result.rejected, result.log[-2000:]
    assert result.returncode == 1
    assert "no_such_field" in result.log


def test_start_failure_raises_with_log(mock: MockServer, tmp_path) -> None:
    with pytest.raises(EnvoyStartError) as info:
        start_envoy(with_filter=False, clusters={"mock_llm": mock}, upstream_cluster="missing", workdir=tmp_path)
    assert info.value.returncode == 1
    assert "missing" in str(info.value)  # the log tail is in the message


def test_render_wasm_filter() -> None:
    """The filter part of the bootstrap, without starting Envoy."""
    b = render_bootstrap(
        clusters={"mock_llm": 1234, "guard": Cluster(5678, http2=True)},
        plugin_config={"routes": [{"name": "chat"}]},
        env={"OPENAI_API_KEY": "sk-x"},
        allow_on_headers_stop_iteration=True,
        wasm="/x/aigate.wasm",
        route_extra={"idle_timeout": "30s"},
    )
    hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm_filter, router = hcm["http_filters"]
    assert router["name"] == "envoy.filters.http.router"
    cfg = wasm_filter["typed_config"]["config"]
    assert wasm_filter["typed_config"]["@type"] == "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
    assert cfg["root_id"] == "aigate" and cfg["vm_config"]["vm_id"] == "aigate"
    assert cfg["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert cfg["vm_config"]["code"]["local"]["filename"] == "/x/aigate.wasm"
    assert cfg["vm_config"]["environment_variables"]["key_values"] == {"OPENAI_API_KEY": "sk-x"}
    assert cfg["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    assert json.loads(cfg["configuration"]["value"]) == {"routes": [{"name": "chat"}]}
    assert cfg["allow_on_headers_stop_iteration"] is True
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["name"] == "llm" and route["route"] == {"cluster": "mock_llm", "timeout": "300s", "idle_timeout": "30s"}
    clusters = {c["name"]: c for c in b["static_resources"]["clusters"]}
    assert "typed_extension_protocol_options" in clusters["guard"]
    assert "typed_extension_protocol_options" not in clusters["mock_llm"]


def test_envoy_binary_is_1_40() -> None:
    import subprocess

    out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    assert "/1.40." in out


def test_mock_cli_runs(tmp_path) -> None:
    """`python -m integration.mocks` (what `make run` and docker-compose start) serves."""
    import subprocess
    import sys
    import time

    from integration.harness import REPO_ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "integration.mocks", "--port", str(port), "--quiet"], cwd=REPO_ROOT, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT)
                break
            except httpx.ConnectError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert r.json()["choices"][0]["message"]["content"] == "Hello from mock: hi there"
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0


def _validate(path: str, tmp_path, replace: dict[str, str]) -> None:
    import subprocess

    from integration.harness import REPO_ROOT

    text = (REPO_ROOT / path).read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    cfg = tmp_path / "envoy.yaml"
    cfg.write_text(text)
    out = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(cfg), "-l", "warning"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and " OK" in out.stdout + out.stderr, out.stdout + out.stderr


def test_make_run_config_validates(tmp_path) -> None:
    """envoy/envoy.yaml is accepted by Envoy and by the filter's on_configure
    (validate mode loads the Wasm and runs on_configure)."""
    if not wasm_path().exists():
        pytest.skip("filter not built")
    _validate("envoy/envoy.yaml", tmp_path, {"target/wasm32-wasip1/release/aigate.wasm": str(wasm_path())})


def test_docker_config_validates(tmp_path) -> None:
    if not wasm_path().exists():
        pytest.skip("filter not built")
    _validate("envoy/envoy-docker.yaml", tmp_path, {"/etc/envoy/aigate.wasm": str(wasm_path())})


def test_docker_compose_parses() -> None:
    yaml = pytest.importorskip("yaml")
    from integration.harness import REPO_ROOT

    doc = yaml.safe_load((REPO_ROOT / "integration/docker-compose.yml").read_text())
    assert doc["services"]["envoy"]["image"] == "envoyproxy/envoy:v1.40-latest"
    mounts = doc["services"]["envoy"]["volumes"]
    for m in mounts:
        src = m.split(":", 1)[0]
        assert (REPO_ROOT / "integration" / src).resolve().parent.exists(), m
