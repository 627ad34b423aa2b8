"""The pure parts of the run plan: shards, fingerprint, device."""

from __future__ import annotations

import pytest

from audit.config import ConfigError, Device, build_config
from audit.data.layouts import InputRecord
from audit.run.plan import build_plan, fingerprint, resolve_device, shard_sizes


@pytest.mark.parametrize(
    ("n", "size", "want"), [(0, 10, ()), (10, 10, (10,)), (23, 10, (10, 10, 3)), (3, 1, (1, 1, 1))]
)
def test_shard_sizes(n: int, size: int, want: tuple[int, ...]) -> None:
    assert shard_sizes(n, size) == want


def test_fingerprint_covers_labels_and_listing_errors() -> None:
    base = [InputRecord("a", "file:///a.png", 1), InputRecord("b", "file:///b.png", None)]
    relabeled = [InputRecord("a", "file:///a.png", 2), base[1]]
    failed = [base[0], InputRecord("b", "file:///b.png", None, "outside any class folder")]
    prints = {fingerprint(x) for x in (base, relabeled, failed)}
    assert len(prints) == 3
    assert fingerprint(list(base)) == fingerprint(base)


@pytest.mark.parametrize(
    ("wanted", "gpus", "device"),
    [
        (Device.AUTO, 0.0, "cpu"),
        (Device.AUTO, 2.0, "cuda"),
        (Device.CPU, 2.0, "cpu"),
        (Device.CUDA, 1.0, "cuda"),
    ],
)
def test_resolve_device(wanted: Device, gpus: float, device: str) -> None:
    # a cluster without an autoscaler (tests/test_autoscaling.py: with one)
    assert resolve_device(wanted, gpus, {"CPU": 4.0, "GPU": gpus}) == device


def test_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'predict\.device' field is 'cuda' but the Ray cluster"):
        resolve_device(Device.CUDA, 0.5, {"CPU": 4.0, "GPU": 0.5})


def test_a_configuration_error_comes_before_the_cluster_is_asked() -> None:
    def no_cluster() -> float:
        raise AssertionError("the cluster was asked first")

    cfg = build_config({"model": {"name": "resnet18"}})  # with the demo data
    with pytest.raises(ConfigError, match=r"'data\.source' field is 'demo'"):
        build_plan(cfg, "r", no_cluster)
