"""Default behaviours of the mock, by path, and the guard-side services.

`DEFAULT_ROUTES` is the table every `MockServer` starts with: (method, path regex
matched against the whole path without query, handler). To add a service, write a
handler ``(RecordedRequest) -> Reply`` and add a row here (or call
``MockServer.add_route`` for one test module).

Not here yet, on purpose: a gRPC rate limit service needs HTTP/2, which the stdlib
cannot serve; add it as a separate grpcio-based mock when the `rls` backend lands.
"""

from __future__ import annotations

import copy
from typing import Any

from . import llm
from .server import Handler, RecordedRequest, Reply

# ---------------------------------------------------------------------------
# OpenAI-compatible moderation: flags text containing "kill" or "bomb".
# ---------------------------------------------------------------------------

_CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence", "illicit")


def _moderation_inputs(inp: Any) -> list[str]:
    if isinstance(inp, str):
        return [inp]
    if isinstance(inp, list):
        if all(isinstance(x, str) for x in inp):
            return list(inp)
        # multimodal parts: one result for the whole list
        return [" ".join(p.get("text", "") for p in inp if isinstance(p, dict))]
    return []


def moderation(req: RecordedRequest) -> Reply:
    body = req.json
    if not isinstance(body, dict) or "input" not in body:
        return Reply(400, {"error": {"message": "'input' is a required property", "type": "invalid_request_error"}})
    results = []
    for text in _moderation_inputs(body["input"]):
        flagged = llm.is_unsafe(text)
        cats = {c: False for c in _CATEGORIES}
        scores = {c: 0.0001 for c in _CATEGORIES}
        if flagged:
            cats["violence"] = True
            scores["violence"] = 0.97
        results.append({"flagged": flagged, "categories": cats, "category_scores": scores})
    return Reply(
        200,
        {"id": "modr-mock", "model": body.get("model") or "omni-moderation-latest", "results": results},
    )


# ---------------------------------------------------------------------------
# Guard webhooks (CONFIG.md "webhook" guard)
# ---------------------------------------------------------------------------


def _replace_in_content(content: Any, old: str, new: str) -> Any:
    if isinstance(content, str):
        return content.replace(old, new)
    if isinstance(content, list):
        out = []
        for p in content:
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                p = dict(p, text=p["text"].replace(old, new))
            out.append(p)
        return out
    return content


def webhook_request(req: RecordedRequest) -> Reply:
    """reject if any message (or an Anthropic `system`) contains "forbidden"; mask "secret"
    -> "[REDACTED]" if any contains "secret"; else pass."""
    body = req.json
    payload = ((body or {}).get("body") or {}) if isinstance(body, dict) else {}
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return Reply(400, {"error": "expected {\"body\":{\"messages\":[...]}}"})
    texts = [llm.text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    if "system" in payload:
        texts.append(llm.text_of(payload["system"]))
    if any("forbidden" in t for t in texts):
        return Reply(200, {"action": "reject", "status_code": 403, "reason": "blocked by webhook"})
    if any("secret" in t for t in texts):
        masked = []
        for m in messages:
            m = copy.deepcopy(m)
            if isinstance(m, dict):
                m["content"] = _replace_in_content(m.get("content"), "secret", "[REDACTED]")
            masked.append(m)
        reply: dict[str, Any] = {"messages": masked}
        if "system" in payload:
            reply["system"] = _replace_in_content(copy.deepcopy(payload["system"]), "secret", "[REDACTED]")
        return Reply(200, {"action": "mask", "body": reply})
    return Reply(200, {"action": "pass"})


def webhook_response(req: RecordedRequest) -> Reply:
    """mask "mock" -> "[MASKED]" in choices[].message.content (an Anthropic Message: in the
    text blocks of `content`); else pass."""
    body = req.json
    payload = ((body or {}).get("body") or {}) if isinstance(body, dict) else {}
    if isinstance(payload.get("content"), list) and "choices" not in payload:
        blocks = payload["content"]
        if not any("mock" in llm.text_of([b]) for b in blocks):
            return Reply(200, {"action": "pass"})
        return Reply(200, {"action": "mask", "body": {"content": _replace_in_content(copy.deepcopy(blocks), "mock", "[MASKED]")}})
    choices = ((body or {}).get("body") or {}).get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list):
        return Reply(400, {"error": "expected {\"body\":{\"choices\":[...]}}"})
    hit = any("mock" in llm.text_of(((c or {}).get("message") or {}).get("content")) for c in choices)
    if not hit:
        return Reply(200, {"action": "pass"})
    masked = copy.deepcopy(choices)
    for c in masked:
        msg = (c or {}).get("message")
        if isinstance(msg, dict):
            msg["content"] = _replace_in_content(msg.get("content"), "mock", "[MASKED]")
    return Reply(200, {"action": "mask", "body": {"choices": masked}})


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

DEFAULT_ROUTES: list[tuple[str, str, Handler]] = [
    # LLM providers
    ("POST", r"/v1/chat/completions", llm.openai_chat),
    ("POST", r"/chat/completions", llm.openai_chat),  # OpenAI-compatible servers with base path /
    ("POST", r"/openai/deployments/(?P<deployment>[^/]+)/chat/completions", llm.azure_chat),
    ("POST", r"/v1/messages/count_tokens", llm.anthropic_count_tokens),
    ("POST", r"/v1/messages", llm.anthropic_messages),
    ("POST", r"/v1beta/models/(?P<model>[^/:]+):generateContent", llm.gemini_generate),
    ("POST", r"/v1beta/models/(?P<model>[^/:]+):streamGenerateContent", llm.gemini_stream_generate),
    # guard services
    ("POST", r"/v1/moderations", moderation),
    ("POST", r"/request", webhook_request),
    ("POST", r"/response", webhook_response),
    # liveness, for `make run` and docker-compose health checks
    ("GET", r"/healthz", lambda req: Reply(200, "ok")),
]
