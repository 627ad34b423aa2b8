"""The ``model`` section: which classifier to audit, and overrides of its evaluation transform
(``model.preprocess``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from audit.config.checks import (
    BOOL,
    FINITE,
    POSITIVE,
    SEED,
    Checked,
    FieldRules,
    InstanceOf,
    Interval,
    Items,
    Options,
    Text,
)


class Interpolation(str, Enum):
    """PIL's resampling filters (antialiased), by the names torchvision's ``InterpolationMode``
    gives them."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


@dataclass(frozen=True)
class PreprocessConfig(Checked):
    """Overrides of the model's evaluation transform (``model.preprocess.<field>``); each unset
    field keeps what the model's weights expect (torchvision's ``weights.transforms()``, timm's
    pretrained config; for ``model.factory`` the standard ImageNet evaluation: resize 256, crop
    224, bilinear, ImageNet mean/std).

    Attributes:
        resize: The shorter side after resizing, in pixels.
        crop: The centre crop: one size (a square) or ``[h, w]``.
        interpolation: One of :class:`Interpolation`: ``nearest``, ``bilinear``, ``bicubic``,
            ``box``, ``hamming``, ``lanczos`` (PIL's filters, antialiased).
        mean: Per-channel mean of ``[0, 1]`` pixels (three values).
        std: Per-channel standard deviation (three values > 0).
    """

    resize: int | None = None
    crop: int | tuple[int, ...] | None = None
    interpolation: Interpolation | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    SECTION: ClassVar[str | None] = "model.preprocess"
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "resize": (POSITIVE, None),
        "crop": (POSITIVE, Items(POSITIVE, "[h, w] of ints >= 1", min_len=1, max_len=2), None),
        "interpolation": (Options(Interpolation), None),
        "mean": (Items(FINITE, "3 finite floats", min_len=3, max_len=3), None),
        "std": (
            Items(
                Interval(float, 0, None, closed="neither"),
                "3 finite floats > 0",
                min_len=3,
                max_len=3,
            ),
            None,
        ),
    }


@dataclass(frozen=True)
class ModelConfig(Checked):
    """Which classifier to audit.

    Attributes:
        name: A registry name (``audit-cli models`` lists them): a torchvision classifier such
            as ``resnet101``, ``timm/<name>`` for any model timm knows (the ``timm`` extra), the
            embedded ``demo_digits``, or a name a plugin registered. With ``factory`` set, the
            model's label in the tables (default: the factory's module and callable).
        weights: ``default`` (the source's default weights: torchvision's standard cache, the
            timm/Hugging Face cache, the shipped demo weights), a torchvision weights name such
            as ``IMAGENET1K_V1`` (from the cache), ``random`` (seeded random initialisation,
            for tests), or a local path / fsspec URL of a state dict (``weights_only=True``;
            safetensors too). With ``factory``: ``default`` keeps what the factory returned.
        allow_download: Let torchvision or timm download weights missing from the local cache.
        seed: Seed for ``weights: random`` (and around the factory call).
        factory: ``module:callable`` returning an ``nn.Module`` (the user's own model), imported
            from the working directory or an installed package.
        classes: A class-list file for a model that does not predict ImageNet's 1000 classes:
            one class per line, ``class_id`` optionally followed by a tab or comma and a name.
        embedding_layer: Take the embedding at the output of this module (a qualified name
            such as ``avgpool``) instead of the input of the last ``nn.Linear``.
        preprocess: Overrides of the evaluation transform (:class:`PreprocessConfig`).
    """

    name: str = "demo_digits"
    weights: str = "default"
    allow_download: bool = False
    seed: int = 0
    factory: str | None = None
    classes: str | None = None
    embedding_layer: str | None = None
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    SECTION: ClassVar[str | None] = "model"
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "name": Text("a registered model name"),
        "weights": Text("'default', 'random' or a path"),
        "allow_download": BOOL,
        "seed": SEED,
        "factory": (
            Text(
                "'module:callable' (e.g. my_models:build)",
                r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*",
            ),
            None,
        ),
        "classes": (Text("non-empty"), None),
        "embedding_layer": (Text("non-empty"), None),
        "preprocess": InstanceOf(PreprocessConfig, "a PreprocessConfig"),
    }


def factory_label(factory: str) -> str:
    """The default ``model.name`` of a factory model: ``pkg.mod:build`` -> ``pkg.mod.build``."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", factory.replace(":", ".")).strip(".-_") or "factory"
