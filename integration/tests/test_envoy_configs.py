"""The shipped Envoy configs carry the same Prometheus label rules as the test harness."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from integration.harness.envoy import REPO_ROOT, aigate_stats_config


@pytest.mark.parametrize("name", ["envoy.yaml", "envoy-docker.yaml", "envoy-ecds.yaml", "envoy-fallbacks.yaml"])
def test_stats_tags_match_the_filter_labels(name):
    config = yaml.safe_load(Path(REPO_ROOT, "envoy", name).read_text())
    assert config["stats_config"] == aigate_stats_config()


@pytest.mark.parametrize("name", ["envoy.yaml", "envoy-docker.yaml", "envoy-ecds.yaml", "envoy-fallbacks.yaml"])
def test_client_address_is_the_tcp_peer(name):
    """Issue 12 item 13: `client_address` budgets must not follow a client-sent X-Forwarded-For."""
    config = yaml.safe_load(Path(REPO_ROOT, "envoy", name).read_text())
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["name"] == "envoy.filters.network.http_connection_manager":
                    hcm = f["typed_config"]
                    assert hcm.get("use_remote_address") is True, name
                    assert hcm.get("xff_num_trusted_hops", 0) == 0, name
