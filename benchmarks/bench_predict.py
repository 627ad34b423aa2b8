"""Prediction stage throughput: the Ray Data pass against a plain PyTorch DataLoader loop.

Both paths read the same JPEG files, decode them with the same code, and run the same model
with the same batch size on the same machine, in one process, alternating, ``--repeats`` times.
The Ray time is the whole ``run_audit`` call (listing, Ray Data start-up, Parquet writing and the
manifest included); the plain loop only predicts. Prints images/s of each, the medians and the
ratio (Ray / plain; the target on CPU is 0.85 or more).

    .venv/bin/python benchmarks/bench_predict.py --images 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.config import build_config
from audit.data.classes import imagenet_classes
from audit.data.decode import load_image
from audit.models import load_model
from audit.stages.predict import predict


def make_images(root: Path, n: int, seed: int = 0) -> None:
    """ImageNet-like JPEGs (about 500x375, quality 90) in class folders."""
    import skimage.data

    rng = np.random.default_rng(seed)
    bases = [
        skimage.data.astronaut(),
        skimage.data.chelsea(),
        skimage.data.coffee(),
        skimage.data.rocket(),
    ]
    wnids = imagenet_classes().ids
    for i in range(n):
        base = Image.fromarray(bases[i % len(bases)])
        w, h = int(rng.integers(400, 640)), int(rng.integers(300, 480))
        img = base.resize((w, h))
        arr = np.asarray(img).astype(np.int16) + rng.integers(-20, 20, size=(h, w, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        folder = root / wnids[i % 10]
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG", quality=90)


class FileDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], labels: list[int]) -> None:
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return load_image(self.paths[i], max_pixels=89_478_485), self.labels[i]


def plain_loop(model_name: str, root: Path, batch_size: int, workers: int) -> float:
    """Seconds for a DataLoader loop over every file: decode, predict, top-5 and embeddings."""
    t0 = time.perf_counter()
    classes = imagenet_classes()
    files = sorted(root.glob("*/*.JPEG"))
    labels = [classes.index(p.parent.name) for p in files]
    model = load_model(
        build_config({"model": {"name": model_name, "weights": "random"}}).model
    ).module
    torch.set_num_threads(os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(
        FileDataset([str(p) for p in files], labels),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=lambda b: (np.stack([x for x, _ in b]), np.array([y for _, y in b])),
    )
    n = 0
    for images, y in loader:
        out = predict(model, images, y, embeddings=True)
        n += len(out.loss)
    assert n == len(files)
    return time.perf_counter() - t0


def ray_pass(
    model_name: str, root: Path, out: Path, batch_size: int, run_id: str
) -> tuple[float, float]:
    """Seconds for the whole ``run_audit`` call, and seconds until its first results arrived."""
    from audit.run import run_audit

    cfg = build_config(
        {
            "data": {"source": str(root)},
            "model": {"name": model_name, "weights": "random"},
            "predict": {"batch_size": batch_size},
            # the prediction stage alone, as the plain loop does
            "attack": {"enabled": False},
            "explain": {"enabled": False},
            "criticism": {"enabled": False},
            "output": {"root": str(out), "run_id": run_id},
        }
    )
    first: list[float] = []

    def on_progress(done: int, total: int) -> None:
        if done and not first:
            first.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    result = run_audit(cfg, progress=on_progress)
    seconds = time.perf_counter() - t0
    assert result.manifest["tables"]["predictions"]["rows"] == len(list(root.glob("*/*.JPEG")))
    return seconds, first[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--workers", type=int, default=1, help="DataLoader workers of the plain loop"
    )
    args = parser.parse_args()

    import ray

    ray.init(include_dashboard=False, logging_level="WARNING")
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "val"
        make_images(root, args.images)
        print(
            f"{args.images} JPEGs, model {args.model}, batch {args.batch_size}, {os.cpu_count()} CPUs"
        )
        plain, rayd, startup = [], [], []
        # warm-up of both paths (imports, first Ray Data start), not counted
        plain_loop(args.model, root, args.batch_size, args.workers)
        ray_pass(args.model, root, Path(tmp) / "out", args.batch_size, "warmup")
        for r in range(args.repeats):
            for name in ("plain", "ray") if r % 2 == 0 else ("ray", "plain"):
                if name == "plain":
                    s = plain_loop(args.model, root, args.batch_size, args.workers)
                    plain.append(s)
                else:
                    s, first = ray_pass(
                        args.model, root, Path(tmp) / "out", args.batch_size, f"r{r}"
                    )
                    rayd.append(s)
                    startup.append(first)
                print(f"  repeat {r} {name:5s}: {s:7.2f} s  {args.images / s:7.1f} images/s")
        p, q = statistics.median(plain), statistics.median(rayd)
        print(f"median plain DataLoader loop : {args.images / p:7.1f} images/s ({p:.2f} s)")
        print(f"median Ray Data pass         : {args.images / q:7.1f} images/s ({q:.2f} s)")
        print(f"ratio Ray / plain (throughput): {p / q:.3f}")
        f = statistics.median(startup)
        print(
            f"Ray start-up (first results after): {f:.2f} s; Ray steady state (after the first "
            f"batch): {(args.images - args.batch_size) / (q - f):.1f} images/s"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
