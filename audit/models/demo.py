"""Models registered in code: the embedded demo's ``demo_digits`` and any
:func:`register_model` builder.

A registered builder is ``fn(num_classes) -> nn.Module``; ``weights: default`` loads the state
dict shipped as a package resource (the demo's ``audit/weights/demo_digits.pt``), ``random``
seeds the build, and a path loads that state dict. Its transform is the standard ImageNet
evaluation (resize 256, crop 224, bilinear) with the registered mean/std, unless a whole
``transform`` is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

from torch import nn

from audit.config import ConfigError, ModelConfig
from audit.data.classes import ClassIndex
from audit.data.demo import DIGIT_CLASSES
from audit.models.demo_net import DEMO_MEAN, DEMO_STD, DemoDigitsNet
from audit.models.registry import Built, ModelEntry, ModelSource
from audit.models.transform import IMAGENET_MEAN, IMAGENET_STD, STANDARD, EvalTransform
from audit.models.weights import (
    Weights,
    check_weights_file,
    load_into,
    load_state_bytes,
    read_uri,
    seeded,
    sha256_hex,
    state_digest,
)

Builder = Callable[[int], nn.Module]
B = TypeVar("B", bound=Builder)


@dataclass(frozen=True)
class Registered:
    builder: Builder
    classes: Callable[[], ClassIndex]
    transform: EvalTransform
    default_weights: tuple[str, str] | None


def _resource(spec: tuple[str, str]) -> Any:
    package, resource = spec
    node = resources.files(package)
    for part in resource.split("/"):
        node = node.joinpath(part)
    return node


DEMO_MODELS = ("demo_digits", "demo_bias_patch", "demo_bias_stripes")
"""The models shipped for the demos (their source column says ``demo``)."""


class RegisteredEntry(ModelEntry):
    def __init__(self, name: str, spec: Registered) -> None:
        super().__init__(name, "demo" if name in DEMO_MODELS else "registered")
        self.spec = spec

    def transform(self, cfg: ModelConfig) -> EvalTransform:
        return self.spec.transform

    def check(self, cfg: ModelConfig) -> None:
        if cfg.weights == "random":
            return
        if cfg.weights != "default":
            check_weights_file(cfg.weights)
            return
        if self.spec.default_weights is None:
            raise ConfigError(
                f"The 'model.weights' field is 'default' but model {cfg.name!r} has no default "
                "weights. Pass model.weights=random or model.weights=<path>."
            )
        if not _resource(self.spec.default_weights).is_file():
            package, resource = self.spec.default_weights
            raise ConfigError(
                f"The default weights of {cfg.name!r} ({package}/{resource}) are missing from the "
                "installed package. Reinstall it, or pass model.weights=<path>."
            )

    def build(self, cfg: ModelConfig) -> Built:
        classes = self.spec.classes()
        net = seeded(lambda: self.spec.builder(len(classes)), cfg.seed)
        if cfg.weights == "random":
            digest = state_digest(net)
            return Built(net, classes, Weights(f"random (seed={cfg.seed})", digest, "state_dict"))
        if cfg.weights == "default" and self.spec.default_weights is not None:
            package, resource = self.spec.default_weights
            data = _resource(self.spec.default_weights).read_bytes()
            source = f"package {package}/{resource}"
        else:
            source = cfg.weights
            data = read_uri(cfg.weights)
        load_into(net, load_state_bytes(data, source), cfg.name, source)
        return Built(net, classes, Weights(source, sha256_hex(data), "file"))


class RegisteredSource(ModelSource):
    """Models registered with :func:`register_model` (the embedded demo among them)."""

    name = "registered"

    def __init__(self) -> None:
        self.models: dict[str, Registered] = {}

    def names(self) -> list[str]:
        return sorted(self.models)

    def entry(self, name: str) -> ModelEntry | None:
        spec = self.models.get(name)
        return RegisteredEntry(name, spec) if spec is not None else None


REGISTERED = RegisteredSource()


def register_model(
    name: str,
    classes: Callable[[], ClassIndex],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    transform: EvalTransform | None = None,
    default_weights: tuple[str, str] | None = None,
) -> Callable[[B], B]:
    """Decorator registering a builder ``fn(num_classes) -> nn.Module`` under ``name``.

    Args:
        name: The registry name; must not be taken by any source.
        classes: Returns the model's class list (called at load time).
        mean: Per-channel input mean (with the standard resize 256 / crop 224).
        std: Per-channel input std.
        transform: The whole evaluation transform instead (``mean``/``std`` then unused).
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
    from audit.models.registry import find_entry

    chosen = transform or STANDARD.with_overrides(mean=mean, std=std)

    def wrapper(fn: B) -> B:
        if name in REGISTERED.models or find_entry(name) is not None:
            raise ValueError(f"A model named {name!r} is already registered.")
        REGISTERED.models[name] = Registered(fn, classes, chosen, default_weights)
        return fn

    return wrapper


def demo_digits(num_classes: int) -> nn.Module:
    """The embedded demo's digit classifier (see :mod:`audit.models.demo_net`)."""
    return DemoDigitsNet(num_classes)


REGISTERED.models["demo_digits"] = Registered(
    demo_digits,
    lambda: DIGIT_CLASSES,
    STANDARD.with_overrides(mean=DEMO_MEAN, std=DEMO_STD),
    ("audit", "weights/demo_digits.pt"),
)

# The planted-bias demos' models (audit.data.demo_bias; scripts/train_bias_demo_model.py): the
# same network, trained on digits whose planted class nearly always carries a cue.
for _cue in ("patch", "stripes"):
    REGISTERED.models[f"demo_bias_{_cue}"] = Registered(
        demo_digits,
        lambda: DIGIT_CLASSES,
        STANDARD.with_overrides(mean=DEMO_MEAN, std=DEMO_STD),
        ("audit", f"weights/demo_bias_{_cue}.pt"),
    )
