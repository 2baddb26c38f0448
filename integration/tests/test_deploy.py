"""Shipping: the deployment manifests (Istio, Envoy Gateway), the plain-Envoy ECDS config,
the OCI Dockerfile and the size-optimised release build.

- Every manifest in deploy/ passes its owner's published schema (../shared/crds/, read in
  place: Istio 1.30.3, Envoy Gateway v1.9.0, Gateway API v1.6.1), unknown fields included, and
  what a schema cannot see holds: WasmPlugin mode on gateways, the sha256 form and what it is
  the digest of, stats_tags and access-log fields in step with envoy/.
- Every plugin config in them passes `aigate check` (the filter's own config code).
- `make oci` (deploy/oci_image.py) builds an OCI image layout that Istio's and Envoy Gateway's
  image fetchers accept; the wasm in its layer serves in Envoy.
- The JSON access-log example loads in Envoy; what it prints for token counts is what the docs say.
- envoy/envoy-ecds.yaml + envoy/aigate-ecds.yaml load in the real Envoy, serve, and a new
  ECDS file changes the plugin config without a restart.
- The wasm-opt build (make release, wasm-opt from npm's binaryen) loads and serves like the cargo build.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from integration.harness import REPO_ROOT, Envoy, start_envoy, wasm_path
from integration.harness.envoy import aigate_stats_tags

yaml = pytest.importorskip("yaml")

DEPLOY = REPO_ROOT / "deploy"
CRDS = REPO_ROOT.parent / "shared" / "crds"  # CI puts shared/ beside the clone
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
            newest_src = max(f.stat().st_mtime for d in ("src", "cli/src") for f in (REPO_ROOT / d).rglob("*.rs"))
            if p.stat().st_mtime >= newest_src:
                return str(p)
    subprocess.run(["cargo", "build", "--quiet", "-p", "aigate-cli", "--bin", "aigate"], cwd=REPO_ROOT, check=True)
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


# ---------------------------------------------------------------------------------- schemas


# YAML files in deploy/ that are not Kubernetes manifests, and what each one is (checked below).
NOT_MANIFESTS = {
    "envoy/access-log-json.yaml": "Envoy HttpConnectionManager access_log list",
    "istio/istiod-values.yaml": "Helm values for istiod (meshConfig)",
}
# Kinds whose owners' schemas are not in ../shared/crds; checked by hand below instead.
NO_SHARED_SCHEMA = {("v1", "ConfigMap"), ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy")}


def deploy_yaml_files() -> list[str]:
    return sorted(str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*.yaml"))


def manifests() -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for name in deploy_yaml_files():
        if name in NOT_MANIFESTS:
            continue
        for i, doc in enumerate(load_all(DEPLOY / name)):
            out.append((name, i, doc))
    return out


def _closed(schema: Any) -> Any:
    """The schema with unknown fields refused: the API server prunes them silently (a typo in
    a field name is dropped, not reported), so a manifest with one is wrong all the same."""
    if isinstance(schema, dict):
        schema = {k: _closed(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=1)
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every SERVED version in ../shared/crds."""
    assert CRDS.is_dir(), f"{CRDS} is missing: the owners' schemas are read in place from shared/crds"
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def schema_errors(doc: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in schemas:
        return [f"no served {key[0]} {key[1]} in ../shared/crds (wrong or unserved apiVersion?)"]
    schema = dict(schemas[key])
    # The API server itself owns these three; some CRDs (Istio's) leave them out of the schema.
    schema["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object", "required": ["name"]},
        **schema.get("properties", {}),
    }
    validator = jsonschema.Draft7Validator(_closed(schema))
    return [f"{e.json_path}: {e.message[:300]}" for e in validator.iter_errors(doc)]


def test_every_deploy_file_is_classified() -> None:
    names = deploy_yaml_files()
    assert set(NOT_MANIFESTS) <= set(names)
    kinds = {(doc.get("apiVersion"), doc.get("kind")) for _, _, doc in manifests()}
    assert all(a and k for a, k in kinds), kinds


@pytest.mark.parametrize(
    ("name", "index"),
    [(n, i) for n, i, d in manifests() if (d.get("apiVersion"), d.get("kind")) not in NO_SHARED_SCHEMA],
)
def test_manifest_passes_its_owners_schema(name: str, index: int) -> None:
    doc = load_all(DEPLOY / name)[index]
    errors = schema_errors(doc, crd_schemas())
    assert not errors, f"{name} #{index} {doc['kind']}:\n  " + "\n  ".join(errors)


def test_schema_check_is_not_vacuous() -> None:
    """A served version, a misspelled field, a wrong enum and an unserved version all fail."""
    schemas = crd_schemas()
    plugin = one(load_all(DEPLOY / "istio/wasmplugin.yaml"), "WasmPlugin")
    assert schema_errors(plugin, schemas) == []
    typo = json.loads(json.dumps(plugin))
    typo["spec"]["failStrategey"] = typo["spec"].pop("failStrategy")
    assert any("failStrategey" in e for e in schema_errors(typo, schemas))
    bad_enum = json.loads(json.dumps(plugin))
    bad_enum["spec"]["match"] = [{"mode": "INBOUND"}]
    assert schema_errors(bad_enum, schemas)
    bad_sha = json.loads(json.dumps(plugin))
    bad_sha["spec"]["sha256"] = "sha256:" + "a" * 64  # the CRD wants bare hex
    assert any("sha256" in e for e in schema_errors(bad_sha, schemas))
    tls = one(load_all(DEPLOY / "envoy-gateway/extension-policy.yaml"), "BackendTLSPolicy")
    old = dict(tls, apiVersion="gateway.networking.k8s.io/v1alpha3")  # not served by the standard channel
    assert schema_errors(old, schemas)[0].startswith("no served")


def test_docker_compose_file_passes_the_compose_spec() -> None:
    """integration/docker-compose.yml (plain Envoy in Docker, docs/DEPLOY.md) against the
    compose-spec schema in ../shared/crds."""
    schema = json.loads((CRDS / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    doc = yaml.safe_load((REPO_ROOT / "integration/docker-compose.yml").read_text())
    errors = [f"{e.json_path}: {e.message[:300]}" for e in validator.iter_errors(doc)]
    assert not errors, "\n".join(errors)
    broken = json.loads(json.dumps(doc))
    next(iter(broken["services"].values()))["restart_policy"] = "always"  # not a service key
    assert list(validator.iter_errors(broken))


def _gateway_selected(spec: dict[str, Any]) -> bool:
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    refs = spec.get("targetRefs") or ([spec["targetRef"]] if spec.get("targetRef") else [])
    return (
        "gateway" in str(labels.get("istio", ""))
        or "gateway.networking.k8s.io/gateway-name" in labels
        or any(r.get("kind") == "Gateway" for r in refs)
    )


def test_wasmplugins_on_gateways_match_client_traffic() -> None:
    """istiod classifies a gateway's listeners as CLIENT (workloadModeForListenerClass): a
    WasmPlugin limited to SERVER never attaches there, and traffic bypasses aigate."""
    found = 0
    for name, _, doc in manifests():
        if doc["kind"] != "WasmPlugin" or not _gateway_selected(doc["spec"]):
            continue
        found += 1
        modes = {m.get("mode", "UNDEFINED") for m in doc["spec"].get("match") or [{}]}
        assert modes <= {"CLIENT", "CLIENT_AND_SERVER", "UNDEFINED"}, f"{name}: match modes {modes} skip gateway traffic"
    assert found, "the Istio WasmPlugin for the ingress gateway is gone"


def _walk(value: Any, path: str = ""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}")
            yield f"{path}.{k}", k, v
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def test_sha256_is_bare_hex_of_the_right_thing() -> None:
    """Set sha256 fields are 64 lowercase hex digits. The placeholders say what to put there:
    for an OCI image the manifest digest (what Istio's agent and Envoy Gateway compare; the sha256
    of plugin.wasm there makes Istio install a deny-all filter), for an HTTP(S) URL the sha256
    of plugin.wasm."""
    for name, _, doc in manifests():
        for path, key, value in _walk(doc):
            if key == "sha256":
                assert re.fullmatch(r"[0-9a-f]{64}", str(value)), f"{name}{path}: {value!r}"
    checked = 0
    for name in deploy_yaml_files():
        lines = (DEPLOY / name).read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"\s*#?\s*sha256:\s*(.*)", line)
            if not m:
                continue
            text = " ".join([m.group(1)] + [x.strip(" #") for x in lines[i + 1 : i + 4] if x.lstrip().startswith("#  ")])
            source = next(
                (x for x in reversed(lines[max(0, i - 8) : i]) if re.search(r"\b(url|uri|type): ", x)), ""
            )
            oci = "oci://" in source or "type: Image" in source or ("url:" in source and "://" not in source)
            if oci:
                assert "manifest digest" in text and 'without "sha256:"' in text, f"{name}:{i + 1}: {line.strip()}"
                assert "of plugin.wasm" not in text.split("not")[0], f"{name}:{i + 1}: {line.strip()}"
            else:
                assert "plugin.wasm" in text, f"{name}:{i + 1}: {line.strip()}"
            checked += 1
    assert checked >= 3


def test_stats_tags_for_istio_and_envoy_gateway_are_aigates() -> None:
    """Without aigate's stats_tags (the default on both) every label value stays in the metric
    name. Istio: a bootstrap override ConfigMap; Envoy Gateway: JSON patches of its bootstrap."""
    config_map = one(load_all(DEPLOY / "istio/observability.yaml"), "ConfigMap")
    assert config_map["apiVersion"] == "v1" and all(isinstance(v, str) for v in config_map["data"].values())
    istio = json.loads(config_map["data"]["custom_bootstrap.json"])
    assert istio == {"stats_config": {"stats_tags": aigate_stats_tags()}}
    assert "sidecar.istio.io/bootstrapOverride" in (DEPLOY / "istio/observability.yaml").read_text()

    (proxy,) = load_all(DEPLOY / "envoy-gateway/envoyproxy.yaml")
    assert (proxy["apiVersion"], proxy["kind"]) == ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy")
    bootstrap = proxy["spec"]["bootstrap"]
    assert bootstrap["type"] == "JSONPatch"
    assert all(p["op"] == "add" and p["path"] == "/stats_config/stats_tags/-" for p in bootstrap["jsonPatches"])
    assert [p["value"] for p in bootstrap["jsonPatches"]] == aigate_stats_tags()
    env = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]["env"]
    policy = one(load_all(DEPLOY / "envoy-gateway/extension-policy.yaml"), "EnvoyExtensionPolicy")
    assert {e["name"] for e in env} >= set(policy["spec"]["wasm"][0]["env"]["hostKeys"])
    assert all("secretKeyRef" in e["valueFrom"] for e in env)


def test_deploy_sync_finds_nothing_out_of_step() -> None:
    """deploy/sync.py copies the stats_tags of envoy/envoy.yaml and the access-log fields of
    deploy/envoy/access-log-json.yaml into the Istio and Envoy Gateway files; after a change
    to either source, run it (the tests above say which file drifted)."""
    out = subprocess.run(
        [sys.executable, str(DEPLOY / "sync.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr


def access_log_fields() -> dict[str, str]:
    (logger,) = yaml.safe_load((DEPLOY / "envoy/access-log-json.yaml").read_text())
    return logger["typed_config"]["log_format"]["json_format"]


def test_json_access_log_is_the_same_on_every_platform() -> None:
    fields = access_log_fields()
    for key in ("route", "provider", "model", "outcome"):
        assert fields[f"aigate_{key}"] == f"%FILTER_STATE(wasm.aigate.{key}:PLAIN)%"
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert fields[key] == f"%FILTER_STATE(wasm.aigate.{key}:PLAIN)%"
    values = yaml.safe_load((DEPLOY / "istio/istiod-values.yaml").read_text())
    (provider,) = values["meshConfig"]["extensionProviders"]
    assert provider["envoyFileAccessLog"]["logFormat"]["labels"] == fields
    telemetry = one(load_all(DEPLOY / "istio/observability.yaml"), "Telemetry")
    assert telemetry["spec"]["accessLogging"][0]["providers"] == [{"name": provider["name"]}]
    assert _gateway_selected(telemetry["spec"])
    (proxy,) = load_all(DEPLOY / "envoy-gateway/envoyproxy.yaml")
    (setting,) = proxy["spec"]["telemetry"]["accessLog"]["settings"]
    assert setting["format"] == {"type": "JSON", "json": fields}


def test_envoy_gateway_backend_needs_enable_backend() -> None:
    """A default Envoy Gateway refuses Backend refs ("Backend is disabled"): the file says how."""
    docs = load_all(DEPLOY / "envoy-gateway/extension-policy.yaml")
    route = one(docs, "HTTPRoute")
    assert any(ref.get("kind") == "Backend" for rule in route["spec"]["rules"] for ref in rule["backendRefs"])
    text = (DEPLOY / "envoy-gateway/extension-policy.yaml").read_text()
    assert "extensionApis.enableBackend=true" in text and "enableBackend: true" in text
    assert one(docs, "BackendTLSPolicy")["apiVersion"] == "gateway.networking.k8s.io/v1"


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


OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def build_oci(wasm_file: Path, out: Path, tag: str = "0.1.0") -> subprocess.CompletedProcess[str]:
    """`make oci`'s step: deploy/oci_image.py, with the interpreter `make` uses (stdlib only)."""
    return subprocess.run(
        [sys.executable, str(DEPLOY / "oci_image.py"), str(wasm_file), str(out), "--tag", tag],
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_blob(layout: Path, descriptor: dict[str, Any]) -> bytes:
    """A blob, checked against its descriptor: sha256 digest and size."""
    algorithm, hex_digest = descriptor["digest"].split(":")
    assert algorithm == "sha256" and re.fullmatch(r"[0-9a-f]{64}", hex_digest)
    data = (layout / "blobs/sha256" / hex_digest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hex_digest, f"{descriptor['digest']} does not verify"
    assert len(data) == descriptor["size"]
    return data


def fetch_like_istio(layout: Path, tag: str) -> tuple[bytes, str]:
    """What Istio's agent and Envoy Gateway do with an image (pkg/wasm/imagefetcher.go in both):
    the manifest digest is the checksum they compare with `sha256`; a Docker manifest takes the
    last layer as Docker tar+gzip; otherwise the *compat* path takes the last layer if it is OCI
    tar+gzip, else the *oci* path wants exactly two layers. From the tar, the entry whose base
    name is plugin.wasm. Returns (wasm, manifest digest hex)."""
    index = json.loads((layout / "index.json").read_text())
    (descriptor,) = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    manifest_bytes = read_blob(layout, descriptor)
    manifest = json.loads(manifest_bytes)
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    layers = manifest["layers"]
    assert layers, "number of layers must be greater than zero"
    wanted = DOCKER_LAYER if manifest.get("mediaType") == "application/vnd.docker.distribution.manifest.v2+json" else OCI_LAYER
    if layers[-1]["mediaType"] != wanted:
        assert len(layers) == 2, f"number of layers must be 2 but got {len(layers)}"
        pytest.fail("oci-variant images are not what make oci builds")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(read_blob(layout, layers[-1])))) as tar:
        for member in tar:
            if Path(member.name).name == "plugin.wasm":
                handle = tar.extractfile(member)
                assert handle is not None
                return handle.read(), digest
    raise AssertionError("plugin.wasm not found in the archive")


def test_make_oci_builds_an_image_layout_the_fetchers_accept(tmp_path: Path, wasm: Path) -> None:
    out = build_oci(wasm, tmp_path / "oci")
    assert out.returncode == 0, out.stderr
    layout = tmp_path / "oci"
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2 and index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    (descriptor,) = index["manifests"]
    assert descriptor["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert descriptor["annotations"] == {"org.opencontainers.image.ref.name": "0.1.0"}
    manifest = json.loads(read_blob(layout, descriptor))
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == descriptor["mediaType"]
    # compat variant: exactly one tar+gzip layer, and the annotation the spec requires for it
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == OCI_LAYER
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    config = json.loads(read_blob(layout, manifest["config"]))
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert (config["os"], config["architecture"]) == ("wasip1", "wasm")
    tar = gzip.decompress(read_blob(layout, layer))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]}
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        assert [(m.name, m.isfile(), m.mode) for m in archive.getmembers()] == [("plugin.wasm", True, 0o644)]
    # every blob is referenced, none is missing or extra
    referenced = {d["digest"].split(":")[1] for d in (descriptor, manifest["config"], layer)}
    assert {p.name for p in (layout / "blobs/sha256").iterdir()} == referenced

    plugin, digest = fetch_like_istio(layout, "0.1.0")
    assert plugin == wasm.read_bytes()
    # the digest to pin (WasmPlugin.sha256, image.sha256) is the manifest's, printed and written
    assert (tmp_path / "oci.manifest-digest").read_text().strip() == digest
    assert f"image manifest digest: {digest}" in out.stdout
    assert digest != hashlib.sha256(plugin).hexdigest()
    # reproducible: the same wasm gives the same digest (a re-push does not change the pin)
    again = build_oci(wasm, tmp_path / "again" / "oci")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again/oci.manifest-digest").read_text().strip() == digest


def test_make_oci_refuses_what_is_not_wasm(tmp_path: Path) -> None:
    bad = tmp_path / "plugin.wasm"
    bad.write_bytes(b"MZ not a module")
    out = build_oci(bad, tmp_path / "oci")
    assert out.returncode == 1 and "not a Wasm module" in out.stderr
    assert not (tmp_path / "oci").exists()


def test_wasm_from_the_oci_image_serves(tmp_path: Path, envoy_factory, mock, wasm: Path) -> None:
    """The module as the fetchers unpack it from the image loads in Envoy and serves."""
    assert build_oci(wasm, tmp_path / "oci").returncode == 0
    plugin, _ = fetch_like_istio(tmp_path / "oci", "0.1.0")
    unpacked = tmp_path / "unpacked.wasm"
    unpacked.write_bytes(plugin)
    envoy = envoy_factory(
        wasm=unpacked,
        plugin_config={"routes": [{"name": "chat", "provider": {"kind": "openai", "authority": "up", "auth": {"none": True}}}]},
        clusters={"mock_llm": mock},
    )
    r = httpx.post(envoy.base_url + "/v1/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 200, r.text
    assert "panicked" not in envoy.log_text()


def test_makefile_oci_runs_the_layout_builder() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = makefile.split("\noci:", 1)[1].split("\n\n", 1)[0]
    assert "deploy/oci_image.py $(RELEASE_WASM) $(OCI_LAYOUT)" in recipe
    assert "docker" not in recipe and "oras" not in recipe


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


# ---------------------------------------------------------------------------------- JSON access log


def test_json_access_log_token_counts(tmp_path: Path, mock, wasm: Path) -> None:
    """deploy/envoy/access-log-json.yaml in the real Envoy: one JSON object per request with
    aigate's fields; token counts are strings, and neither TYPED nor CEL gives a number (what
    the file and DEPLOY.md say)."""
    log = tmp_path / "access.json"
    (logger,) = yaml.safe_load((DEPLOY / "envoy/access-log-json.yaml").read_text())
    assert logger["name"] == "envoy.access_loggers.stdout"
    fields = dict(logger["typed_config"]["log_format"]["json_format"])
    fields["typed_total_tokens"] = "%FILTER_STATE(wasm.aigate.total_tokens:TYPED)%"
    fields["cel_total_tokens"] = "%CEL(filter_state['wasm.aigate.total_tokens'])%"
    file_logger = {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(log),
            "log_format": {"json_format": fields},
        },
    }
    envoy = start_envoy(
        clusters={"mock_llm": mock},
        plugin_config={"routes": [{"name": "chat", "provider": {"kind": "openai", "authority": "up", "auth": {"none": True}}}]},
        hcm_extra={"access_log": [logger, file_logger]},
        access_log=False,
        workdir=tmp_path / "envoy",
        name="access-log-json",
    )
    try:
        r = httpx.post(envoy.base_url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        deadline = time.monotonic() + 10
        while not log.exists() or not log.read_text().strip():
            assert time.monotonic() < deadline, "no access-log line"
            time.sleep(0.05)
        (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    finally:
        envoy.stop()
    assert (entry["aigate_route"], entry["aigate_provider"], entry["aigate_outcome"]) == ("chat", "openai", "ok")
    assert entry["status"] == 200 and isinstance(entry["duration_ms"], int)  # Envoy's own numbers
    for key, usage_key in (("prompt_tokens", "prompt_tokens"), ("completion_tokens", "completion_tokens"), ("total_tokens", "total_tokens")):
        assert entry[key] == str(usage[usage_key]), (key, entry[key], usage)
    assert entry["typed_total_tokens"]["@type"] == "type.googleapis.com/google.protobuf.BytesValue"
    assert entry["cel_total_tokens"] == str(usage["total_tokens"])
