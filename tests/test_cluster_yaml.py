"""cluster.yaml passes Ray's own launcher schema validation (no cloud call)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).parents[1] / "cluster.yaml"


def test_cluster_yaml_is_valid() -> None:
    cfg = prepare_config(yaml.safe_load(CLUSTER.read_text()))
    validate_config(cfg)
    assert cfg["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"].startswith("g5")


def test_validation_can_fail() -> None:
    cfg = yaml.safe_load(CLUSTER.read_text())
    cfg["available_node_types"]["gpu_worker"]["min_workers"] = "lots"
    with pytest.raises(Exception, match=r"lots|min_workers"):
        validate_config(prepare_config(cfg))
