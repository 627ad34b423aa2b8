"""The benchmark scripts' CPU paths: the GPU benchmark without a GPU, the load test's helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))


def conv_linear_flops(model: nn.Module, x: torch.Tensor) -> float:
    """Hand count of a forward pass: 2 * multiply-adds of every Conv2d and Linear layer, from
    the output shapes seen by forward hooks (the reference for FlopCounterMode)."""
    total = [0.0]

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_out = module.in_channels // module.groups * kh * kw
            total[0] += 2.0 * out.numel() * per_out
        elif isinstance(module, nn.Linear):
            total[0] += 2.0 * out.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0] / x.shape[0]


@pytest.fixture(scope="module")
def cpu_benchmark(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, str]:
    """benchmarks/gpu.sh on CPU (the path CI can run): stdout, the JSON figures, the table file."""
    out = tmp_path_factory.mktemp("gpu-bench")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "GPU_BENCH_BUDGET_S": "300"}
    proc = subprocess.run(
        [str(BENCH / "gpu.sh"), "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((out / "gpu_benchmark.json").read_text())
    return proc.stdout, figures, (out / "gpu_benchmark.md").read_text()


def test_cpu_path_prints_the_table(cpu_benchmark: tuple[str, dict, str]) -> None:
    stdout, figures, table = cpu_benchmark
    assert table in stdout
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    header, body = rows[0], rows[1:]
    assert "measured / floor" in header and "floor s" in header
    stages = [r.split("|")[1].strip() for r in body]
    assert stages == ["prediction", "IFGSM, early exit", "IFGSM, no early exit", "LIME, n=200"]
    for line, row in zip(body, figures["rows"], strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        measured, floor = float(cells[2]), float(cells[4])
        assert measured == pytest.approx(row["seconds"], rel=1e-3)
        assert floor == pytest.approx(row["floor_seconds"], rel=1e-3)
    assert figures["device"] == "cpu" and figures["model"] == "demo_digits"


def test_cpu_path_figures_are_sane(cpu_benchmark: tuple[str, dict, str]) -> None:
    _, figures, _ = cpu_benchmark
    assert figures["peak_flops"] > 1e8  # any CPU multiplies faster than 0.1 GFLOP/s
    by_stage = {r["stage"]: r for r in figures["rows"]}
    for r in figures["rows"]:
        assert r["work"] > 0 and r["seconds"] > 0 and r["floor_seconds"] > 0
        # (floor <= seconds holds on a quiet machine, but the peak is measured, so a loaded
        # machine can break it: a timing, not a property of the code, and not asserted here)
        assert r["per_second"] == pytest.approx(r["work"] / r["seconds"])
        assert r["ratio"] >= 1.0
    early, full = by_stage["IFGSM, early exit"], by_stage["IFGSM, no early exit"]
    assert early["work"] == full["work"]
    assert early["floor_seconds"] <= full["floor_seconds"]  # early exit never does more passes
    # LIME runs n forward passes per explanation; prediction runs one per image
    lime = by_stage["LIME, n=200"]
    pred = by_stage["prediction"]
    per_forward_floor = pred["floor_seconds"] / pred["work"]
    assert lime["floor_seconds"] == pytest.approx(lime["work"] * 200 * per_forward_floor)


def test_flop_count_matches_hand_count() -> None:
    from bench_gpu import count_flops

    from audit.config import ModelConfig
    from audit.models import load_model

    for name, weights in (("demo_digits", "default"), ("resnet18", "random")):
        model = load_model(ModelConfig(name=name, weights=weights)).module.eval()
        forward, backward = count_flops(model, torch.device("cpu"))
        assert forward == pytest.approx(conv_linear_flops(model, torch.rand(2, 3, 224, 224)))
        # the input gradient of a conv/linear layer costs what its forward does, except the
        # first layer's when nothing before it needs one (here the input itself does)
        assert 0.5 * forward < backward <= 1.01 * forward, name


def test_matmul_peak_counts_flops_per_second_of_the_best_round() -> None:
    # The arithmetic, not the machine's speed (a timed assertion fails under load): a clock
    # that runs each function for real and says how long it took.
    from bench_gpu import matmul_peak

    seconds = iter([0.01, 0.5, 0.25, 0.4])  # one product, then three rounds
    devices = []

    def clock(fn, device):  # type: ignore[no-untyped-def]
        fn()
        devices.append(device)
        return next(seconds)

    peak = matmul_peak(torch.device("cpu"), torch.float32, 64, min_seconds=0.05, timer=clock)
    reps = 5  # 0.05 s of products at 0.01 s each
    assert peak == pytest.approx(2 * 64**3 * reps / 0.25)  # the best (shortest) round
    assert devices == [torch.device("cpu")] * 4


def test_grid_segments_and_synthetic_images() -> None:
    from bench_gpu import grid_segments, synthetic_images

    seg = grid_segments(32)
    assert seg.shape == (224, 224) and seg.dtype == np.int32
    assert sorted(np.unique(seg)) == list(range(49))
    assert (seg[:32, :32] == 0).all() and seg[223, 223] == 48
    a, b = synthetic_images(3, seed=5), synthetic_images(3, seed=5)
    assert a.shape == (3, 224, 224, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- load test helpers

STATS = """Operator 1 MapBatches(decode_batch): 5 tasks executed, 5 blocks produced in 3.64s
* Remote wall time: 172.87ms min, 1.42s max, 522.56ms mean, 2.61s total
* Remote cpu time: 66.33ms min, 84.93ms max, 77.54ms mean, 387.68ms total
* Output num rows per block: 60 min, 61 max, 60 mean, 301 total

Operator 2 MapBatches(ModelActor): 3 tasks executed, 3 blocks produced in 47.0s
* Remote wall time: 8.41s min, 20.19s max, 15.65s mean, 46.96s total
* Remote cpu time: 3.12s min, 8.4s max, 6.4s mean, 19.19s total
* Block transform time: 8.41s min, 20.18s max, 15.65s mean, 46.95s total
* Output num rows per block: 60 min, 121 max, 100 mean, 301 total

Dataset throughput:
\t* Ray Data throughput: 6.02 rows/s
"""


def test_parse_operator_stats_and_busy_fraction() -> None:
    from load_test import busy_fraction, parse_operator_stats

    ops = parse_operator_stats(STATS)
    assert set(ops) == {"MapBatches(decode_batch)", "MapBatches(ModelActor)"}
    assert ops["MapBatches(decode_batch)"]["wall_s"] == pytest.approx(2.61)
    assert ops["MapBatches(decode_batch)"]["cpu_s"] == pytest.approx(0.38768)
    actor = ops["MapBatches(ModelActor)"]
    assert actor == {"span_s": 47.0, "tasks": 3.0, "wall_s": 46.96, "cpu_s": 19.19, "rows": 301.0}
    busy = busy_fraction(STATS, num_actors=1, call_seconds=60.0)
    assert busy["busy_of_actor_span"] == pytest.approx(46.96 / 47.0)
    assert busy["busy_of_call"] == pytest.approx(46.96 / 60.0)
    assert busy["dataset_span_s"] == pytest.approx(301 / 6.02)
    assert busy["busy_of_dataset_span"] == pytest.approx(46.96 / (301 / 6.02))
    two = busy_fraction(STATS, num_actors=2, call_seconds=60.0)
    assert two["busy_of_actor_span"] == pytest.approx(46.96 / 94.0)
    with pytest.raises(ValueError, match="ModelActor"):
        busy_fraction(STATS.split("Operator 2")[0], 1, 60.0)


def test_memory_sampler_sees_this_process_and_children() -> None:
    from load_test import MemorySampler

    child = subprocess.Popen(
        [sys.executable, "-c", "import time; x = bytearray(64 * 2**20); time.sleep(30)"]
    )
    try:
        import psutil

        proc = psutil.Process(child.pid)
        for _ in range(100):  # until the child has allocated its 64 MB
            if proc.memory_info().rss > 64 * 2**20:
                break
            import time

            time.sleep(0.05)
        sampler = MemorySampler()
        sampler.sample()
    finally:
        child.kill()
        child.wait()
    assert os.getpid() in sampler.peaks and child.pid in sampler.peaks
    assert sampler.peaks[os.getpid()].label == "driver"
    assert sampler.peaks[child.pid].rss >= 64 * 2**20
    groups = sampler.by_group()
    assert groups["driver"]["processes"] == 1
    assert MemorySampler.group("ray::MapWorker(MapBatches(ModelActor)).submit") == "model actor"
    assert MemorySampler.group("ray::MapBatches(decode_batch)") == "decode workers"


def test_synthetic_set_is_imagenet_like_and_deterministic(tmp_path: Path) -> None:
    from make_synthetic_imagenet import (
        class_ids,
        describe,
        ensure_synthetic_imagenet,
        image_path,
    )
    from PIL import Image

    root = ensure_synthetic_imagenet(24, "digits", tmp_path / "a")
    ids = class_ids("digits")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.JPEG"))
    assert len(files) == 24
    assert image_path(root, ids, 11).relative_to(root).as_posix() == (
        "digit_0/ILSVRC2012_val_00000011.JPEG"
    )
    info = describe(root, 24, "digits")
    assert 30 < info["mean_kb"] < 400
    for i in range(1, 25):
        with Image.open(image_path(root, ids, i)) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert min(img.size) >= 250 and max(img.size) <= 1600
    # incremental and deterministic: a second folder grown in two steps holds the same bytes
    ensure_synthetic_imagenet(10, "digits", tmp_path / "b")
    ensure_synthetic_imagenet(24, "digits", tmp_path / "b")
    for i in (1, 10, 11, 24):
        assert (
            image_path(tmp_path / "b", ids, i).read_bytes() == image_path(root, ids, i).read_bytes()
        )
