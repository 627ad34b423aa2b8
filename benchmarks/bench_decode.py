"""Decode + resize 256 + center-crop 224 per CPU core, exact and in JPEG draft mode.

Speed: the files' bytes are read into memory first, then one process on one thread (torch and
PIL single-threaded) decodes them with :func:`audit.data.decode.decode_image`, exact and with
``draft=True``, alternating, ``--repeats`` times; medians are printed as images per second per
core. Two sets: the synthetic ImageNet-like mix of :mod:`make_synthetic_imagenet` (most images
are 500 px on the long side, where draft mode changes nothing) and its images whose shorter side
is at least 512 px (where draft mode decodes at 1/2, 1/4 or 1/8 scale).

Agreement: no ImageNet weights are available offline, so top-1 agreement between exact and
draft crops is measured with what is: the shipped ``demo_digits`` model on the 300 held-out demo
digits re-encoded as quality-90 JPEGs at large ImageNet-like sizes (every one of them drafted),
and a seeded-random resnet18 on the large synthetic images. Agreement of a random network says
how much the crops differ as seen by a ConvNet, not how a trained ImageNet model would fare.

    .venv/bin/python benchmarks/bench_decode.py --images 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_synthetic_imagenet import class_ids, default_root, ensure_synthetic_imagenet, image_path

from audit.config import ModelConfig
from audit.data.decode import decode_image
from audit.models import load_model
from audit.stages.predict import predict

MAX_PIXELS = 89_478_485


def per_second(blobs: list[bytes], draft: bool) -> float:
    t0 = time.perf_counter()
    for data in blobs:
        decode_image(data, MAX_PIXELS, draft=draft)
    return len(blobs) / (time.perf_counter() - t0)


def speed(blobs: list[bytes], repeats: int) -> tuple[float, float]:
    exact, draft = [], []
    for _ in range(repeats):
        exact.append(per_second(blobs, False))
        draft.append(per_second(blobs, True))
    return statistics.median(exact), statistics.median(draft)


def agreement(model_name: str, weights: str, blobs: list[bytes]) -> tuple[float, float, int]:
    """(top-1 agreement, mean abs pixel difference, images) of exact vs draft crops."""
    model = load_model(ModelConfig(name=model_name, weights=weights, seed=0)).module.eval()
    exact = np.stack([decode_image(b, MAX_PIXELS) for b in blobs])
    draft = np.stack([decode_image(b, MAX_PIXELS, draft=True) for b in blobs])
    labels = np.full(len(blobs), -1)
    same = 0
    for start in range(0, len(blobs), 32):
        a = predict(model, exact[start : start + 32], labels[start : start + 32], embeddings=False)
        b = predict(model, draft[start : start + 32], labels[start : start + 32], embeddings=False)
        same += int((a.top5_classes[:, 0] == b.top5_classes[:, 0]).sum())
    diff = float(np.abs(exact.astype(np.int16) - draft.astype(np.int16)).mean())
    return same / len(blobs), diff, len(blobs)


def demo_digits_large(seed: int = 0) -> list[bytes]:
    """The 300 held-out demo digits, enlarged to ImageNet-like sizes with a shorter side of
    512 to 1200 px and saved as quality-90 JPEGs."""
    from audit.data.demo import demo_split, render_demo_digit

    rng = np.random.default_rng(seed)
    _, held_out = demo_split()
    out = []
    for index in held_out:
        img = render_demo_digit(int(index))
        short = int(rng.integers(512, 1201))
        aspect = float(rng.choice([1.0, 4 / 3, 3 / 2]))
        size = (
            (round(short * aspect), short) if rng.random() < 0.7 else (short, round(short * aspect))
        )
        buf = io.BytesIO()
        img.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(
            buf, format="JPEG", quality=90
        )
        out.append(buf.getvalue())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="synthetic images to time")
    parser.add_argument("--classes", choices=["imagenet", "digits"], default="digits")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resnet-images", type=int, default=64, help="0 skips resnet18")
    args = parser.parse_args()
    torch.set_num_threads(1)

    root = args.root or default_root(args.classes)
    ensure_synthetic_imagenet(args.images, args.classes, root)
    ids = class_ids(args.classes)
    blobs = [image_path(root, ids, i).read_bytes() for i in range(1, args.images + 1)]
    large = []
    for b in blobs:
        with Image.open(io.BytesIO(b)) as img:
            if min(img.size) >= 512:
                large.append(b)

    print("| set | images | mean KB | exact images/s/core | draft images/s/core | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, subset in (("ImageNet-like mix", blobs), ("shorter side >= 512", large)):
        if not subset:
            continue
        e, d = speed(subset, args.repeats)
        kb = np.mean([len(b) for b in subset]) / 1e3
        print(f"| {name} | {len(subset)} | {kb:.0f} | {e:.1f} | {d:.1f} | {d / e:.2f}x |")
    digits = demo_digits_large()
    e, d = speed(digits, args.repeats)
    print(
        f"| demo digits, enlarged | {len(digits)} | "
        f"{np.mean([len(b) for b in digits]) / 1e3:.0f} | {e:.1f} | {d:.1f} | {d / e:.2f}x |"
    )
    print(f"(medians of {args.repeats}, one thread)")
    print()
    print("| model | images (all drafted) | top-1 agreement exact vs draft | mean abs pixel diff |")
    print("|---|---|---|---|")
    agree, diff, n = agreement("demo_digits", "default", digits)
    print(f"| demo_digits (trained) | {n} demo digits, enlarged | {agree:.4f} | {diff:.2f} |")
    if args.resnet_images and large:
        agree, diff, n = agreement("resnet18", "random", large[: args.resnet_images])
        print(
            f"| resnet18 (seeded random) | {n} synthetic, shorter side >= 512 | {agree:.4f} | {diff:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
