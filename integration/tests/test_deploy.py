"""Shipping: the deployment manifests (Istio, Envoy Gateway), the plain-Envoy ECDS config,
the OCI Dockerfile and the size-optimised release build.

- Manifests are valid YAML with the fields the filter needs, and every plugin config in
  them passes `aigate check` (the filter's own config code).
- envoy/envoy-ecds.yaml + envoy/aigate-ecds.yaml load in the real Envoy, serve, and a new
  ECDS file changes the plugin config without a restart.
- The wasm-opt build (make release, wasm-opt from npm's binaryen) loads and serves like the cargo build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.harness import REPO_ROOT, Envoy, wasm_path

yaml = pytest.importorskip("yaml")

DEPLOY = REPO_ROOT / "deploy"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d.get('kind') for d in docs]}"
    return found[0]


def aigate_cli() -> str:
    """The native CLI: $AIGATE_CLI, else the cargo build (built here if missing)."""
    env = os.environ.get("AIGATE_CLI")
    if env:
        return env
    for p in (REPO_ROOT / "target/debug/aigate", REPO_ROOT / "target/release/aigate"):
        if p.exists():
            newest_src = max(f.stat().st_mtime for f in (REPO_ROOT / "src").rglob("*.rs"))
            if p.stat().st_mtime >= newest_src:
                return str(p)
    subprocess.run(["cargo", "build", "--quiet", "--bin", "aigate"], cwd=REPO_ROOT, check=True)
    return str(REPO_ROOT / "target/debug/aigate")


def aigate_check(config: dict[str, Any] | str, tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{name}.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    return subprocess.run(
        [aigate_cli(), "check", str(path), "--placeholder-env"], capture_output=True, text=True, timeout=60
    )


def assert_valid(config: dict[str, Any] | str, tmp_path: Path, name: str) -> None:
    out = aigate_check(config, tmp_path, name)
    assert out.returncode == 0, f"{name}: aigate check refused the embedded plugin config:\n{out.stdout}{out.stderr}"


# ---------------------------------------------------------------------------------- Istio


def test_istio_wasmplugin(tmp_path: Path) -> None:
    docs = load_all(DEPLOY / "istio/wasmplugin.yaml")
    plugin = one(docs, "WasmPlugin")
    assert plugin["apiVersion"].startswith("extensions.istio.io/")
    spec = plugin["spec"]
    assert spec["url"].startswith("oci://")
    assert spec["pluginName"] == "aigate", "must equal the filter's root id"
    assert spec["phase"] in ("AUTHN", "AUTHZ", "STATS")
    assert spec["failStrategy"] == "FAIL_CLOSE"
    env = {e["name"]: e for e in spec["vmConfig"]["env"]}
    config = spec["pluginConfig"]
    # Every secret the config reads from the environment is passed into the VM from the host.
    for name in env_secrets(config):
        assert env.get(name, {}).get("valueFrom") == "HOST", f"{name} is not passed through vmConfig.env"
    assert not config.get("allow_on_headers_stop_iteration"), "WasmPlugin cannot set it: mode B only"
    assert_valid(config, tmp_path, "istio-wasmplugin")
    # The route to the provider is there too, with a timeout longer than Envoy's 15 s.
    vs = one(docs, "VirtualService")
    assert vs["spec"]["http"][0]["timeout"] == "300s"


def test_istio_envoyfilter_mode_a(tmp_path: Path) -> None:
    (ef,) = load_all(DEPLOY / "istio/envoyfilter-mode-a.yaml")
    assert ef["kind"] == "EnvoyFilter"
    patches = ef["spec"]["configPatches"]
    ext = next(p for p in patches if p["applyTo"] == "EXTENSION_CONFIG")
    flt = next(p for p in patches if p["applyTo"] == "HTTP_FILTER")
    assert ext["patch"]["operation"] == "ADD"
    value = ext["patch"]["value"]
    wasm = value["typed_config"]
    assert wasm["@type"] == WASM_TYPE
    cfg = wasm["config"]
    assert cfg["allow_on_headers_stop_iteration"] is True
    assert cfg["root_id"] == "aigate" and cfg["fail_open"] is False
    plugin_config = json.loads(cfg["configuration"]["value"])
    assert plugin_config["allow_on_headers_stop_iteration"] is True, "the plugin config must agree with the PluginConfig"
    for name in env_secrets(plugin_config):
        assert name in cfg["vm_config"]["environment_variables"]["host_env_keys"]
    assert_valid(plugin_config, tmp_path, "istio-mode-a")
    # The HTTP filter loads that resource by name through ECDS, before the router.
    assert flt["patch"]["operation"] == "INSERT_BEFORE"
    assert flt["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
    discovery = flt["patch"]["value"]["config_discovery"]
    assert flt["patch"]["value"]["name"] == value["name"]
    assert discovery["type_urls"] == [WASM_TYPE]


# ---------------------------------------------------------------------------------- Envoy Gateway


def test_envoy_gateway_extension_policy(tmp_path: Path) -> None:
    docs = load_all(DEPLOY / "envoy-gateway/extension-policy.yaml")
    policy = one(docs, "EnvoyExtensionPolicy")
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    (wasm,) = policy["spec"]["wasm"]
    assert wasm["rootID"] == "aigate"
    assert wasm["failOpen"] is False
    code = wasm["code"]
    assert code["type"] == "Image" and code["image"]["url"]
    route = one(docs, "HTTPRoute")
    assert {"kind": "HTTPRoute", "name": route["metadata"]["name"]}.items() <= policy["spec"]["targetRefs"][0].items()
    for name in env_secrets(wasm["config"]):
        assert name in wasm["env"]["hostKeys"]
    assert_valid(wasm["config"], tmp_path, "envoy-gateway")


def env_secrets(config: Any) -> list[str]:
    """Names of every `{"env": NAME}` secret in a plugin config."""
    found: list[str] = []
    if isinstance(config, dict):
        key = (config.get("auth") or {}).get("key") if isinstance(config.get("auth"), dict) else None
        if isinstance(key, dict) and "env" in key:
            found.append(key["env"])
        for v in config.values():
            found += env_secrets(v)
    elif isinstance(config, list):
        for v in config:
            found += env_secrets(v)
    return found


def test_check_refuses_a_broken_manifest_config(tmp_path: Path) -> None:
    """The manifest check is not vacuous: a typo in an embedded config fails it."""
    (ef,) = load_all(DEPLOY / "istio/envoyfilter-mode-a.yaml")
    text = ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]["configuration"]["value"]
    out = aigate_check(text.replace('"path_prefix"', '"path_prefx"'), tmp_path, "typo")
    assert out.returncode == 1
    assert "routes[0].match.path_prefx: unknown field" in out.stdout


# ---------------------------------------------------------------------------------- OCI


def test_dockerfile_is_a_single_wasm_layer() -> None:
    lines = [
        line.strip()
        for line in (REPO_ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines == ["FROM scratch", "COPY plugin.wasm ./"]


# ---------------------------------------------------------------------------------- plain Envoy: ECDS


def _ecds_bootstrap(tmp_path: Path, mock_port: int, ecds_path: Path) -> dict[str, Any]:
    bootstrap = yaml.safe_load((REPO_ROOT / "envoy/envoy-ecds.yaml").read_text())
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = 0
    (listener,) = bootstrap["static_resources"]["listeners"]
    listener["address"]["socket_address"]["port_value"] = 0
    (cluster,) = bootstrap["static_resources"]["clusters"]
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
        "port_value"
    ] = mock_port
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    source = hcm["http_filters"][0]["config_discovery"]["config_source"]["path_config_source"]
    assert source["path"] == "envoy/aigate-ecds.yaml"
    source["path"] = str(ecds_path)
    return bootstrap


def _ecds_resource(wasm: Path, plugin_config: dict[str, Any], version: str) -> str:
    doc = yaml.safe_load((REPO_ROOT / "envoy/aigate-ecds.yaml").read_text())
    doc["version_info"] = version
    (resource,) = doc["resources"]
    cfg = resource["typed_config"]["config"]
    assert cfg["vm_config"]["code"]["local"]["filename"] == "target/wasm32-wasip1/release/aigate.wasm"
    cfg["vm_config"]["code"]["local"]["filename"] = str(wasm)
    cfg["configuration"]["value"] = json.dumps(plugin_config)
    return yaml.safe_dump(doc)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_ecds_config_loads_serves_and_reloads(tmp_path: Path, mock, wasm: Path) -> None:
    shipped = yaml.safe_load((REPO_ROOT / "envoy/aigate-ecds.yaml").read_text())
    config = json.loads(shipped["resources"][0]["typed_config"]["config"]["configuration"]["value"])
    assert_valid(config, tmp_path, "envoy-ecds")
    config["routes"][0]["provider"]["authority"] = f"127.0.0.1:{mock.port}"
    ecds = tmp_path / "aigate-ecds.yaml"
    _write_atomically(ecds, _ecds_resource(wasm, config, "1"))
    envoy = Envoy(_ecds_bootstrap(tmp_path, mock.port, ecds), workdir=tmp_path / "envoy", name="ecds").start()
    try:
        r = httpx.post(envoy.base_url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
        assert mock.requests[-1].headers["authorization"] == "Bearer sk-mock-local"

        # A new resource version restricts the models: Envoy picks it up without a restart.
        config["routes"][0]["provider"]["models"] = {"only-this": "gpt-4o-mini"}
        _write_atomically(ecds, _ecds_resource(wasm, config, "2"))
        deadline = time.monotonic() + 30
        while True:
            r = httpx.post(envoy.base_url + "/v1/chat/completions", json=CHAT, timeout=30)
            if r.status_code == 400:
                break
            assert time.monotonic() < deadline, "ECDS update never applied"
            time.sleep(0.1)
        assert r.json()["error"]["code"] == "model_not_found"
        assert envoy.running
        assert "panicked" not in envoy.log_text()
    finally:
        envoy.stop()


# ---------------------------------------------------------------------------------- release build


def project_wasm_opt() -> str:
    """The wasm-opt `make release` uses: $AIGATE_WASM_OPT (set by `make e2e`), else npm's
    binaryen in tools/binaryen (`make binaryen`). Never a system binaryen: a fresh machine has none."""
    configured = os.environ.get("AIGATE_WASM_OPT")
    local = REPO_ROOT / "tools/binaryen/node_modules/.bin/wasm-opt"
    found = shutil.which(configured) if configured else (str(local) if local.exists() else None)
    assert found, "wasm-opt is not installed: run `make binaryen` (npm ci in tools/binaryen), or `make e2e`"
    return found


def test_wasm_opt_comes_from_the_pinned_npm_package() -> None:
    """`make release` needs no system package: wasm-opt is npm's binaryen, pinned by the lock file."""
    package = json.loads((REPO_ROOT / "tools/binaryen/package.json").read_text())
    lock = json.loads((REPO_ROOT / "tools/binaryen/package-lock.json").read_text())
    pinned = package["dependencies"]["binaryen"]
    assert pinned[0].isdigit(), f"binaryen must be pinned to one version, not {pinned!r}"
    assert lock["packages"]["node_modules/binaryen"]["version"] == pinned
    assert lock["packages"]["node_modules/binaryen"]["integrity"].startswith("sha512-")
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "WASM_OPT       ?= $(BINARYEN_DIR)/node_modules/.bin/wasm-opt" in makefile
    out = subprocess.run([project_wasm_opt(), "--version"], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split()[2] == pinned.split(".")[0], out.stdout  # "wasm-opt version 132 (version_132)"
    # CI installs neither binaryen nor redis-server from Debian: `make test` must not need them.
    installed = " ".join(re.findall(r"missing\+=\(([^)]*)\)", (REPO_ROOT / ".ci/run").read_text()))
    assert "make" in installed and "binaryen" not in installed and "redis" not in installed, installed


def test_wasm_opt_build_serves(tmp_path: Path, envoy_factory, mock, wasm: Path) -> None:
    """The size-optimised build (make release: wasm-opt with the features rustc emits) loads in
    V8 and serves JSON and streams like the cargo build."""
    wasm_opt = project_wasm_opt()
    makefile = (REPO_ROOT / "Makefile").read_text()
    flags = []
    for line in makefile.split("WASM_OPT_FLAGS :=", 1)[1].splitlines():
        flags += line.rstrip("\\").split()
        if not line.endswith("\\"):
            break
    optimised = REPO_ROOT / "dist/plugin.wasm"  # `make release` output, when current
    if not optimised.exists() or optimised.stat().st_mtime < wasm.stat().st_mtime:
        optimised = tmp_path / "plugin.wasm"
        subprocess.run([wasm_opt, *flags, str(wasm), "-o", str(optimised)], check=True, timeout=300)
    assert optimised.stat().st_size < wasm.stat().st_size
    envoy = envoy_factory(
        wasm=optimised,
        plugin_config={"routes": [{"name": "chat", "provider": {"kind": "openai", "authority": "up", "auth": {"none": True}}}]},
        clusters={"mock_llm": mock},
    )
    r = httpx.post(envoy.base_url + "/v1/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 200, r.text
    with httpx.stream("POST", envoy.base_url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30) as s:
        text = "".join(s.iter_text())
    assert s.status_code == 200 and "[DONE]" in text
    assert "panicked" not in envoy.log_text()
