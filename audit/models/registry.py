"""The model registry: model sources, their entries, and :func:`load_model`.

A **source** (:class:`ModelSource`) is a family of models: torchvision's classifiers, timm's
zoo (``timm/<name>``), the embedded demo and models registered in code
(:func:`~audit.models.demo.register_model`), a user's factory (``model.factory``), or anything
a package registers through the ``imagenet_audit.models`` entry-point group. A source hands
out an **entry** (:class:`ModelEntry`) per name, which knows its evaluation transform, how to
find its weights cheaply (:meth:`ModelEntry.check`) and how to build the network with them
(:meth:`ModelEntry.build`).

Adding a source is one new module: subclass :class:`ModelSource` and :class:`ModelEntry`, and
register an instance with :func:`register_source` (or name it in a package's entry points)::

    [project.entry-points."imagenet_audit.models"]
    my_zoo = "my_package.audit_models:SOURCE"

The entry point's object is a :class:`ModelSource` instance, a subclass of it, or a callable
returning one.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata

import torch
from torch import nn

from audit.config import ConfigError, ModelConfig
from audit.data.classes import ClassIndex, read_class_list
from audit.models.transform import EvalTransform
from audit.models.weights import Weights, one_line
from audit.models.wrapper import AuditModel, Embedding

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "imagenet_audit.models"


@dataclass(frozen=True)
class Built:
    """A network with its weights, as a source builds it.

    Attributes:
        net: The classifier on the CPU, taking normalised input, returning logits.
        classes: Its output classes in order.
        weights: What was loaded, with its sha256.
        embedding: Where to take the embedding; None means the input of the last ``nn.Linear``.
    """

    net: nn.Module
    classes: ClassIndex
    weights: Weights
    embedding: Embedding | None = None


class ModelEntry(ABC):
    """One model of a source.

    Attributes:
        name: The name ``model.name`` takes (``resnet50``, ``timm/convnext_tiny``).
        source: The source's name (``torchvision``, ``timm``, ...).
    """

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source

    @abstractmethod
    def transform(self, cfg: ModelConfig) -> EvalTransform:
        """The evaluation transform the weights in ``cfg`` expect, before ``model.preprocess``
        overrides. Reads metadata only: no weights, no network.

        Raises:
            ConfigError: ``cfg.weights`` names weights this entry does not have.
        """

    @abstractmethod
    def check(self, cfg: ModelConfig) -> None:
        """Cheap checks before any work: the weights in ``cfg`` can be found (a file-existence
        check at most; nothing is built).

        Raises:
            ConfigError: one line naming the field.
        """

    @abstractmethod
    def build(self, cfg: ModelConfig) -> Built:
        """The network with the weights in ``cfg``, on the CPU.

        Raises:
            ConfigError: weights that cannot be read or do not fit (one line).
        """

    def describe(self) -> str:
        """One line for ``audit-cli models``: the default weights' transform."""
        try:
            return self.transform(ModelConfig(name=self.name)).describe()
        except Exception as exc:  # a listing must not fail on one odd entry
            return f"(transform unavailable: {one_line(exc)})"


class ModelSource(ABC):
    """A family of models.

    Attributes:
        name: Shown by ``audit-cli models`` and recorded in the manifest.
        prefix: What the family's names start with (``timm/``); empty for bare names.
    """

    name: str = ""
    prefix: str = ""

    @abstractmethod
    def names(self) -> list[str]:
        """Every name this source offers (with the prefix), sorted. May be empty when an
        optional dependency is missing."""

    @abstractmethod
    def entry(self, name: str) -> ModelEntry | None:
        """The entry for ``name``, or None when this source does not offer it."""

    def unavailable(self) -> str | None:
        """Why the source offers nothing here (a missing optional dependency), or None."""
        return None


_SOURCES: list[ModelSource] = []
_LOCK = threading.Lock()
_PLUGINS_LOADED = False


def register_source(source: ModelSource, first: bool = False) -> ModelSource:
    """Add a source to the registry (``first``: ahead of the others, so its names win).

    Raises:
        ValueError: a source of that name is already registered.
    """
    with _LOCK:
        if any(s.name == source.name for s in _SOURCES):
            raise ValueError(f"A model source named {source.name!r} is already registered.")
        if first:
            _SOURCES.insert(0, source)
        else:
            _SOURCES.append(source)
    return source


def unregister_source(name: str) -> None:
    """Remove a source (tests and plugins replacing one)."""
    with _LOCK:
        _SOURCES[:] = [s for s in _SOURCES if s.name != name]


def load_plugins(again: bool = False) -> None:
    """Register the sources of the ``imagenet_audit.models`` entry points, once (``again``:
    look for new ones, e.g. after installing a package); a broken plugin is logged and
    skipped, never fatal for the others."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED and not again:
        return
    _PLUGINS_LOADED = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if (isinstance(obj, type) and issubclass(obj, ModelSource)) or (
                not isinstance(obj, ModelSource) and callable(obj)
            ):
                obj = obj()
            if not isinstance(obj, ModelSource):
                raise TypeError(f"{ep.value} is not a ModelSource")
            if not any(s.name == obj.name for s in _SOURCES):
                register_source(obj)
        except Exception as exc:
            log.warning("model plugin %r (%s) not loaded: %s", ep.name, ep.value, one_line(exc))


def sources() -> list[ModelSource]:
    """The registered sources in lookup order (built-ins, then plugins)."""
    from audit.models import builtin_sources

    builtin_sources()
    load_plugins()
    return list(_SOURCES)


def find_entry(name: str) -> ModelEntry | None:
    """The first source's entry for ``name``, or None."""
    for source in sources():
        if source.prefix and not name.startswith(source.prefix):
            continue
        found = source.entry(name)
        if found is not None:
            return found
    return None


def list_models(pattern: str | None = None) -> list[str]:
    """Every name of every source (sorted), or those matching a shell-style ``pattern``
    (``resnet*``, ``timm/convnext*``; case-insensitive)."""
    names: set[str] = set()
    for source in sources():
        names.update(source.names())
    found = sorted(names)
    if pattern:
        found = [n for n in found if fnmatch.fnmatch(n.lower(), pattern.lower())]
    return found


def _unknown_name(name: str) -> ConfigError:
    hints = []
    for source in sources():
        why = source.unavailable()
        if why and source.prefix and name.startswith(source.prefix):
            return ConfigError(f"The 'model.name' field is {name!r} but {why}.")
        if why:
            hints.append(why)
    names = list_models()
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return ConfigError(
        f"The 'model.name' field must be a registered model name. Got {name!r} instead{hint}. "
        f"{len(names)} models are available ('audit-cli models' lists them)"
        + (f"; {'; '.join(hints)}" if hints else "")
        + "."
    )


def resolve(cfg: ModelConfig) -> ModelEntry:
    """The entry ``cfg`` names: its factory when ``model.factory`` is set, else by name.

    Raises:
        ConfigError: an unknown name (the message suggests a close one).
    """
    if cfg.factory:
        from audit.models.factory import FactoryEntry

        return FactoryEntry(cfg.name, cfg.factory)
    found = find_entry(cfg.name)
    if found is None:
        raise _unknown_name(cfg.name)
    return found


def check_model_name(name: str) -> None:
    """The name is registered (needs no weights, so a client can check before submitting).

    Raises:
        ConfigError: an unknown name.
    """
    resolve(ModelConfig(name=name))


def resolve_transform(cfg: ModelConfig, entry: ModelEntry | None = None) -> EvalTransform:
    """The transform a run of ``cfg`` uses: the entry's, with ``model.preprocess`` applied.

    Raises:
        ConfigError: weights the entry does not know, or overrides that make no transform.
    """
    entry = entry or resolve(cfg)
    base = entry.transform(cfg)
    p = cfg.preprocess
    try:
        return base.with_overrides(
            resize=p.resize,
            crop=p.crop,
            interpolation=None if p.interpolation is None else p.interpolation.value,
            mean=p.mean,
            std=p.std,
        )
    except ValueError as exc:
        raise ConfigError(f"The 'model.preprocess' fields make no transform: {exc}") from None


def check_model_config(cfg: ModelConfig) -> None:
    """Cheap checks before any work: the name exists, the transform resolves, the weights and
    the class-list file can be found. Nothing is built.

    Raises:
        ConfigError: one line naming the field.
    """
    entry = resolve(cfg)
    resolve_transform(cfg, entry)
    entry.check(cfg)
    if cfg.classes:
        read_class_list(cfg.classes)


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready to predict.

    Attributes:
        name: The registry name (or the factory model's label).
        source: The source that built it (``torchvision``, ``timm``, ``demo``, ``factory``...).
        module: The wrapper, in eval mode, parameters with ``requires_grad=False``.
        classes: Output index -> class id.
        weights: What was loaded, e.g. ``torchvision ResNet18_Weights.IMAGENET1K_V1 (<cache
            path>)``, ``random (seed=0)`` or the state dict's path.
        weights_sha256: The digest of the weights (see :mod:`audit.models.weights`).
        transform: The evaluation transform the decode tasks apply.
        embedding_dim: ``D`` of the embedding.
    """

    name: str
    source: str
    module: AuditModel
    classes: ClassIndex
    weights: str
    weights_sha256: str
    transform: EvalTransform
    embedding_dim: int
    weights_digest_of: str = "file"

    def manifest(self) -> dict[str, object]:
        """The manifest's ``model`` section."""
        return {
            "name": self.name,
            "source": self.source,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "weights_digest_of": self.weights_digest_of,
            "classes": self.classes.name,
            "num_classes": len(self.classes),
            "embedding_dim": self.embedding_dim,
            "embedding": self.module.embedding.describe(),
            "transform": self.transform.to_dict(),
            "transform_text": self.transform.describe(),
        }


def load_model(cfg: ModelConfig, probe: bool = True) -> LoadedModel:
    """Build the model ``cfg`` names with its weights, ready for inference.

    With ``probe`` (the default), one forward of a dummy batch at the transform's crop size
    checks that the model runs on its inputs and gives as many outputs as its class list, and
    measures the embedding's size.

    Raises:
        ConfigError: see :func:`check_model_config`; weights that are not a state dict or do
            not fit; a model that cannot run at its crop size or whose outputs do not match its
            class list (the message is one line).
        RuntimeError: downloading weights (``model.allow_download``) failed.
    """
    entry = resolve(cfg)
    transform = resolve_transform(cfg, entry)
    entry.check(cfg)
    built = entry.build(cfg)
    classes = read_class_list(cfg.classes) if cfg.classes else built.classes
    embedding = built.embedding
    if cfg.embedding_layer:
        embedding = Embedding("layer_output", cfg.embedding_layer)
    try:
        module = AuditModel(built.net, transform.mean, transform.std, embedding)
    except ValueError as exc:
        field = "model.embedding_layer" if cfg.embedding_layer else "model.name"
        raise ConfigError(f"The '{field}' model {cfg.name!r} cannot be audited: {exc}.") from None
    module.eval()
    module.requires_grad_(False)
    dim = 0
    if probe:
        dim = _probe(module, transform, cfg.name, len(classes), classes.name)
    return LoadedModel(
        name=cfg.name,
        source=entry.source,
        module=module,
        classes=classes,
        weights=built.weights.description,
        weights_sha256=built.weights.sha256,
        transform=transform,
        embedding_dim=dim,
        weights_digest_of=built.weights.digest_of,
    )


def _probe(module: AuditModel, transform: EvalTransform, name: str, n: int, kind: str) -> int:
    """One forward of a grey dummy image at the crop size; returns the embedding's size.

    Raises:
        ConfigError: the forward fails, or gives other than ``n`` outputs.
    """
    h, w = transform.crop_hw
    x = torch.full((1, 3, h, w), 0.5)
    try:
        with torch.inference_mode():
            logits, emb = module.forward_with_embedding(x)
    except Exception as exc:
        raise ConfigError(
            f"Model {name!r} cannot run on its inputs ({transform.describe()}): "
            f"{type(exc).__name__}: {one_line(exc)}. Set model.preprocess.crop to a size it "
            "takes."
        ) from None
    if logits.ndim != 2 or logits.shape[1] != n:
        raise ConfigError(
            f"Model {name!r} gives {tuple(logits.shape[1:])} outputs but its class list "
            f"{kind!r} has {n} classes: set model.classes to the file of its classes."
        )
    return int(emb.shape[1])


def entries(names: Iterable[str]) -> list[ModelEntry]:
    """The entries of ``names`` that resolve (for listings)."""
    out = []
    for name in names:
        found = find_entry(name)
        if found is not None:
            out.append(found)
    return out
