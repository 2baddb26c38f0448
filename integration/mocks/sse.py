"""Server-sent-events helpers shared by the mock providers.

`sse_event` renders one event; `split_awkwardly` cuts a whole stream into the
pieces the mock writes one by one (each piece is one HTTP/1.1 chunk, flushed,
followed by a short sleep), so the filter under test sees events split in the
middle of the ``data:`` prefix, in the middle of the JSON, between the two
newlines that end an event, and also several events glued into one piece.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

# Piece sizes cycled over the byte stream. Small primes and 1 make sure cuts land
# inside "data:", inside JSON strings and between "\n" and "\n"; the larger ones
# glue several small events together.
AWKWARD_SIZES = (3, 17, 1, 41, 7, 120, 2, 29, 64, 5, 11, 300)


def sse_event(data: Any, event: str | None = None, newline: str = "\n") -> bytes:
    """One SSE event. `data` is JSON-encoded unless it is already a str."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    out = ""
    if event is not None:
        out += f"event: {event}{newline}"
    out += f"data: {payload}{newline}{newline}"
    return out.encode()


def sse_stream(events: Iterable[bytes]) -> bytes:
    return b"".join(events)


def split_awkwardly(data: bytes, sizes: Iterable[int] = AWKWARD_SIZES) -> list[bytes]:
    """Cut `data` into consecutive pieces whose sizes cycle through `sizes`."""
    sizes = list(sizes)
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError("sizes must be positive")
    pieces: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        pieces.append(data[pos : pos + n])
        pos += n
        i += 1
    return pieces


def split_per_event(data: bytes, newline: str = "\n") -> list[bytes]:
    """One piece per event (the polite way), for tests that want it."""
    sep = (newline * 2).encode()
    parts = data.split(sep)
    out = [p + sep for p in parts if p]
    return out


def parse_sse(data: bytes | str) -> list[dict[str, str]]:
    """Parse an SSE byte stream into a list of {"event": ..., "data": ...} dicts.

    Handles LF and CRLF line endings. Used by tests to read streamed answers.
    """
    text = data.decode() if isinstance(data, bytes) else data
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    events: list[dict[str, str]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        ev: dict[str, str] = {}
        datas: list[str] = []
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                datas.append(value)
            elif field:
                ev[field] = value
        if datas:
            ev["data"] = "\n".join(datas)
        if ev:  # a block of comments only is no event
            events.append(ev)
    return events
