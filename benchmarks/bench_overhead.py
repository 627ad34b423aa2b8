"""End-to-end overhead of the Ray pass: wall time / the same forward and backward passes alone.

The pass is ``run_audit`` on ``--images`` synthetic ImageNet-like JPEGs (resnet18, seeded random
weights, CPU, one model actor, prediction with embeddings, IFGSM on, LIME and criticism off). To
make the attack's work independent of which images share a batch, the attack targets each
image's clean prediction (so none is wrong before it) with a step too small to flip anything
(``--eps-step``, 1e-6 by default): every image runs all M steps, i.e. one prediction forward
pass plus M + 1 forward and M backward passes. The script checks that no image flipped.

"Alone" runs exactly those passes in this process, with the same stage functions
(:func:`audit.stages.predict.predict` then :func:`audit.stages.attack.attack_columns`), the same
batch size and torch threads, on the same crops decoded beforehand and held in memory. It prints

- ``overhead = run_audit wall time / alone time``, medians over ``--repeats`` alternating
  pairs (target on CPU with resnet18 on 500 images: at most 1.25), and the same ratio without
  Ray's start-up (Ray Data's dataset span);
- the model actor's busy fraction from Ray Data's stats.

    .venv/bin/python benchmarks/bench_overhead.py --images 500 --max-steps 1 --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_test import busy_fraction, load_average, spilled_bytes
from make_synthetic_imagenet import class_ids, default_root, ensure_synthetic_imagenet, image_path

from audit.config import ModelConfig, build_config
from audit.data.decode import load_image
from audit.models import load_model
from audit.stages.attack import NEVER, attack_columns
from audit.stages.predict import predict
from audit.store import read_table

MAX_PIXELS = 89_478_485


def alone(
    model_name: str,
    images: np.ndarray,
    labels: np.ndarray,
    batch: int,
    eps_step: float,
    max_steps: int,
    threads: int,
) -> tuple[float, np.ndarray]:
    """Time prediction + IFGSM on preloaded crops; returns (seconds, steps_to_flip)."""
    torch.set_num_threads(threads)
    model = load_model(ModelConfig(name=model_name, weights="random", seed=0)).module.eval()
    device = torch.device("cpu")
    steps = []
    t0 = time.perf_counter()
    for start in range(0, len(images), batch):
        x, y = images[start : start + batch], labels[start : start + batch]
        p = predict(model, x, y, device=device, embeddings=True)
        cols, _ = attack_columns(
            model,
            x,
            p.top5_classes[:, 0].astype(np.int64),
            eps_step=eps_step,
            max_steps=max_steps,
            norm="linf",
            device=device,
        )
        steps.append(cols["steps_to_flip"])
    return time.perf_counter() - t0, np.concatenate(steps)


def ray_pass(args: argparse.Namespace, root: Path) -> tuple[float, dict[str, float], np.ndarray]:
    """Time the whole ``run_audit`` call; returns (seconds, busy figures, steps_to_flip)."""
    import ray

    from audit.run import run_audit

    cfg = build_config(
        {},
        [
            f"data.source={root}",
            "data.layout=imagefolder",
            f"data.limit={args.images}",
            f"model.name={args.model}",
            "model.weights=random",
            "model.seed=0",
            f"predict.batch_size={args.batch}",
            f"predict.cpu_threads={args.threads}",
            "predict.device=cpu",
            "attack.enabled=true",
            "attack.target=prediction",
            f"attack.eps_step={args.eps_step:.12f}",  # YAML reads 1e-06 as a string
            f"attack.max_steps={args.max_steps}",
            "explain.enabled=false",
            "criticism.enabled=false",
            f"output.root={tempfile.mkdtemp(prefix='audit-overhead-')}",
            "output.run_id=overhead",
        ],
    )
    ray.init(num_cpus=args.threads, include_dashboard=False, logging_level=logging.WARNING)
    try:
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.WARNING)
        t0 = time.perf_counter()
        result = run_audit(cfg, progress=lambda done, total: None)
        seconds = time.perf_counter() - t0
        spilled, _ = spilled_bytes()
    finally:
        ray.shutdown()
    busy = busy_fraction(result.data_stats, 1, seconds)
    busy["spilled_bytes"] = float(spilled)
    steps = (
        read_table(result.url, "adversarial").column("steps_to_flip").to_numpy(zero_copy_only=False)
    )
    return seconds, busy, np.nan_to_num(steps.astype(float), nan=NEVER)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--eps-step", type=float, default=1e-6)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--repeats", type=int, default=1, help="alternating alone/pass pairs")
    args = parser.parse_args()

    root = args.root or default_root("imagenet")
    ensure_synthetic_imagenet(args.images, "imagenet", root)
    ids = class_ids("imagenet")
    paths = [image_path(root, ids, i) for i in range(1, args.images + 1)]
    # the same order as the pass (sorted by image_id), decoded once, outside every timing
    images = np.stack([load_image(str(p), MAX_PIXELS) for p in paths])
    labels = np.array([(i - 1) % len(ids) for i in range(1, args.images + 1)], dtype=np.int64)
    load_before = load_average()

    alones, passes, ratios = [], [], []
    flipped = (0, 0)
    for repeat in range(args.repeats):  # alternating, so a change of machine load hits both
        t_alone, steps_alone = alone(
            args.model, images, labels, args.batch, args.eps_step, args.max_steps, args.threads
        )
        t_ray, busy, steps_ray = ray_pass(args, root)
        flipped = (
            flipped[0] + int((steps_alone != NEVER).sum()),
            flipped[1] + int((steps_ray != NEVER).sum()),
        )
        alones.append(t_alone)
        passes.append(t_ray)
        ratios.append(t_ray / t_alone)
        print(
            f"repeat {repeat + 1}: alone {t_alone:.1f} s, run_audit {t_ray:.1f} s, "
            f"ratio {t_ray / t_alone:.3f}, load average {load_average()}",
            flush=True,
        )
    t_alone, t_ray = statistics.median(alones), statistics.median(passes)

    passes = f"1 + {args.max_steps + 1} forward, {args.max_steps} backward per image"
    print(f"images: {args.images} ({args.model}, random weights, batch {args.batch}, {passes})")
    print(
        f"torch threads: {args.threads}; load average before {load_before}, after {load_average()}"
    )
    print(f"flipped images (must be 0 for equal work): alone {flipped[0]}, pass {flipped[1]}")
    print(
        f"alone (same passes, preloaded tensors): {t_alone:.1f} s, {args.images / t_alone:.2f} images/s"
    )
    print(
        f"run_audit wall time:                    {t_ray:.1f} s, {args.images / t_ray:.2f} images/s"
    )
    print(f"overhead ratio (wall / alone):          {t_ray / t_alone:.3f}")
    if args.repeats > 1:
        print(f"median of the per-repeat ratios:        {statistics.median(ratios):.3f}")
    if "dataset_span_s" in busy:
        print(
            f"overhead without start-up (Ray Data span {busy['dataset_span_s']:.1f} s / alone): "
            f"{busy['dataset_span_s'] / t_alone:.3f}"
        )
    print(
        f"model actor busy fraction: {busy['busy_of_actor_span']:.3f} of its span, "
        f"{busy.get('busy_of_dataset_span', float('nan')):.3f} of the dataset span, "
        f"{busy['busy_of_call']:.3f} of the call"
    )
    print(f"spilled: {int(busy['spilled_bytes'])} bytes")
    return 0 if flipped == (0, 0) else 1


if __name__ == "__main__":
    raise SystemExit(main())
