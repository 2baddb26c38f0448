"""The shipped Envoy configs carry the same Prometheus label rules as the test harness."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from integration.harness.envoy import REPO_ROOT, aigate_stats_tags


@pytest.mark.parametrize("name", ["envoy.yaml", "envoy-docker.yaml", "envoy-ecds.yaml"])
def test_stats_tags_match_the_filter_labels(name):
    config = yaml.safe_load(Path(REPO_ROOT, "envoy", name).read_text())
    assert config["stats_config"]["stats_tags"] == aigate_stats_tags()
