"""The pure parts of the run plan: shards, fingerprint, device."""

from __future__ import annotations

import numpy as np
import pytest

from audit.config import ConfigError, Device, Layout, build_config
from audit.data.layouts import InputRecord, Listing
from audit.run.plan import build_plan, explain_flags, fingerprint, resolve_device, shard_sizes


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


def _interleaved_listing(classes: int, per_class: int, seed: int) -> Listing:
    """ImageNet's validation layout in small: ids in order, classes shuffled among them."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(classes), per_class))
    records = tuple(
        InputRecord(f"VAL_{i:08d}", f"file:///v/VAL_{i:08d}.png", int(y))
        for i, y in enumerate(labels)
    )
    return Listing(Layout.DEVKIT, records, ())


@pytest.mark.parametrize("per_class", [1, 3])
def test_per_class_explanations_spread_over_the_shards(per_class: int) -> None:
    """explain.which per_class draws each class's images by a seeded hash: exactly per_class of
    every class (all of a smaller class), the same draw for the same seed, another for another
    seed, and spread over the run: the old rule (first of each class by id) put every
    explained image of 200 classes x 50 interleaved images in the first 15 % of the inputs."""
    listing = _interleaved_listing(200, 50, seed=1)
    records = listing.records
    small = InputRecord("VAL_99999999", "file:///v/VAL_99999999.png", 200)  # a one-image class
    unlabeled = InputRecord("VAL_99999998", "file:///v/VAL_99999998.png", None)
    listing = Listing(Layout.DEVKIT, (*records, unlabeled, small), ())
    cfg = build_config({"explain": {"per_class": per_class, "seed": 7}})
    flags = explain_flags(cfg, listing, None)  # type: ignore[arg-type]  # per_class needs no model

    chosen = [r for r, f in zip(listing.records, flags, strict=True) if f]
    counts = np.bincount([r.label for r in chosen], minlength=201)
    assert counts[:200].tolist() == [per_class] * 200 and counts[200] == 1
    assert not flags[-2]  # unlabeled: never drawn
    again = explain_flags(cfg, listing, None)  # type: ignore[arg-type]
    assert again == flags
    other = explain_flags(
        build_config({"explain": {"per_class": per_class, "seed": 8}}),
        listing,
        None,  # type: ignore[arg-type]
    )
    assert other != flags

    # spread: positions of the drawn images against a uniform spread over the inputs
    n = len(records)
    positions = np.array([i for i, f in enumerate(flags[:n]) if f]) / n
    first_tenth = float(np.mean(positions < 0.1))
    assert 0.05 < first_tenth < 0.15, first_tenth
    assert 0.4 < float(np.median(positions)) < 0.6
    # the old rule, for the record: every class's first image by id lies early
    firsts = [min(i for i, r in enumerate(records) if r.label == c) for c in range(200)]
    assert max(firsts) / n < 0.15
