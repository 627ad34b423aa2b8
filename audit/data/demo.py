"""The embedded demo set: scikit-learn's 1797 handwritten 8x8 digits, rendered as small photos.

``sklearn.datasets.load_digits()`` ships with scikit-learn, so the demo needs no download. Each
digit is drawn by :func:`render_digit` as an RGB picture of 48 to 96 pixels a side, with random
foreground/background colours, a lighting gradient, a little rotation, shift and sensor noise;
the audit then reads it through exactly the same decode path as ImageNet
(:func:`audit.data.decode.decode_image`: resize 256, center-crop 224).

:func:`demo_split` holds out 30 digits per class (300 images) for the demo; the rest train the
shipped ``demo_digits`` model (``scripts/train_demo_model.py``). :func:`ensure_demo_dataset` writes
the held-out images once, in ImageFolder layout::

    <cache>/demo-digits-v1/digit_3/DEMO_val_00000042.JPEG   # 42 = index into load_digits()

Most images are RGB JPEGs (``.JPEG``) or PNGs (``.png``). To show that odd but valid files work,
four are written unusually: a grayscale JPEG, an RGBA PNG, a PNG saved under a ``.JPEG`` name and
a CMYK JPEG (see :data:`ODD_FILES`). One more file is broken on purpose:
``digit_0/DEMO_val_99999999.JPEG`` holds truncated JPEG bytes, so a demo run shows a row in the
``errors`` table. The folder therefore holds 301 image files of which 300 decode.

Example:
    >>> root = ensure_demo_dataset()  # doctest: +SKIP
    >>> sorted(os.listdir(root))[:2]  # doctest: +SKIP
    ['digit_0', 'digit_1']
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from audit.data.classes import ClassIndex

DIGIT_CLASSES = ClassIndex(
    "digits",
    ids=tuple(f"digit_{d}" for d in range(10)),
    names=("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
)
DEMO_PER_CLASS = 30
SPLIT_SEED = 0
RENDER_SEED = 2018
VERSION = "v1"  # bump when the rendering or the file layout changes: a new folder is written
DATASET_DIRNAME = f"demo-digits-{VERSION}"
MARKER = ".complete"
BROKEN_INDEX = 99_999_999
BROKEN_CLASS = "digit_0"
JPEG_QUALITY = 90
PNG_FRACTION = 0.25
# Which held-out image (the first of the class, by index) is written in an unusual way.
ODD_FILES = {
    1: "grayscale JPEG",
    2: "RGBA PNG",
    3: "PNG under a .JPEG name",
    4: "CMYK JPEG",
}
_MIN_SIDE, _MAX_SIDE = 48, 96
_MIN_CONTRAST = 90.0  # luminance difference between foreground and background, 0..255


@lru_cache(maxsize=1)
def load_digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, read once.

    Returns:
        ``(images, targets)``: ``(1797, 8, 8) float64`` in 0..16 and ``(1797,) int64`` in 0..9.
        Both are read-only.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float64)
    targets = np.asarray(digits.target, dtype=np.int64)
    images.setflags(write=False)
    targets.setflags(write=False)
    return images, targets


def demo_split(seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Split ``load_digits()`` into training digits and the held-out demo digits.

    Args:
        seed: Which digits of each class are held out; the same seed gives the same split.

    Returns:
        ``(train_indices, demo_indices)``, sorted ``int64`` indices into ``load_digits()``:
        ``(1497,)`` and ``(300,)`` (:data:`DEMO_PER_CLASS` per class), disjoint, together
        covering all 1797 digits.
    """
    _, targets = load_digit_arrays()
    rng = np.random.default_rng(seed)
    demo: list[np.ndarray] = []
    for digit in range(len(DIGIT_CLASSES)):
        members = np.flatnonzero(targets == digit)
        demo.append(rng.permutation(members)[:DEMO_PER_CLASS])
    demo_idx = np.sort(np.concatenate(demo)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(len(targets), dtype=np.int64), demo_idx)
    return train_idx, demo_idx


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background colours with at least ``_MIN_CONTRAST`` luminance apart."""
    weights = np.array([0.299, 0.587, 0.114])
    while True:
        fg = rng.uniform(0.0, 255.0, size=3)
        bg = rng.uniform(0.0, 255.0, size=3)
        if abs(float((fg - bg) @ weights)) >= _MIN_CONTRAST:
            return fg, bg


def render_digit(pixels: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Draw an 8x8 digit as a small, photo-like RGB picture (:func:`render_digit_with_box`'s
    picture)."""
    return render_digit_with_box(pixels, rng)[0]


def render_digit_with_box(
    pixels: np.ndarray, rng: np.random.Generator
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Draw an 8x8 digit as a small, photo-like RGB picture, and say where the digit is.

    The glyph is upsampled, rotated by up to 10 degrees, scaled to 55-75% of the shorter side and
    shifted a little from the centre (it stays inside the 224/256 center crop), then painted
    with random colours over a background with a lighting gradient, blurred slightly and given
    sensor noise.

    Args:
        pixels: ``(8, 8)`` or ``(64,)`` values in 0..16 (``load_digits().images[i]``).
        rng: All randomness comes from it: the same generator state gives the same picture.

    Returns:
        An RGB image, each side 48..96 pixels, aspect ratio at most 1.25, and the digit's
        extent in it, ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive): the box of the glyph's
        pixels after rotation, before the blur (a box annotation of the object, as ImageNet's).

    Raises:
        ValueError: ``pixels`` does not hold 64 values.
    """
    arr = np.asarray(pixels, dtype=np.float64)
    if arr.size != 64:
        raise ValueError(f"pixels must hold 8x8 = 64 values. Got shape {arr.shape} instead.")
    glyph_alpha = np.clip(arr.reshape(8, 8) / 16.0, 0.0, 1.0)

    short = int(rng.integers(_MIN_SIDE, _MAX_SIDE + 1))
    long_ = min(_MAX_SIDE, round(short * rng.uniform(1.0, 1.25)))
    width, height = (long_, short) if rng.random() < 0.5 else (short, long_)

    side = max(8, round(short * rng.uniform(0.55, 0.75)))
    glyph = Image.fromarray(np.round(glyph_alpha * 255.0).astype(np.uint8), mode="L")
    glyph = glyph.resize((side, side), Image.Resampling.BICUBIC)
    glyph = glyph.rotate(
        float(rng.uniform(-10.0, 10.0)), resample=Image.Resampling.BILINEAR, fillcolor=0
    )
    max_shift = 0.06 * short
    left = round((width - side) / 2 + rng.uniform(-max_shift, max_shift))
    top = round((height - side) / 2 + rng.uniform(-max_shift, max_shift))
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(glyph, (left, top))
    box = _extent(np.asarray(canvas), width, height)
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 1.0))))
    alpha = np.asarray(canvas, dtype=np.float64)[..., None] / 255.0  # (height, width, 1)

    fg, bg = _colours(rng)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width]
    ramp = (np.cos(angle) * (xx / width - 0.5) + np.sin(angle) * (yy / height - 0.5))[..., None]
    light = 1.0 + rng.uniform(0.0, 0.3) * ramp  # (height, width, 1), within 0.85..1.15
    picture = (bg * (1.0 - alpha) + fg * alpha) * light
    picture = picture + rng.normal(0.0, rng.uniform(2.0, 8.0), size=picture.shape)
    img = Image.fromarray(np.clip(np.round(picture), 0, 255).astype(np.uint8), mode="RGB")
    return img, box


def _extent(alpha: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """The box of the pixels with at least a quarter of the glyph's ink (the whole picture for
    an empty glyph)."""
    ys, xs = np.nonzero(alpha >= 64)
    if not len(xs):
        return 0, 0, width, height
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def render_demo_digit(index: int, variant: int = 0) -> Image.Image:
    """Render ``load_digits()`` digit ``index`` with its own seed.

    The generator is ``np.random.default_rng([RENDER_SEED, index])`` (plus ``variant`` when it is
    not 0), so a picture does not depend on which other digits are rendered or in what order.

    Args:
        index: Index into ``load_digits()``, 0..1796.
        variant: 0 is the picture the demo set uses; other values give other renderings of the
            same digit (training augmentation).

    Returns:
        The picture from :func:`render_digit`.

    Raises:
        IndexError: ``index`` is outside 0..1796.
    """
    images, _ = load_digit_arrays()
    if not 0 <= index < len(images):
        raise IndexError(f"digit index must be in 0..{len(images) - 1}. Got {index} instead.")
    key = [RENDER_SEED, index] if variant == 0 else [RENDER_SEED, index, variant]
    return render_digit(images[index], np.random.default_rng(key))


def cache_root() -> str:
    """Where cached data goes: ``$AUDIT_CACHE_DIR``, ``$XDG_CACHE_HOME/imagenet-audit`` or
    ``~/.cache/imagenet-audit``."""
    if os.environ.get("AUDIT_CACHE_DIR"):
        return os.environ["AUDIT_CACHE_DIR"]
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "imagenet-audit")


def demo_image_id(index: int) -> str:
    """The file stem of digit ``index`` in the demo folder, e.g. ``DEMO_val_00000042``."""
    return f"DEMO_val_{index:08d}"


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


def _demo_files() -> list[tuple[str, str, bytes]]:
    """Every file of the demo set as ``(class_id, file_name, bytes)``, broken one last."""
    _, targets = load_digit_arrays()
    _, demo_idx = demo_split(SPLIT_SEED)
    odd_index = {int(demo_idx[targets[demo_idx] == digit][0]): digit for digit in ODD_FILES}
    files: list[tuple[str, str, bytes]] = []
    for index in (int(i) for i in demo_idx):
        class_id = DIGIT_CLASSES.ids[int(targets[index])]
        stem = demo_image_id(index)
        img = render_demo_digit(index)
        kind = odd_index.get(index)
        if kind == 1:
            name, data = f"{stem}.JPEG", _encode(img.convert("L"), "JPEG")
        elif kind == 2:
            rgba = img.convert("RGBA")
            alpha = np.full((img.height, img.width), 255, dtype=np.uint8)
            alpha[[0, -1], :] = 0  # a transparent frame; decoding drops alpha, RGB is kept
            alpha[:, [0, -1]] = 0
            rgba.putalpha(Image.fromarray(alpha, mode="L"))
            name, data = f"{stem}.png", _encode(rgba, "PNG")
        elif kind == 3:
            name, data = f"{stem}.JPEG", _encode(img, "PNG")
        elif kind == 4:
            name, data = f"{stem}.JPEG", _encode(img.convert("CMYK"), "JPEG")
        else:
            # The format is drawn from its own generator so it does not shift the rendering.
            use_png = np.random.default_rng([RENDER_SEED, index, 0]).random() < PNG_FRACTION
            fmt = "PNG" if use_png else "JPEG"
            name = f"{stem}.png" if use_png else f"{stem}.JPEG"
            data = _encode(img, fmt)
        files.append((class_id, name, data))
    images, _ = load_digit_arrays()
    first_zero = int(demo_idx[targets[demo_idx] == 0][0])
    whole = _encode(render_digit(images[first_zero], np.random.default_rng(BROKEN_INDEX)), "JPEG")
    files.append((BROKEN_CLASS, f"{demo_image_id(BROKEN_INDEX)}.JPEG", whole[: len(whole) // 2]))
    return files


def _is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))


def ensure_demo_dataset(root: str | None = None) -> str:
    """Write the demo set once and return its folder.

    The folder is ``<root>/demo-digits-v1`` in ImageFolder layout (``<class_id>/<image_id>.<ext>``
    with class ids ``digit_0`` .. ``digit_9``): the 300 held-out digits plus the one broken file
    described in the module docstring. A folder holding the marker file ``.complete`` (written
    last) is reused as is; one without it is replaced. Files are written into a temporary
    sibling folder that is renamed into place, so a concurrent caller sees either no folder or a
    complete one.

    Args:
        root: Cache folder to write under; unset means :func:`cache_root`.

    Returns:
        The path of the dataset folder.

    Raises:
        OSError: the folder cannot be written.
    """
    base = os.path.abspath(os.path.expanduser(root if root is not None else cache_root()))
    final = os.path.join(base, DATASET_DIRNAME)
    if _is_complete(final):
        return final
    os.makedirs(base, exist_ok=True)
    tmp = os.path.join(base, f".{DATASET_DIRNAME}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        os.makedirs(tmp)
        files = _demo_files()
        for class_id in DIGIT_CLASSES.ids:
            os.makedirs(os.path.join(tmp, class_id))
        for class_id, name, data in files:
            with open(os.path.join(tmp, class_id, name), "wb") as f:
                f.write(data)
        with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
            json.dump({"version": VERSION, "files": len(files)}, f)
        if os.path.isdir(final) and not _is_complete(final):
            # Left incomplete by something other than this function: move it aside, then drop it.
            stale = os.path.join(base, f".{DATASET_DIRNAME}.stale-{uuid.uuid4().hex}")
            try:
                os.rename(final, stale)
            except OSError:
                pass  # another caller moved or replaced it first
            else:
                shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final):  # not a concurrent caller winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
