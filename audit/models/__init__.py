"""Every classifier the audit can load, by source: torchvision, timm, the demo, a user's factory,
and plugins (``imagenet_audit.models`` entry points).

:func:`load_model` turns a :class:`~audit.config.ModelConfig` into a :class:`LoadedModel`: an
:class:`AuditModel` that takes ``[0, 1]`` images at the model's own crop size, normalises them
inside and returns logits (and the embedding), with the model's :class:`EvalTransform`, its class
list and the sha256 of its weights. See :mod:`audit.models.registry` for adding a source.

Example:
    >>> import torch
    >>> from audit.config import ModelConfig
    >>> loaded = load_model(ModelConfig(name="resnet18", weights="random"))
    >>> loaded.transform.describe()
    'resize 256 (shorter side, bilinear), centre crop 224x224'
    >>> logits, emb = loaded.module.forward_with_embedding(torch.rand(2, 3, 224, 224))
    >>> logits.shape, emb.shape
    (torch.Size([2, 1000]), torch.Size([2, 512]))
"""

from __future__ import annotations

from audit.models.demo import register_model
from audit.models.registry import (
    ENTRY_POINT_GROUP,
    Built,
    LoadedModel,
    ModelEntry,
    ModelSource,
    check_model_config,
    check_model_name,
    find_entry,
    list_models,
    load_model,
    register_source,
    resolve,
    resolve_transform,
    sources,
    unregister_source,
)
from audit.models.torchvision import EXCLUDED as EXCLUDED_TORCHVISION
from audit.models.torchvision import cache_path as torchvision_cache_path
from audit.models.transform import IMAGENET_MEAN, IMAGENET_STD, STANDARD, EvalTransform
from audit.models.weights import Weights
from audit.models.wrapper import AuditModel, Embedding, find_classifier_layer

__all__ = [
    "ENTRY_POINT_GROUP",
    "EXCLUDED_TORCHVISION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "STANDARD",
    "AuditModel",
    "Built",
    "Embedding",
    "EvalTransform",
    "LoadedModel",
    "ModelEntry",
    "ModelSource",
    "Weights",
    "builtin_sources",
    "check_model_config",
    "check_model_name",
    "find_classifier_layer",
    "find_entry",
    "list_models",
    "load_model",
    "register_model",
    "register_source",
    "resolve",
    "resolve_transform",
    "sources",
    "torchvision_cache_path",
    "unregister_source",
]

_BUILTINS_REGISTERED = False


def builtin_sources() -> None:
    """Register the built-in sources once, in lookup order: code-registered models (the demo),
    timm (``timm/`` names), torchvision, then the ``SOURCE`` (a :class:`ModelSource`) of every
    other module of this package, in module-name order, so that a new source is one new file."""
    global _BUILTINS_REGISTERED
    if _BUILTINS_REGISTERED:
        return
    _BUILTINS_REGISTERED = True
    import importlib
    import pkgutil

    from audit.models.demo import REGISTERED
    from audit.models.timm import TimmSource
    from audit.models.torchvision import TorchvisionSource

    register_source(REGISTERED)
    register_source(TimmSource())
    register_source(TorchvisionSource())
    for info in sorted(pkgutil.iter_modules(__path__, __name__ + "."), key=lambda m: m.name):
        found = getattr(importlib.import_module(info.name), "SOURCE", None)
        if isinstance(found, ModelSource):
            register_source(found)
