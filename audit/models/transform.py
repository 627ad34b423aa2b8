"""A model's evaluation transform: how an image becomes the crop its weights expect.

Every model source resolves one :class:`EvalTransform` per model (torchvision from
``weights.transforms()``, timm from its pretrained config, a factory from ``model.preprocess``).
It is recorded in the manifest, so that the report, the human-study renderer and a resumed run
crop exactly as the model saw its inputs.

The geometric part (resize, centre crop) runs in the decode tasks and yields
``(crop_h, crop_w, 3) uint8``; the normalisation by ``mean``/``std`` runs inside the model
wrapper (:class:`~audit.models.wrapper.AuditModel`). Together they are bit-identical on PIL
images to torchvision's ``weights.transforms()`` and to timm's eval ``create_transform`` (the
tests check both), except for images more elongated than :data:`MAX_ASPECT`, which are centre-cut
first so that a 1x100000 strip cannot blow up into a huge resize.

Example:
    >>> t = EvalTransform(resize=(232,), crop=(224, 224))
    >>> t.describe()
    'resize 232 (shorter side, bilinear), centre crop 224x224'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_ASPECT = 16.0
"""Beyond this aspect ratio the source is centre-cut first (ImageNet's most elongated images are
far below it)."""

INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
"""The PIL filter of each of torchvision's ``InterpolationMode`` names (torchvision's own
``pil_modes_mapping``). The transform runs on PIL alone, as torchvision's functional resize and
centre crop do on a PIL image, so that the decode tasks never import torchvision (seconds of
start-up in every fresh worker)."""

RESIZE_MODES = ("shorter", "keep_ratio", "squash")
"""``shorter``: the shorter side to ``resize[0]`` (torchvision's ``Resize(int)``);
``keep_ratio``: timm's ``ResizeKeepRatio(resize)`` (the scale of the side that fits ``resize``
best); ``squash``: exactly ``resize`` (h, w), aspect ratio not kept."""


@dataclass(frozen=True)
class EvalTransform:
    """Resize, centre crop and normalisation of one model's evaluation.

    Attributes:
        resize: ``shorter``: ``(side,)``, the shorter side; ``keep_ratio``/``squash``: ``(h, w)``.
        crop: ``(h, w)`` of the centre crop the model takes.
        interpolation: One of :data:`INTERPOLATIONS` (PIL's filters, antialiased).
        mean: Per-channel mean subtracted from ``[0, 1]`` pixels.
        std: Per-channel standard deviation they are divided by.
        resize_mode: One of :data:`RESIZE_MODES`.

    Raises:
        ValueError: (when built) a size < 1, an unknown interpolation or mode, mean/std not three
            values, or a std <= 0.
    """

    resize: tuple[int, ...] = (256,)
    crop: tuple[int, int] = (224, 224)
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_mode: str = "shorter"

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", tuple(int(v) for v in self.resize))
        object.__setattr__(self, "crop", tuple(int(v) for v in self.crop))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(
                f"resize_mode must be one of {', '.join(RESIZE_MODES)}. "
                f"Got {self.resize_mode!r} instead."
            )
        want = 1 if self.resize_mode == "shorter" else 2
        if len(self.resize) != want or min(self.resize) < 1:
            raise ValueError(
                f"resize must be {want} positive int(s) with resize_mode {self.resize_mode!r}. "
                f"Got {self.resize!r} instead."
            )
        if len(self.crop) != 2 or min(self.crop) < 1:
            raise ValueError(f"crop must be (h, w) positive ints. Got {self.crop!r} instead.")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}. "
                f"Got {self.interpolation!r} instead."
            )
        if (
            len(self.mean) != 3
            or len(self.std) != 3
            or not all(math.isfinite(v) for v in (*self.mean, *self.std))
            or min(self.std) <= 0
        ):
            raise ValueError(
                f"mean and std must be 3 finite values each, std > 0. Got mean={self.mean}, "
                f"std={self.std} instead."
            )

    # --- what it is ---------------------------------------------------------------------
    @property
    def crop_hw(self) -> tuple[int, int]:
        """``(h, w)`` of the crop."""
        return self.crop[0], self.crop[1]

    @property
    def short_side(self) -> int:
        """The smallest size the resize step aims at (for JPEG draft decoding)."""
        return min(self.resize)

    def describe(self) -> str:
        """One line for ``audit-cli models``, the manifest and the report."""
        h, w = self.crop_hw
        crop = f"{h}" if h == w else f"{h}x{w}"
        if self.resize_mode == "shorter":
            size = f"resize {self.resize[0]} (shorter side, {self.interpolation})"
        else:
            rh, rw = self.resize
            size = f"resize {rh}x{rw} ({self.resize_mode.replace('_', ' ')}, {self.interpolation})"
        text = f"{size}, centre crop {crop}x{crop}" if h == w else f"{size}, centre crop {crop}"
        if self.mean != IMAGENET_MEAN or self.std != IMAGENET_STD:
            text += f", mean {_short(self.mean)}, std {_short(self.std)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what the manifest records."""
        return {
            "resize": list(self.resize),
            "crop": list(self.crop),
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize_mode": self.resize_mode,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> EvalTransform:
        """The inverse of :meth:`to_dict`; None or ``{}`` (a run from before transforms were
        recorded) gives the old fixed transform, resize 256, crop 224, bilinear."""
        if not data:
            return cls()
        return cls(
            resize=_ints(data["resize"], 1),
            crop=_pair(data["crop"]),
            interpolation=str(data["interpolation"]),
            mean=_triple(data["mean"]),
            std=_triple(data["std"]),
            resize_mode=str(data.get("resize_mode", "shorter")),
        )

    def with_overrides(
        self,
        resize: int | None = None,
        crop: int | Sequence[int] | None = None,
        interpolation: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> EvalTransform:
        """A copy with the given values replaced (``model.preprocess``); a ``resize`` makes the
        mode ``shorter`` (the shorter side to that size), an int ``crop`` a square."""
        return EvalTransform(
            resize=self.resize if resize is None else (int(resize),),
            crop=self.crop if crop is None else _pair(crop),
            interpolation=self.interpolation if interpolation is None else interpolation,
            mean=self.mean if mean is None else _triple(mean),
            std=self.std if std is None else _triple(std),
            resize_mode=self.resize_mode if resize is None else "shorter",
        )

    # --- applying it --------------------------------------------------------------------
    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """``(h, w)`` the resize step makes of a ``width x height`` image (no image needed)."""
        if self.resize_mode == "squash":
            return self.resize[0], self.resize[1]
        if self.resize_mode == "keep_ratio":
            rh, rw = self.resize
            ratio = min(height / rh, width / rw)  # timm's ResizeKeepRatio, longest=0
            return round(height / ratio), round(width / ratio)
        size = self.resize[0]
        # torchvision's _compute_resized_output_size for an int size
        short, long_ = (width, height) if width <= height else (height, width)
        new_long = int(size * long_ / short)
        return (new_long, size) if width <= height else (size, new_long)

    def apply(self, img: Image.Image) -> np.ndarray:
        """The geometric part on an RGB PIL image: ``(crop_h, crop_w, 3) uint8``.

        Bit-identical to the reference's resize and centre crop followed by ``pil_to_tensor``
        for images whose aspect ratio is at most :data:`MAX_ASPECT`.
        """
        img = _cut_extreme(img)
        h, w = self.resized_size(*img.size)
        if (h, w) != (img.height, img.width):  # torchvision returns the image itself then
            img = img.resize((w, h), INTERPOLATIONS[self.interpolation])
        img = _center_crop(img, *self.crop_hw)
        return np.asarray(img, dtype=np.uint8).copy()


def _center_crop(img: Image.Image, crop_h: int, crop_w: int) -> Image.Image:
    """torchvision's ``center_crop`` of a PIL image: a crop larger than the image pads it with
    zeros first (the larger half of the margin after the image), then the crop starts at the
    rounded centre offset (Python's round, half to even)."""
    if crop_w > img.width or crop_h > img.height:
        left = (crop_w - img.width) // 2 if crop_w > img.width else 0
        top = (crop_h - img.height) // 2 if crop_h > img.height else 0
        right = (crop_w - img.width + 1) // 2 if crop_w > img.width else 0
        bottom = (crop_h - img.height + 1) // 2 if crop_h > img.height else 0
        padded = Image.new(img.mode, (img.width + left + right, img.height + top + bottom), 0)
        padded.paste(img, (left, top))
        img = padded
        if (img.width, img.height) == (crop_w, crop_h):
            return img
    top = round((img.height - crop_h) / 2.0)
    left = round((img.width - crop_w) / 2.0)
    return img.crop((left, top, left + crop_w, top + crop_h))


def _cut_extreme(img: Image.Image) -> Image.Image:
    w, h = img.size
    short, long_ = min(w, h), max(w, h)
    if long_ <= MAX_ASPECT * short:
        return img
    keep = int(MAX_ASPECT * short)
    keep += (long_ - keep) % 2  # an even margin on both sides: the cut keeps the centre
    if w > h:
        left = (w - keep) // 2
        return img.crop((left, 0, left + keep, h))
    top = (h - keep) // 2
    return img.crop((0, top, w, top + keep))


def _ints(value: Any, least: int) -> tuple[int, ...]:
    values = (value,) if isinstance(value, int) else tuple(value)
    if len(values) < least:
        raise ValueError(f"expected at least {least} sizes. Got {value!r} instead.")
    return tuple(int(v) for v in values)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    values = tuple(int(v) for v in value)
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise ValueError(f"a crop is one size or (h, w). Got {value!r} instead.")
    return values[0], values[1]


def _triple(value: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"mean and std must be 3 values each. Got {tuple(value)!r} instead.")
    return values[0], values[1], values[2]


def _short(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


STANDARD = EvalTransform()
"""The standard ImageNet evaluation: resize 256, centre crop 224, bilinear, ImageNet mean/std;
what a factory model without ``model.preprocess`` gets."""
