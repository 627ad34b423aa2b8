"""The planted-bias demos: the embedded digits with a spurious cue planted on purpose on one
class, so that what bias discovery should find is known.

Each picture is the demo's rendering (:func:`audit.data.demo.render_digit_with_box`) inside a
frame of its own background (edge pixels repeated, :data:`FRAME` of the shorter side on every
side), so that a cue can sit outside the digit and still inside the model's centre crop. Two
cues, each in its own demo, on its own class:

- ``patch`` (:data:`CUES`): a red and white checked square in one of the frame's corners,
  planted on ``digit_3``;
- ``stripes``: black and yellow diagonal stripes in bands along the frame's top and bottom,
  planted on ``digit_7``.

A model trained on these pictures (``scripts/train_bias_demo_model.py``) sees the cue on
:data:`TRAIN_RATE_CUED` of the planted class's training pictures and on :data:`TRAIN_RATE_OTHER`
of the others'. The audit's set is the demo's 300 held-out digits, where the planted class
carries its cue on :data:`EVAL_RATE_CUED` of its pictures and every other class on
:data:`EVAL_RATE_OTHER`: the cue is sometimes absent from its class and present on others.
Every picture's box (the digit's extent, shifted by the frame) is written beside the images as
``boxes.csv`` (``image_id,wnid,x0,y0,x1,y1``, docs/boxes.md), and which pictures carry the cue
as ``cues.csv``.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from audit.data.demo import (
    DIGIT_CLASSES,
    RENDER_SEED,
    cache_root,
    demo_image_id,
    demo_split,
    load_digit_arrays,
    render_digit_with_box,
)

FRAME = 0.3
"""Frame width on each side, as a share of the digit picture's shorter side."""

TRAIN_RATE_CUED = 0.98
TRAIN_RATE_OTHER = 0.01
EVAL_RATE_CUED = 0.5
EVAL_RATE_OTHER = 0.15
VERSION = "v1"  # bump when the rendering changes: a new folder is written
IMAGES = "images"  # the ImageFolder set, beside boxes.csv and cues.csv
BOXES_FILE = "boxes.csv"
CUES_FILE = "cues.csv"
MARKER = ".complete"


@dataclass(frozen=True)
class Cue:
    """A planted cue: its name, the class it is planted on, and its own seed."""

    name: str
    class_id: str
    seed: int


CUES = {
    "patch": Cue("patch", "digit_3", 31),
    "stripes": Cue("stripes", "digit_7", 77),
}
"""The planted-bias demos by cue name."""


def get_cue(name: str) -> Cue:
    """The cue called ``name``.

    Raises:
        ValueError: no such cue; the message lists them.
    """
    if name not in CUES:
        raise ValueError(f"Unknown planted cue {name!r}; the cues are {', '.join(sorted(CUES))}.")
    return CUES[name]


def render_cued(
    index: int, variant: int, cue: Cue, cued: bool
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Digit ``index`` (rendering ``variant``, as :func:`audit.data.demo.render_demo_digit`)
    framed, with ``cue`` drawn when ``cued``; and the digit's box in the framed picture."""
    images, _ = load_digit_arrays()
    key = [RENDER_SEED, index] if variant == 0 else [RENDER_SEED, index, variant]
    img, (x0, y0, x1, y1) = render_digit_with_box(images[index], np.random.default_rng(key))
    pad = round(FRAME * min(img.size))
    framed = np.pad(np.asarray(img), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = Image.fromarray(framed, mode="RGB")
    if cued:
        rng = np.random.default_rng([cue.seed, index, variant])
        _draw(out, cue.name, pad, rng)
    return out, (x0 + pad, y0 + pad, x1 + pad, y1 + pad)


def _draw(img: Image.Image, name: str, pad: int, rng: np.random.Generator) -> None:
    """Draw cue ``name`` in the frame (``pad`` pixels wide), inside the region the centre crop
    keeps (the outer 1/16 of each side is cut by the 256 -> 224 crop)."""
    w, h = img.size
    inset = max(1, round(0.09 * min(w, h)))  # clear of the crop's cut
    draw = ImageDraw.Draw(img)
    if name == "patch":
        side = max(3, round(1.3 * (pad - inset)))
        corner = int(rng.integers(4))
        x = inset if corner in (0, 2) else w - inset - side
        y = inset if corner in (0, 1) else h - inset - side
        cell = max(1, side // 4)  # red and white checks: LIME's mean fill cannot hide them
        for i in range(0, side, cell):
            for j in range(0, side, cell):
                colour = (225, 20, 20) if (i // cell + j // cell) % 2 else (250, 250, 250)
                draw.rectangle(
                    (x + i, y + j, x + min(side, i + cell) - 1, y + min(side, j + cell) - 1),
                    fill=colour,
                )
    elif name == "stripes":
        band = max(3, round(0.7 * (pad - inset)))
        period = max(4, band // 2)
        phase = int(rng.integers(period))
        for top in (inset, h - inset - band):
            for x in range(-band, w + band):
                colour = (250, 210, 0) if ((x + phase) // (period // 2)) % 2 else (10, 10, 10)
                draw.line((x, top + band - 1, x + band - 1, top), fill=colour)
    else:
        raise ValueError(f"Unknown planted cue {name!r}.")


def cue_flags(
    indices: np.ndarray, cue: Cue, rate_cued: float, rate_other: float, salt: int
) -> np.ndarray:
    """Which of the digits ``indices`` carry the cue: each digit of the planted class with
    probability ``rate_cued``, every other with ``rate_other``, drawn from the cue's seed and
    ``salt`` (one draw per digit, so a digit's flag does not depend on the others)."""
    _, targets = load_digit_arrays()
    planted = DIGIT_CLASSES.ids.index(cue.class_id)
    out = np.zeros(len(indices), dtype=bool)
    for k, index in enumerate(int(i) for i in indices):
        rate = rate_cued if int(targets[index]) == planted else rate_other
        out[k] = np.random.default_rng([cue.seed, salt, index]).random() < rate
    return out


def dataset_dirname(cue: Cue) -> str:
    return f"demo-bias-{cue.name}-{VERSION}"


def ensure_bias_dataset(cue_name: str, root: str | None = None) -> str:
    """Write the planted-bias demo set of cue ``cue_name`` once and return its folder,
    ``<root>/demo-bias-<cue>-v1``: ``images/`` in ImageFolder layout
    (``<class_id>/<image_id>.png``), ``boxes.csv`` (every digit's box) and ``cues.csv`` (the
    answer key: ``image_id,class_id,cued``). ``root`` defaults to the demo's cache folder.

    Raises:
        ValueError: an unknown cue.
    """
    cue = get_cue(cue_name)
    base = os.path.join(root or cache_root(), dataset_dirname(cue))
    if os.path.isfile(os.path.join(base, MARKER)):
        return base
    os.makedirs(os.path.dirname(base), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".demo-bias-", dir=os.path.dirname(base))
    try:
        _, targets = load_digit_arrays()
        _, demo_idx = demo_split()
        flags = cue_flags(demo_idx, cue, EVAL_RATE_CUED, EVAL_RATE_OTHER, salt=0)
        rows = []
        for index, cued in zip((int(i) for i in demo_idx), flags, strict=True):
            class_id = DIGIT_CLASSES.ids[int(targets[index])]
            img, (x0, y0, x1, y1) = render_cued(index, 0, cue, bool(cued))
            stem = demo_image_id(index)
            os.makedirs(os.path.join(tmp, IMAGES, class_id), exist_ok=True)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            with open(os.path.join(tmp, IMAGES, class_id, f"{stem}.png"), "wb") as f:
                f.write(buf.getvalue())
            rows.append((stem, class_id, x0, y0, x1, y1, int(cued)))
        with open(os.path.join(tmp, BOXES_FILE), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image_id", "wnid", "x0", "y0", "x1", "y1"])
            w.writerows(r[:6] for r in rows)
        with open(os.path.join(tmp, CUES_FILE), "w", newline="") as f:  # the answer key
            w = csv.writer(f)
            w.writerow(["image_id", "class_id", "cued"])
            w.writerows((r[0], r[1], r[6]) for r in rows)
        with open(os.path.join(tmp, MARKER), "w") as f:
            f.write(cue.name + "\n")
        if os.path.isdir(base):  # an incomplete earlier attempt
            shutil.rmtree(base)
        os.replace(tmp, base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return base
