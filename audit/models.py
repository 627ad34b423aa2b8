"""The model registry: every classifier the audit can load, by name.

Names are torchvision's classification models (``resnet18``, ``resnet101``, ``densenet121``,
``densenet161``, ...) plus models registered here with :func:`register_model` (the embedded
``demo_digits``). :func:`load_model` turns a :class:`~audit.config.ModelConfig` into a
:class:`LoadedModel` whose :class:`AuditModel` takes ``[0, 1]`` images, normalises them inside and
returns logits, and also the penultimate embedding (the input of the last ``nn.Linear``).

Weights (``model.weights``):

* ``default``: torchvision's default weights, read from torch's standard cache
  (``$TORCH_HOME/hub/checkpoints/<file>``) with ``weights_only=True``; downloaded only when
  ``model.allow_download`` is true. For ``demo_digits``, the weights shipped in the package
  (``audit/weights/demo_digits.pt``).
* ``random``: seeded random initialisation (``model.seed``); the same seed gives the same weights.
* anything else: a local path or fsspec URL of a state dict, read with ``weights_only=True``.

torchvision's SqueezeNets are not offered: they have no ``nn.Linear`` layer to take an embedding
from.

Example:
    >>> import torch
    >>> from audit.config import ModelConfig
    >>> loaded = load_model(ModelConfig(name="resnet18", weights="random"))
    >>> logits, emb = loaded.module.forward_with_embedding(torch.rand(2, 3, 224, 224))
    >>> logits.shape, emb.shape
    (torch.Size([2, 1000]), torch.Size([2, 512]))
"""

from __future__ import annotations

import difflib
import hashlib
import io
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, TypeVar
from unittest import mock

import fsspec
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from audit.config import ConfigError, ModelConfig
from audit.data.classes import ClassIndex, imagenet_classes
from audit.data.decode import IMAGENET_MEAN, IMAGENET_STD
from audit.data.demo import DIGIT_CLASSES
from audit.demo_model import DEMO_MEAN, DEMO_STD, DemoDigitsNet

Builder = Callable[[int], nn.Module]
B = TypeVar("B", bound=Builder)

# torchvision classifiers without an nn.Linear layer, hence without an embedding to capture.
EXCLUDED_TORCHVISION = frozenset({"squeezenet1_0", "squeezenet1_1"})
_MAX_DETAIL = 300  # characters of a state-dict mismatch kept in the one-line error


class AuditModel(nn.Module):
    """Wraps a classifier: takes float ``(n, 3, H, W)`` in ``[0, 1]``, normalises by mean/std
    inside, returns logits ``(n, C)``.

    Captures the penultimate embedding with a forward pre-hook on the final classifier
    ``nn.Linear`` layer (the last one in module order).

    Args:
        net: The classifier, taking normalised ``(n, 3, H, W)`` input.
        mean: Per-channel mean subtracted from the ``[0, 1]`` input.
        std: Per-channel standard deviation the input is divided by.

    Attributes:
        net: The wrapped classifier.
        head_name: Qualified name of the final ``nn.Linear`` in ``net`` (``fc``, ``classifier``).

    Raises:
        ValueError: ``net`` has no ``nn.Linear`` layer, or mean/std are not 3 values (std > 0).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(
                f"mean and std must be 3 values each, std > 0. Got mean={tuple(mean)}, "
                f"std={tuple(std)} instead."
            )
        self.net = net
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.head_name, head = find_classifier_layer(net)
        self._capturing = False
        self._embedding: Tensor | None = None
        head.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self._capturing:
            self._embedding = args[0].flatten(1)

    @property
    def head(self) -> nn.Linear:
        """The final ``nn.Linear`` layer (weight ``(C, D)``, bias ``(C,)``)."""
        layer = self.net.get_submodule(self.head_name)
        if not isinstance(layer, nn.Linear):  # pragma: no cover - replaced after construction
            raise TypeError(f"{self.head_name!r} is no longer an nn.Linear")
        return layer

    def forward(self, x: Tensor) -> Tensor:
        """Logits.

        Args:
            x: ``(n, 3, H, W) float`` in ``[0, 1]`` (224x224 for the standard crop).

        Returns:
            ``(n, C) float`` logits.

        Raises:
            ValueError: ``x`` is not ``(n, 3, H, W)``.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"input must be (n, 3, H, W). Got shape {tuple(x.shape)} instead.")
        out: Tensor = self.net(self.normalise(x))
        return out

    def normalise(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` per channel: what :meth:`forward` hands to ``net``.

        Every element is computed on its own (one correctly rounded subtraction and division),
        so normalising an image once and assembling a batch from it gives the same bits as
        normalising the assembled batch; LIME relies on that to skip this step per batch.

        Args:
            x: ``(..., 3, H, W) float`` in ``[0, 1]``.

        Returns:
            A new tensor of ``x``'s shape and dtype.
        """
        mean, std = self.mean.to(x.dtype), self.std.to(x.dtype)
        if x.ndim == 3:
            mean, std = mean[0], std[0]
        return (x - mean) / std

    def forward_with_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the penultimate embedding of the same forward pass.

        Args:
            x: ``(n, 3, H, W) float`` in ``[0, 1]``.

        Returns:
            ``(logits, embedding)``: ``(n, C)`` and ``(n, D)``, where the embedding is the
            flattened input of the final ``nn.Linear``, so ``logits == embedding @ W.T + b``.
        """
        self._embedding = None
        self._capturing = True
        try:
            logits = self.forward(x)
        finally:
            self._capturing = False
        embedding, self._embedding = self._embedding, None
        if embedding is None:  # pragma: no cover - the head is always on the forward path
            raise RuntimeError(f"the layer {self.head_name!r} was not called in forward")
        return logits, embedding


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready to predict.

    Attributes:
        name: The registry name.
        module: The wrapper, in eval mode, parameters with ``requires_grad=False``.
        classes: Output index -> class id.
        weights: What was loaded, e.g. ``torchvision ResNet18_Weights.IMAGENET1K_V1 (<cache
            path>)``, ``random (seed=0)`` or the state dict's path.
        embedding_dim: ``D`` of the embedding.
    """

    name: str
    module: AuditModel
    classes: ClassIndex
    weights: str
    embedding_dim: int


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    classes: Callable[[], ClassIndex]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_weights: tuple[str, str] | None


_REGISTRY: dict[str, _Entry] = {}
# (network, classes, weights description, mean, std)
_Built = tuple[nn.Module, ClassIndex, str, Sequence[float], Sequence[float]]
_BUILD_LOCK = threading.Lock()


def find_classifier_layer(net: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` of ``net`` in module order and its qualified name.

    Raises:
        ValueError: ``net`` has no ``nn.Linear`` layer.
    """
    found = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(
            f"{type(net).__name__} has no nn.Linear layer, so its embedding cannot be captured"
        )
    return found[-1]


@lru_cache(maxsize=1)
def _torchvision_names() -> frozenset[str]:
    return frozenset(torchvision.models.list_models(module=torchvision.models))


def register_model(
    name: str,
    classes: Callable[[], ClassIndex],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    default_weights: tuple[str, str] | None = None,
) -> Callable[[B], B]:
    """Decorator registering a builder ``fn(num_classes) -> nn.Module`` under ``name``.

    Args:
        name: The registry name; must not be registered yet nor be a torchvision model.
        classes: Returns the model's class list (called at load time).
        mean: Per-channel input mean for :class:`AuditModel`.
        std: Per-channel input std for :class:`AuditModel`.
        default_weights: ``(package, resource)`` of the state dict that ``weights: default``
            loads, read with ``importlib.resources``; unset means the model has no default.

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        ValueError: (when decorating) the name is already taken.

    Example:
        >>> @register_model("tiny", classes=lambda: DIGIT_CLASSES)  # doctest: +SKIP
        ... def tiny(num_classes: int) -> nn.Module:
        ...     return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
    """

    def wrapper(fn: B) -> B:
        if name in _REGISTRY or name in _torchvision_names():
            raise ValueError(f"A model named {name!r} is already registered.")
        _REGISTRY[name] = _Entry(fn, classes, tuple(mean), tuple(std), default_weights)
        return fn

    return wrapper


def list_models() -> list[str]:
    """Registered models plus torchvision's classifiers (except SqueezeNets), sorted."""
    return sorted(set(_REGISTRY) | (_torchvision_names() - EXCLUDED_TORCHVISION))


def torchvision_cache_path(weights: WeightsEnum) -> str:
    """Where torchvision keeps ``weights``: ``<torch.hub.get_dir()>/checkpoints/<file name>``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def _default_torchvision_weights(name: str) -> WeightsEnum:
    weights: WeightsEnum = torchvision.models.get_model_weights(name).DEFAULT
    return weights


def _resource(spec: tuple[str, str]) -> Any:
    package, resource = spec
    node = resources.files(package)
    for part in resource.split("/"):
        node = node.joinpath(part)
    return node


def _unknown_name(name: str) -> ConfigError:
    names = list_models()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"The 'model.name' field must be a registered model name. Got {name!r} instead{hint}. "
        f"{len(names)} models are available: {', '.join(names)}."
    )


def check_model_name(name: str) -> None:
    """The name is registered (needs no weights, so a client can check before submitting).

    Raises:
        ConfigError: an unknown name; the message lists the valid ones.
    """
    if name not in list_models():
        raise _unknown_name(name)


def check_model_config(cfg: ModelConfig) -> None:
    """Cheap checks before any work: the name exists and the weights can be found.

    Nothing is built or read beyond a file-existence check.

    Raises:
        ConfigError: an unknown name (the message lists the valid ones), a weights path or URL
            that does not exist, or ``default`` torchvision weights missing from torch's cache
            while ``model.allow_download`` is false.
    """
    check_model_name(cfg.name)
    if cfg.weights == "random":
        return
    if cfg.weights != "default":
        _check_weights_file(cfg.weights)
        return
    entry = _REGISTRY.get(cfg.name)
    if entry is not None:
        if entry.default_weights is None:
            raise ConfigError(
                f"The 'model.weights' field is 'default' but model {cfg.name!r} has no default "
                "weights. Pass model.weights=random or model.weights=<path>."
            )
        if not _resource(entry.default_weights).is_file():
            package, resource = entry.default_weights
            raise ConfigError(
                f"The default weights of {cfg.name!r} ({package}/{resource}) are missing from the "
                "installed package. Reinstall it, or pass model.weights=<path>."
            )
        return
    weights = _default_torchvision_weights(cfg.name)
    path = torchvision_cache_path(weights)
    if not os.path.isfile(path) and not cfg.allow_download:
        raise ConfigError(
            f"The 'model.weights' field is 'default' but torchvision's "
            f"{type(weights).__name__}.{weights.name} is not in torch's cache at {path!r}. "
            "Set model.allow_download=true to download it, or pass model.weights=<path> to a "
            "local state dict."
        )


def _check_weights_file(uri: str) -> None:
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        exists = fs.isfile(path)
    except Exception as exc:  # unknown protocol, missing fsspec backend, network error
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(
            f"The 'model.weights' field must be 'default', 'random' or a readable state-dict "
            f"file. Got {uri!r}, which cannot be checked: {type(exc).__name__}: {first}"
        ) from None
    if not exists:
        raise ConfigError(
            f"The 'model.weights' field must be 'default', 'random' or an existing state-dict "
            f"file. Got {uri!r}, which does not exist."
        )


def _one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _as_state_dict(obj: object, source: str) -> dict[str, Tensor]:
    """Accept a state dict, or a checkpoint holding one under ``state_dict``/``model``; drop a
    ``module.`` prefix left by DataParallel."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        raise ConfigError(
            f"The 'model.weights' file {source!r} must hold a state dict (names -> tensors). "
            f"Got {type(obj).__name__} instead."
        )
    # Keep the object (and the ``_metadata`` versions some layers read) unless renaming.
    state: dict[str, Tensor] = obj if isinstance(obj, dict) else dict(obj)
    prefix = "module."
    if all(k.startswith(prefix) for k in state):
        renamed: dict[str, Tensor] = OrderedDict((k[len(prefix) :], v) for k, v in state.items())
        metadata = getattr(state, "_metadata", None)
        if isinstance(metadata, dict):
            renamed._metadata = {  # type: ignore[attr-defined]
                k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in metadata.items()
            }
        state = renamed
    return state


def _load_bytes(data: bytes, source: str) -> dict[str, Tensor]:
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"The 'model.weights' file {source!r} cannot be read as a state dict with "
            f"weights_only=True: {_one_line(exc)}"
        ) from None
    return _as_state_dict(obj, source)


def _read_uri(uri: str) -> bytes:
    try:
        with fsspec.open(uri, "rb") as f:
            data: bytes = f.read()
    except Exception as exc:
        raise ConfigError(
            f"The 'model.weights' file {uri!r} cannot be read: {type(exc).__name__}: "
            f"{_one_line(exc)}"
        ) from None
    return data


_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) from "
    r"checkpoint, the shape in current model is torch\.Size\((\[.*?\])\)"
)


def _summarise_load_error(exc: BaseException) -> str:
    """Condense ``load_state_dict``'s multi-line error into counts and a few examples."""
    text = str(exc)
    parts: list[str] = []
    for line in (raw.strip() for raw in text.splitlines()):
        for label, what in (("Missing key(s)", "missing"), ("Unexpected key(s)", "unexpected")):
            if line.startswith(label):
                keys = re.findall(r'"([^"]+)"', line)
                more = ", ..." if len(keys) > 3 else ""
                parts.append(f"{len(keys)} {what} keys ({', '.join(keys[:3])}{more})")
    sizes = _SIZE_MISMATCH.findall(text)
    if sizes:
        key, got, want = sizes[0]
        more = ", ..." if len(sizes) > 1 else ""
        parts.append(f"{len(sizes)} shape mismatches ({key}: file {got} vs model {want}{more})")
    return _one_line(ValueError("; ".join(parts))) if parts else _one_line(exc)


def _mismatch(name: str, source: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"The 'model.weights' state dict {source!r} does not fit model {name!r}: "
        f"{_summarise_load_error(exc)}."
    )


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build with the global torch RNG seeded, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _build_torchvision(name: str, weights: WeightsEnum, state: dict[str, Tensor]) -> nn.Module:
    """Run torchvision's own builder for ``weights`` but feed it ``state``.

    The builder then sets up the architecture exactly as for its pretrained weights (e.g.
    ``transform_input`` for Inception, legacy DenseNet key names) without any download.
    """
    with (
        _BUILD_LOCK,
        mock.patch.object(type(weights), "get_state_dict", lambda *args, **kwargs: state),
    ):
        net: nn.Module = torchvision.models.get_model(name, weights=weights)
    return net


def _load_torchvision(cfg: ModelConfig) -> _Built:
    classes = imagenet_classes()
    default = _default_torchvision_weights(cfg.name)
    if cfg.weights == "random":
        net = _seeded(lambda: torchvision.models.get_model(cfg.name, weights=None), cfg.seed)
        return net, classes, f"random (seed={cfg.seed})", IMAGENET_MEAN, IMAGENET_STD
    if cfg.weights == "default":
        path = torchvision_cache_path(default)
        source = f"torchvision {type(default).__name__}.{default.name} ({path})"
        if os.path.isfile(path):
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ConfigError(
                    f"torch's cached {os.path.basename(path)} at {path!r} cannot be read "
                    f"({_one_line(exc)}). Delete it and set model.allow_download=true, or pass "
                    "model.weights=<path>."
                ) from None
        else:  # check_model_config let this through, so model.allow_download is true
            try:
                obj = default.get_state_dict(
                    progress=True, check_hash=True, weights_only=True, map_location="cpu"
                )
            except Exception as exc:
                raise RuntimeError(
                    f"Downloading {source} from {default.url} failed: {type(exc).__name__}: "
                    f"{_one_line(exc)}"
                ) from exc
        state = _as_state_dict(obj, path)
    else:
        source = cfg.weights
        state = _load_bytes(_read_uri(cfg.weights), cfg.weights)
    try:
        net = _build_torchvision(cfg.name, default, state)
    except RuntimeError as exc:
        raise _mismatch(cfg.name, source, exc) from None
    return net, classes, source, IMAGENET_MEAN, IMAGENET_STD


def _load_registered(cfg: ModelConfig) -> _Built:
    entry = _REGISTRY[cfg.name]
    classes = entry.classes()
    net = _seeded(lambda: entry.builder(len(classes)), cfg.seed)
    if cfg.weights == "random":
        return net, classes, f"random (seed={cfg.seed})", entry.mean, entry.std
    if cfg.weights == "default" and entry.default_weights is not None:
        package, resource = entry.default_weights
        data = _resource(entry.default_weights).read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:16]
        source = f"package {package}/{resource} (sha256:{digest})"
    else:
        source = cfg.weights
        data = _read_uri(cfg.weights)
    state = _load_bytes(data, source)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise _mismatch(cfg.name, source, exc) from None
    return net, classes, source, entry.mean, entry.std


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Build the model named in ``cfg`` with its weights, ready for inference.

    Args:
        cfg: Name, weights (``default``, ``random`` or a path/URL), download permission, seed.

    Returns:
        The model in eval mode on the CPU, parameters frozen.

    Raises:
        ConfigError: see :func:`check_model_config`; also a weights file that is not a state
            dict or does not fit the architecture (the message is one line).
        RuntimeError: downloading default weights (``model.allow_download``) failed.
    """
    check_model_config(cfg)
    loader = _load_registered if cfg.name in _REGISTRY else _load_torchvision
    net, classes, source, mean, std = loader(cfg)
    module = AuditModel(net, mean, std)
    head = module.head
    if head.out_features != len(classes):
        raise ConfigError(
            f"Model {cfg.name!r} has {head.out_features} outputs but its class list "
            f"{classes.name!r} has {len(classes)} classes."
        )
    module.eval()
    module.requires_grad_(False)
    return LoadedModel(cfg.name, module, classes, source, head.in_features)


@register_model(
    "demo_digits",
    classes=lambda: DIGIT_CLASSES,
    mean=DEMO_MEAN,
    std=DEMO_STD,
    default_weights=("audit", "weights/demo_digits.pt"),
)
def demo_digits(num_classes: int) -> nn.Module:
    """The embedded demo's digit classifier (see :mod:`audit.demo_model`)."""
    return DemoDigitsNet(num_classes)
