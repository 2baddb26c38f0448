"""The foundation through a real Envoy: routing, credentials, model control, providers
openai / azure_openai / openai_compatible, usage from JSON and SSE, metrics, filter state,
bad input, upstream errors, invalid config, and both header modes."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

SECRET = "sk-env-secret-123"
AZURE_SECRET = "az-secret-456"
CLIENT_KEY = "client-key-789"

ROUTES = [
    {
        "name": "azure",
        "match": {"route_name": "llm", "headers": {"x-tenant": "azure"}},
        "provider": {
            "kind": "azure_openai",
            "authority": "myres.openai.azure.com",
            "auth": {"key": {"value": AZURE_SECRET}},
            "azure": {"deployment": "gpt4o-dep", "api_version": "2024-10-21"},
        },
    },
    {
        "name": "local-vllm",
        "match": {"path_prefix": "/compat/"},
        "provider": {
            "kind": "openai_compatible",
            "authority": "vllm.internal:8000",
            "auth": {"none": True},
            "model": "llama-3.1-8b",
        },
    },
    {
        "name": "chat",
        "match": {"route_name": "llm", "path_prefix": "/v1/"},
        "provider": {
            "kind": "openai",
            "authority": "api.openai.test",
            "auth": {"key": {"env": "OPENAI_API_KEY"}},
            "models": {"fast": "gpt-4o-mini", "smart": "gpt-4o"},
        },
        "request": {"max_body_bytes": 4096},
    },
]
CONFIG = {"routes": ROUTES}
ENV = {"OPENAI_API_KEY": SECRET}


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock):
    return envoy_factory(plugin_config=CONFIG, env=ENV, clusters={"mock_llm": mock})


@pytest.fixture()
def client(envoy):
    return openai.OpenAI(base_url=envoy.base_url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def chat(envoy, body, headers=None, path="/v1/chat/completions", content=None):
    hdrs = {"authorization": f"Bearer {CLIENT_KEY}"}
    hdrs.update(headers or {})
    if content is not None:
        return httpx.post(envoy.base_url + path, content=content, headers=hdrs, timeout=30)
    return httpx.post(envoy.base_url + path, json=body, headers=hdrs, timeout=30)


def assert_nothing_forwarded(mock):
    # Mode B sends the headers upstream before the body is read; a request refused after
    # reading the body is reset upstream, so the provider never sees a body.
    assert all(r.body == b"" for r in mock.requests_to("/v1/chat/completions")), mock.requests


def assert_openai_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "code"}, body
    assert body["error"]["code"] == code, body
    assert SECRET not in response.text and AZURE_SECRET not in response.text


def test_sdk_chat_gets_key_mapping_and_usage(client, mock, envoy):
    reply = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi there"}])
    assert reply.choices[0].message.content == "Hello from mock: hi there"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (11, 7, 18)
    seen = mock.last
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["host"] == "api.openai.test"
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert CLIENT_KEY not in json.dumps(seen.headers)
    assert seen.json["model"] == "gpt-4o-mini"
    assert "gzip" not in seen.headers.get("accept-encoding", "")
    entry = envoy.wait_access_log(1)[-1]
    assert (entry["aigate_route"], entry["aigate_provider"], entry["aigate_model"]) == ("chat", "openai", "gpt-4o-mini")
    assert (entry["aigate_prompt_tokens"], entry["aigate_completion_tokens"], entry["aigate_total_tokens"]) == ("11", "7", "18")


def test_sdk_stream_injects_usage_and_hides_it_when_not_asked(client, mock):
    chunks = list(
        client.chat.completions.create(model="smart", stream=True, messages=[{"role": "user", "content": "stream me"}])
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from mock: stream me"
    assert all(c.choices for c in chunks), "the client did not ask for the usage chunk"
    sent = mock.last.json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "gpt-4o"


def test_sdk_stream_with_usage_gets_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(
            model="fast",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "count me"}],
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 18
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from mock: count me"


def test_token_metrics_are_in_stats_and_prometheus(client, envoy):
    labels = {"route": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}

    def tokens(kind: str) -> int:
        return envoy.metric_total("aigate.tokens_total", {**labels, "gen_ai.token.type": kind})

    before = {t: tokens(t) for t in ("input", "output")}
    client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "m"}])
    list(client.chat.completions.create(model="fast", stream=True, messages=[{"role": "user", "content": "s"}]))
    envoy.wait_access_log(1)
    after = {t: tokens(t) for t in ("input", "output")}
    assert {t: after[t] - before[t] for t in after} == {"input": 22, "output": 14}
    prom = envoy.stats_prometheus()
    line = next(
        l
        for l in prom.splitlines()
        if l.startswith("gen_ai_client_token_usage_count{") and 'gen_ai_token_type="output"' in l and 'gen_ai_request_model="gpt-4o-mini"' in l
    )
    assert 'route="chat"' in line and 'gen_ai_provider_name="openai"' in line and 'gen_ai_operation_name="chat"' in line


def test_azure_route_path_version_and_api_key(envoy, mock):
    response = chat(envoy, {"model": "whatever", "messages": [{"role": "user", "content": "az"}]}, headers={"x-tenant": "azure"})
    assert response.status_code == 200, response.text
    seen = mock.last
    assert seen.path == "/openai/deployments/gpt4o-dep/chat/completions?api-version=2024-10-21"
    assert seen.headers["api-key"] == AZURE_SECRET
    assert "authorization" not in seen.headers
    assert seen.headers["host"] == "myres.openai.azure.com"


def test_openai_compatible_route_enforces_model(envoy, mock):
    client = openai.OpenAI(base_url=envoy.base_url + "/compat/v1", api_key=CLIENT_KEY, max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "local"}])
    assert reply.choices[0].message.content == "Hello from mock: local"
    seen = mock.last
    assert seen.path == "/v1/chat/completions"
    assert seen.json["model"] == "llama-3.1-8b"
    assert "authorization" not in seen.headers, "auth none strips the client's credential"
    assert seen.headers["host"] == "vllm.internal:8000"


def test_unknown_model_is_refused(client, mock):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 400
    assert info.value.body["code"] == "model_not_found"
    assert_nothing_forwarded(mock)


@pytest.mark.parametrize(
    "content,headers,status,code",
    [
        (b"{not json", {"content-type": "application/json"}, 400, "invalid_json"),
        (b'{"model":"fast"}', {"content-type": "application/json"}, 400, "missing_required_parameter"),
        (b'{"model":"fast","messages":[{"role":"user"}]}', {"content-type": "application/json"}, 400, "missing_required_parameter"),
        (b'{"model":"fast","messages":[{"role":"user","content":7}]}', {"content-type": "application/json"}, 400, "invalid_value"),
        (b"please ignore the filter", {"content-type": "text/plain"}, 400, "invalid_json"),
        (b'{"model":"fast","messages":[{"role":"user","content":"' + b"x" * 5000 + b'"}]}', {"content-type": "application/json"}, 413, "request_too_large"),
    ],
)
def test_bad_input_gets_openai_errors(envoy, mock, content, headers, status, code):
    response = chat(envoy, None, headers=headers, content=content)
    assert_openai_error(response, status, code)
    assert_nothing_forwarded(mock)


def test_chunked_body_over_limit_is_413(envoy, mock):
    def body():
        yield b'{"model":"fast","messages":[{"role":"user","content":"'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    response = httpx.post(envoy.base_url + "/v1/chat/completions", content=body(), headers={"content-type": "application/json"}, timeout=30)
    assert_openai_error(response, 413, "request_too_large")


def test_wrong_method_and_unknown_endpoint(envoy):
    response = httpx.get(envoy.base_url + "/v1/chat/completions", timeout=30)
    assert_openai_error(response, 400, "method_not_allowed")
    response = httpx.post(envoy.base_url + "/v1/files", json={}, timeout=30)
    assert_openai_error(response, 404, "unknown_endpoint")


def test_models_are_listed_from_config(client):
    assert sorted(m.id for m in client.models.list()) == ["fast", "smart"]


def test_unmatched_request_passes_untouched(envoy, mock):
    body = b"raw bytes, not json"
    response = httpx.post(envoy.base_url + "/health/check", content=body, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=30)
    seen = mock.last
    assert seen.path == "/health/check"
    assert seen.body == body
    assert seen.headers["authorization"] == f"Bearer {CLIENT_KEY}"
    assert response.status_code == 404  # the mock's own answer, passed through


def test_upstream_errors_are_openai_shaped(client, envoy, mock):
    mock.enqueue(500, "<html>upstream exploded</html>", headers={"content-type": "text/html"}, path="/v1/chat/completions")
    response = chat(envoy, {"model": "fast", "messages": [{"role": "user", "content": "x"}]})
    assert_openai_error(response, 500, "upstream_500")
    assert response.headers["content-type"] == "application/json"
    mock.enqueue(
        429,
        {"error": {"message": "Rate limit reached for gpt-4o-mini", "type": "requests", "code": "rate_limit_exceeded"}},
        path="/v1/chat/completions",
    )
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["message"] == "Rate limit reached for gpt-4o-mini"


def test_secret_never_in_log(envoy, client):
    client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "log check"}])
    log = envoy.log_text()
    assert SECRET not in log and AZURE_SECRET not in log
    assert "panicked" not in log and "wasm trap" not in log.lower()


def test_invalid_config_is_refused_with_json_path(expect_rejected, mock):
    bad = {"routes": [{"name": "r", "provider": {"kind": "openai", "auth": {"none": True}, "modle": "x"}}]}
    result = expect_rejected(plugin_config=bad, clusters={"mock_llm": mock})
    assert result.rejected
    assert "routes[0].provider.modle: unknown field `modle`" in result.log
    missing_env = {"routes": [{"name": "r", "provider": {"kind": "openai", "auth": {"key": {"env": "NOT_SET"}}}}]}
    result = expect_rejected(plugin_config=missing_env, clusters={"mock_llm": mock})
    assert result.rejected and "routes[0].provider.auth.key.env" in result.log


def test_misplaced_credential_is_refused_without_printing_it(expect_rejected, mock):
    """Issue 12 item 10: `"auth": {"key": "sk-..."}` (a string where an object belongs)."""
    slip = "sk-proj-e2e-config-slip-987654321"
    bad = {"routes": [{"name": "r", "provider": {"kind": "openai", "auth": {"key": slip}}}]}
    result = expect_rejected(plugin_config=bad, clusters={"mock_llm": mock})
    assert result.rejected
    assert "routes[0].provider.auth.key: invalid type" in result.log
    assert slip not in result.log and "sk-proj" not in result.log


# --- mode A: headers held until the body is read ----------------------------------------

MODE_A = {
    "allow_on_headers_stop_iteration": True,
    "routes": [
        {
            "name": "azure-by-model",
            "provider": {"kind": "azure_openai", "authority": "res.openai.azure.com", "auth": {"key": {"env": "AZ"}}},
        }
    ],
}


@pytest.fixture(scope="module")
def envoy_mode_a(envoy_factory, mock):
    return envoy_factory(
        plugin_config=MODE_A, env={"AZ": AZURE_SECRET}, clusters={"mock_llm": mock}, allow_on_headers_stop_iteration=True
    )


def test_mode_a_path_follows_the_body(envoy_mode_a, mock):
    client = openai.OpenAI(base_url=envoy_mode_a.base_url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    reply = client.chat.completions.create(model="dep-from-body", messages=[{"role": "user", "content": "a"}])
    assert reply.choices[0].message.content == "Hello from mock: a"
    seen = mock.last
    assert seen.path == "/openai/deployments/dep-from-body/chat/completions?api-version=2024-10-21"
    assert seen.headers["api-key"] == AZURE_SECRET
    chunks = list(client.chat.completions.create(model="d2", stream=True, messages=[{"role": "user", "content": "b"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from mock: b"
    assert mock.last.path.startswith("/openai/deployments/d2/")


def test_mode_b_refuses_body_dependent_path(expect_rejected, mock):
    result = expect_rejected(plugin_config={"routes": MODE_A["routes"]}, env={"AZ": "x"}, clusters={"mock_llm": mock})
    assert result.rejected and "allow_on_headers_stop_iteration" in result.log


def test_embeddings_and_legacy_completions_are_governed_too(client, mock, envoy):
    mock.enqueue(
        200,
        {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.25, 0.5]}],
         "model": "gpt-4o-mini", "usage": {"prompt_tokens": 3, "total_tokens": 3}},
        path="/v1/embeddings",
    )
    logged = len(envoy.access_log())
    result = client.embeddings.create(model="fast", input="embed me")
    assert result.data[0].embedding == [0.25, 0.5]
    seen = mock.last
    assert (seen.path, seen.json["model"], seen.headers["authorization"]) == ("/v1/embeddings", "gpt-4o-mini", f"Bearer {SECRET}")
    entry = envoy.wait_access_log(logged + 1)[-1]
    assert entry["aigate_total_tokens"] == "3"

    mock.enqueue(
        200,
        {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "gpt-4o",
         "choices": [{"index": 0, "text": "hi!", "finish_reason": "stop", "logprobs": None}],
         "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}},
        path="/v1/completions",
    )
    completion = client.completions.create(model="smart", prompt="Say hi")
    assert completion.choices[0].text == "hi!"
    assert (mock.last.path, mock.last.json["model"]) == ("/v1/completions", "gpt-4o")
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="smart", prompt=None)
