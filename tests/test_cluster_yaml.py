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


def test_nodes_get_the_projects_dependencies_and_token_auth() -> None:
    # one list of dependency ranges (pyproject.toml, installed from the mounted project), and
    # every node started with token auth and the user's token where Ray looks for it
    cfg = yaml.safe_load(CLUSTER.read_text())
    project = [src for dst, src in cfg["file_mounts"].items() if dst == "~/imagenet-audit"]
    assert project == ["."] and (CLUSTER.parent / "pyproject.toml").exists()
    assert any("imagenet-audit[" in c for c in cfg["setup_commands"])
    assert not any(">=" in c for c in cfg["setup_commands"])  # no hand-kept copy of the ranges
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[key] if "ray start" in c]
        assert starts and all(c.startswith("RAY_AUTH_MODE=token ") for c in starts), key
    assert not any("0.0.0.0" in c for c in cfg["head_start_ray_commands"])
