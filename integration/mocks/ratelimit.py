"""A small rate limit service for the `rls` backend's end-to-end tests.

It serves `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` over gRPC (grpcio,
a generic handler; the protobuf is hand-encoded below, like the filter's) and counts with
fixed windows, the scheme of envoyproxy/ratelimit's fixed-window cache: one counter per
descriptor and window start, `INCRBY <key> <hits_addend>` then an expiry of two windows.
envoyproxy/ratelimit keeps those counters in Redis (or memcached) so that several replicas
share them; this one service keeps them in its own memory (`FixedWindowCounters`), which is
the same thing for one replica and needs no Redis on the machine. Unlike envoyproxy/ratelimit
it takes `hits_addend` 0 literally, as Limitador does: a check that counts nothing.

    rls = RateLimitServer({("chat", "per-user"): Rule(100, 60_000)}).start()
    Cluster(rls.port, http2=True)        # Envoy speaks gRPC: the cluster must be HTTP/2
    rls.calls                            # every request: Call(domain, descriptors, hits)
    rls.stop()

Descriptors are those aigate sends: entries `route`, `limit`, `key`. A descriptor without a
rule gets `OK` with no limit (envoyproxy/ratelimit answers unknown descriptors that way).
Test hooks: `rls.mode = "unavailable"` answers every call with gRPC UNAVAILABLE; a
descriptor whose key is `slow` makes the call sleep `slow_s` first (for timeouts).
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc

SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
METHOD = "ShouldRateLimit"

CODE_OK = 1
CODE_OVER_LIMIT = 2
# RateLimitResponse.RateLimit.Unit
UNITS = {1_000: 1, 60_000: 2, 3_600_000: 3, 86_400_000: 4}


# ---------------------------------------------------------------------------
# protobuf wire format (only what these messages use)
# ---------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _field_bytes(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _fields(data: bytes):
    """Yields (field number, wire type, value) of a message; value is an int or bytes."""
    i = 0
    while i < len(data):
        tag, i = _read_varint(data, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 2:
            n, i = _read_varint(data, i)
            value, i = data[i : i + n], i + n
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


@dataclass
class Call:
    domain: str
    descriptors: list[list[tuple[str, str]]]
    hits: int
    at: float = field(default_factory=time.monotonic)


def decode_request(data: bytes) -> Call:
    domain, descriptors, hits = "", [], 0
    for number, _, value in _fields(data):
        if number == 1:
            domain = value.decode()
        elif number == 2:
            entries = []
            for n, _, entry in _fields(value):
                if n != 1:
                    continue
                kv = {k: v.decode() for k, _, v in _fields(entry) if k in (1, 2)}
                entries.append((kv.get(1, ""), kv.get(2, "")))
            descriptors.append(entries)
        elif number == 3:
            hits = value
    return Call(domain, descriptors, hits)


def encode_request(domain: str, descriptors: list[list[tuple[str, str]]], hits: int) -> bytes:
    """The client side, for tests of the server itself."""
    out = _field_bytes(1, domain.encode())
    for descriptor in descriptors:
        entries = b"".join(_field_bytes(1, _field_bytes(1, k.encode()) + _field_bytes(2, v.encode())) for k, v in descriptor)
        out += _field_bytes(2, entries)
    return out + _field_varint(3, hits)


@dataclass
class Status:
    code: int
    limit: int | None = None
    unit: int = 0
    remaining: int = 0
    reset_ms: int | None = None

    def encode(self) -> bytes:
        out = _field_varint(1, self.code)
        if self.limit is not None:
            out += _field_bytes(2, _field_varint(1, self.limit) + _field_varint(2, self.unit))
        out += _field_varint(3, self.remaining)
        if self.reset_ms is not None:
            seconds, ms = divmod(self.reset_ms, 1000)
            out += _field_bytes(4, _field_varint(1, seconds) + _field_varint(2, ms * 1_000_000))
        return out


def encode_response(overall: int, statuses: list[Status]) -> bytes:
    return _field_varint(1, overall) + b"".join(_field_bytes(2, s.encode()) for s in statuses)


def decode_response(data: bytes) -> tuple[int, list[dict[str, int]]]:
    overall, statuses = 0, []
    for number, _, value in _fields(data):
        if number == 1:
            overall = value
        elif number == 2:
            status: dict[str, int] = {}
            for n, _, v in _fields(value):
                if n == 1:
                    status["code"] = v
                elif n == 2:
                    status.update({("limit", "unit")[k - 1]: x for k, _, x in _fields(v) if k in (1, 2)})
                elif n == 3:
                    status["remaining"] = v
            statuses.append(status)
    return overall, statuses


# ---------------------------------------------------------------------------
# the service
# ---------------------------------------------------------------------------


class FixedWindowCounters:
    """Counters with an expiry, as the Redis commands envoyproxy/ratelimit uses (`INCRBY`,
    `PEXPIRE`, `GET`): thread-safe, an expired counter reads 0 and starts again from 0."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (value, expires at)

    def incrby(self, key: str, n: int, ttl_ms: int) -> int:
        """Adds n and (re)sets the expiry: `INCRBY key n` + `PEXPIRE key ttl_ms` in one step."""
        now = self._clock()
        with self._lock:
            value = self._live(key, now) + n
            self._counters[key] = (value, now + ttl_ms / 1000)
            return value

    def get(self, key: str) -> int:
        with self._lock:
            return self._live(key, self._clock())

    def _live(self, key: str, now: float) -> int:
        value, expires = self._counters.get(key, (0, now))
        if expires <= now:
            self._counters.pop(key, None)
            return 0
        return value


@dataclass(frozen=True)
class Rule:
    limit: int  # tokens per window
    window_ms: int


class RateLimitServer:
    def __init__(
        self,
        rules: dict[tuple[str, str], Rule],
        *,
        domain: str = "aigate",
        slow_s: float = 1.0,
    ) -> None:
        self.rules = dict(rules)
        self.domain = domain
        self.slow_s = slow_s
        self.mode = "ok"
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._counters = FixedWindowCounters()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                METHOD: grpc.unary_unary_rpc_method_handler(
                    self._should_rate_limit,
                    request_deserializer=decode_request,
                    response_serializer=lambda b: b,
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def start(self) -> "RateLimitServer":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=0)

    def reports(self) -> list[Call]:
        """Calls that counted tokens (hits_addend > 0)."""
        with self._lock:
            return [c for c in self.calls if c.hits > 0]

    def wait_reports(self, n: int, timeout_s: float = 5.0) -> list[Call]:
        deadline = time.monotonic() + timeout_s
        while True:
            reports = self.reports()
            if len(reports) >= n or time.monotonic() > deadline:
                return reports
            time.sleep(0.02)

    def used(self, route: str, limit: str, key: str) -> int:
        """Tokens counted for a key in the current window."""
        rule = self.rules[(route, limit)]
        now_ms = int(time.time() * 1000)
        return self._counters.get(self._key(route, limit, key, now_ms - now_ms % rule.window_ms))

    def _key(self, route: str, limit: str, key: str, window_start: int) -> str:
        return f"{self.domain}|{route}|{limit}|{key}|{window_start}"

    def _should_rate_limit(self, call: Call, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.calls.append(call)
        if self.mode == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, "rate limit service is down (test hook)")
        entries = [dict(d) for d in call.descriptors]
        if any(e.get("key") == "slow" for e in entries):
            time.sleep(self.slow_s)
        statuses = [self._status(e, call.hits) for e in entries]
        overall = CODE_OVER_LIMIT if any(s.code == CODE_OVER_LIMIT for s in statuses) else CODE_OK
        return encode_response(overall, statuses)

    def _status(self, entries: dict[str, str], hits: int) -> Status:
        rule = self.rules.get((entries.get("route", ""), entries.get("limit", "")))
        if rule is None:
            return Status(CODE_OK)
        now_ms = int(time.time() * 1000)
        window_start = now_ms - now_ms % rule.window_ms
        key = self._key(entries["route"], entries["limit"], entries.get("key", ""), window_start)
        if hits == 0:
            value = self._counters.get(key)
            over = value >= rule.limit  # a zero-cost check: is anything left?
        else:
            value = self._counters.incrby(key, hits, 2 * rule.window_ms)
            over = value > rule.limit
        return Status(
            CODE_OVER_LIMIT if over else CODE_OK,
            limit=rule.limit,
            unit=UNITS.get(rule.window_ms, 0),
            remaining=max(0, rule.limit - value),
            reset_ms=window_start + rule.window_ms - now_ms,
        )
