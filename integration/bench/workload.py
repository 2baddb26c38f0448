"""Request bodies for `make bench`: chat completions (or Anthropic Messages, for the
opt-in `msg ...` scenarios) of an exact size, deterministic.

The prompt is plain prose with a little personal data sprinkled in (an e-mail address and
a phone number every ~4 KB), so a regex guard has real matches to mask but mostly scans
text that does not match, as it would in practice. Long prompts are split into a
conversation of ~4 KB messages.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

WORDS = (
    "the quarterly report shows revenue growth across all regions while operating costs "
    "remained stable please summarise the main risks and suggest three actions for the "
    "next planning cycle including hiring infrastructure and customer support budgets "
    "our team reviewed the contract terms and found several clauses that need legal review "
    "before signature the delivery schedule depends on the supplier confirming volumes"
).split()
PII = ("contact jane.doe@example.com for details", "call 415-555-0134 after lunch")
MESSAGE_CHARS = 4000


@dataclass(frozen=True)
class Scenario:
    name: str  # table label
    body_bytes: int  # exact size of the JSON request body
    stream_events: int = 0  # >0: the upstream answers with this many SSE content events
    api: str = "chat"  # "chat" (POST /v1/chat/completions) or "messages" (POST /v1/messages)

    @property
    def stream(self) -> bool:
        return self.stream_events > 0

    @property
    def path(self) -> str:
        return MESSAGES_PATH if self.api == "messages" else CHAT_PATH


CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"

SCENARIOS = (
    Scenario("1 KB", 1024),
    Scenario("32 KB", 32 * 1024),
    Scenario("1 MB", 1_000_000),
    Scenario("stream 200", 1024, stream_events=200),
)
# Anthropic Messages passthrough: opt-in by name (BENCH_SCENARIOS), measured with
# route-messages.json (an `anthropic` route for /v1/messages beside the chat route).
MESSAGES_SCENARIOS = (
    Scenario("msg 1 KB", 1024, api="messages"),
    Scenario("msg 32 KB", 32 * 1024, api="messages"),
    Scenario("msg stream 200", 1024, stream_events=200, api="messages"),
)


def _prose(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    since_pii = 1500  # the first match comes early, so even 1 KB prompts have one
    while size < chars:
        if since_pii > 2000:
            word = PII[rng.randrange(len(PII))]
            since_pii = 0
        else:
            word = WORDS[rng.randrange(len(WORDS))]
        out.append(word)
        size += len(word) + 1
        since_pii += len(word) + 1
    return " ".join(out)[:chars]


def _messages(text: str, system: bool = True) -> list[dict[str, str]]:
    parts = [text[i : i + MESSAGE_CHARS] for i in range(0, len(text), MESSAGE_CHARS)] or [""]
    messages = [{"role": "system", "content": "You are a concise assistant."}] if system else []
    # Alternate user/assistant so that the conversation ends with the user.
    for index, part in enumerate(parts):
        role = "user" if (len(parts) - 1 - index) % 2 == 0 else "assistant"
        messages.append({"role": role, "content": part})
    return messages


def body(scenario: Scenario) -> bytes:
    """A chat-completions (or Messages) body of exactly `scenario.body_bytes` bytes."""
    rng = random.Random(scenario.body_bytes)
    messages_api = scenario.api == "messages"
    base: dict[str, object] = {"model": "gpt-4o-mini", "messages": []}
    if messages_api:
        base = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "You are a concise assistant.", "messages": []}
    if scenario.stream:
        base["stream"] = True
    overhead = len(json.dumps(base, separators=(",", ":")))
    text = _prose(rng, scenario.body_bytes)
    # Shrink the prose until the encoded body fits, then pad the last message with spaces.
    while True:
        base["messages"] = _messages(text, system=not messages_api)
        encoded = json.dumps(base, separators=(",", ":")).encode()
        if len(encoded) <= scenario.body_bytes:
            break
        text = text[: len(text) - (len(encoded) - scenario.body_bytes) - 1]
    missing = scenario.body_bytes - len(encoded)
    messages = base["messages"]
    assert isinstance(messages, list)
    messages[-1]["content"] += " " * missing
    encoded = json.dumps(base, separators=(",", ":")).encode()
    assert len(encoded) == scenario.body_bytes, (len(encoded), scenario.body_bytes, overhead)
    return encoded
