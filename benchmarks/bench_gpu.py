"""Device benchmark: prediction, IFGSM and LIME throughput next to the FLOP floor of each.

On a GPU (``--device cuda``, or ``auto`` when one is visible) it measures ResNet-101 with random
weights (nothing is downloaded; the FLOPs do not depend on the weights) under bfloat16 autocast
with channels_last inputs, on synthetic images, with the audit's own stage functions:

- a matrix-product peak: ``torch.matmul`` of two large bf16 matrices, best of several timed
  rounds, in FLOP/s;
- FLOPs per image, counted by ``torch.utils.flop_counter.FlopCounterMode``: one forward pass, and
  one IFGSM step's backward pass (gradient with respect to the input only, weights frozen);
- prediction (:func:`audit.stages.predict.predict`, uint8 crops in host memory, top-5, loss and
  embeddings included);
- IFGSM step counting (:func:`audit.stages.attack.ifgsm`, M steps of 0.001) with early exit and
  without;
- LIME (:func:`audit.stages.explain.explain`) at ``n`` perturbed samples per explanation, on
  precomputed grid super-pixels.

Each measured time sits next to its floor, ``FLOPs of the work done / matmul peak``: no device
runs a network faster than its best dense matrix product. For IFGSM the work done is read from
the step counts: an image that flips at step s costs s + 1 forward and s backward passes with
early exit; without it every image runs as many steps as the slowest one.

Without a GPU (``--device cpu``, or ``auto`` without one) the same code runs a small model
(``demo_digits``) with tiny sizes in float32, in well under a minute; tests run that path.

Prints a Markdown table; writes it to ``--out`` (default ``$OUT/gpu_benchmark.md`` when ``$OUT``
is set) and, with ``--json``, the figures as JSON.

    benchmarks/gpu.sh                                  # GPU, hard 8-minute budget
    .venv/bin/python benchmarks/bench_gpu.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.config import ModelConfig
from audit.models import AuditModel, load_model
from audit.stages.attack import NEVER, ifgsm
from audit.stages.explain import explain
from audit.stages.predict import images_to_tensor, predict


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    model: str
    weights: str
    predict_images: int
    predict_batch: int
    attack_images: int
    attack_batch: int
    max_steps: int
    lime_explanations: int
    lime_samples: int
    lime_batch: int
    matmul_n: int
    repeats: int


GPU_SIZES = Sizes("resnet101", "random", 4096, 256, 1024, 256, 10, 8, 1000, 250, 8192, 3)
CPU_SIZES = Sizes("demo_digits", "default", 64, 32, 32, 32, 10, 1, 200, 10, 512, 1)


@dataclass(frozen=True)
class Row:
    """One line of the table: ``work`` items took ``seconds``; the floor is ``floor_seconds``."""

    stage: str
    work: int
    unit: str
    seconds: float
    floor_seconds: float
    note: str

    @property
    def per_second(self) -> float:
        return self.work / self.seconds

    @property
    def floor_per_second(self) -> float:
        return self.work / self.floor_seconds

    @property
    def ratio(self) -> float:
        return self.seconds / self.floor_seconds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def matmul_peak(
    device: torch.device,
    dtype: torch.dtype,
    n: int,
    min_seconds: float,
    timer: Callable[[Callable[[], object], torch.device], float] = timed,
) -> float:
    """Best FLOP/s of ``n x n @ n x n`` products over three timed rounds of at least
    ``min_seconds`` (``timer`` runs a function and returns its seconds: :func:`timed`)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up (cuBLAS handle, kernel selection)
    single = timer(lambda: torch.matmul(a, b), device)
    reps = max(1, int(min_seconds / max(single, 1e-6)))
    best = 0.0
    for _ in range(3):

        def run() -> None:
            for _ in range(reps):
                torch.matmul(a, b)

        best = max(best, 2.0 * n**3 * reps / timer(run, device))
    return best


def count_flops(model: AuditModel, device: torch.device) -> tuple[float, float]:
    """FLOPs per image of one forward pass and of one IFGSM backward pass (input gradient only)."""
    x = torch.rand(2, 3, 224, 224, device=device)
    with FlopCounterMode(display=False) as fwd, torch.inference_mode():
        model(x)
    forward = fwd.get_total_flops() / 2
    xg = x.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as both:
        loss = F.cross_entropy(model(xg), torch.zeros(2, dtype=torch.int64, device=device))
        loss.backward()  # the weights are frozen: only the input's gradient is computed
    backward = both.get_total_flops() / 2 - forward
    return float(forward), float(backward)


def synthetic_images(n: int, seed: int) -> np.ndarray:
    """``(n, 224, 224, 3) uint8``: smooth seeded colour fields (upsampled 14x14 noise)."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.random((n, 3, 14, 14), dtype=np.float32))
    big = F.interpolate(small, size=(224, 224), mode="bilinear", align_corners=False)
    return (big.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def grid_segments(cell: int = 32) -> np.ndarray:
    """``(224, 224) int32`` super-pixels: a grid of ``cell``-pixel squares (49 for 32)."""
    side = 224 // cell
    ids = np.arange(side * side, dtype=np.int32).reshape(side, side)
    return np.repeat(np.repeat(ids, cell, axis=0), cell, axis=1)


def median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    return statistics.median(timed(fn, device) for _ in range(repeats))


def bench_predict(
    model: AuditModel, sizes: Sizes, device: torch.device, bf16: bool, flops: float, peak: float
) -> Row:
    images = synthetic_images(sizes.predict_images, seed=1)
    labels = np.zeros(sizes.predict_images, dtype=np.int64)

    def run() -> None:
        for start in range(0, len(images), sizes.predict_batch):
            end = start + sizes.predict_batch
            predict(model, images[start:end], labels[start:end], device=device, bf16=bf16)

    predict(
        model,
        images[: sizes.predict_batch],
        labels[: sizes.predict_batch],
        device=device,
        bf16=bf16,
    )
    seconds = median_time(run, device, sizes.repeats)
    return Row(
        "prediction",
        len(images),
        "images",
        seconds,
        len(images) * flops / peak,
        f"batch {sizes.predict_batch}, top-5 + loss + embedding",
    )


def _autocast(device: torch.device, bf16: bool) -> AbstractContextManager[object]:
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def bench_attack(
    model: AuditModel,
    sizes: Sizes,
    device: torch.device,
    bf16: bool,
    flops: tuple[float, float],
    peak: float,
) -> list[Row]:
    """IFGSM on synthetic crops against each image's clean prediction, with and without early exit."""
    images = synthetic_images(sizes.attack_images, seed=2)
    batches = []
    for start in range(0, len(images), sizes.attack_batch):
        x = images_to_tensor(
            images[start : start + sizes.attack_batch],
            device,
            channels_last=device.type == "cuda",
        )
        with torch.inference_mode(), _autocast(device, bf16):
            y = model(x).argmax(dim=1)
        batches.append((x, y.clone()))
    fwd, bwd = flops
    rows = []
    for early_exit in (True, False):
        steps: list[np.ndarray] = []

        def run(steps: list[np.ndarray] = steps, early_exit: bool = early_exit) -> None:
            steps.clear()
            for x, y in batches:
                with _autocast(device, bf16):
                    r = ifgsm(
                        model,
                        x,
                        y,
                        eps_step=0.001,
                        max_steps=sizes.max_steps,
                        early_exit=early_exit,
                    )
                steps.append(r.steps_to_flip.cpu().numpy())

        x0, y0 = batches[0]
        with _autocast(device, bf16):
            ifgsm(model, x0[:2], y0[:2], eps_step=0.001, max_steps=2, early_exit=early_exit)
        seconds = median_time(run, device, sizes.repeats)
        work = 0.0
        for s in steps:
            ran = np.where(s == NEVER, sizes.max_steps, s)  # backward passes per image
            if not early_exit:  # every image runs as long as its batch's slowest one
                ran = np.full_like(ran, ran.max())
            work += float(((ran + 1) * fwd + ran * bwd).sum())
        all_steps = np.concatenate(steps)
        flipped = all_steps[all_steps != NEVER]
        note = (
            f"M={sizes.max_steps}, batch {sizes.attack_batch}; mean steps of flipped "
            f"{flipped.mean() if len(flipped) else float('nan'):.2f}, "
            f"never flipped {int((all_steps == NEVER).sum())}/{len(all_steps)}"
        )
        name = "IFGSM, early exit" if early_exit else "IFGSM, no early exit"
        rows.append(Row(name, len(images), "images", seconds, work / peak, note))
    return rows


def bench_lime(
    model: AuditModel, sizes: Sizes, device: torch.device, bf16: bool, flops: float, peak: float
) -> Row:
    images = synthetic_images(sizes.lime_explanations, seed=3)
    seg = grid_segments()

    def run() -> None:
        for img in images:
            explain(
                model,
                img,
                seg,
                0,
                n_samples=sizes.lime_samples,
                batch_size=sizes.lime_batch,
                seed=0,
                device=device,
                bf16=bf16,
            )

    explain(
        model,
        images[0],
        seg,
        0,
        n_samples=sizes.lime_batch + 1,
        batch_size=sizes.lime_batch,
        device=device,
        bf16=bf16,
    )
    seconds = median_time(run, device, sizes.repeats)
    return Row(
        f"LIME, n={sizes.lime_samples}",
        len(images),
        "explanations",
        seconds,
        len(images) * sizes.lime_samples * flops / peak,
        f"batch {sizes.lime_batch}, {int(seg.max()) + 1} grid super-pixels",
    )


def format_table(header: dict[str, str], rows: list[Row]) -> str:
    lines = [f"- {k}: {v}" for k, v in header.items()]
    lines += [
        "",
        "| stage | work | measured s | measured per s | floor s | floor per s "
        "| measured / floor | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.stage} | {r.work} {r.unit} | {r.seconds:.4g} | {r.per_second:.4g} "
            f"| {r.floor_seconds:.4g} | {r.floor_per_second:.4g} | {r.ratio:.3g} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--model", help="registry name (default resnet101 on GPU, demo_digits on CPU)"
    )
    parser.add_argument("--lime-samples", type=int, help="perturbed samples per explanation")
    parser.add_argument("--out", help="write the Markdown table here")
    parser.add_argument("--json", help="write the figures as JSON here")
    args = parser.parse_args(argv)

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    device = torch.device("cuda" if cuda else "cpu")
    sizes = GPU_SIZES if cuda else CPU_SIZES
    if args.model:
        weights = "default" if args.model == "demo_digits" else "random"
        sizes = Sizes(**{**asdict(sizes), "model": args.model, "weights": weights})
    if args.lime_samples:
        sizes = Sizes(**{**asdict(sizes), "lime_samples": args.lime_samples})
    bf16 = cuda
    t_start = time.perf_counter()

    loaded = load_model(ModelConfig(name=sizes.model, weights=sizes.weights, seed=0))
    model = loaded.module.to(device).eval()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak = matmul_peak(device, dtype, sizes.matmul_n, min_seconds=1.0 if cuda else 0.3)
    fwd, bwd = count_flops(model, device)

    rows = [bench_predict(model, sizes, device, bf16, fwd, peak)]
    rows += bench_attack(model, sizes, device, bf16, (fwd, bwd), peak)
    rows.append(bench_lime(model, sizes, device, bf16, fwd, peak))

    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    header = {
        "device": f"{device.type} ({name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads",
        "model": f"{sizes.model} ({sizes.weights} weights), "
        + ("bf16 autocast, channels_last" if bf16 else "float32"),
        "matmul peak": f"{peak / 1e12:.4g} TFLOP/s ({str(dtype).removeprefix('torch.')}, "
        f"{sizes.matmul_n} x {sizes.matmul_n})",
        "FLOPs per image": f"forward {fwd / 1e9:.4g} GFLOP, IFGSM backward {bwd / 1e9:.4g} GFLOP",
        "floor": "FLOPs of the work done / matmul peak",
        "medians of": f"{sizes.repeats} timed repeat(s) after a warm-up",
    }
    table = format_table(header, rows)
    elapsed = time.perf_counter() - t_start
    table += f"\nWhole benchmark: {elapsed:.1f} s.\n"
    print(table, end="")

    out = args.out or (
        os.path.join(os.environ["OUT"], "gpu_benchmark.md") if os.environ.get("OUT") else None
    )
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(table)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "device": device.type,
                    "model": sizes.model,
                    "peak_flops": peak,
                    "forward_flops": fwd,
                    "backward_flops": bwd,
                    "seconds": elapsed,
                    "rows": [
                        {**asdict(r), "per_second": r.per_second, "ratio": r.ratio} for r in rows
                    ],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
