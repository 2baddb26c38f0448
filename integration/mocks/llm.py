"""Mock LLM providers: response shapes (usable by tests to script replies) and the
default handlers for OpenAI / Azure OpenAI, Anthropic Messages and Gemini.

Every default answer reports the same usage: 11 prompt tokens, 7 completion tokens,
18 in total (`USAGE`), whatever the provider's field names are.

Defaults:
- text answer: ``"Hello from mock: " + <text of the last user message>``;
- if the request offers tools and the last message is a user text message, the answer
  is a call of the first tool, with arguments built from its JSON schema (`mock_args`);
- a model whose name contains "guard" (granite-guardian, llama-guard) acts as a guardian
  model: it answers "Yes" if the conversation contains an unsafe word, else "No".
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from .server import RecordedRequest, Reply
from .sse import split_awkwardly, sse_event

ECHO_PREFIX = "Hello from mock: "
UNSAFE_WORDS = ("kill", "bomb")


@dataclass(frozen=True)
class Usage:
    prompt: int = 11
    completion: int = 7

    @property
    def total(self) -> int:
        return self.prompt + self.completion


USAGE = Usage()

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}{next(_ids):06d}"


def _words(text: str) -> list[str]:
    """Split into pieces that concatenate back to `text` ("a b" -> ["a", " b"])."""
    out: list[str] = []
    for i, w in enumerate(text.split(" ")):
        out.append(w if i == 0 else " " + w)
    return [w for w in out if w] or [""]


def _json_pieces(obj: Any) -> list[str]:
    """A JSON document cut into a few partial strings (like streamed tool arguments)."""
    s = json.dumps(obj, separators=(",", ":"))
    if len(s) <= 4:
        return [s]
    cuts = sorted({1, len(s) // 3, (2 * len(s)) // 3})
    out, prev = [], 0
    for c in cuts + [len(s)]:
        if c > prev:
            out.append(s[prev:c])
            prev = c
    return out


def text_of(content: Any) -> str:
    """Text of an OpenAI/Anthropic `content` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
        return " ".join(parts)
    return ""


def mock_args(schema: Any) -> dict[str, Any]:
    """Arguments that satisfy a tool's JSON schema: required properties (all if none
    are marked required) set to "mock" / 1 / true / [] / {} by type (enum: first value)."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") or {}
    required = schema.get("required") or list(props)
    out: dict[str, Any] = {}
    for name in required:
        p = props.get(name) or {}
        if p.get("enum"):
            out[name] = p["enum"][0]
            continue
        t = str(p.get("type", "string")).lower()
        out[name] = {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}.get(t, "mock")
    return out


def is_unsafe(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in UNSAFE_WORDS)


def _error(status: int, message: str, type_: str = "invalid_request_error") -> Reply:
    return Reply(status, {"error": {"message": message, "type": type_, "param": None, "code": None}})


# ---------------------------------------------------------------------------
# OpenAI chat completions (also Azure OpenAI and OpenAI-compatible servers)
# ---------------------------------------------------------------------------


def openai_usage(usage: Usage = USAGE) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt, "completion_tokens": usage.completion, "total_tokens": usage.total}


def openai_completion(
    model: str,
    content: str | None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    usage: Usage | None = USAGE,
) -> dict[str, Any]:
    """A `chat.completion` object. `tool_calls` items: {"name":..., "arguments": {...}}."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = [
            {"id": _id("call_mock"), "type": "function", "function": {"name": t["name"], "arguments": json.dumps(t["arguments"])}}
            for t in tool_calls
        ]
    out: dict[str, Any] = {
        "id": _id("chatcmpl-mock"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "system_fingerprint": "fp_mock",
    }
    if usage is not None:
        out["usage"] = openai_usage(usage)
    return out


def openai_stream(
    model: str,
    content: str | None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    include_usage: bool = False,
    usage: Usage = USAGE,
    finish_reason: str | None = None,
    done: bool = True,
) -> bytes:
    """The whole SSE byte stream of a streamed chat completion."""
    cid = _id("chatcmpl-mock")
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        c: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return c

    events = []
    if tool_calls:
        events.append(sse_event(chunk({"role": "assistant", "content": None, "refusal": None})))
        for i, t in enumerate(tool_calls):
            head = {"index": i, "id": _id("call_mock"), "type": "function", "function": {"name": t["name"], "arguments": ""}}
            events.append(sse_event(chunk({"tool_calls": [head]})))
            for piece in _json_pieces(t["arguments"]):
                events.append(sse_event(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})))
    else:
        events.append(sse_event(chunk({"role": "assistant", "content": "", "refusal": None})))
        for w in _words(content or ""):
            events.append(sse_event(chunk({"content": w})))
    events.append(sse_event(chunk({}, finish_reason or ("tool_calls" if tool_calls else "stop"))))
    if include_usage:
        u = chunk({})
        u["choices"] = []
        u["usage"] = openai_usage(usage)
        events.append(sse_event(u))
    if done:
        events.append(sse_event("[DONE]"))
    return b"".join(events)


def sse_reply(stream: bytes, *, awkward: bool = True, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    h = {"content-type": "text/event-stream", "cache-control": "no-cache"}
    h.update(headers or {})
    chunks: list[bytes | str] = list(split_awkwardly(stream)) if awkward else [stream]
    return Reply(status, headers=h, chunks=chunks)


def _openai_answer(body: dict[str, Any], model: str) -> tuple[str | None, list[dict[str, Any]] | None]:
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if "guard" in model.lower():
        convo = " ".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))
        return ("Yes" if is_unsafe(convo) else "No"), None
    tools = body.get("tools") or []
    if tools and isinstance(last, dict) and last.get("role") == "user":
        fn = (tools[0] or {}).get("function") or {}
        return None, [{"name": fn.get("name", "tool"), "arguments": mock_args(fn.get("parameters"))}]
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {})
    return ECHO_PREFIX + text_of(last_user.get("content")), None


def openai_chat(req: RecordedRequest) -> Reply:
    body = req.json
    if not isinstance(body, dict):
        return _error(400, "We could not parse the JSON body of your request.")
    model = body.get("model") or req.params.get("deployment")
    if not model:
        return _error(400, "you must provide a model parameter")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return _error(400, "'messages' is a required property")
    content, tool_calls = _openai_answer(body, model)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return sse_reply(openai_stream(model, content, tool_calls=tool_calls, include_usage=include_usage))
    return Reply(200, openai_completion(model, content, tool_calls=tool_calls))


def azure_chat(req: RecordedRequest) -> Reply:
    if "api-version" not in req.query:
        return Reply(404, {"error": {"code": "404", "message": "Resource not found"}})
    return openai_chat(req)


# ---------------------------------------------------------------------------
# Anthropic Messages API
# ---------------------------------------------------------------------------


def anthropic_error(status: int, message: str, type_: str = "invalid_request_error") -> Reply:
    return Reply(status, {"type": "error", "error": {"type": type_, "message": message}})


def anthropic_message(
    model: str,
    text: str | None,
    *,
    tool_use: dict[str, Any] | None = None,
    stop_reason: str | None = None,
    usage: Usage = USAGE,
) -> dict[str, Any]:
    """A Messages API answer. `tool_use`: {"name":..., "input": {...}}."""
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    if tool_use is not None:
        content.append({"type": "tool_use", "id": _id("toolu_mock"), "name": tool_use["name"], "input": tool_use["input"]})
    return {
        "id": _id("msg_mock"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason or ("tool_use" if tool_use else "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": usage.prompt, "output_tokens": usage.completion},
    }


def anthropic_stream(
    model: str,
    text: str | None,
    *,
    tool_use: dict[str, Any] | None = None,
    stop_reason: str | None = None,
    usage: Usage = USAGE,
) -> bytes:
    """The real event sequence: message_start, content blocks (with a ping after the
    first block starts), message_delta carrying the final usage, message_stop."""
    msg = anthropic_message(model, None, usage=usage)
    msg["content"] = []
    msg["stop_reason"] = None
    msg["usage"] = {"input_tokens": usage.prompt, "output_tokens": 1}
    ev = [sse_event({"type": "message_start", "message": msg}, event="message_start")]
    index = 0
    if text is not None:
        ev.append(sse_event({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}, event="content_block_start"))
        ev.append(sse_event({"type": "ping"}, event="ping"))
        for w in _words(text):
            ev.append(sse_event({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": w}}, event="content_block_delta"))
        ev.append(sse_event({"type": "content_block_stop", "index": index}, event="content_block_stop"))
        index += 1
    if tool_use is not None:
        block = {"type": "tool_use", "id": _id("toolu_mock"), "name": tool_use["name"], "input": {}}
        ev.append(sse_event({"type": "content_block_start", "index": index, "content_block": block}, event="content_block_start"))
        if index == 0:
            ev.append(sse_event({"type": "ping"}, event="ping"))
        for piece in _json_pieces(tool_use["input"]):
            ev.append(sse_event({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}, event="content_block_delta"))
        ev.append(sse_event({"type": "content_block_stop", "index": index}, event="content_block_stop"))
    ev.append(
        sse_event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason or ("tool_use" if tool_use else "end_turn"), "stop_sequence": None},
                "usage": {"output_tokens": usage.completion},
            },
            event="message_delta",
        )
    )
    ev.append(sse_event({"type": "message_stop"}, event="message_stop"))
    return b"".join(ev)


def anthropic_messages(req: RecordedRequest) -> Reply:
    body = req.json
    if not isinstance(body, dict):
        return anthropic_error(400, "invalid JSON body")
    if not req.headers.get("anthropic-version"):
        return anthropic_error(400, "anthropic-version: header is required")
    if not body.get("model"):
        return anthropic_error(400, "model: Field required")
    if "max_tokens" not in body:
        return anthropic_error(400, "max_tokens: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return anthropic_error(400, "messages: Field required")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            role = m.get("role") if isinstance(m, dict) else None
            return anthropic_error(400, f'messages.{i}.role: Input should be "user" or "assistant" (got {role!r})')
    model = body["model"]
    last = messages[-1]
    content = last.get("content")
    last_is_user_text = last.get("role") == "user" and (
        isinstance(content, str)
        or (isinstance(content, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in content))
    )
    text: str | None
    tool_use = None
    if "guard" in model.lower():
        text = "Yes" if is_unsafe(" ".join(text_of(m.get("content")) for m in messages)) else "No"
    elif body.get("tools") and last_is_user_text:
        tool = body["tools"][0] or {}
        text, tool_use = None, {"name": tool.get("name", "tool"), "input": mock_args(tool.get("input_schema"))}
    else:
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        text = ECHO_PREFIX + text_of(last_user.get("content"))
    if body.get("stream"):
        return sse_reply(anthropic_stream(model, text, tool_use=tool_use))
    return Reply(200, anthropic_message(model, text, tool_use=tool_use), headers={"request-id": _id("req_mock")})


def anthropic_count_tokens(req: RecordedRequest) -> Reply:
    """`POST /v1/messages/count_tokens`: `{"input_tokens": n}`, a token per 4 bytes of text
    (system and messages), as a stand-in for Anthropic's tokenizer."""
    body = req.json
    if not isinstance(body, dict):
        return anthropic_error(400, "invalid JSON body")
    if not req.headers.get("anthropic-version"):
        return anthropic_error(400, "anthropic-version: header is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return anthropic_error(400, "messages: Field required")
    text = text_of(body.get("system")) + " ".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))
    return Reply(200, {"input_tokens": max(1, (len(text.encode()) + 3) // 4)})


# ---------------------------------------------------------------------------
# Gemini (generativelanguage v1beta)
# ---------------------------------------------------------------------------

# Gemini's SSE separates events with CRLF CRLF.
GEMINI_SSE_NEWLINE = "\r\n"


def gemini_error(status: int, message: str, status_name: str = "INVALID_ARGUMENT") -> Reply:
    return Reply(status, {"error": {"code": status, "message": message, "status": status_name}})


def gemini_usage(usage: Usage = USAGE) -> dict[str, int]:
    return {"promptTokenCount": usage.prompt, "candidatesTokenCount": usage.completion, "totalTokenCount": usage.total}


def gemini_response(
    model: str,
    parts: list[dict[str, Any]],
    *,
    finish_reason: str | None = "STOP",
    usage: dict[str, int] | None = None,
    response_id: str | None = None,
) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish_reason:
        cand["finishReason"] = finish_reason
    return {
        "candidates": [cand],
        "usageMetadata": usage if usage is not None else gemini_usage(),
        "modelVersion": model,
        "responseId": response_id or _id("resp_mock"),
    }


def gemini_chunks(model: str, text: str | None, *, function_call: dict[str, Any] | None = None, usage: Usage = USAGE) -> list[dict[str, Any]]:
    """Streamed GenerateContentResponse objects: intermediate chunks carry the prompt
    count only, the last one carries finishReason and the full usage."""
    rid = _id("resp_mock")
    if function_call is not None:
        return [gemini_response(model, [{"functionCall": function_call}], usage=gemini_usage(usage), response_id=rid)]
    words = _words(text or "")
    out = []
    for i, w in enumerate(words):
        last = i == len(words) - 1
        out.append(
            gemini_response(
                model,
                [{"text": w}],
                finish_reason="STOP" if last else None,
                usage=gemini_usage(usage) if last else {"promptTokenCount": usage.prompt, "totalTokenCount": usage.prompt},
                response_id=rid,
            )
        )
    return out


def gemini_stream(model: str, text: str | None, *, function_call: dict[str, Any] | None = None, usage: Usage = USAGE) -> bytes:
    return b"".join(
        sse_event(c, newline=GEMINI_SSE_NEWLINE) for c in gemini_chunks(model, text, function_call=function_call, usage=usage)
    )


def _gemini_answer(body: dict[str, Any], model: str) -> tuple[str | None, dict[str, Any] | None]:
    contents = body.get("contents") or []
    last = contents[-1] if contents else {}
    parts = last.get("parts") or []
    last_is_user_text = last.get("role", "user") == "user" and any("text" in p for p in parts) and not any(
        "functionResponse" in p for p in parts
    )
    all_text = " ".join(p.get("text", "") for c in contents for p in (c.get("parts") or []) if isinstance(p, dict))
    if "guard" in model.lower():
        return ("Yes" if is_unsafe(all_text) else "No"), None
    decls: list[dict[str, Any]] = []
    for t in body.get("tools") or []:
        decls += t.get("functionDeclarations") or t.get("function_declarations") or []
    if decls and last_is_user_text:
        d = decls[0]
        return None, {"name": d.get("name", "tool"), "args": mock_args(d.get("parameters") or d.get("parametersJsonSchema"))}
    last_user = next((c for c in reversed(contents) if c.get("role", "user") == "user"), {})
    text = " ".join(p.get("text", "") for p in (last_user.get("parts") or []) if "text" in p)
    return ECHO_PREFIX + text, None


def _gemini_validate(req: RecordedRequest) -> Reply | None:
    body = req.json
    if not isinstance(body, dict):
        return gemini_error(400, "Invalid JSON payload received.")
    if not body.get("contents"):
        return gemini_error(400, "* GenerateContentRequest.contents: contents is not specified")
    return None


def gemini_generate(req: RecordedRequest) -> Reply:
    err = _gemini_validate(req)
    if err:
        return err
    model = req.params["model"]
    text, call = _gemini_answer(req.json, model)
    parts = [{"functionCall": call}] if call else [{"text": text}]
    return Reply(200, gemini_response(model, parts))


def gemini_stream_generate(req: RecordedRequest) -> Reply:
    err = _gemini_validate(req)
    if err:
        return err
    model = req.params["model"]
    text, call = _gemini_answer(req.json, model)
    if req.query.get("alt") == ["sse"]:
        return sse_reply(gemini_stream(model, text, function_call=call))
    # Without alt=sse Gemini streams one JSON array.
    return Reply(200, gemini_chunks(model, text, function_call=call))
