"""Fixtures for aigate's end-to-end tests.

- `mock` (session): one MockServer for every upstream (LLM providers, moderation,
  webhooks); reset before each test (`_fresh_mock`), checked for crashed behaviours after.
- `mock_factory` (module): more MockServers when a test needs separate upstreams.
- `envoy_factory` (module): ``envoy_factory(**kwargs) -> Envoy``; kwargs as
  `integration.harness.start_envoy`. Identical kwargs within a module return the same
  running Envoy; all are stopped at module end. Define a module-scoped fixture per
  config in the test module, e.g.::

      @pytest.fixture(scope="module")
      def envoy(envoy_factory, mock):
          return envoy_factory(plugin_config={"routes": [...]}, clusters={"mock_llm": mock})

- `expect_rejected` (session): ``expect_rejected(**kwargs) -> EnvoyExit`` for configs that
  Envoy (or the filter's on_configure) must refuse.
- `wasm` (session): path of the filter; fails the test if it is not built.

When a test fails, the report gets the tail of every running Envoy's log, its last
access-log entries and the mock's recent requests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from integration.harness import LIVE_ENVOYS, Cluster, Envoy, EnvoyExit, run_envoy_expect_exit, start_envoy, wasm_path
from integration.mocks import MockServer

_MOCKS: list[MockServer] = []


@pytest.fixture(scope="session")
def mock() -> Iterator[MockServer]:
    server = MockServer(name="mock").start()
    _MOCKS.append(server)
    yield server
    server.stop()
    _MOCKS.remove(server)


@pytest.fixture(autouse=True)
def _fresh_mock(mock: MockServer) -> Iterator[None]:
    mock.reset()
    yield
    errors = mock.errors
    if errors:
        pytest.fail("mock behaviour crashed:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="module")
def mock_factory() -> Iterator[Callable[..., MockServer]]:
    made: list[MockServer] = []

    def make(**kwargs: Any) -> MockServer:
        server = MockServer(**kwargs).start()
        made.append(server)
        _MOCKS.append(server)
        return server

    yield make
    for server in made:
        server.stop()
        _MOCKS.remove(server)


@pytest.fixture(scope="session")
def wasm() -> Path:
    p = wasm_path()
    if not p.exists():
        pytest.fail(f"filter not built: {p} is missing (run `make wasm`, or set AIGATE_WASM)", pytrace=False)
    return p


def _key_default(o: Any) -> Any:
    if isinstance(o, MockServer):
        return f"mock@{o.port}"
    if isinstance(o, Cluster):
        return {"cluster": [o.port, o.http2, o.host, o.connect_timeout_s, o.extra]}
    if isinstance(o, Path):
        return str(o)
    if callable(o):
        return f"callable@{id(o)}"
    return repr(o)


@pytest.fixture(scope="module")
def envoy_factory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Envoy]]:
    started: dict[str, Envoy] = {}

    def make(**kwargs: Any) -> Envoy:
        key = json.dumps(kwargs, sort_keys=True, default=_key_default)
        envoy = started.get(key)
        if envoy is not None and envoy.running:
            return envoy
        if kwargs.get("with_filter", True) and "wasm" not in kwargs:
            p = wasm_path()
            if not p.exists():
                pytest.fail(f"filter not built: {p} is missing (run `make wasm`, or set AIGATE_WASM)", pytrace=False)
        name = f"{request.module.__name__.rsplit('.', 1)[-1]}-{len(started)}"
        kwargs = dict(kwargs)
        kwargs.setdefault("name", name)
        kwargs.setdefault("workdir", tmp_path_factory.mktemp(f"envoy-{name}"))
        envoy = start_envoy(**kwargs)
        started[key] = envoy
        return envoy

    yield make
    for envoy in started.values():
        envoy.stop()


@pytest.fixture(scope="session")
def expect_rejected(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., EnvoyExit]:
    def run(**kwargs: Any) -> EnvoyExit:
        kwargs.setdefault("workdir", tmp_path_factory.mktemp("envoy-rejected"))
        return run_envoy_expect_exit(**kwargs)

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for envoy in list(LIVE_ENVOYS):
        report.sections.append((f"{envoy.name} log tail ({envoy.log_path})", envoy.log_tail(60)))
        try:
            entries = envoy.access_log()[-5:]
        except Exception as e:  # a half-written line must not hide the real failure
            entries = [{"error": repr(e)}]
        if entries:
            report.sections.append((f"{envoy.name} access log (last {len(entries)})", "\n".join(map(json.dumps, entries))))
    for server in _MOCKS:
        reqs = server.requests[-10:]
        if reqs:
            report.sections.append((f"{server.name} requests (last {len(reqs)})", "\n".join(map(repr, reqs))))
