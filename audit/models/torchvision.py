"""torchvision's classifiers: every name of ``torchvision.models.list_models(module=models)``.

Weights (``model.weights``): ``default`` (the architecture's ``DEFAULT`` weights), a weights
name of the architecture (``IMAGENET1K_V1``, ``IMAGENET1K_V2``, also ``ResNet50_Weights.
IMAGENET1K_V1``), read from torch's standard cache (``$TORCH_HOME/hub/checkpoints/<file>``) and
downloaded only with ``model.allow_download``; ``random``; or a state-dict file (built as for the
architecture's default weights).

The transform is ``weights.transforms()`` of the weights named (for ``random`` and a file: the
default weights'), read as metadata: nothing is downloaded for it.

**The explicit build.** torchvision's builders set some constructor arguments from the weights
and fix up legacy checkpoints while loading them. :func:`build_for_weights` does the same
explicitly, with a state dict the caller read: ``num_classes`` from the weights' categories,
Inception v3 and GoogLeNet's ``transform_input=True`` (and GoogLeNet's auxiliary heads dropped
after loading, as torchvision does; Inception v3 keeps ``AuxLogits``, as torchvision's builder
does by default, unused in eval), ViT's ``image_size`` and MaxViT's ``input_size`` from the
weights' ``min_size``, DenseNet's old ``norm.1``-style key names renamed. A contract test
builds every classification model both ways and compares them.

SqueezeNets are not offered: they have no ``nn.Linear`` layer to take an embedding from.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from audit.config import ConfigError, ModelConfig
from audit.data.classes import imagenet_classes
from audit.models.registry import Built, ModelEntry, ModelSource
from audit.models.transform import EvalTransform
from audit.models.weights import (
    Weights,
    check_weights_file,
    load_into,
    load_state_bytes,
    one_line,
    read_uri,
    seeded,
    sha256_hex,
    state_digest,
)

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

EXCLUDED = frozenset({"squeezenet1_0", "squeezenet1_1"})
"""torchvision classifiers without an nn.Linear layer, hence without an embedding to capture."""

_WEIGHTS_NAME = re.compile(r"^(?:[A-Za-z0-9]+_Weights\.)?([A-Z][A-Z0-9_]*)$")
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _models() -> Any:
    """``torchvision.models``, imported on first use: importing torchvision takes seconds (it
    pulls in ``torch._dynamo``) that a process running another source never needs."""
    import torchvision.models

    return torchvision.models


@lru_cache(maxsize=1)
def classification_names() -> frozenset[str]:
    return frozenset(_models().list_models(module=_models()))


def cache_path(weights: WeightsEnum) -> str:
    """Where torchvision keeps ``weights``: ``<torch.hub.get_dir()>/checkpoints/<file name>``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def default_weights(name: str) -> WeightsEnum:
    weights: WeightsEnum = _models().get_model_weights(name).DEFAULT
    return weights


def named_weights(name: str, text: str) -> WeightsEnum | None:
    """The weights ``text`` names for architecture ``name`` (``DEFAULT``, ``IMAGENET1K_V1``,
    ``ResNet50_Weights.IMAGENET1K_V1``), or None when ``text`` is not a weights name.

    Raises:
        ConfigError: ``text`` looks like a weights name but the architecture has no such
            weights (the message lists those it has).
    """
    if text == "default":
        return default_weights(name)
    match = _WEIGHTS_NAME.fullmatch(text)
    if match is None or "/" in text:
        return None
    enum = _models().get_model_weights(name)
    member = match.group(1)
    if member == "DEFAULT":
        return default_weights(name)
    if member not in enum.__members__:
        raise ConfigError(
            f"The 'model.weights' field names torchvision weights {text!r}, which {name!r} "
            f"does not have; it has {', '.join(enum.__members__)} (or default, random, a path)."
        )
    weights: WeightsEnum = enum[member]
    if weights.meta.get("categories") is None:  # VGG16_Weights.IMAGENET1K_FEATURES
        raise ConfigError(
            f"The 'model.weights' field names torchvision weights {text!r}, which have no "
            "classifier (feature-extraction weights); choose classification weights."
        )
    return weights


def weights_transform(weights: WeightsEnum) -> EvalTransform:
    """``weights.transforms()`` as an :class:`EvalTransform` (metadata only).

    Raises:
        ValueError: the weights' preset is not torchvision's ``ImageClassification``.
    """
    preset: Any = weights.transforms()
    crop = [int(v) for v in preset.crop_size]
    resize = [int(v) for v in preset.resize_size]
    if len(resize) != 1 or preset.antialias is False:
        raise ValueError(f"unsupported transform preset {preset!r}")
    return EvalTransform(
        resize=(resize[0],),
        crop=(crop[0], crop[-1]),
        interpolation=str(preset.interpolation.value),
        mean=tuple(preset.mean),
        std=tuple(preset.std),
    )


def builder_kwargs(name: str, weights: WeightsEnum) -> dict[str, Any]:
    """The constructor arguments torchvision's builder for ``name`` derives from ``weights``."""
    kwargs: dict[str, Any] = {}
    categories = weights.meta["categories"]
    if categories is not None:  # None: VGG16_Weights.IMAGENET1K_FEATURES (the builder's default)
        kwargs["num_classes"] = len(categories)
    if name in ("inception_v3", "googlenet"):
        kwargs.update(transform_input=True, aux_logits=True, init_weights=False)
    if name.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]
    if name.startswith("maxvit_"):
        kwargs["input_size"] = weights.meta["min_size"]
    return kwargs


def fix_legacy_keys(name: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """DenseNet checkpoints name ``denselayerN.norm.1`` what the module calls ``norm1``."""
    if not name.startswith("densenet"):
        return state
    fixed: dict[str, Tensor] = type(state)()
    for key, value in state.items():
        match = _DENSENET_LEGACY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        fixed._metadata = metadata  # type: ignore[attr-defined]
    return fixed


def build_for_weights(
    name: str, weights: WeightsEnum, state: dict[str, Tensor], source: str = ""
) -> nn.Module:
    """The architecture set up as torchvision's builder sets it up for ``weights``, loaded with
    ``state`` (a state dict in the weights' format). No download, no patching.

    Raises:
        ConfigError: ``state`` does not fit (one line).
    """
    net: Any = _models().get_model(name, weights=None, **builder_kwargs(name, weights))
    load_into(net, fix_legacy_keys(name, state), name, source or name)
    # torchvision drops the auxiliary heads after loading unless aux_logits=True is asked for,
    # which is inception_v3's default (it keeps AuxLogits, unused in eval) but not googlenet's
    if name == "googlenet":
        net.aux_logits = False
        net.aux1 = None
        net.aux2 = None
    built: nn.Module = net
    return built


class TorchvisionEntry(ModelEntry):
    def __init__(self, name: str) -> None:
        super().__init__(name, "torchvision")

    def _weights(self, cfg: ModelConfig) -> WeightsEnum:
        """The weights enum member whose transform and builder set-up apply."""
        if cfg.weights == "random":
            return default_weights(self.name)
        return named_weights(self.name, cfg.weights) or default_weights(self.name)

    def transform(self, cfg: ModelConfig) -> EvalTransform:
        return weights_transform(self._weights(cfg))

    def check(self, cfg: ModelConfig) -> None:
        if cfg.weights == "random":
            return
        weights = named_weights(self.name, cfg.weights)
        if weights is None:
            check_weights_file(cfg.weights)
            return
        path = cache_path(weights)
        if not os.path.isfile(path) and not cfg.allow_download:
            raise ConfigError(
                f"The 'model.weights' field is {cfg.weights!r} but torchvision's "
                f"{type(weights).__name__}.{weights.name} is not in torch's cache at {path!r}. "
                "Set model.allow_download=true to download it, or pass model.weights=<path> to a "
                "local state dict."
            )

    def build(self, cfg: ModelConfig) -> Built:
        classes = imagenet_classes()
        if cfg.weights == "random":
            net = seeded(lambda: _models().get_model(self.name, weights=None), cfg.seed)
            return Built(
                net, classes, Weights(f"random (seed={cfg.seed})", state_digest(net), "state_dict")
            )
        weights = named_weights(self.name, cfg.weights)
        if weights is None:
            data = read_uri(cfg.weights)
            source = cfg.weights
            enum = default_weights(self.name)
        else:
            enum = weights
            path = cache_path(weights)
            source = f"torchvision {type(weights).__name__}.{weights.name} ({path})"
            if not os.path.isfile(path):  # check() let this through: allow_download is true
                _download(weights, source)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise ConfigError(
                    f"torch's cached {os.path.basename(path)} at {path!r} cannot be read "
                    f"({one_line(exc)})."
                ) from None
        try:
            state = load_state_bytes(data, source)
        except ConfigError:
            if weights is None:
                raise
            raise ConfigError(
                f"torch's cached {os.path.basename(path)} at {path!r} cannot be read as a state "
                "dict. Delete it and set model.allow_download=true, or pass "
                "model.weights=<path>."
            ) from None
        net = build_for_weights(self.name, enum, state, source)
        return Built(net, classes, Weights(source, sha256_hex(data), "file"))


def _download(weights: WeightsEnum, source: str) -> None:
    """Fetch ``weights`` into torch's cache (only with ``model.allow_download``)."""
    try:
        torch.hub.load_state_dict_from_url(
            weights.url, progress=True, check_hash=True, map_location="cpu", weights_only=True
        )
    except Exception as exc:
        raise RuntimeError(
            f"Downloading {source} from {weights.url} failed: {type(exc).__name__}: {one_line(exc)}"
        ) from exc


class TorchvisionSource(ModelSource):
    """torchvision's classification models (bare names such as ``resnet50``)."""

    name = "torchvision"

    def names(self) -> list[str]:
        return sorted(classification_names() - EXCLUDED)

    def entry(self, name: str) -> ModelEntry | None:
        if name in classification_names() and name not in EXCLUDED:
            return TorchvisionEntry(name)
        return None
