"""A transformer model for the transformer tests: an OpenAI chat-completions server whose
replies the test scripts.

The filter sends ``{"model", "messages": [system = prompt, user = the body as JSON],
"stream": false}``. Run it as its own MockServer behind the transformer's cluster::

    xform = mock_factory(name="xform")
    install(xform)                       # default behaviour: `mask_digits`
    xform.enqueue_reply(completion("..."))          # script the next reply
    xform.enqueue_reply(instructions(status=201, headers={...}, body="..."))
    sent_body(xform.last)                # what the filter asked to transform
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import llm
from .server import MockServer, RecordedRequest, Reply

MODEL = "rewriter-mock"
# What every reply reports as the transformer's own usage.
USAGE = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}


def completion(content: str, *, model: str = MODEL, usage: dict[str, int] | None = None) -> Reply:
    """A chat completion whose message content is `content` (the transformer's output)."""
    body = llm.openai_completion(model, content, usage=None)
    body["usage"] = dict(usage or USAGE)
    return Reply(200, body)


def instructions(*, status: int | None = None, headers: dict[str, Any] | None = None, body: Any = None) -> Reply:
    """A completion whose content is `parse_instructions` JSON."""
    out: dict[str, Any] = {}
    if status is not None:
        out["status"] = status
    if headers is not None:
        out["headers"] = headers
    if body is not None:
        out["body"] = body
    return completion(json.dumps(out))


def messages_of(req: RecordedRequest) -> list[dict[str, Any]]:
    body = req.json if isinstance(req.json, dict) else {}
    return [m for m in body.get("messages") or [] if isinstance(m, dict)]


def system_of(req: RecordedRequest) -> str:
    return next((m.get("content", "") for m in messages_of(req) if m.get("role") == "system"), "")


def sent_body(req: RecordedRequest) -> Any:
    """The body the filter asked to transform (the user message, parsed as JSON)."""
    user = next((m.get("content", "") for m in messages_of(req) if m.get("role") == "user"), "")
    return json.loads(user)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return re.sub(r"\d", "#", value)
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, dict):
        return {k: (_mask(v) if k in ("content", "messages", "choices", "message", "text") else v) for k, v in value.items()}
    return value


def mask_digits(req: RecordedRequest) -> Reply:
    """Default behaviour: the body it was given, with every digit in message text as '#'
    (request: `messages[].content`; response: `choices[].message.content`)."""
    try:
        given = sent_body(req)
    except ValueError:
        return Reply(400, {"error": {"message": "mock transformer: the user message is not JSON", "type": "invalid_request_error"}})
    return completion(json.dumps(_mask(given)))


def install(server: MockServer) -> MockServer:
    server.add_route("POST", r"/v1/chat/completions", mask_digits)
    return server
