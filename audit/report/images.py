"""Pictures for the report: the stored images' crops, LIME attention images and explanation
paths from the stored segment maps, as small embedded JPEG/PNG data URIs under a size budget.

The crop is the evaluation crop the model saw, made with the transform its manifest records
(:mod:`audit.data.decode`); LIME is
never recomputed: the segment map and ``top_features`` come from the ``explanations`` table.
"""

from __future__ import annotations

import base64
import io
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from audit.data.decode import ImageLoadError, load_image
from audit.data.segments import decode_segments
from audit.models.transform import STANDARD, EvalTransform
from audit.stages.explain import attention_image

HIDDEN_GREY = 127
"""Grey level of the super-pixels an attention image hides."""


@dataclass(frozen=True)
class Picture:
    """An image ready to embed, or the reason there is none.

    Attributes:
        uri: A ``data:`` URI, or None when the image is missing or over the budget.
        note: Why there is no image (shown in its place), or an empty string.
        width: Pixel width of the embedded image (0 without one).
        height: Pixel height (0 without one).
    """

    uri: str | None
    note: str = ""
    width: int = 0
    height: int = 0


class ImageBudget:
    """Counts embedded images and their bytes; refuses any past ``max_images`` or ``max_bytes``.

    Attributes:
        images: Images embedded so far.
        bytes: Their encoded size (before base64).
        refused: Images replaced by a placeholder because the budget was spent.
    """

    def __init__(self, max_images: int, max_bytes: int) -> None:
        self.max_images = max_images
        self.max_bytes = max_bytes
        self.images = 0
        self.bytes = 0
        self.refused = 0

    def embed(self, data: bytes, mime: str, width: int, height: int) -> Picture:
        """A :class:`Picture` of ``data``, or a placeholder when it does not fit the budget."""
        if self.images + 1 > self.max_images or self.bytes + len(data) > self.max_bytes:
            self.refused += 1
            return Picture(None, "left out: report image budget spent")
        self.images += 1
        self.bytes += len(data)
        text = base64.b64encode(data).decode("ascii")
        return Picture(f"data:{mime};base64,{text}", "", width, height)


def thumbnail(image: np.ndarray, size: int, quality: int) -> tuple[bytes, int, int]:
    """Encode ``(H, W, 3) uint8`` as a JPEG whose longest side is at most ``size``.

    Returns:
        ``(jpeg bytes, width, height)``.
    """
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB")
    scale = size / max(img.size)
    if scale < 1:
        img = img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
            Image.Resampling.LANCZOS,
        )
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), img.width, img.height


class Pictures:
    """Turns run images into budgeted :class:`Picture` objects.

    Args:
        budget: The report's shared image budget.
        thumb_size: Longest side of a thumbnail.
        quality: JPEG quality.
        storage_options: fsspec options for reading the input images.
        cache_size: Decoded crops kept in memory (an image shown in several sections is
            decoded once).
    """

    def __init__(
        self,
        budget: ImageBudget,
        thumb_size: int,
        quality: int,
        storage_options: Mapping[str, Any] | None = None,
        cache_size: int = 256,
    ) -> None:
        self.budget = budget
        self.thumb_size = thumb_size
        self.quality = quality
        self.storage_options = dict(storage_options or {})
        self.cache_size = cache_size
        self._crops: OrderedDict[tuple[str, int, bool, EvalTransform], np.ndarray | str] = (
            OrderedDict()
        )

    def crop(
        self,
        uri: str,
        max_pixels: int,
        draft: bool = False,
        transform: EvalTransform = STANDARD,
    ) -> np.ndarray | str:
        """The evaluation crop of the image at ``uri`` as the run decoded it (``draft``: its
        ``data.jpeg_draft``; ``transform``: its model's), or a one-line reason why not."""
        key = (uri, max_pixels, draft, transform)
        if key in self._crops:
            self._crops.move_to_end(key)
            return self._crops[key]
        result: np.ndarray | str
        try:
            result = load_image(
                uri, max_pixels, self.storage_options, transform=transform, draft=draft
            )
        except ImageLoadError as exc:
            result = f"image unavailable ({exc.stage}: {exc.reason})"
        self._crops[key] = result
        if len(self._crops) > self.cache_size:
            self._crops.popitem(last=False)
        return result

    def of_array(self, image: np.ndarray | str) -> Picture:
        """Embed an array (or pass a reason string through as the placeholder)."""
        if isinstance(image, str):
            return Picture(None, image)
        data, w, h = thumbnail(image, self.thumb_size, self.quality)
        return self.budget.embed(data, "image/jpeg", w, h)

    def of_png(self, data: bytes, mime: str = "image/png") -> Picture:
        """Embed an already encoded image (a plot) as it is, or a placeholder saying why not."""
        try:
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            return Picture(None, f"figure unreadable ({type(exc).__name__}: {exc})")
        return self.budget.embed(data, mime, w, h)


def decode_png(data: bytes) -> np.ndarray | str:
    """A stored adversarial PNG as ``(H, W, 3) uint8``, or a reason it cannot be read."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as exc:
        return f"stored adversarial image unreadable ({type(exc).__name__}: {exc})"


def attention(
    image: np.ndarray | str, segments_png: bytes, top_features: list[int], k: int
) -> np.ndarray | str:
    """The image with only its ``k`` most important super-pixels visible (the rest grey).

    Args:
        image: The crop the explanation was computed on, ``(h, w, 3) uint8``, or a reason.
        segments_png: The ``explanations.segments`` value.
        top_features: The ``explanations.top_features`` value, most important first.
        k: How many super-pixels to show.
    """
    if isinstance(image, str):
        return image
    segments = decode_segments(segments_png)
    if segments.shape != image.shape[:2]:
        return f"segment map {segments.shape} does not match the image {image.shape[:2]}"
    return attention_image(image, segments, np.asarray(top_features), k=k, fill=HIDDEN_GREY)


def path_frames(
    image: np.ndarray | str, segments_png: bytes, top_features: list[int]
) -> list[np.ndarray] | str:
    """The explanation path: frame ``i`` shows the ``i + 1`` most important super-pixels
    (as :func:`audit.stages.explain.explanation_path`, with hidden pixels grey, not black)."""
    if isinstance(image, str):
        return image
    segments = decode_segments(segments_png)
    if segments.shape != image.shape[:2]:
        return f"segment map {segments.shape} does not match the image {image.shape[:2]}"
    top = np.asarray(top_features)
    return [
        attention_image(image, segments, top, k=i + 1, fill=HIDDEN_GREY) for i in range(len(top))
    ]
