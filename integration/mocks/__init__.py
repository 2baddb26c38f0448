"""Mock upstream services for aigate's end-to-end tests (stdlib only).

    from integration.mocks import MockServer, Reply
    from integration.mocks import llm, sse   # response builders and SSE helpers
"""

from . import behaviours, llm, responses, sse
from .server import MockServer, RecordedRequest, Reply

__all__ = ["MockServer", "RecordedRequest", "Reply", "behaviours", "llm", "responses", "sse"]
