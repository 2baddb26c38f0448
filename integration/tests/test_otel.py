"""The filter's metrics through Envoy's OpenTelemetry stats sink (`envoy.stat_sinks.open_telemetry`)
into a small OTLP/gRPC receiver: the GenAI conventions' names, attributes and bucket boundaries
arrive as they are, with the stats_config of envoy/envoy.yaml and the sink config of
envoy/otel-sink.yaml, and no collector-side renaming.

The receiver is grpcio with a generic handler; OTLP's protobuf messages are decoded by hand
(the wire format is small, and the OTLP protos are not a dependency of the project).
"""

from __future__ import annotations

import struct
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Iterator

import grpc
import httpx
import pytest
import yaml

from integration.harness import REPO_ROOT, Cluster, Envoy
from integration.harness.envoy import SECONDS_BUCKETS, TOKEN_BUCKETS
from integration.mocks import MockServer
from integration.mocks.llm import openai_completion, openai_stream, sse_reply

# The model the mock answers with: more precise than the one asked for, as OpenAI's are.
ANSWERED_MODEL = "gpt-4.1-2025-04-14"

EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

# ------------------------------------------------------------------ protobuf wire format


def fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message: varints as int, fixed64/32 as bytes,
    length-delimited as bytes."""
    out = []
    i = 0
    while i < len(data):
        key, i = varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(data, i)
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 2:
            size, i = varint(data, i)
            value, i = data[i : i + size], i + size
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        out.append((number, wire, value))
    return out


def varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def get(data: bytes, number: int) -> list[Any]:
    return [value for n, _, value in fields(data) if n == number]


def attributes(point: bytes, number: int) -> dict[str, str]:
    """KeyValue{key=1, value=AnyValue{string_value=1}} list."""
    out = {}
    for kv in get(point, number):
        key = get(kv, 1)[0].decode()
        strings = [get(v, 1) for v in get(kv, 2)]
        out[key] = strings[0][0].decode() if strings and strings[0] else ""
    return out


def packed_doubles(values: list[bytes]) -> list[float]:
    out: list[float] = []
    for blob in values:
        out.extend(struct.unpack(f"<{len(blob) // 8}d", blob))
    return out


def packed_fixed64(values: list[bytes]) -> list[int]:
    out: list[int] = []
    for blob in values:
        out.extend(struct.unpack(f"<{len(blob) // 8}Q", blob))
    return out


def decode_export(request: bytes) -> list[dict[str, Any]]:
    """ExportMetricsServiceRequest -> [{name, unit, kind, points: [{attributes, ...}]}]."""
    metrics = []
    for resource_metrics in get(request, 1):
        for scope_metrics in get(resource_metrics, 2):
            for metric in get(scope_metrics, 2):
                entry: dict[str, Any] = {
                    "name": get(metric, 1)[0].decode(),
                    "unit": (get(metric, 3) or [b""])[0].decode(),
                    "points": [],
                }
                for histogram in get(metric, 9):
                    entry["kind"] = "histogram"
                    for point in get(histogram, 1):
                        entry["points"].append(
                            {
                                "attributes": attributes(point, 9),
                                "count": struct.unpack("<Q", get(point, 4)[0])[0],
                                "bounds": packed_doubles(get(point, 7)),
                                "buckets": packed_fixed64(get(point, 6)),
                            }
                        )
                for total in get(metric, 7):
                    entry["kind"] = "sum"
                    for point in get(total, 1):
                        as_int = get(point, 6)
                        entry["points"].append(
                            {
                                "attributes": attributes(point, 7),
                                "value": struct.unpack("<q", as_int[0])[0] if as_int else None,
                            }
                        )
                for gauge in get(metric, 5):
                    entry["kind"] = "gauge"
                    for point in get(gauge, 1):
                        entry["points"].append({"attributes": attributes(point, 7)})
                metrics.append(entry)
    return metrics


# ------------------------------------------------------------------ receiver


class Receiver:
    """An OTLP/gRPC metrics endpoint that keeps every export request."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))

        def export(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self.lock:
                self.requests.append(request)
            return b""  # an empty ExportMetricsServiceResponse

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.metrics.v1.MetricsService",
            {"Export": grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)},
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def metrics(self) -> dict[str, dict[str, Any]]:
        """The latest export of each metric name (cumulative temporality)."""
        with self.lock:
            requests = list(self.requests)
        latest: dict[str, dict[str, Any]] = {}
        for request in requests:
            for metric in decode_export(request):
                latest[metric["name"]] = metric
        return latest


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.server.start()
    yield r
    r.server.stop(0)


def shipped_sink() -> dict[str, Any]:
    """The stats sink of envoy/otel-sink.yaml (cluster `otel_collector`)."""
    return yaml.safe_load(Path(REPO_ROOT, "envoy", "otel-sink.yaml").read_text())["stats_sinks"]


@pytest.fixture(scope="module")
def envoy(envoy_factory, mock: MockServer, receiver: Receiver) -> Envoy:
    config = {
        "routes": [
            {
                "name": "chat",
                "provider": {"kind": "openai", "authority": "api.openai.test", "auth": {"none": True}},
            }
        ]
    }

    def patch(bootstrap: dict[str, Any]) -> None:
        bootstrap["stats_sinks"] = shipped_sink()
        bootstrap["stats_flush_interval"] = "0.2s"

    return envoy_factory(
        plugin_config=config,
        clusters={"mock_llm": mock, "otel_collector": Cluster(receiver.port, http2=True)},
        patch=patch,
    )


def settled(metrics: dict[str, dict[str, Any]], names: set[str]) -> bool:
    """Every name arrived, and the histograms hold both answers (Envoy merges the workers'
    histograms at its flush, one interval after the counters)."""
    if not names <= set(metrics):
        return False
    usage = metrics["gen_ai.client.token.usage"]["points"]
    duration = metrics["gen_ai.client.operation.duration"]["points"]
    return all(p["count"] == 2 for p in usage + duration)


def wait_for(receiver: Receiver, names: set[str], timeout_s: float = 10.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = receiver.metrics()
        if settled(metrics, names) or time.monotonic() > deadline:
            return metrics
        time.sleep(0.1)


def test_genai_metrics_arrive_with_the_conventions_names_and_attributes(envoy: Envoy, mock: MockServer, receiver: Receiver) -> None:
    for stream in (False, True):
        if stream:
            reply = sse_reply(openai_stream(ANSWERED_MODEL, "hi", include_usage=True))
            mock.enqueue_reply(reply, path="/v1/chat/completions")
        else:
            mock.enqueue(200, openai_completion(ANSWERED_MODEL, "hi"), path="/v1/chat/completions")
        r = httpx.post(
            envoy.base_url + "/v1/chat/completions",
            json={"model": "gpt-4.1", "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert r.status_code == 200
    names = {
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk",
        "aigate.requests",
        "aigate.tokens",
    }
    metrics = wait_for(receiver, names)
    assert names <= set(metrics), sorted(metrics)

    usage = metrics["gen_ai.client.token.usage"]
    assert usage["kind"] == "histogram"
    by_type = {p["attributes"]["gen_ai.token.type"]: p for p in usage["points"]}
    assert set(by_type) == {"input", "output"}, "token types of the conventions, no total"
    for point in by_type.values():
        assert point["attributes"] == {
            "route": "chat",
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4.1",  # not gpt-4_1
            "gen_ai.response.model": ANSWERED_MODEL,  # the model the answer names
            "server.address": "api.openai.test",
            "server.port": str(mock.port),  # the upstream connection's
            "gen_ai.token.type": point["attributes"]["gen_ai.token.type"],
        }
        assert point["count"] == 2
        assert point["bounds"] == [float(b) for b in TOKEN_BUCKETS]

    for name in ("gen_ai.client.operation.duration", "gen_ai.client.operation.time_to_first_chunk"):
        metric = metrics[name]
        assert metric["kind"] == "histogram"
        (point,) = metric["points"]
        assert point["attributes"]["gen_ai.provider.name"] == "openai"
        assert point["attributes"]["gen_ai.request.model"] == "gpt-4.1"
        assert point["bounds"] == SECONDS_BUCKETS
    (duration,) = metrics["gen_ai.client.operation.duration"]["points"]
    assert duration["attributes"]["gen_ai.response.model"] == ANSWERED_MODEL
    assert metrics["gen_ai.client.operation.duration"]["points"][0]["count"] == 2
    assert metrics["gen_ai.client.operation.time_to_first_chunk"]["points"][0]["count"] == 1

    tokens = {p["attributes"]["gen_ai.token.type"]: p["value"] for p in metrics["aigate.tokens"]["points"]}
    assert tokens == {"input": 22, "output": 14}
    # The exact counters keep the labels of the request (budgets and bills go by them).
    for name in ("aigate.tokens", "aigate.requests"):
        assert all("gen_ai.response.model" not in p["attributes"] for p in metrics[name]["points"]), name
    # Every metric of ours arrives under its own name: nothing keeps Envoy's `wasmcustom.` prefix
    # or the `;key=value` label encoding.
    assert not [n for n in metrics if "wasmcustom" in n or ";" in n], sorted(metrics)

