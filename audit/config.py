"""Run configuration: frozen dataclasses loaded from YAML plus ``section.field=value`` overrides.

Everything is validated once, in :func:`load_config` / :func:`build_config`, before any work
starts. A bad value raises :class:`ConfigError` whose message is one line naming the field, the
value and what is allowed, e.g.::

    The 'predict.batch_size' field must be an int >= 1. Got 0 instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration value is invalid. The message is a single line meant for the user."""


class Layout(str, Enum):
    """How the input folder is organised."""

    AUTO = "auto"
    IMAGEFOLDER = "imagefolder"  # val/<wnid>/<image_id>.JPEG
    KAGGLE = "kaggle"  # flat folder + LOC_val_solution.csv
    DEVKIT = "devkit"  # flat folder + ILSVRC2012_validation_ground_truth.txt
    UNLABELED = "unlabeled"  # any folder or list of images, no labels
    DEMO = "demo"  # the embedded digits demo set


class Device(str, Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Norm(str, Enum):
    """Which IFGSM step: the sign of the gradient (L-infinity) or the L2-normalised gradient."""

    LINF = "linf"
    L2 = "l2"


class AttackTarget(str, Enum):
    """What the attack's loss is taken against, and what a flip means."""

    LABEL = "label"  # the ground-truth label (the paper); unlabeled images use their prediction
    PREDICTION = "prediction"  # the clean top-1 prediction


DEMO_SOURCE = "demo"
# PIL's own threshold for DecompressionBombWarning; larger images are refused as bombs.
DEFAULT_MAX_PIXELS = 89_478_485


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and which of them to audit.

    Attributes:
        source: A local path or fsspec URL of the image folder, a list of image paths/URLs
            (``layout: unlabeled`` only), or ``"demo"`` for the embedded demo set.
        layout: One of :class:`Layout`; ``auto`` picks from what the folder contains.
        labels_file: Kaggle's ``LOC_val_solution.csv`` or the devkit's
            ``ILSVRC2012_validation_ground_truth.txt``; looked up inside ``source`` when unset.
        limit: Keep only the first N inputs (by image_id).
        per_class: Keep only the first N inputs of each class (by image_id).
        classes: Keep only these classes (WordNet ids such as ``n01440764``).
        max_pixels: Images with more pixels are rejected as decompression bombs.
        decode_batch_size: Images per Ray Data decode task batch.
        jpeg_draft: Let PIL decode JPEGs at a reduced scale in the DCT domain (draft mode)
            before the exact resize; faster, but not bit-identical to torchvision's transform.
        storage_options: Passed through to fsspec for reading inputs (credentials stay here).
    """

    source: str | tuple[str, ...] = DEMO_SOURCE
    layout: Layout = Layout.AUTO
    labels_file: str | None = None
    limit: int | None = None
    per_class: int | None = None
    classes: tuple[str, ...] = ()
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_batch_size: int = 32
    jpeg_draft: bool = False
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_demo(self) -> bool:
        return self.layout is Layout.DEMO or self.source == DEMO_SOURCE


INTERPOLATION_NAMES = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


@dataclass(frozen=True)
class PreprocessConfig:
    """Overrides of the model's evaluation transform (``model.preprocess.<field>``); each unset
    field keeps what the model's weights expect (torchvision's ``weights.transforms()``, timm's
    pretrained config; for ``model.factory`` the standard ImageNet evaluation: resize 256, crop
    224, bilinear, ImageNet mean/std).

    Attributes:
        resize: The shorter side after resizing, in pixels.
        crop: The centre crop: one size (a square) or ``[h, w]``.
        interpolation: One of ``nearest``, ``bilinear``, ``bicubic``, ``box``, ``hamming``,
            ``lanczos`` (PIL's filters, antialiased).
        mean: Per-channel mean of ``[0, 1]`` pixels (three values).
        std: Per-channel standard deviation (three values > 0).
    """

    resize: int | None = None
    crop: int | tuple[int, ...] | None = None
    interpolation: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ModelConfig:
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


@dataclass(frozen=True)
class PredictConfig:
    """The prediction stage.

    Attributes:
        batch_size: Images per model forward pass (per actor).
        num_actors: Model-holding actors; unset means one per GPU, or one on a CPU-only cluster.
        device: ``auto`` uses CUDA when the cluster has GPUs.
        cpu_threads: Torch threads per CPU actor; unset means the node's CPU count.
        bf16: Autocast to bfloat16 on GPU (ignored on CPU).
        embeddings: Store the penultimate-layer embedding per image.
    """

    batch_size: int = 64
    num_actors: int | None = None
    device: Device = Device.AUTO
    cpu_threads: int | None = None
    bf16: bool = True
    embeddings: bool = True


@dataclass(frozen=True)
class AttackConfig:
    """Iterative FGSM step counting (Stock & Cisse 2018, section 3.2), inside the model actor.

    Attributes:
        enabled: Run the attack and write the ``adversarial`` table.
        eps_step: Step size in [0, 1] pixel space (the paper: 0.001).
        max_steps: M, the most steps tried (the paper: 10).
        norm: ``linf`` (x + eps * sign(grad)) or ``l2`` (x + eps * grad / ||grad||_2).
        target: ``label`` (cross-entropy against the ground truth) or ``prediction``.
        keep_images: Store each adversarial image (8-bit PNG, lossless) in the table, with
            whether the stored, rounded image still flips.
    """

    enabled: bool = True
    eps_step: float = 0.001
    max_steps: int = 10
    norm: Norm = Norm.LINF
    target: AttackTarget = AttackTarget.LABEL
    keep_images: bool = False


class ExplainWhich(str, Enum):
    """Which images LIME explains (it costs n_samples forward passes per explanation)."""

    PER_CLASS = "per_class"  # the first explain.per_class images of every class, by image_id
    CLASSES = "classes"  # every image of explain.classes
    ALL = "all"
    MISCLASSIFIED = "misclassified"  # top-1 differs from the label
    FLIPPED = "flipped"  # flipped by the attack (1..M steps)


class Segmentation(str, Enum):
    QUICKSHIFT = "quickshift"
    SLIC = "slic"


class Fill(str, Enum):
    """What hidden super-pixels show."""

    MEAN = "mean"
    ZERO = "zero"
    BLUR = "blur"


class Regressor(str, Enum):
    WLS = "wls"
    RIDGE = "ridge"


class Variant(str, Enum):
    CLEAN = "clean"
    ADVERSARIAL = "adversarial"


@dataclass(frozen=True)
class ExplainConfig:
    """LIME on super-pixels (Stock & Cisse 2018, section 3.2), inside the model actor.

    Attributes:
        enabled: Run LIME and write the ``explanations`` table.
        which: Which images are explained (see :class:`ExplainWhich`).
        per_class: With ``which: per_class``, how many images per class.
        classes: With ``which: classes``, the class ids.
        variants: ``clean`` explains the clean image for its predicted class; ``adversarial``
            explains the adversarial image (images the attack flipped) for the adversarial
            class, on the clean image's super-pixels.
        n_samples: Perturbed samples per explanation (the paper: 1000).
        kernel_width: LIME's kernel width on cosine distances (the paper: 0.25).
        num_features: K super-pixels chosen by the lasso path (the human study shows 8).
        segmentation: ``quickshift`` (lime's defaults) or ``slic``.
        fill: Colour of hidden super-pixels: ``mean`` (each super-pixel's mean), ``zero``,
            ``blur``.
        regressor: ``wls`` (weighted least squares on the K features) or ``ridge`` (lime's).
        batch_size: Perturbed images per forward pass; unset means 250 on GPU and 10 on CPU
            (on CPU, batches of 250 crops of 224x224 run slower than small ones: see
            docs/performance.md).
        seed: Seeds segmentation and sampling; an explanation depends on it and on nothing
            else (not on batch size or on the worker).
    """

    enabled: bool = True
    which: ExplainWhich = ExplainWhich.PER_CLASS
    per_class: int = 1
    classes: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = (Variant.CLEAN, Variant.ADVERSARIAL)
    n_samples: int = 1000
    kernel_width: float = 0.25
    num_features: int = 8
    segmentation: Segmentation = Segmentation.QUICKSHIFT
    fill: Fill = Fill.MEAN
    regressor: Regressor = Regressor.WLS
    batch_size: int | None = None
    seed: int = 0


class SelectionMethod(str, Enum):
    """How prototypes and criticisms of a class are chosen."""

    ADVERSARIAL = "adversarial"
    MMD_CRITIC = "mmd_critic"
    PROBABILITY = "probability"
    RANDOM = "random"


class Solver(str, Enum):
    GREEDY = "greedy"
    SIEVE = "sieve"


@dataclass(frozen=True)
class CriticismConfig:
    """Per-class prototypes and criticisms (Stock & Cisse 2018, section 3.3), one Ray task a class.

    Attributes:
        enabled: Run the stage and write the ``selections`` table.
        methods: Which selectors run. ``adversarial`` is skipped when the attack is off and
            ``mmd_critic`` when embeddings are off (the manifest says so).
        n_prototypes: Prototypes per class and method.
        n_criticisms: Criticisms per class and method.
        proto_threshold: Probability baseline: prototypes have p(label) above this.
        crit_threshold: Probability baseline: criticisms have p(label) below this.
        mmd_solver: ``greedy`` (the default: a class of ImageNet's validation set has 50 images,
            where greedy is cheap and closer to the optimum) or ``sieve`` (one streaming pass
            with O(m log m / eps) candidates, for classes far larger than memory allows).
        mmd_gamma: RBF kernel width; unset means the median heuristic per class.
        mmd_lambda: Weight of the log-determinant diversity term of criticisms (the paper: 1e-5).
        sieve_eps: Grid ratio of the sieve's thresholds (its guarantee is 1/2 - eps).
        seed: Seed of the random baseline and of the sieve's pass order.
    """

    enabled: bool = True
    methods: tuple[SelectionMethod, ...] = tuple(SelectionMethod)
    n_prototypes: int = 3
    n_criticisms: int = 3
    proto_threshold: float = 0.9
    crit_threshold: float = 0.1
    mmd_solver: Solver = Solver.GREEDY
    mmd_gamma: float | None = None
    mmd_lambda: float = 1e-5
    sieve_eps: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class OutputConfig:
    """Where the tables go: ``<root>/<run_id>/<table>/*.parquet`` and ``manifest.json``.

    Attributes:
        root: Local path or fsspec URL.
        run_id: Name of the run folder; unset means ``<UTC time>-<model name>``.
        overwrite: Replace an existing run folder of the same id instead of refusing. An
            unfinished run of the same id with the same configuration is resumed instead.
        shard_size: Images per shard. The input, sorted by image_id, is cut into shards of
            this many images; a shard's rows in every table are committed together, so a rerun
            skips committed shards and redoes at most the shards that were in flight.
        storage_options: Passed through to fsspec for writing outputs.
    """

    root: str = "./audit-output"
    run_id: str | None = None
    overwrite: bool = False
    shard_size: int = 1000
    storage_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditConfig:
    """A whole audit run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    criticism: CriticismConfig = field(default_factory=CriticismConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as strings, storage options left out: they hold credentials)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            out[f.name] = {
                sf.name: _plain(getattr(section, sf.name))
                for sf in dataclasses.fields(section)
                if sf.name != "storage_options"
            }
        return out


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "predict": PredictConfig,
    "attack": AttackConfig,
    "explain": ExplainConfig,
    "criticism": CriticismConfig,
    "output": OutputConfig,
}

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_WNID = re.compile(r"^[A-Za-z0-9_.-]+$")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if origin is tuple:
        return f"a list of {_describe(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if origin is not None and origin.__name__ == "Mapping":
        return "a mapping"
    return f"a {getattr(tp, '__name__', str(tp))}"


def _coerce(path: str, value: Any, tp: Any) -> Any:
    """Convert a YAML value to the annotated type or raise ConfigError naming ``path``."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise _bad(
                path, value, "a mapping of " + ", ".join(f.name for f in dataclasses.fields(tp))
            )
        return _build_section(path, tp, value)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(path, value, arg)
            except ConfigError:
                continue
        raise _bad(path, value, _describe(tp))
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            raise _bad(path, value, _describe(tp)) from None
    if origin is tuple:
        item = get_args(tp)[0]
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise _bad(path, value, _describe(tp))
        return tuple(_coerce(path, v, item) for v in value)
    if origin is not None and origin.__name__ == "Mapping":
        if not isinstance(value, Mapping):
            raise _bad(path, value, "a mapping")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _bad(path, value, "a bool (true or false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _bad(path, value, "an int")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _bad(path, value, "a float")
    if tp is str:
        if isinstance(value, str):
            return value
        # YAML reads an unquoted 2024-01-01 as a date and 20240101 as an int; both spell the
        # string back exactly (a float such as 1.10 would not, so it stays an error)
        if type(value) is datetime.date:
            return value.isoformat()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise _bad(path, value, "a string")
    raise TypeError(f"unsupported config type {tp!r} for {path}")  # pragma: no cover


def _bad(path: str, value: Any, allowed: str) -> ConfigError:
    # storage options may hold credentials: never echo them
    shown = "a value that is not shown" if path.endswith("storage_options") else repr(value)
    return ConfigError(f"The '{path}' field must be {allowed}. Got {shown} instead.")


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    hints = get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in allowed:
            raise ConfigError(
                f"Unknown field '{name}.{key}'. Allowed fields of '{name}': {', '.join(allowed)}."
            )
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    return cls(**kwargs)


def _check_min(path: str, value: int | None, low: int) -> None:
    if value is not None and value < low:
        raise ConfigError(f"The '{path}' field must be an int >= {low}. Got {value!r} instead.")


_FACTORY = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$"
)


def _validate_model(m: ModelConfig) -> None:
    if m.factory is not None and not _FACTORY.match(m.factory):
        raise ConfigError(
            "The 'model.factory' field must be 'module:callable' (e.g. my_models:build). "
            f"Got {m.factory!r} instead."
        )
    for name in ("classes", "embedding_layer"):
        value = getattr(m, name)
        if value is not None and not value.strip():
            raise ConfigError(
                f"The 'model.{name}' field must be non-empty or null. Got '' instead."
            )
    p = m.preprocess
    _check_min("model.preprocess.resize", p.resize, 1)
    crop = (p.crop,) if isinstance(p.crop, int) else p.crop
    if crop is not None and (len(crop) not in (1, 2) or min(crop) < 1):
        raise ConfigError(
            "The 'model.preprocess.crop' field must be an int >= 1 or [h, w]. "
            f"Got {p.crop!r} instead."
        )
    if p.interpolation is not None and p.interpolation not in INTERPOLATION_NAMES:
        raise ConfigError(
            "The 'model.preprocess.interpolation' field must be one of "
            f"{', '.join(INTERPOLATION_NAMES)}. Got {p.interpolation!r} instead."
        )
    for name in ("mean", "std"):
        values = getattr(p, name)
        if values is None:
            continue
        low = 0.0 if name == "std" else -math.inf
        if len(values) != 3 or not all(math.isfinite(v) and v > low for v in values):
            rule = "3 finite floats > 0" if name == "std" else "3 finite floats"
            raise ConfigError(
                f"The 'model.preprocess.{name}' field must be {rule}. Got {list(values)!r} instead."
            )


def validate(cfg: AuditConfig) -> AuditConfig:
    """Cross-field and range checks; returns ``cfg`` unchanged or raises ConfigError."""
    d, m, p, a, o = cfg.data, cfg.model, cfg.predict, cfg.attack, cfg.output
    c = cfg.criticism
    if isinstance(d.source, str) and not d.source.strip():
        raise ConfigError(
            "The 'data.source' field must be a non-empty path or URL. Got '' instead."
        )
    if isinstance(d.source, tuple):
        if not d.source:
            raise ConfigError("The 'data.source' field must be a non-empty list. Got [] instead.")
        if d.layout not in (Layout.UNLABELED, Layout.AUTO):
            raise ConfigError(
                "The 'data.source' field may be a list only with data.layout 'unlabeled'. "
                f"Got layout {d.layout.value!r} instead."
            )
    _check_min("data.limit", d.limit, 1)
    _check_min("data.per_class", d.per_class, 1)
    _check_min("data.max_pixels", d.max_pixels, 1)
    _check_min("data.decode_batch_size", d.decode_batch_size, 1)
    for class_id in d.classes:
        if not _WNID.match(class_id):
            raise ConfigError(
                "The 'data.classes' field must list class ids such as 'n01440764'. "
                f"Got {class_id!r} instead."
            )
    if d.layout is Layout.UNLABELED and (d.per_class or d.classes):
        raise ConfigError(
            "The 'data.per_class' and 'data.classes' fields need labels; "
            "data.layout 'unlabeled' has none."
        )
    if not m.name.strip():
        raise ConfigError("The 'model.name' field must be a registered model name. Got '' instead.")
    if not m.weights.strip():
        raise ConfigError(
            "The 'model.weights' field must be 'default', 'random' or a path. Got '' instead."
        )
    _validate_model(m)
    # numpy's generators take only non-negative seeds
    _check_min("model.seed", m.seed, 0)
    _check_min("explain.seed", cfg.explain.seed, 0)
    _check_min("criticism.seed", c.seed, 0)
    _check_min("predict.batch_size", p.batch_size, 1)
    _check_min("predict.num_actors", p.num_actors, 1)
    _check_min("predict.cpu_threads", p.cpu_threads, 1)
    if not 0.0 < a.eps_step <= 1.0:
        raise ConfigError(
            f"The 'attack.eps_step' field must be a float in (0, 1]. Got {a.eps_step!r} instead."
        )
    if not 1 <= a.max_steps <= 10_000:
        raise ConfigError(
            f"The 'attack.max_steps' field must be an int in [1, 10000]. Got {a.max_steps!r} instead."
        )
    e = cfg.explain
    _check_min("explain.per_class", e.per_class, 1)
    _check_min("explain.n_samples", e.n_samples, 2)
    _check_min("explain.num_features", e.num_features, 1)
    _check_min("explain.batch_size", e.batch_size, 1)
    if not (e.kernel_width > 0 and math.isfinite(e.kernel_width)):
        raise ConfigError(
            f"The 'explain.kernel_width' field must be a float > 0. Got {e.kernel_width!r} instead."
        )
    if e.which is ExplainWhich.CLASSES and not e.classes:
        raise ConfigError(
            "The 'explain.classes' field must list class ids with explain.which 'classes'."
        )
    if e.enabled and not a.enabled and e.which is ExplainWhich.FLIPPED:
        raise ConfigError(
            "The 'explain.which' field is 'flipped' but attack.enabled is false: no image is "
            "attacked, so none would be explained; enable the attack or choose another set."
        )
    if e.enabled and not a.enabled and e.variants == (Variant.ADVERSARIAL,):
        raise ConfigError(
            "The 'explain.variants' field asks only for 'adversarial' explanations but "
            "attack.enabled is false: there would be none; enable the attack or add 'clean'."
        )
    for class_id in e.classes:
        if not _WNID.match(class_id):
            raise ConfigError(
                "The 'explain.classes' field must list class ids such as 'n01440764'. "
                f"Got {class_id!r} instead."
            )
    _check_min("criticism.n_prototypes", c.n_prototypes, 0)
    _check_min("criticism.n_criticisms", c.n_criticisms, 0)
    for name in ("proto_threshold", "crit_threshold"):
        value = getattr(c, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(
                f"The 'criticism.{name}' field must be a float in [0, 1]. Got {value!r} instead."
            )
    if c.mmd_gamma is not None and not (c.mmd_gamma > 0 and math.isfinite(c.mmd_gamma)):
        raise ConfigError(
            f"The 'criticism.mmd_gamma' field must be a float > 0 or null. Got {c.mmd_gamma!r} instead."
        )
    if not (c.mmd_lambda >= 0 and math.isfinite(c.mmd_lambda)):
        raise ConfigError(
            f"The 'criticism.mmd_lambda' field must be a float >= 0. Got {c.mmd_lambda!r} instead."
        )
    if not 0.0 < c.sieve_eps < 1.0:
        raise ConfigError(
            f"The 'criticism.sieve_eps' field must be a float in (0, 1). Got {c.sieve_eps!r} instead."
        )
    if not o.root.strip():
        raise ConfigError(
            "The 'output.root' field must be a non-empty path or URL. Got '' instead."
        )
    _check_min("output.shard_size", o.shard_size, 1)
    if o.run_id is not None and not _RUN_ID.match(o.run_id):
        raise ConfigError(
            "The 'output.run_id' field must be letters, digits, '.', '_' or '-' "
            f"(not starting with '.', '_' or '-'). Got {o.run_id!r} instead."
        )
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.field=value`` (value is YAML: ``10``, ``true``, ``[a, b]``, ``null``).

    A nested field is ``section.field.sub=value`` (``model.preprocess.crop=299``); its key is
    returned as ``field.sub``.
    """
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(
            f"An override must look like 'section.field=value' (e.g. data.limit=100). Got {text!r} instead."
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts[0], ".".join(parts[1:]), value


def factory_label(factory: str) -> str:
    """The default ``model.name`` of a factory model: ``pkg.mod:build`` -> ``pkg.mod.build``."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", factory.replace(":", ".")).strip(".-_") or "factory"


def build_config(
    raw: Mapping[str, Any] | None = None, overrides: Iterable[str] = ()
) -> AuditConfig:
    """Build and validate an :class:`AuditConfig` from a mapping plus overrides.

    Raises:
        ConfigError: an unknown section or field, or a value of the wrong type or range.
    """
    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"A config file must hold a mapping of sections. Got {type(raw).__name__}."
        )
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"Unknown config section '{section}'. Allowed sections: {', '.join(SECTIONS)}."
            )
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"The '{section}' section must be a mapping. Got {values!r} instead.")
        merged[section].update(values)
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in SECTIONS:
            raise ConfigError(
                f"Unknown config section '{section}' in override {text!r}. "
                f"Allowed sections: {', '.join(SECTIONS)}."
            )
        field_name, _, sub = key.partition(".")
        if sub:
            inner = merged[section].get(field_name) or {}
            if not isinstance(inner, Mapping):
                raise ConfigError(
                    f"The '{section}.{field_name}' field must be a mapping to take {text!r}."
                )
            merged[section][field_name] = {**inner, sub: value}
        else:
            merged[section][key] = value
    factory = merged["model"].get("factory")
    if isinstance(factory, str) and factory.strip() and "name" not in merged["model"]:
        merged["model"]["name"] = factory_label(factory)
    sections = {name: _build_section(name, cls, merged[name]) for name, cls in SECTIONS.items()}
    return validate(AuditConfig(**sections))


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> AuditConfig:
    """Load a YAML config file (or the defaults, which run the demo) and apply overrides."""
    raw: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"Config file {str(p)!r} does not exist.")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
            raise ConfigError(f"Config file {str(p)!r} is not valid YAML: {first}") from None
    return build_config(raw, overrides)


def parse_storage_options(text: str | None, flag: str = "--storage-options") -> dict[str, Any]:
    """A command-line JSON object of fsspec options (``'{"anon": true}'``); ``{}`` when empty.

    Raises:
        ConfigError: the text is not a JSON object; the message names ``flag``.
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} must be a JSON object: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object. Got {type(value).__name__} instead.")
    return value
