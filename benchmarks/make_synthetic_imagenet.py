"""A synthetic ImageNet-layout validation set of realistic JPEGs, generated once into a cache.

Each image is a random crop of one of scikit-image's bundled photos (no download), resized to an
ImageNet-like size, colour-jittered, with mild sensor noise, saved as a quality-90 baseline
JPEG. The size mix imitates ILSVRC2012 validation: most images 500 px on the long side
(500x375, 375x500, 500x333, 500x500, ...) and about one in ten larger (long side 600 to 1600 px),
which is where JPEG draft decoding matters. The noise level is set so the files average about
110 KB, like ImageNet's.

Layout (``imagefolder``)::

    <root>/<class id>/ILSVRC2012_val_00000001.JPEG

Image ``i`` (1-based) goes to class ``(i - 1) % n_classes``, so the first ``N`` image ids cover
the classes evenly and ``data.limit=N`` selects a balanced subset. Class ids are ImageNet's
WordNet ids (``--classes imagenet``) or the demo model's ``digit_0..digit_9`` (``--classes
digits``). Generation is deterministic (image ``i`` comes from the seed ``[seed, i]``) and
incremental: asking for more images than the cache holds adds only the missing ones.

    .venv/bin/python benchmarks/make_synthetic_imagenet.py --images 10000 --classes digits
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.data.classes import imagenet_classes
from audit.data.demo import DIGIT_CLASSES, cache_root

VERSION = "v1"
SOURCES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
)
# (width, height, weight): the common ILSVRC2012 validation shapes; None = a larger image.
SHAPES: tuple[tuple[int, int, float] | None, ...] = (
    (500, 375, 0.40),
    (375, 500, 0.12),
    (500, 333, 0.15),
    (333, 500, 0.05),
    (500, 500, 0.05),
    (500, 400, 0.07),
    (500, 281, 0.06),
    None,
)
LARGE_WEIGHT = 0.10
NOISE_SIGMA = 17.0
QUALITY = 90
STATE_FILE = "synthetic.json"


def default_root(classes: str) -> Path:
    """``$AUDIT_CACHE_DIR`` (or the user cache) ``/synthetic-imagenet-<classes>-v1``."""
    return Path(cache_root()) / f"synthetic-imagenet-{classes}-{VERSION}"


def class_ids(classes: str) -> tuple[str, ...]:
    if classes == "imagenet":
        return imagenet_classes().ids
    if classes == "digits":
        return DIGIT_CLASSES.ids
    raise ValueError(f"classes must be 'imagenet' or 'digits'. Got {classes!r} instead.")


@cache
def _source(name: str) -> np.ndarray:
    import skimage.data

    return np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)


def image_size(rng: np.random.Generator) -> tuple[int, int]:
    """A (width, height) drawn from the ImageNet-like mix."""
    weights = np.array([s[2] if s else LARGE_WEIGHT for s in SHAPES])
    pick = SHAPES[int(rng.choice(len(SHAPES), p=weights / weights.sum()))]
    if pick is not None:
        return pick[0], pick[1]
    long_side = int(rng.integers(600, 1601))
    aspect = float(rng.choice([4 / 3, 3 / 2, 16 / 9, 1.0]))
    short = round(long_side / aspect)
    return (long_side, short) if rng.random() < 0.7 else (short, long_side)


def render(index: int, seed: int = 0) -> Image.Image:
    """Image ``index`` (1-based) of the set: deterministic in ``(seed, index)``."""
    rng = np.random.default_rng([seed, index])
    src = _source(SOURCES[int(rng.integers(len(SOURCES)))])
    h0, w0 = src.shape[:2]
    ch, cw = int(rng.integers(h0 // 2, h0 + 1)), int(rng.integers(w0 // 2, w0 + 1))
    top, left = int(rng.integers(0, h0 - ch + 1)), int(rng.integers(0, w0 - cw + 1))
    crop = src[top : top + ch, left : left + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    w, h = image_size(rng)
    img = Image.fromarray(np.ascontiguousarray(crop)).resize((w, h), Image.Resampling.BILINEAR)
    arr: np.ndarray = np.asarray(img, dtype=np.float32)
    arr = arr * rng.uniform(0.7, 1.3, size=3) + rng.uniform(-25, 25, size=3)
    arr += rng.normal(0.0, NOISE_SIGMA, size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


def image_path(root: Path, ids: tuple[str, ...], index: int) -> Path:
    return root / ids[(index - 1) % len(ids)] / f"ILSVRC2012_val_{index:08d}.JPEG"


def _write(args: tuple[str, str, int, int]) -> int:
    root, classes, index, seed = args
    path = image_path(Path(root), class_ids(classes), index)
    tmp = path.with_suffix(".tmp")
    render(index, seed).save(tmp, format="JPEG", quality=QUALITY)
    os.replace(tmp, path)
    return path.stat().st_size


def ensure_synthetic_imagenet(
    n_images: int,
    classes: str = "imagenet",
    root: Path | None = None,
    seed: int = 0,
    workers: int = 1,
) -> Path:
    """Make sure ``root`` holds images ``1..n_images``; returns ``root``.

    The state file records how many images are complete; images are written through a temporary
    name, so an interrupted generation resumes where it stopped.
    """
    root = root or default_root(classes)
    ids = class_ids(classes)
    state_path = root / STATE_FILE
    done = 0
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("seed") != seed or state.get("classes") != classes:
            raise ValueError(f"{root} holds a set made with {state}; use another --root")
        done = int(state["images"])
    if done >= n_images:
        return root
    for class_id in ids[: min(len(ids), n_images)]:
        (root / class_id).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    todo = [(str(root), classes, i, seed) for i in range(done + 1, n_images + 1)]
    sizes = []
    chunk = 500
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(todo), chunk):
            sizes += list(pool.map(_write, todo[start : start + chunk], chunksize=25))
            state_path.write_text(
                json.dumps(
                    {
                        "images": done + len(sizes),
                        "classes": classes,
                        "seed": seed,
                        "version": VERSION,
                    }
                )
            )
            print(
                f"  {done + len(sizes)}/{n_images} images, mean {np.mean(sizes) / 1e3:.0f} KB, "
                f"{time.time() - t0:.0f} s",
                flush=True,
            )
    return root


def describe(root: Path, n_images: int, classes: str) -> dict[str, float]:
    """Mean file size and pixel counts of images ``1..n_images`` (reads headers only)."""
    ids = class_ids(classes)
    sizes, pixels, large = [], [], 0
    for i in range(1, n_images + 1):
        path = image_path(root, ids, i)
        sizes.append(path.stat().st_size)
        with Image.open(path) as img:
            pixels.append(img.width * img.height)
            large += min(img.size) >= 512
    return {
        "images": n_images,
        "mean_kb": float(np.mean(sizes) / 1e3),
        "mean_megapixels": float(np.mean(pixels) / 1e6),
        "share_short_side_ge_512": large / n_images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--classes", choices=["imagenet", "digits"], default="imagenet")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    root = ensure_synthetic_imagenet(args.images, args.classes, args.root, args.seed, args.workers)
    print(root)
    print(json.dumps(describe(root, args.images, args.classes)))


if __name__ == "__main__":
    main()
