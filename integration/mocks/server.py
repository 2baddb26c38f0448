"""A scriptable HTTP/1.1 mock server (stdlib only).

One `MockServer` plays every upstream aigate talks to in the tests: LLM providers
(OpenAI, Azure OpenAI, Anthropic, Gemini), the moderation API, guard webhooks and a
guardian model. Paths decide the behaviour (see `integration/mocks/behaviours.py`),
so one instance can sit behind several Envoy clusters.

Use it in-process::

    mock = MockServer().start()          # free port on 127.0.0.1
    mock.enqueue(500, {"error": "boom"}) # next request gets this
    ... drive traffic ...
    mock.requests[-1].json               # what arrived
    mock.reset()                         # forget requests and scripted replies
    mock.stop()

or from the command line: ``python -m integration.mocks --port 8001``.

Adding a behaviour: write ``def handler(req: RecordedRequest) -> Reply`` and
register it with ``mock.add_route("POST", r"/v1/thing/(?P<id>[^/]+)", handler)``
(per instance) or append it to ``behaviours.DEFAULT_ROUTES`` (for everyone).
Named groups of the pattern arrive in ``req.params``.
"""

from __future__ import annotations

import json
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

Body = bytes | str | dict | list | None


@dataclass
class Reply:
    """What the mock answers with.

    - `body`: bytes/str sent as is; dict/list JSON-encoded (content-type
      application/json unless `headers` says otherwise).
    - `chunks`: if given, the answer uses chunked transfer encoding and each item
      is written as its own chunk, flushed, then `chunk_delay_s` of sleep. `body`
      is ignored. Use `sse.split_awkwardly` to cut an SSE stream.
    - `delay_s`: sleep before the status line (a "hanging" upstream). Woken early
      by `MockServer.reset()` / `stop()`.
    - `abort`: after the delay, reset the TCP connection instead of answering.
    - `abort_after_chunks`: send that many chunks, then reset the connection
      (an upstream dying mid-stream).
    - `trailers`: with `chunks`, HTTP/1.1 trailer fields sent after the last chunk (the
      Envoy cluster needs `http_protocol_options.enable_trailers` to pass them on).
    """

    status: int = 200
    body: Body = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes | str] | None = None
    delay_s: float = 0.0
    chunk_delay_s: float | None = None
    abort: bool = False
    abort_after_chunks: int | None = None
    trailers: dict[str, str] | None = None


@dataclass
class RecordedRequest:
    """One request as the mock received it."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    json: Any = None  # parsed body if it was JSON, else None
    params: dict[str, str] = field(default_factory=dict)  # named groups of the route
    received_at: float = 0.0

    @property
    def path_only(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def __repr__(self) -> str:  # short, for assertion messages
        body = self.text
        if len(body) > 200:
            body = body[:200] + "..."
        return f"<{self.method} {self.path} {body!r}>"


Handler = Callable[[RecordedRequest], Reply]


@dataclass
class _Scripted:
    reply: Reply
    method: str | None
    path: str | None  # prefix of the path (without query)
    times: int

    def matches(self, req: RecordedRequest) -> bool:
        if self.method is not None and self.method.upper() != req.method:
            return False
        if self.path is not None and not req.path_only.startswith(self.path):
            return False
        return True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # do not join handler threads (some may be hanging on purpose)
    request_queue_size = 256
    allow_reuse_address = True

    mock: "MockServer"

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which may block on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    server_version = "aigate-mock/1"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # Small writes must leave as separate TCP segments, so streamed pieces
        # reach Envoy (and the filter) as separate reads.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        if self.server.mock.log:
            sys.stderr.write(f"[{self.server.mock.name}] {self.address_string()} {format % args}\n")

    # Every method goes through the same dispatcher.
    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        te = (self.headers.get("transfer-encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until an empty line
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                out += self.rfile.read(size)
                self.rfile.readline(65537)  # CRLF after the chunk
            return bytes(out)
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        mock = self.server.mock
        body = self._read_body()
        headers: dict[str, str] = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        req = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=headers,
            body=body,
            json=parsed,
            received_at=time.time(),
        )
        mock._record(req)
        try:
            reply = mock._reply_for(req)
        except Exception:  # a broken behaviour must show up in the test, not hang it
            tb = traceback.format_exc()
            mock._record_error(f"{req.method} {req.path}: {tb}")
            reply = Reply(500, {"error": {"message": "mock handler crashed", "type": "mock_error"}})
        self._send(reply, mock)

    def _send(self, reply: Reply, mock: "MockServer") -> None:
        release = mock._release
        if reply.delay_s > 0:
            release.wait(reply.delay_s)
        if reply.abort:
            self._reset_connection()
            return
        headers = {k.lower(): v for k, v in reply.headers.items()}
        chunked = reply.chunks is not None
        payload = b""
        if not chunked:
            payload = _encode_body(reply.body, headers)
        elif isinstance(reply.body, (dict, list)) and "content-type" not in headers:
            headers["content-type"] = "application/json"
        self.send_response(reply.status)
        for k, v in headers.items():
            if k in ("content-length", "transfer-encoding"):
                continue
            self.send_header(k, v)
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if not chunked:
            if payload:
                self.wfile.write(payload)
            self.wfile.flush()
            return
        delay = mock.chunk_delay_s if reply.chunk_delay_s is None else reply.chunk_delay_s
        self.wfile.flush()
        pieces = [p.encode() if isinstance(p, str) else bytes(p) for p in reply.chunks or []]
        pieces = [p for p in pieces if p]  # an empty chunk would end the body
        try:
            for i, data in enumerate(pieces):
                if reply.abort_after_chunks is not None and i >= reply.abort_after_chunks:
                    self._reset_connection()
                    return
                frame = b"%x\r\n%s\r\n" % (len(data), data)
                last = i == len(pieces) - 1
                if last and reply.abort_after_chunks is None:
                    # The end of the body leaves with the last piece, as real servers do:
                    # clients that hang up right after `data: [DONE]` still let Envoy
                    # see the end of stream.
                    frame += b"0\r\n" + _trailer_block(reply.trailers) + b"\r\n"
                self.wfile.write(frame)
                self.wfile.flush()
                if not last and delay > 0 and not release.is_set():
                    time.sleep(delay)
            if reply.abort_after_chunks is not None:
                self._reset_connection()
                return
            if not pieces:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _reset_connection(self) -> None:
        self.close_connection = True
        try:
            # SO_LINGER 0 turns close() into a TCP RST.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


def _trailer_block(trailers: dict[str, str] | None) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in (trailers or {}).items())


def _encode_body(body: Body, headers: dict[str, str]) -> bytes:
    if body is None:
        return b""
    if isinstance(body, (dict, list)):
        headers.setdefault("content-type", "application/json")
        return json.dumps(body).encode()
    if isinstance(body, str):
        headers.setdefault("content-type", "text/plain; charset=utf-8")
        return body.encode()
    return bytes(body)


class MockServer:
    """See the module docstring. Thread-safe; all methods may be called from tests
    while Envoy is talking to the server."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "mock",
        routes: Iterable[tuple[str, str, Handler]] | None = None,
        chunk_delay_s: float = 0.005,
        log: bool = False,
    ) -> None:
        from . import behaviours  # local import: behaviours imports this module

        self.host = host
        self.name = name
        self.log = log
        self.chunk_delay_s = chunk_delay_s
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._errors: list[str] = []
        self._scripted: list[_Scripted] = []
        self._release = threading.Event()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for method, pattern, handler in routes if routes is not None else behaviours.DEFAULT_ROUTES:
            self._routes.append((method.upper(), re.compile(pattern), handler))
        self._httpd = _HTTPServer((host, port), _RequestHandler)
        self._httpd.mock = self
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> "MockServer":
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name=f"{self.name}-{self.port}", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Blocking variant for the CLI."""
        self._httpd.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        self._release.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "MockServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------
    def enqueue(
        self,
        status: int = 200,
        body: Body = None,
        headers: dict[str, str] | None = None,
        *,
        chunks: list[bytes | str] | None = None,
        delay_s: float = 0.0,
        chunk_delay_s: float | None = None,
        abort: bool = False,
        abort_after_chunks: int | None = None,
        path: str | None = None,
        method: str | None = None,
        times: int = 1,
    ) -> Reply:
        """Script the next matching request(s).

        Scripted replies are used in FIFO order by the first request that matches
        `method` and `path` (a prefix of the path without the query; None = any);
        after `times` uses (-1: forever) the entry is dropped. Requests that match
        no scripted reply get the default behaviour of their path.
        """
        reply = Reply(
            status=status,
            body=body,
            headers=dict(headers or {}),
            chunks=chunks,
            delay_s=delay_s,
            chunk_delay_s=chunk_delay_s,
            abort=abort,
            abort_after_chunks=abort_after_chunks,
        )
        self.enqueue_reply(reply, path=path, method=method, times=times)
        return reply

    def enqueue_reply(self, reply: Reply, *, path: str | None = None, method: str | None = None, times: int = 1) -> None:
        with self._lock:
            self._scripted.append(_Scripted(reply, method, path, times))

    def add_route(self, method: str, pattern: str, handler: Handler, *, first: bool = True) -> None:
        """Add a default behaviour: `pattern` is a regex matched (fullmatch) against the
        path without query. `first=True` puts it ahead of the built-in behaviours."""
        entry = (method.upper(), re.compile(pattern), handler)
        with self._lock:
            if first:
                self._routes.insert(0, entry)
            else:
                self._routes.append(entry)

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator form of `add_route`."""

        def deco(fn: Handler) -> Handler:
            self.add_route(method, pattern, fn)
            return fn

        return deco

    def reset(self) -> None:
        """Forget recorded requests, errors and scripted replies; wake hanging handlers."""
        with self._lock:
            self._requests.clear()
            self._errors.clear()
            self._scripted.clear()
            old, self._release = self._release, threading.Event()
        old.set()

    # -- inspection --------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise AssertionError(f"{self.name}: no request received")
            return self._requests[-1]

    @property
    def errors(self) -> list[str]:
        """Tracebacks of behaviours that crashed (they answered 500)."""
        with self._lock:
            return list(self._errors)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path_only.startswith(path_prefix) and (method is None or r.method == method.upper())
        ]

    def wait_for_requests(self, n: int, *, path: str | None = None, timeout_s: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least `n` requests (to `path` prefix, if given) arrived."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.requests_to(path) if path is not None else self.requests
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: expected {n} request(s) to {path or '*'}, got {len(got)}: {got}")
            time.sleep(0.01)

    # -- internals ---------------------------------------------------------
    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def _record_error(self, msg: str) -> None:
        with self._lock:
            self._errors.append(msg)
        sys.stderr.write(f"[{self.name}] behaviour error: {msg}\n")

    def _reply_for(self, req: RecordedRequest) -> Reply:
        with self._lock:
            for i, s in enumerate(self._scripted):
                if s.matches(req):
                    if s.times > 0:
                        s.times -= 1
                        if s.times == 0:
                            del self._scripted[i]
                    return s.reply
            routes = list(self._routes)
        path = req.path_only
        for method, pattern, handler in routes:
            if method not in ("*", req.method):
                continue
            m = pattern.fullmatch(path)
            if m:
                req.params = {k: v for k, v in m.groupdict().items() if v is not None}
                return handler(req)
        return Reply(
            404,
            {"error": {"message": f"mock: no behaviour for {req.method} {path}", "type": "not_found"}},
        )
