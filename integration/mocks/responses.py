"""Mock OpenAI Responses API (`POST /v1/responses`, `/openai/v1/responses`): answers as the
real API does, JSON or SSE (`event:` lines, `sequence_number` from 0, `response.completed`
with usage), so the official SDK's `client.responses.create` / `.stream` and Codex work.

Default answer: ``"Hello from mock: " + <text of the last user message>`` (or of
`input` when it is a string). A function call instead when the request offers function
tools and asks for one (`tool_choice` "required" or naming a function): the call of the
first (or named) function with arguments built from its schema. After a
`function_call_output` item, the answer is ``"Tool said: <output>"``.

Usage is always input 11 (3 of them cached), output 7 (2 of them reasoning), total 18.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from .llm import ECHO_PREFIX, USAGE, _error, mock_args, sse_reply
from .server import RecordedRequest, Reply
from .sse import sse_event

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}"


def usage() -> dict[str, Any]:
    return {
        "input_tokens": USAGE.prompt,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": USAGE.completion,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": USAGE.total,
    }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def message_item(text: str) -> dict[str, Any]:
    return {
        "id": _id("msg"),
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def function_call_item(name: str, arguments: str) -> dict[str, Any]:
    return {"id": _id("fc"), "type": "function_call", "status": "completed", "call_id": _id("call"), "name": name, "arguments": arguments}


def response_object(model: str, output: list[dict[str, Any]], body: dict[str, Any] | None = None) -> dict[str, Any]:
    body = body or {}
    return {
        "id": _id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage(),
        "metadata": body.get("metadata") or {},
    }


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    out = [w if i == 0 else " " + w for i, w in enumerate(words)]
    return [w for w in out if w] or [""]


def response_events(response: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The events of a streamed `response` (without sequence numbers)."""
    shell = {**response, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": shell}),
        ("response.in_progress", {"response": shell}),
    ]
    for index, item in enumerate(response["output"]):
        if item["type"] == "message":
            events.append(("response.output_item.added", {"output_index": index, "item": {**item, "status": "in_progress", "content": []}}))
            for ci, part in enumerate(item["content"]):
                at = {"item_id": item["id"], "output_index": index, "content_index": ci}
                events.append(("response.content_part.added", {**at, "part": {**part, "text": ""}}))
                for piece in _pieces(part["text"]):
                    events.append(("response.output_text.delta", {**at, "delta": piece, "logprobs": []}))
                events.append(("response.output_text.done", {**at, "text": part["text"], "logprobs": []}))
                events.append(("response.content_part.done", {**at, "part": part}))
        elif item["type"] == "function_call":
            events.append(("response.output_item.added", {"output_index": index, "item": {**item, "status": "in_progress", "arguments": ""}}))
            at = {"item_id": item["id"], "output_index": index}
            args = item["arguments"]
            cuts = sorted({0, len(args) // 3, 2 * len(args) // 3, len(args)})
            for a, b in zip(cuts, cuts[1:]):
                events.append(("response.function_call_arguments.delta", {**at, "delta": args[a:b]}))
            events.append(("response.function_call_arguments.done", {**at, "name": item["name"], "arguments": args}))
        else:
            events.append(("response.output_item.added", {"output_index": index, "item": item}))
        events.append(("response.output_item.done", {"output_index": index, "item": item}))
    events.append(("response.completed", {"response": response}))
    return events


def response_stream(response: dict[str, Any]) -> bytes:
    out = []
    for seq, (kind, data) in enumerate(response_events(response)):
        out.append(sse_event({"type": kind, **data, "sequence_number": seq}, event=kind))
    return b"".join(out)


def _answer(body: dict[str, Any]) -> list[dict[str, Any]]:
    inp = body.get("input")
    items = inp if isinstance(inp, list) else []
    last = items[-1] if items and isinstance(items[-1], dict) else {}
    if last.get("type") == "function_call_output":
        return [message_item("Tool said: " + _text(last.get("output")))]
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    choice = body.get("tool_choice")
    wanted = choice.get("name") if isinstance(choice, dict) else None
    if tools and (choice == "required" or wanted):
        tool = next((t for t in tools if t.get("name") == wanted), tools[0])
        return [function_call_item(tool.get("name", "tool"), json.dumps(mock_args(tool.get("parameters")), separators=(",", ":")))]
    if isinstance(inp, str):
        text = inp
    else:
        users = [i for i in items if isinstance(i, dict) and i.get("role") == "user"]
        text = _text(users[-1].get("content")) if users else ""
    return [message_item(ECHO_PREFIX + text)]


def openai_responses_compact(req: RecordedRequest) -> Reply:
    """`POST /v1/responses/compact`: the conversation's user messages kept, then one opaque
    `compaction` item; never streamed."""
    body = req.json
    if not isinstance(body, dict) or not body.get("model"):
        return _error(400, "Missing required parameter: 'model'.")
    items = body.get("input") if isinstance(body.get("input"), list) else []
    kept = [i for i in items if isinstance(i, dict) and i.get("role") == "user"]
    output = kept + [{"id": _id("cmp"), "type": "compaction", "encrypted_content": "gAAAAmock"}]
    return Reply(200, {"id": _id("resp"), "object": "response.compaction", "created_at": int(time.time()), "output": output, "usage": usage()})


def openai_responses(req: RecordedRequest) -> Reply:
    body = req.json
    if not isinstance(body, dict):
        return _error(400, "We could not parse the JSON body of your request.")
    model = body.get("model")
    if not model:
        return _error(400, "Missing required parameter: 'model'.")
    if "stream_options" in body and "include_usage" in (body.get("stream_options") or {}):
        return _error(400, "Unknown parameter: 'stream_options.include_usage'.")
    response = response_object(model, _answer(body), body)
    if body.get("stream"):
        return sse_reply(response_stream(response))
    return Reply(200, response)
