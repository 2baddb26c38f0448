"""Real-Envoy launcher for aigate's end-to-end tests. See `envoy.py`."""

from .envoy import (
    FILTER_STATE_KEYS,
    LIVE_ENVOYS,
    REPO_ROOT,
    Cluster,
    Envoy,
    EnvoyExit,
    EnvoyStartError,
    access_log_format,
    envoy_binary,
    parse_stats,
    render_bootstrap,
    render_cluster,
    render_wasm_filter,
    run_envoy_expect_exit,
    start_envoy,
    wasm_path,
)

__all__ = [
    "FILTER_STATE_KEYS",
    "LIVE_ENVOYS",
    "REPO_ROOT",
    "Cluster",
    "Envoy",
    "EnvoyExit",
    "EnvoyStartError",
    "access_log_format",
    "envoy_binary",
    "parse_stats",
    "render_bootstrap",
    "render_cluster",
    "render_wasm_filter",
    "run_envoy_expect_exit",
    "start_envoy",
    "wasm_path",
]
