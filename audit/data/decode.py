"""Read and decode one image into the model's evaluation crop, or say why it cannot be.

The crop is the model's own :class:`~audit.models.transform.EvalTransform` (resize, centre crop,
interpolation: torchvision's ``weights.transforms()``, timm's pretrained config, or
``model.preprocess``) applied to the image converted to RGB; the default is the standard
ImageNet evaluation (resize the shorter side to 256, bilinear, centre crop 224). The result is
kept as ``(crop_h, crop_w, 3) uint8`` so that later stages reuse it without decoding again;
normalisation by the model's mean/std happens inside the model wrapper.

Odd but valid files decode like any other (grayscale, CMYK, RGBA, palette, 16-bit, a PNG under a
``.JPEG`` name, a 1x1 image). Broken ones raise :class:`ImageLoadError` with a short reason.

**Storage faults are not bad images.** A read that fails transiently (refused or dropped
connection, timeout, throttling, a server-side 5xx: :func:`audit.storage_errors.is_transient`) is
retried :data:`READ_ATTEMPTS` times in all, waiting :data:`READ_BACKOFF_S` then twice as long
before each later try; if it keeps failing, :func:`read_bytes` raises
:class:`~audit.storage_errors.TransientStorageError`, which the decode task lets propagate so
that the run fails and can be resumed, instead of recording an ``errors`` row.

**JPEG draft mode** (``draft=True``, off by default): libjpeg can decode a JPEG at 1/2, 1/4 or
1/8 scale in the DCT domain, skipping most of the inverse DCT and the colour conversion of the
full-size image. :func:`decode_image` then asks for the smallest such scale whose shorter side
is still at least the transform's resize and applies the exact resize and crop to that. The result is close to
the exact transform but not bit-identical (the DCT-domain downscale is a box-like filter, not
the antialiased one). Only JPEGs whose shorter side is at least twice the resize (512 px for
resize 256) are affected; ImageNet's typical 500x375 images are decoded exactly as without it.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import fsspec
import numpy as np
from PIL import Image, UnidentifiedImageError

from audit.models.transform import IMAGENET_MEAN, IMAGENET_STD, MAX_ASPECT, STANDARD, EvalTransform
from audit.storage_errors import TransientStorageError, retry, secret_values

RESIZE = 256
CROP = 224

READ_ATTEMPTS = 4
"""Tries per input read while storage fails transiently, before the read (and the run) fails."""

READ_BACKOFF_S = 0.25
"""Wait before the second read try; doubled before each later one (0.25 + 0.5 + 1 s in all)."""

__all__ = ["CROP", "IMAGENET_MEAN", "IMAGENET_STD", "MAX_ASPECT", "RESIZE", "EvalTransform"]


class ImageLoadError(Exception):
    """An input could not be turned into an image.

    Attributes:
        stage: ``read`` (the bytes could not be fetched) or ``decode`` (they are not a usable image).
        reason: One line for the ``errors`` table.
    """

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


def read_bytes(uri: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """Fetch a file's bytes through fsspec, retrying transient storage errors (module docstring).

    Raises:
        ImageLoadError: with stage ``read``: the file does not exist, is a folder, may not be
            read, or the read failed with another (non-transient) ``OSError``.
        TransientStorageError: the storage failed transiently on every one of the
            :data:`READ_ATTEMPTS` tries; not a property of the file.
    """
    options = dict(storage_options or {})

    def fetch() -> bytes:
        with fsspec.open(uri, "rb", **options) as f:
            got: bytes = f.read()
        return got

    try:
        data = retry(
            fetch,
            f"reading {uri}",
            READ_ATTEMPTS,
            READ_BACKOFF_S,
            secrets=secret_values(options),
        )
    except TransientStorageError:
        raise  # an OSError too: not a read error row
    except FileNotFoundError:
        raise ImageLoadError("read", "file not found (it disappeared after listing?)") from None
    except IsADirectoryError:
        raise ImageLoadError("read", "is a directory, not a file") from None
    except PermissionError:
        raise ImageLoadError("read", "permission denied") from None
    except OSError as exc:
        raise ImageLoadError("read", f"{type(exc).__name__}: {exc}") from None
    return data


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB.

    8-bit modes convert as torchvision's ``ImageFolder`` loader does (``img.convert("RGB")``);
    palette images with transparency go through RGBA first (PIL warns otherwise). Deeper
    grayscale is scaled to 8 bits, where PIL's ``convert`` would clip it to 255:

    * ``I;16*`` (16-bit PNG, TIFF) by 255 / 65535;
    * ``I`` (32-bit integers; PIL opens 16-bit PGM so): values up to 255 as they are (8-bit data
      in a wide container), up to 65535 as 16-bit, larger ones by the image's maximum;
    * ``F`` (floating point) by the image's maximum.
    """
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = max(float(arr.max()), 1.0)
        if img.mode.startswith("I;16"):
            hi = 65535.0
        elif img.mode == "I":
            hi = 255.0 if top <= 255 else (65535.0 if top <= 65535 else top)
        else:
            hi = top
        arr = np.clip(arr / hi * 255.0, 0, 255).round().astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    return img.convert("RGB")


def eval_crop(img: Image.Image, transform: EvalTransform = STANDARD) -> np.ndarray:
    """Apply ``transform``'s resize and centre crop to a PIL image (converted with :func:`to_rgb`).

    Returns:
        ``(crop_h, crop_w, 3) uint8``, identical to the reference transform's resize and crop
        (torchvision's ``weights.transforms()``, timm's eval transform) followed by
        ``pil_to_tensor`` for images whose aspect ratio is at most ``MAX_ASPECT``.
    """
    return transform.apply(to_rgb(img))


def draft_size(width: int, height: int, resize: int = RESIZE) -> tuple[int, int]:
    """The size to pass to PIL's ``Image.draft``: the image scaled so its shorter side is ``resize``.

    PIL then picks the largest DCT scale in {1, 1/2, 1/4, 1/8} that keeps both sides at least
    this large, i.e. the shorter side at least ``resize``.
    """
    short = min(width, height)
    return max(1, width * resize // short), max(1, height * resize // short)


_PIL_LIMIT = threading.Lock()


@contextmanager
def _open(data: bytes, max_pixels: int) -> Iterator[Image.Image]:
    """``Image.open`` with PIL's own decompression-bomb limit at ``max_pixels``.

    PIL refuses images over its global ``Image.MAX_IMAGE_PIXELS`` (89,478,485) in ``open``,
    before :func:`decode_image` can apply ``data.max_pixels``, so a larger ``max_pixels`` would
    have no effect. The global is raised for the ``open`` call only, under a lock.
    """
    with _PIL_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max(max_pixels, saved or 0)
        try:
            img = Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with img:
        yield img


def decode_image(
    data: bytes,
    max_pixels: int,
    transform: EvalTransform = STANDARD,
    *,
    draft: bool = False,
) -> np.ndarray:
    """Decode image bytes and apply :func:`eval_crop`.

    Args:
        data: The file's bytes, whatever its name says the format is.
        max_pixels: Images with more pixels (width * height, read from the header before
            decoding) are refused as decompression bombs.
        transform: The model's evaluation transform.
        draft: JPEGs only: decode at the smallest DCT scale (1/2, 1/4, 1/8) whose shorter side
            stays >= the resize before the exact resize (faster on large JPEGs, not
            bit-identical). Other formats and JPEGs with a shorter side under twice the resize
            decode as without it.

    Returns:
        ``(crop_h, crop_w, 3) uint8``.

    Raises:
        ImageLoadError: with stage ``decode``: empty file, not an image, truncated or corrupt
            data, or a decompression bomb.
    """
    if not data:
        raise ImageLoadError("decode", "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open(data, max_pixels) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageLoadError(
                        "decode",
                        f"decompression bomb: {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}",
                    )
                if w < 1 or h < 1:
                    raise ImageLoadError("decode", f"image has no pixels ({w}x{h})")
                resize = _draft_target(transform, w, h)
                if draft and img.format in ("JPEG", "MPO") and min(w, h) >= 2 * resize:
                    img.draft(img.mode, draft_size(w, h, resize))
                img.load()
                return eval_crop(img, transform)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError("decode", "not an image (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError("decode", f"decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageLoadError("decode", f"corrupt or truncated image: {msg}") from None
    except MemoryError:
        raise ImageLoadError("decode", "out of memory while decoding") from None


def _draft_target(transform: EvalTransform, width: int, height: int) -> int:
    """The shorter side the resize step makes of a ``width x height`` image."""
    return min(transform.resized_size(width, height))


def load_image(
    uri: str,
    max_pixels: int,
    storage_options: Mapping[str, Any] | None = None,
    *,
    transform: EvalTransform = STANDARD,
    draft: bool = False,
) -> np.ndarray:
    """:func:`read_bytes` then :func:`decode_image`.

    Raises:
        ImageLoadError: the file is missing or unreadable (``read``) or not a usable image
            (``decode``).
        TransientStorageError: the storage kept failing transiently (see :func:`read_bytes`).
    """
    return decode_image(read_bytes(uri, storage_options), max_pixels, transform, draft=draft)
