"""A user's own model: ``model.factory: "module:callable"`` returning an ``nn.Module``.

The callable is imported from an installed package or from the working directory (``audit-cli
run`` in the folder that holds ``my_models.py``; a Ray job's ``--working-dir``). It is called
with no arguments (or with ``num_classes`` when it takes that parameter), under a seeded RNG
(``model.seed``), and must return the classifier: normalised ``(n, 3, H, W)`` in, logits out.

* Weights: ``default`` keeps what the factory returned (its digest is the state dict's);
  a path or URL loads that state dict into it (its digest is the file's).
* Transform: the standard ImageNet evaluation (resize 256, crop 224, bilinear, ImageNet
  mean/std), changed field by field with ``model.preprocess``.
* Classes: ImageNet's 1000, or ``model.classes`` (a class-list file).
* Embedding: the input of the last ``nn.Linear``, or ``model.embedding_layer``.

Ray workers unpickle the model, so they must import the module too: on a cluster ship it with
the job (``ray job submit --working-dir .`` or ``--runtime-env-json '{"py_modules": [...]}'``);
a local run adds the working directory to the path the workers inherit.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from audit.config import ConfigError, ModelConfig
from audit.data.classes import imagenet_classes
from audit.models.registry import Built, ModelEntry
from audit.models.transform import STANDARD, EvalTransform
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


def import_factory(spec: str) -> Callable[..., Any]:
    """The callable ``module:attr.path`` names; the working directory is searched too (and
    stays on ``sys.path``, so Ray workers started from here import the module as well).

    Raises:
        ConfigError: the module cannot be imported or has no such callable (one line).
    """
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"The 'model.factory' field names {spec!r} but module {module_name!r} cannot be "
            f"imported ({type(exc).__name__}: {one_line(exc)}); run from the folder that holds "
            "it, install it, or ship it with the job (--working-dir, py_modules)."
        ) from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(
                f"The 'model.factory' field names {spec!r} but {module_name!r} has no {attr!r}."
            )
    if not callable(obj):
        raise ConfigError(f"The 'model.factory' field names {spec!r}, which is not callable.")
    return obj


class FactoryEntry(ModelEntry):
    """The model a ``model.factory`` callable returns."""

    def __init__(self, name: str, factory: str) -> None:
        super().__init__(name, "factory")
        self.factory = factory

    def transform(self, cfg: ModelConfig) -> EvalTransform:
        return STANDARD

    def check(self, cfg: ModelConfig) -> None:
        import_factory(self.factory)
        if cfg.weights not in ("default", "random"):
            check_weights_file(cfg.weights)

    def build(self, cfg: ModelConfig) -> Built:
        fn = import_factory(self.factory)
        classes = imagenet_classes()
        if cfg.classes:
            from audit.data.classes import read_class_list

            classes = read_class_list(cfg.classes)
        takes_classes = "num_classes" in _parameters(fn)

        def call() -> nn.Module:
            return fn(num_classes=len(classes)) if takes_classes else fn()

        try:
            net = seeded(call, cfg.seed)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"The 'model.factory' callable {self.factory!r} failed: {type(exc).__name__}: "
                f"{one_line(exc)}"
            ) from None
        if not isinstance(net, nn.Module):
            raise ConfigError(
                f"The 'model.factory' callable {self.factory!r} must return a torch nn.Module. "
                f"Got {type(net).__name__} instead."
            )
        if cfg.weights in ("default", "random"):
            what = "as returned" if cfg.weights == "default" else f"random (seed={cfg.seed})"
            weights = Weights(f"factory {self.factory} ({what})", state_digest(net), "state_dict")
        else:
            data = read_uri(cfg.weights)
            load_into(net, load_state_bytes(data, cfg.weights), cfg.name, cfg.weights)
            weights = Weights(cfg.weights, sha256_hex(data), "file")
        return Built(net, classes, weights)


def _parameters(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()
