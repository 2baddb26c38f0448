"""Prompt shaping through a real Envoy: templates (JSON-safe, with the client's own fields
kept), prepend/append, defaults and overrides, the stage order (shaping before model
mapping), the 400s for template mistakes, allow_untemplated, and config faults."""

from __future__ import annotations

import httpx
import openai
import pytest

SECRET = "sk-shaping-333"
ENV = {"OPENAI_API_KEY": SECRET}
PROVIDER = {
    "kind": "openai",
    "authority": "api.openai.test",
    "auth": {"key": {"env": "OPENAI_API_KEY"}},
    "models": {"fast": "gpt-4o-mini", "smart": "gpt-4o"},
}
SHAPED = {
    "prepend": [{"role": "system", "content": "You are terse."}],
    "append": [{"role": "user", "content": "Answer in English."}],
    "templates": [
        {
            "name": "summarize",
            "body": {
                "model": "fast",
                "messages": [{"role": "user", "content": "Summarize in {{words}} words: {{text}}"}],
                "max_tokens": "{{limit}}",
            },
        }
    ],
    "defaults": {"temperature": 0.2},
    "overrides": {"max_tokens": 512, "user": "gateway"},
}
CONFIG = {
    "routes": [
        {
            "name": "strict",
            "match": {"headers": {"x-tier": "strict"}},
            "provider": PROVIDER,
            "request": {
                "templates": [{"name": "ask", "body": {"messages": [{"role": "user", "content": "Q: {{q}}"}]}}],
                "allow_untemplated": False,
            },
        },
        {"name": "shaped", "provider": PROVIDER, "request": SHAPED},
    ]
}


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock):
    return envoy_factory(plugin_config=CONFIG, env=ENV, clusters={"mock_llm": mock})


@pytest.fixture()
def client(envoy):
    return openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="client", max_retries=0, timeout=30)


def post(envoy, body, headers=None):
    return httpx.post(envoy.base_url + "/v1/chat/completions", json=body, headers=headers or {}, timeout=30)


def upstream(mock):
    sent = [r for r in mock.requests_to("/v1/chat/completions") if r.body]
    assert len(sent) == 1, sent
    return sent[0].json


def assert_refused(response, mock, code):
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert all(not r.body for r in mock.requests_to("/v1/chat/completions")), "nothing reached the provider"
    return error["message"]


def test_sdk_template_request_is_shaped_in_order(client, mock):
    hostile = 'war & "peace"\n"}],"model":"smart","x":[{"'
    reply = client.chat.completions.create(
        model="smart",  # the template's "fast" wins over the client's model
        messages=[{"role": "user", "content": "the SDK insists on messages; the template replaces them"}],
        stream=False,
        extra_body={"template": "summarize", "properties": {"text": hostile, "words": 12, "limit": 64}},
        top_p=0.5,
    )
    sent = upstream(mock)
    # template -> decorate -> defaults/overrides -> model mapping
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": f"Summarize in 12 words: {hostile}"},
        {"role": "user", "content": "Answer in English."},
    ]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["max_tokens"] == 512 and sent["temperature"] == 0.2 and sent["user"] == "gateway"
    assert sent["top_p"] == 0.5 and sent["stream"] is False
    assert "template" not in sent and "properties" not in sent and "x" not in sent
    assert reply.choices[0].message.content == "Hello from mock: Answer in English."


def test_plain_request_is_decorated_and_defaulted(client, mock):
    client.chat.completions.create(model="smart", temperature=0.9, messages=[{"role": "user", "content": "hi"}])
    sent = upstream(mock)
    assert [m["content"] for m in sent["messages"]] == ["You are terse.", "hi", "Answer in English."]
    assert sent["model"] == "gpt-4o"
    assert sent["temperature"] == 0.9, "a default never beats the client's value"
    assert sent["max_tokens"] == 512, "an override always wins"


def test_streamed_template_request(client, mock):
    stream = client.chat.completions.create(
        model="fast",
        stream=True,
        messages=[],
        extra_body={"template": "summarize", "properties": {"text": "x", "words": 3, "limit": 5}},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from mock: Answer in English."
    assert upstream(mock)["stream"] is True


def test_missing_properties_are_named(envoy, mock):
    r = post(envoy, {"model": "fast", "template": "summarize", "properties": {"words": 3}})
    message = assert_refused(r, mock, "missing_template_property")
    assert '"text"' in message and '"limit"' in message and '"words"' not in message


def test_unknown_template_is_named(envoy, mock):
    r = post(envoy, {"model": "fast", "template": "sumarize", "properties": {}})
    message = assert_refused(r, mock, "unknown_template")
    assert "sumarize" in message


def test_templated_only_route_refuses_plain_requests(envoy, mock):
    strict = {"x-tier": "strict"}
    r = post(envoy, {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}, strict)
    assert_refused(r, mock, "template_required")
    r = post(envoy, {"model": "fast", "template": "ask", "properties": {"q": "why?"}}, strict)
    assert r.status_code == 200, r.text
    assert upstream(mock)["messages"] == [{"role": "user", "content": "Q: why?"}]


def test_bad_template_config_is_refused_with_its_path(expect_rejected, mock):
    bad = {
        "routes": [
            {
                "name": "r",
                "provider": PROVIDER,
                "request": {"templates": [{"name": "t", "body": {"messages": [{"role": "user", "content": "{{oops"}]}}]},
            }
        ]
    }
    result = expect_rejected(plugin_config=bad, env=ENV, clusters={"mock_llm": mock})
    assert result.rejected
    assert "routes[0].request.templates[0].body.messages[0].content" in result.log
