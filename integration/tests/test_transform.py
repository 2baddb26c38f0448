"""LLM transformers through a real Envoy, with a scripted transformer model (its own mock
server behind the `xform` cluster): requests rewritten before the provider sees them,
answers rewritten (and, in mode A, status and headers set from instructions), extract
patterns, unusable output, failures and timeouts in both failure modes, streaming clients,
and gzip answers."""

from __future__ import annotations

import gzip
import json

import httpx
import openai
import pytest

from integration.mocks import llm
from integration.mocks import transformer as tx

PROVIDER_SECRET = "sk-provider-111"
XFORM_SECRET = "sk-xform-222"
ENV = {"OPENAI_API_KEY": PROVIDER_SECRET, "XFORM_KEY": XFORM_SECRET}
PROMPT = "Replace every digit in message text with '#'. Reply with the JSON only."

XFORM = {"cluster": "xform", "authority": "xform.internal", "timeout_ms": 5000, "auth": {"key": {"env": "XFORM_KEY"}}}
XFORM_SHORT = dict(XFORM, timeout_ms=300)
PROVIDER = {"kind": "openai", "authority": "api.openai.test", "auth": {"key": {"env": "OPENAI_API_KEY"}}}
# The transformer mock hangs this long, then drops the connection, in timeout tests (the
# filter gives up first; the next test's reset wakes it early).
HANG_S = 5


def transformer(**extra):
    return {"endpoint": XFORM, "model": "rewriter", "prompt": PROMPT, **extra}


def route(name, **transform):
    return {"name": name, "match": {"headers": {"x-case": name}}, "provider": PROVIDER, "transform": transform}


MODE_B = {
    "routes": [
        route("request", request=transformer()),
        route("request-open", request=transformer(failure_mode="open")),
        route("request-extract", request=transformer(extract_pattern=r"(?s)```(?:json)?\s*(.*?)```")),
        route("request-slow", request=transformer(endpoint=XFORM_SHORT)),
        route("request-slow-open", request=transformer(endpoint=XFORM_SHORT, failure_mode="open")),
        route("response", response=transformer()),
        route("response-slow-open", response=transformer(endpoint=XFORM_SHORT, failure_mode="open")),
        route("plain"),
    ]
}

MODE_A = {
    "allow_on_headers_stop_iteration": True,
    "routes": [
        route("instructions", response=transformer(parse_instructions=True)),
        route("instructions-slow", response=transformer(parse_instructions=True, endpoint=XFORM_SHORT)),
        route(
            "instructions-slow-open",
            response=transformer(parse_instructions=True, endpoint=XFORM_SHORT, failure_mode="open"),
        ),
    ],
}


@pytest.fixture(scope="module")
def xform(mock_factory):
    return tx.install(mock_factory(name="xform"))


@pytest.fixture(autouse=True)
def _fresh_xform(xform):
    xform.reset()
    yield
    errors = xform.errors
    if errors:
        pytest.fail("transformer mock crashed:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock, xform):
    return envoy_factory(plugin_config=MODE_B, env=ENV, clusters={"mock_llm": mock, "xform": xform})


@pytest.fixture(scope="module")
def envoy_a(envoy_factory, mock, xform):
    return envoy_factory(
        plugin_config=MODE_A,
        env=ENV,
        clusters={"mock_llm": mock, "xform": xform},
        allow_on_headers_stop_iteration=True,
    )


def chat(envoy, case, content="call 555 1234", **extra):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(envoy.base_url + "/v1/chat/completions", json=body, headers={"x-case": case}, timeout=30)


def sdk(envoy, case):
    return openai.OpenAI(
        base_url=envoy.base_url + "/v1", api_key="client", max_retries=0, timeout=30, default_headers={"x-case": case}
    )


def provider_requests(mock):
    return [r for r in mock.requests_to("/v1/chat/completions") if r.body]


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert XFORM_SECRET not in response.text and PROVIDER_SECRET not in response.text
    return body["error"]["message"]


def metric(envoy, name):
    """`route.<r>.transformer.<side>.outcome.<o>.transformer.outcomes` or
    `route.<r>.transformer.<side>.model.<m>.tokens`: the filter's counter, summed."""
    route, rest = name.removeprefix("route.").split(".transformer.", 1)
    side, rest = rest.split(".", 1)
    if rest.endswith(".tokens"):
        model = rest.removeprefix("model.").removesuffix(".tokens")
        return envoy.metric_total("aigate.tokens_total", {"route": route, "transformer": side, "gen_ai.request.model": model})
    outcome = rest.removeprefix("outcome.").removesuffix(".transformer.outcomes")
    return envoy.metric_total("aigate.transformer.outcomes_total", {"route": route, "transformer": side, "outcome": outcome})


# --- request transformer ----------------------------------------------------------------


def test_request_is_rewritten_before_the_provider_sees_it(envoy, mock, xform):
    usage_name = "route.request.transformer.request.model.rewriter.tokens"
    applied_name = "route.request.transformer.request.outcome.applied.transformer.outcomes"
    before = (metric(envoy, usage_name), metric(envoy, applied_name))

    r = chat(envoy, "request", "card 4111 1111 1111 1111")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello from mock: card #### #### #### ####"

    call = xform.last
    assert call.path == "/v1/chat/completions"
    assert call.headers["authorization"] == f"Bearer {XFORM_SECRET}"
    assert call.headers["host"] == "xform.internal"
    assert call.json["model"] == "rewriter" and call.json["stream"] is False
    assert tx.system_of(call) == PROMPT
    assert tx.sent_body(call)["messages"][0]["content"] == "card 4111 1111 1111 1111"

    (seen,) = provider_requests(mock)
    assert seen.json["messages"][0]["content"] == "card #### #### #### ####"
    assert seen.headers["authorization"] == f"Bearer {PROVIDER_SECRET}"
    assert XFORM_SECRET not in json.dumps(seen.headers)

    envoy.wait_access_log(1)
    after = (metric(envoy, usage_name), metric(envoy, applied_name))
    assert (after[0] - before[0], after[1] - before[1]) == (42, 1)
    prom = envoy.stats_prometheus()
    assert any('transformer="request"' in line and 'route="request"' in line for line in prom.splitlines()), (
        "the transformer's usage is a labelled Prometheus series"
    )


def test_request_extract_pattern_takes_the_fenced_json(envoy, mock, xform):
    rewritten = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "extracted"}]}
    xform.enqueue_reply(tx.completion("Sure! Here it is:\n```json\n" + json.dumps(rewritten) + "\n```\nAnything else?"))
    r = chat(envoy, "request-extract")
    assert r.status_code == 200, r.text
    (seen,) = provider_requests(mock)
    assert seen.json["messages"] == [{"role": "user", "content": "extracted"}]


@pytest.mark.parametrize("case", ["request", "request-open"])
def test_request_output_that_is_not_json_is_a_502(envoy, mock, xform, case):
    xform.enqueue_reply(tx.completion("I am sorry, I can not rewrite that."))
    message = assert_error(chat(envoy, case), 502, "transformer_invalid_output")
    assert "not valid JSON" in message and "sorry" not in message
    assert provider_requests(mock) == []


def test_request_output_that_is_not_a_chat_request_is_a_502(envoy, mock, xform):
    xform.enqueue_reply(tx.completion(json.dumps({"messages": []})))
    message = assert_error(chat(envoy, "request"), 502, "transformer_invalid_output")
    assert "messages" in message
    assert provider_requests(mock) == []


def test_request_transformer_failure_closed_is_a_503(envoy, mock, xform):
    xform.enqueue(500, {"error": {"message": "model crashed"}})
    message = assert_error(chat(envoy, "request"), 503, "transformer_unavailable")
    assert "500" in message
    assert provider_requests(mock) == []


def test_request_transformer_failure_open_passes_the_request(envoy, mock, xform):
    name = "route.request-open.transformer.request.outcome.failed_open.transformer.outcomes"
    before = metric(envoy, name)
    xform.enqueue(500, {"error": {"message": "model crashed"}})
    r = chat(envoy, "request-open", "call 555 1234")
    assert r.status_code == 200, r.text
    (seen,) = provider_requests(mock)
    assert seen.json["messages"][0]["content"] == "call 555 1234"
    envoy.wait_access_log(1)
    assert metric(envoy, name) - before == 1


def test_request_transformer_timeout_closed_is_a_503(envoy, mock, xform):
    xform.enqueue(delay_s=HANG_S, abort=True)
    message = assert_error(chat(envoy, "request-slow"), 503, "transformer_unavailable")
    assert "504" in message, "Envoy answers a timed-out callout with 504"
    assert provider_requests(mock) == []


def test_request_transformer_timeout_open_passes_the_request(envoy, mock, xform):
    xform.enqueue(delay_s=HANG_S, abort=True)
    r = chat(envoy, "request-slow-open", "call 555 1234")
    assert r.status_code == 200, r.text
    (seen,) = provider_requests(mock)
    assert seen.json["messages"][0]["content"] == "call 555 1234"


# --- response transformer, mode B ---------------------------------------------------------


def test_response_is_rewritten_before_the_client_sees_it(envoy, mock, xform):
    reply = sdk(envoy, "response").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "call 555 1234"}]
    )
    assert reply.choices[0].message.content == "Hello from mock: call ### ####"
    given = tx.sent_body(xform.last)
    assert given["object"] == "chat.completion"
    assert given["choices"][0]["message"]["content"] == "Hello from mock: call 555 1234"


def test_response_transformer_timeout_open_passes_the_answer(envoy, mock, xform):
    xform.enqueue(delay_s=HANG_S, abort=True)
    r = chat(envoy, "response-slow-open", "call 555 1234")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello from mock: call 555 1234"


def test_streaming_client_gets_the_transformed_answer_as_sse(envoy, mock, xform):
    stream = sdk(envoy, "response").chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "call 555 1234"}]
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from mock: call ### ####"
    (seen,) = provider_requests(mock)
    assert seen.json["stream"] is False, "the provider is asked without streaming"


def test_streaming_client_gets_plain_text_output_as_the_message(envoy, mock, xform):
    xform.enqueue_reply(tx.completion("A summary, not JSON."))
    with httpx.stream(
        "POST",
        envoy.base_url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-case": "response"},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "A summary, not JSON."


def gzipped_answer(content):
    body = json.dumps(llm.openai_completion("gpt-4o-mini", content)).encode()
    return gzip.compress(body), {"content-type": "application/json", "content-encoding": "gzip"}


def test_gzip_answer_is_decoded_for_the_transformer(envoy, mock, xform):
    body, headers = gzipped_answer("room 101")
    mock.enqueue(200, body, headers, path="/v1/chat/completions")
    r = chat(envoy, "response")
    assert r.status_code == 200, r.text
    assert "content-encoding" not in r.headers
    assert r.json()["choices"][0]["message"]["content"] == "room ###"
    assert tx.sent_body(xform.last)["choices"][0]["message"]["content"] == "room 101"
    assert provider_requests(mock)[0].headers.get("accept-encoding") == "identity"


def test_gzip_answer_passed_through_still_counts_usage(envoy, mock):
    body, headers = gzipped_answer("zipped")
    mock.enqueue(200, body, headers, path="/v1/chat/completions")
    logged = len(envoy.access_log())
    r = chat(envoy, "plain")
    assert r.status_code == 200, r.text
    assert r.headers.get("content-encoding") == "gzip", "untouched answers keep their encoding"
    assert r.json()["choices"][0]["message"]["content"] == "zipped"
    assert envoy.wait_access_log(logged + 1)[-1]["aigate_total_tokens"] == "18"


# --- response transformer with instructions, mode A ----------------------------------------


def test_instructions_set_status_headers_and_body(envoy_a, mock, xform):
    xform.enqueue_reply(
        tx.instructions(status=201, headers={"x-reviewed": "yes", "content-type": "text/plain"}, body="reviewed answer")
    )
    r = chat(envoy_a, "instructions")
    assert r.status_code == 201, r.text
    assert r.headers["x-reviewed"] == "yes"
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "reviewed answer"
    assert tx.sent_body(xform.last)["choices"][0]["message"]["content"] == "Hello from mock: call 555 1234"


def test_instructions_can_refuse_a_streaming_client_with_json(envoy_a, mock, xform):
    refusal = {"error": {"message": "blocked by policy", "type": "policy", "code": "blocked"}}
    xform.enqueue_reply(tx.instructions(status=403, body=refusal))
    r = chat(envoy_a, "instructions", stream=True)
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == refusal


def test_instructions_that_are_not_json_are_a_502(envoy_a, mock, xform):
    xform.enqueue_reply(tx.completion("Looks fine to me!"))
    message = assert_error(chat(envoy_a, "instructions"), 502, "transformer_invalid_output")
    assert "not valid JSON" in message


def test_response_transformer_failure_closed_is_a_503(envoy_a, mock, xform):
    xform.enqueue(500, {"error": {"message": "model crashed"}})
    assert_error(chat(envoy_a, "instructions"), 503, "transformer_unavailable")


def test_response_transformer_timeout_closed_is_a_503(envoy_a, mock, xform):
    xform.enqueue(delay_s=HANG_S, abort=True)
    message = assert_error(chat(envoy_a, "instructions-slow"), 503, "transformer_unavailable")
    assert "504" in message


def test_response_transformer_timeout_open_passes_the_answer(envoy_a, mock, xform):
    name = "route.instructions-slow-open.transformer.response.outcome.failed_open.transformer.outcomes"
    before = metric(envoy_a, name)
    xform.enqueue(delay_s=HANG_S, abort=True)
    r = chat(envoy_a, "instructions-slow-open")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello from mock: call 555 1234"
    envoy_a.wait_access_log(1)
    assert metric(envoy_a, name) - before == 1


# --- config ----------------------------------------------------------------------------------


def test_instructions_need_mode_a(expect_rejected, mock, xform):
    config = {"routes": [route("instructions", response=transformer(parse_instructions=True))]}
    result = expect_rejected(plugin_config=config, env=ENV, clusters={"mock_llm": mock, "xform": xform})
    assert result.rejected
    assert "allow_on_headers_stop_iteration" in result.log
    assert XFORM_SECRET not in result.log
