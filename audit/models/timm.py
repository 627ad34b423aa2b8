"""timm's zoo as ``timm/<name>`` (the ``timm`` extra: ``pip install 'imagenet-audit[timm]'``).

Names: ``timm/<architecture>`` for every name of ``timm.list_models()`` (its default pretrained
tag applies), and ``timm/<architecture>.<tag>`` for any pretrained tag timm knows
(``timm/resnet18.a1_in1k``). timm is imported lazily, so this module imports without it; the
source then offers no names and says why (:meth:`TimmSource.unavailable`).

Weights (``model.weights``):

* ``default``: the tag's Hugging Face Hub file (its ``hf_hub_filename``, else
  ``model.safetensors`` then ``pytorch_model.bin``, the order timm downloads them in) from the
  local Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, read when the model is
  loaded); downloaded into that cache only with ``model.allow_download``
  (:mod:`audit.models.timm_hub`).
* ``random``: seeded random initialisation (``pretrained=False``).
* a local path or fsspec URL of a state dict (``.pth``/``.bin``/``.safetensors``).

A file is loaded through timm's own path, ``create_model(..., pretrained=True,
pretrained_cfg_overlay=dict(state_dict=...))``, so the architecture's checkpoint filter
(key renames, position-embedding resizes, background-class offsets) and strictness apply exactly
as when timm loads its own weights; nothing touches the network.

The transform is the one timm's ``create_transform(**resolve_data_config({},
pretrained_cfg=...))`` builds for evaluation, read from the pretrained config alone (no weights,
no network) and mapped by :func:`transform_from_data_config`. The embedding is timm's
``forward_head(forward_features(x), pre_logits=True)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from torch import nn

from audit.config import ConfigError, ModelConfig
from audit.data.classes import ClassIndex, imagenet_classes, read_class_list
from audit.models.registry import Built, ModelEntry, ModelSource
from audit.models.timm_hub import (
    HF_FILENAMES,
    cached_weights,
    download,
    hf_filenames,
    hf_hub_cache,
    split_hub_id,
)
from audit.models.transform import INTERPOLATIONS, EvalTransform
from audit.models.weights import (
    Weights,
    check_weights_file,
    load_state_bytes,
    mismatch,
    one_line,
    read_uri,
    seeded,
    sha256_hex,
    state_digest,
)
from audit.models.wrapper import Embedding

PREFIX = "timm/"
INSTALL_HINT = "pip install 'imagenet-audit[timm]'"
DEFAULT_CROP_PCT = 0.875
"""What timm's ``transforms_imagenet_eval`` takes for a missing or zero ``crop_pct``."""


def _timm() -> Any:
    """The ``timm`` module (imported on first use).

    Raises:
        ImportError: timm is not installed.
    """
    import timm

    return timm


@lru_cache(maxsize=1)
def _missing() -> str | None:
    try:
        _timm()
    except ImportError:
        return f"timm is not installed ({INSTALL_HINT})"
    return None


@lru_cache(maxsize=1)
def architectures() -> tuple[str, ...]:
    """``timm.list_models()`` (architectures without tags), or ``()`` without timm."""
    if _missing():
        return ()
    return tuple(_timm().list_models())


@lru_cache(maxsize=1)
def _architecture_set() -> frozenset[str]:
    return frozenset(architectures())


def known(model_name: str) -> bool:
    """timm can build ``model_name`` (``resnet18`` or ``resnet18.a1_in1k``): an architecture of
    ``timm.list_models()``, or one with a pretrained tag timm has a config for."""
    if _missing():
        return False
    if model_name in _architecture_set():
        return True
    timm = _timm()
    arch, _, tag = model_name.partition(".")
    if not tag or not timm.is_model(arch):
        return False
    try:
        return timm.models.get_pretrained_cfg(model_name) is not None
    except Exception:  # an unknown tag: timm raises RuntimeError
        return False


def pretrained_cfg(model_name: str) -> Any:
    """timm's ``PretrainedCfg`` for ``model_name`` (the default tag's when none is named), or
    the default ``PretrainedCfg()`` for an architecture with none registered, as
    ``timm.create_model`` falls back to it. Metadata only.

    Raises:
        ConfigError: timm does not know the name or the tag (one line).
    """
    timm = _timm()
    try:
        found = timm.models.get_pretrained_cfg(model_name)
    except Exception as exc:
        raise ConfigError(
            f"The 'model.name' field names timm model {model_name!r}, which timm cannot "
            f"resolve: {one_line(exc)}"
        ) from None
    if found is None:
        from timm.models import PretrainedCfg

        found = PretrainedCfg(architecture=model_name.partition(".")[0])
    return found


def timm_data_config(model_name: str) -> dict[str, Any]:
    """What ``timm.data.resolve_data_config({}, pretrained_cfg=...)`` gives for the model's
    pretrained config: ``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``,
    ``crop_mode`` (the evaluation settings, not the ``test_input_size`` ones).

    Raises:
        ConfigError: timm does not know the name.
    """
    timm = _timm()
    cfg = pretrained_cfg(model_name).to_dict()
    data: dict[str, Any] = timm.data.resolve_data_config({}, pretrained_cfg=cfg)
    return data


def transform_from_data_config(data_config: Mapping[str, Any], name: str) -> EvalTransform:
    """The :class:`EvalTransform` equal to timm's eval ``create_transform(**data_config)``.

    As ``timm.data.transforms_imagenet_eval``: the scale size is ``floor(side / crop_pct)`` of
    each side of ``input_size``; ``crop_mode`` ``center`` (or unset) resizes the shorter side
    when both scale sides are equal, else keeps the aspect ratio (timm's ``ResizeKeepRatio``);
    ``squash`` resizes to exactly the scale size; then a centre crop of ``input_size[1:]``.

    Args:
        data_config: A timm data config (:func:`timm_data_config`).
        name: The model, for error messages.

    Raises:
        ConfigError: ``crop_mode: border`` or ``crop_border_pixels`` (not supported), an
            interpolation other than PIL's filters (``random``), input that is not 3-channel,
            or values that make no transform (one line naming the model).
    """
    where = f"timm model {name!r}"
    mode = data_config.get("crop_mode") or "center"
    if mode == "border":
        raise ConfigError(
            f"The {where} evaluates with crop_mode 'border' (resize the longest side and pad), "
            "which the audit does not support; pick another model or pretrained tag."
        )
    if mode not in ("center", "squash"):
        raise ConfigError(f"The {where} has an unknown crop_mode {mode!r}.")
    if data_config.get("crop_border_pixels"):
        raise ConfigError(
            f"The {where} trims a border (crop_border_pixels="
            f"{data_config['crop_border_pixels']!r}) before resizing, which the audit does not "
            "support."
        )
    interpolation = str(data_config.get("interpolation") or "bilinear")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(
            f"The {where} resizes with interpolation {interpolation!r}; the audit takes one of "
            f"{', '.join(INTERPOLATIONS)} (set model.preprocess.interpolation)."
        )
    input_size = tuple(int(v) for v in data_config.get("input_size", (3, 224, 224)))
    if len(input_size) != 3 or input_size[0] != 3:
        raise ConfigError(
            f"The {where} takes input of size {input_size} (C, H, W); the audit feeds 3-channel "
            "RGB images."
        )
    crop = (input_size[1], input_size[2])
    crop_pct = float(data_config.get("crop_pct") or DEFAULT_CROP_PCT)
    scale = (math.floor(crop[0] / crop_pct), math.floor(crop[1] / crop_pct))
    if mode == "squash":
        resize: tuple[int, ...] = scale
        resize_mode = "squash"
    elif scale[0] == scale[1]:
        resize, resize_mode = (scale[0],), "shorter"
    else:
        resize, resize_mode = scale, "keep_ratio"
    try:
        return EvalTransform(
            resize=resize,
            crop=crop,
            interpolation=interpolation,
            mean=tuple(data_config.get("mean", ())),
            std=tuple(data_config.get("std", ())),
            resize_mode=resize_mode,
        )
    except ValueError as exc:
        raise ConfigError(f"The {where} has a data config that makes no transform: {exc}") from None


class TimmEntry(ModelEntry):
    """One timm model.

    Attributes:
        model_name: What timm calls it (``resnet18``, ``resnet18.a1_in1k``): ``name`` without
            the ``timm/`` prefix.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name, "timm")
        self.model_name = name[len(PREFIX) :] if name.startswith(PREFIX) else name

    def pretrained_cfg(self) -> Any:
        """timm's pretrained config of this name (see :func:`pretrained_cfg`)."""
        return pretrained_cfg(self.model_name)

    def transform(self, cfg: ModelConfig) -> EvalTransform:
        """timm's eval transform of the name's pretrained config, whatever ``cfg.weights`` is
        (a file is taken to be weights of that config)."""
        return transform_from_data_config(timm_data_config(self.model_name), self.name)

    def check(self, cfg: ModelConfig) -> None:
        """Also checks, from the pretrained config, that the model predicts ImageNet's 1000
        classes or that ``model.classes`` is set."""
        pcfg = self.pretrained_cfg()
        self._check_classes(int(pcfg.num_classes), cfg)
        if cfg.weights == "random":
            return
        if cfg.weights != "default":
            self._check_not_a_tag(cfg.weights)
            check_weights_file(cfg.weights)
            return
        self._find_default(pcfg, cfg)

    def build(self, cfg: ModelConfig) -> Built:
        timm = _timm()
        if cfg.weights == "random":
            net = self._create(lambda: seeded(self._random, cfg.seed), "random weights")
            classes = self._classes(net, cfg)
            weights = Weights(f"random (seed={cfg.seed})", state_digest(net), "state_dict")
            return Built(net, classes, weights, _embedding())
        if cfg.weights == "default":
            pcfg = self.pretrained_cfg()
            repo, filename, path = self._find_default(pcfg, cfg) or download(pcfg, self.name)
            source = f"Hugging Face {repo}/{filename} ({path})"
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise ConfigError(
                    f"The cached {filename} of Hugging Face repo {repo!r} at {path!r} cannot be "
                    f"read ({one_line(exc)})."
                ) from None
        else:
            source = cfg.weights
            data = read_uri(cfg.weights)
        digest = sha256_hex(data)
        state = load_state_bytes(data, source)
        del data

        def load() -> nn.Module:
            built: nn.Module = timm.create_model(
                self.model_name,
                pretrained=True,
                pretrained_cfg_overlay={"state_dict": state},
            )
            return built

        net = self._create(load, source)
        _drop_state_dict(net)
        return Built(net, self._classes(net, cfg), Weights(source, digest, "file"), _embedding())

    # --- helpers ------------------------------------------------------------------------
    def _random(self) -> nn.Module:
        net: nn.Module = _timm().create_model(self.model_name, pretrained=False)
        return net

    def _create(self, build: Any, source: str) -> nn.Module:
        """``build()`` with any exception of timm's as a one-line ConfigError."""
        try:
            net: nn.Module = build()
        except ConfigError:
            raise
        except RuntimeError as exc:
            if "state_dict" in str(exc) or "size mismatch" in str(exc):
                raise mismatch(self.name, source, exc) from None
            raise self._failed(source, exc) from None
        except Exception as exc:
            raise self._failed(source, exc) from None
        return net

    def _failed(self, source: str, exc: BaseException) -> ConfigError:
        return ConfigError(
            f"timm cannot build model {self.name!r} with {source}: {type(exc).__name__}: "
            f"{one_line(exc)}"
        )

    def _find_default(self, pcfg: Any, cfg: ModelConfig) -> tuple[str, str, str] | None:
        """The cached default weights (see :func:`cached_weights`), or None when they are to be
        downloaded (``model.allow_download``).

        Raises:
            ConfigError: no Hub weights, or none cached and downloads not allowed.
        """
        self._hub_id(pcfg)
        found = cached_weights(pcfg)
        if found is None and not cfg.allow_download:
            repo, _ = split_hub_id(pcfg.hf_hub_id)
            raise ConfigError(
                f"The 'model.weights' field is 'default' but the weights of {self.name!r} "
                f"({' or '.join(hf_filenames(pcfg))} of Hugging Face repo {repo!r}) are not in "
                f"the Hugging Face cache at {hf_hub_cache()!r} (HF_HUB_CACHE / HF_HOME). Set "
                "model.allow_download=true to download them, or pass model.weights=<path> to a "
                "local state dict."
            )
        return found

    def _hub_id(self, pcfg: Any) -> None:
        """The pretrained config names a Hugging Face repo.

        Raises:
            ConfigError: it does not (no default weights to find).
        """
        if pcfg.hf_hub_id:
            return
        tag = f"pretrained tag {pcfg.tag!r}" if pcfg.tag else "no pretrained tag"
        where = f" (timm lists {pcfg.url})" if pcfg.url else ""
        raise ConfigError(
            f"The 'model.weights' field is 'default' but timm model {self.name!r} ({tag}) has no "
            f"Hugging Face Hub weights{where}. Pass model.weights=<path> to a local state dict, "
            "or model.weights=random."
        )

    def _check_not_a_tag(self, weights: str) -> None:
        """A bare pretrained tag in ``model.weights`` belongs in the name.

        Raises:
            ConfigError: ``weights`` is a tag of this architecture, not an existing file.
        """
        if "/" in weights or os.sep in weights or os.path.exists(weights):
            return
        arch = self.model_name.partition(".")[0]
        if known(f"{arch}.{weights}"):
            raise ConfigError(
                f"The 'model.weights' field is {weights!r}, a timm pretrained tag: name it in "
                f"model.name instead (model.name=timm/{arch}.{weights}, model.weights=default)."
            )

    def _check_classes(self, num_classes: int, cfg: ModelConfig) -> None:
        """Raises ConfigError when the model predicts other than ImageNet's 1000 classes and
        ``model.classes`` is unset, or has no classifier at all."""
        if num_classes <= 0:
            raise ConfigError(
                f"The 'model.name' field names timm model {self.name!r}, which has no "
                "classification head (a feature extractor); pick a classifier or a pretrained "
                "tag with one."
            )
        if num_classes != 1000 and not cfg.classes:
            raise ConfigError(
                f"timm model {self.name!r} predicts {num_classes} classes, not ImageNet's 1000: "
                "set model.classes to the file of its class list (one class id per line, in "
                "output order)."
            )

    def _classes(self, net: nn.Module, cfg: ModelConfig) -> ClassIndex:
        """ImageNet's classes for a 1000-class head, else ``model.classes`` (load_model's probe
        checks its length against the head's)."""
        found = getattr(net, "num_classes", None)
        num_classes = int(self.pretrained_cfg().num_classes if found is None else found)
        self._check_classes(num_classes, cfg)
        if num_classes == 1000 or not cfg.classes:
            return imagenet_classes()
        return read_class_list(cfg.classes)


def _embedding() -> Embedding:
    return Embedding("timm")


def _drop_state_dict(net: nn.Module) -> None:
    """timm keeps the overlay's state dict (a deep copy) in ``net.pretrained_cfg``; drop it so
    the model does not carry its weights twice (in memory and when pickled)."""
    for attr in ("pretrained_cfg", "default_cfg"):
        found = getattr(net, attr, None)
        if isinstance(found, dict):
            found.pop("state_dict", None)


class TimmSource(ModelSource):
    """timm's models as ``timm/<name>`` (empty without the ``timm`` extra)."""

    name = "timm"
    prefix = PREFIX

    def names(self) -> list[str]:
        """``timm/<architecture>`` for every architecture (tagged names are accepted by
        :meth:`entry` but not listed)."""
        return [PREFIX + n for n in architectures()]

    def entry(self, name: str) -> ModelEntry | None:
        if not name.startswith(PREFIX) or not known(name[len(PREFIX) :]):
            return None
        return TimmEntry(name)

    def unavailable(self) -> str | None:
        return _missing()


__all__ = [
    "DEFAULT_CROP_PCT",
    "HF_FILENAMES",
    "PREFIX",
    "TimmEntry",
    "TimmSource",
    "architectures",
    "cached_weights",
    "hf_filenames",
    "hf_hub_cache",
    "known",
    "pretrained_cfg",
    "timm_data_config",
    "transform_from_data_config",
]
