"""Run configuration: frozen dataclasses loaded from YAML plus ``section.field=value`` overrides.

Every config dataclass checks its own fields when it is built (``__post_init__``), whether it
comes from :func:`load_config` / :func:`build_config` or from code, and :class:`AuditConfig`
checks the rules that span sections. A bad value raises :class:`ConfigError` whose message is
one line naming the field, the value and what is allowed, e.g.::

    The 'predict.batch_size' field must be an int >= 1. Got 0 instead.

The checks are declared as rules in scikit-learn's constraint style (:class:`Interval`,
:class:`Options`, :class:`Text`, :class:`Items`, :class:`InstanceOf`), one tuple of rules per
field in a class's ``RULES``; :func:`check` applies them and writes the one message.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import numbers
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration value is invalid. The message is a single line meant for the user."""


# ------------------------------------------------------------------ rules and the one message


class Rule:
    """A constraint on one field's value.

    ``fits`` says whether the value is of the kind the rule is about (an int, a string, a list);
    ``holds`` whether such a value is allowed; ``convert`` normalises an allowed value (a string
    to its Enum member, a list to a tuple); ``str(rule)`` describes the allowed values.
    """

    def fits(self, value: Any) -> bool:
        raise NotImplementedError

    def holds(self, value: Any) -> bool:
        return True

    def convert(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Interval(Rule):
    """Numbers of ``type`` (``int`` or ``float``; bools are neither) between ``left`` and
    ``right`` (``None``: unbounded), ``closed`` on both ends, the ``left``, the ``right`` or
    ``neither``. Floats must be finite unless ``finite=False``; ints given for a float become
    floats."""

    type: type
    left: float | None
    right: float | None
    closed: Literal["both", "left", "right", "neither"] = "both"
    finite: bool = True

    def fits(self, value: Any) -> bool:
        kind = numbers.Integral if self.type is int else numbers.Real
        return isinstance(value, kind) and not isinstance(value, bool)

    def holds(self, value: Any) -> bool:
        if self.type is float and self.finite and not math.isfinite(value):
            return False
        low = self.left is None or (value >= self.left if self._closed_left else value > self.left)
        high = self.right is None or (
            value <= self.right if self._closed_right else value < self.right
        )
        return low and high

    def convert(self, value: Any) -> Any:
        return self.type(value)

    @property
    def _closed_left(self) -> bool:
        return self.closed in ("both", "left")

    @property
    def _closed_right(self) -> bool:
        return self.closed in ("both", "right")

    def __str__(self) -> str:
        kind = "an int" if self.type is int else "a float"
        if self.left is not None and self.right is not None:
            lo, hi = "[" if self._closed_left else "(", "]" if self._closed_right else ")"
            return f"{kind} in {lo}{self.left}, {self.right}{hi}"
        if self.left is not None:
            return f"{kind} {'>=' if self._closed_left else '>'} {self.left}"
        if self.right is not None:
            return f"{kind} {'<=' if self._closed_right else '<'} {self.right}"
        return "a finite float" if self.type is float and self.finite else kind


class Options(Rule):
    """One of the values of a ``str`` Enum (the value is converted to its member), or one of a
    tuple of strings."""

    def __init__(self, choices: type[Enum] | tuple[str, ...]) -> None:
        self.enum = choices if isinstance(choices, type) else None
        self.values = tuple(m.value for m in choices) if isinstance(choices, type) else choices

    def fits(self, value: Any) -> bool:
        return isinstance(value, str)

    def holds(self, value: Any) -> bool:
        return value in self.values

    def convert(self, value: Any) -> Any:
        return self.enum(value) if self.enum is not None else str(value)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Text(Rule):
    """A string that is not blank, or that matches ``pattern`` in full; ``description`` says
    what is allowed."""

    description: str = "a non-empty string"
    pattern: str | None = None

    def fits(self, value: Any) -> bool:
        return isinstance(value, str)

    def holds(self, value: Any) -> bool:
        if self.pattern is None:
            return bool(value.strip())
        return re.fullmatch(self.pattern, value) is not None

    def __str__(self) -> str:
        return self.description


@dataclass(frozen=True)
class Items(Rule):
    """A list (or tuple; it becomes a tuple) of ``min_len`` to ``max_len`` values that each
    satisfy ``item``, all distinct with ``unique``."""

    item: Rule
    description: str | None = None
    min_len: int = 0
    max_len: int | None = None
    unique: bool = False

    def fits(self, value: Any) -> bool:
        return isinstance(value, (list, tuple))

    def holds(self, value: Any) -> bool:
        n = len(value)
        return (
            n >= self.min_len
            and (self.max_len is None or n <= self.max_len)
            and all(self.item.fits(v) and self.item.holds(v) for v in value)
            and (not self.unique or len(set(value)) == n)
        )

    def convert(self, value: Any) -> Any:
        return tuple(self.item.convert(v) for v in value)

    def __str__(self) -> str:
        return self.description or f"a list of {self.item}"


@dataclass(frozen=True)
class InstanceOf(Rule):
    """Any instance of ``type``."""

    type: type
    description: str

    def fits(self, value: Any) -> bool:
        return isinstance(value, self.type)

    def __str__(self) -> str:
        return self.description


FieldRules = Rule | None | tuple[Rule | None, ...]
"""A field's rules: one rule, or a tuple of rules any of which may hold; ``None`` allows null."""

BOOL = InstanceOf(bool, "a bool (true or false)")
STRING = InstanceOf(str, "a string")
MAPPING = InstanceOf(Mapping, "a mapping")
POSITIVE = Interval(int, 1, None)
NON_NEGATIVE = Interval(int, 0, None)
FINITE = Interval(float, None, None)


def config_error(path: str, value: Any, allowed: str, owner: str | None = None) -> ConfigError:
    """The one message of a bad value: ``The '<path>' field must be <allowed>. Got <value>
    instead.`` (``The '<path>' parameter of <owner> ...`` for a class outside the run config)."""
    subject = f"'{path}' field" if owner is None else f"'{path}' parameter of {owner}"
    # storage options may hold credentials: never echo them
    if path.endswith("storage_options"):
        shown = "a value that is not shown"
    else:
        shown = repr(_plain(value)).replace("\n", "\\n")
    return ConfigError(f"The {subject} must be {allowed}. Got {shown} instead.")


def check(path: str, value: Any, *rules: Rule | None, owner: str | None = None) -> Any:
    """``value`` normalised by the first rule that holds, or :class:`ConfigError` naming ``path``.

    ``None`` among the rules allows null. The message describes the rules about the value's
    kind (an int out of range is told the range), or all of them when none is.

    Example:
        >>> check("predict.batch_size", 0, Interval(int, 1, None))
        Traceback (most recent call last):
        ...
        audit.config.ConfigError: The 'predict.batch_size' field must be an int >= 1. Got 0 instead.
    """
    if value is None and None in rules:
        return None
    real = [r for r in rules if r is not None]
    for rule in real:
        if rule.fits(value) and rule.holds(value):
            return rule.convert(value)
    about = [r for r in real if r.fits(value)]
    allowed = " or ".join(str(r) for r in about) if about else _or(rules)
    raise config_error(path, value, allowed, owner)


def _or(rules: Iterable[Rule | None]) -> str:
    return " or ".join("null" if r is None else str(r) for r in rules)


class Checked:
    """Base of the config dataclasses: ``__post_init__`` checks every field against ``RULES``
    and stores the normalised value (Enum members, tuples, floats).

    ``SECTION`` names the fields in messages: ``"predict"`` gives ``'predict.batch_size'``,
    ``""`` (the whole run config) the bare name; ``None`` (a class outside the run config, such
    as the report's) gives scikit-learn's ``'seed' parameter of ReportConfig``.
    """

    SECTION: ClassVar[str | None] = None
    RULES: ClassVar[Mapping[str, FieldRules]] = {}

    def __post_init__(self) -> None:
        for name, rules in self.RULES.items():
            self._check_field(name, *(rules if isinstance(rules, tuple) else (rules,)))

    def _check_field(self, name: str, *rules: Rule | None) -> None:
        section = type(self).SECTION
        path = f"{section}.{name}" if section else name
        owner = type(self).__name__ if section is None else None
        object.__setattr__(self, name, check(path, getattr(self, name), *rules, owner=owner))


# ------------------------------------------------------------------ the run config


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

CLASS_IDS = Items(
    Text("a class id such as 'n01440764'", r"[A-Za-z0-9_.-]+"),
    "a list of class ids such as 'n01440764'",
)
# numpy's generators take only non-negative seeds
SEED = NON_NEGATIVE


@dataclass(frozen=True)
class DataConfig(Checked):
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

    SECTION: ClassVar[str | None] = "data"
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "source": (
            Text("a non-empty path or URL"),
            Items(Text("a non-empty path or URL"), "a non-empty list of paths or URLs", min_len=1),
        ),
        "layout": Options(Layout),
        "labels_file": (STRING, None),
        "limit": (POSITIVE, None),
        "per_class": (POSITIVE, None),
        "classes": CLASS_IDS,
        "max_pixels": POSITIVE,
        "decode_batch_size": POSITIVE,
        "jpeg_draft": BOOL,
        "storage_options": MAPPING,
    }

    @property
    def is_demo(self) -> bool:
        return self.layout is Layout.DEMO or self.source == DEMO_SOURCE


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


@dataclass(frozen=True)
class PredictConfig(Checked):
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

    SECTION: ClassVar[str | None] = "predict"
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "batch_size": POSITIVE,
        "num_actors": (POSITIVE, None),
        "device": Options(Device),
        "cpu_threads": (POSITIVE, None),
        "bf16": BOOL,
        "embeddings": BOOL,
    }


@dataclass(frozen=True)
class AttackConfig(Checked):
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

    SECTION: ClassVar[str | None] = "attack"
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "enabled": BOOL,
        "eps_step": Interval(float, 0, 1, closed="right"),
        "max_steps": Interval(int, 1, 10_000),
        "norm": Options(Norm),
        "target": Options(AttackTarget),
        "keep_images": BOOL,
    }


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
class ExplainConfig(Checked):
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

    SECTION: ClassVar[str | None] = "explain"
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "enabled": BOOL,
        "which": Options(ExplainWhich),
        "per_class": POSITIVE,
        "classes": CLASS_IDS,
        "variants": Items(Options(Variant)),
        "n_samples": Interval(int, 2, None),
        "kernel_width": Interval(float, 0, None, closed="neither"),
        "num_features": POSITIVE,
        "segmentation": Options(Segmentation),
        "fill": Options(Fill),
        "regressor": Options(Regressor),
        "batch_size": (POSITIVE, None),
        "seed": SEED,
    }


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
class CriticismConfig(Checked):
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

    SECTION: ClassVar[str | None] = "criticism"
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "enabled": BOOL,
        "methods": Items(Options(SelectionMethod)),
        "n_prototypes": NON_NEGATIVE,
        "n_criticisms": NON_NEGATIVE,
        "proto_threshold": Interval(float, 0, 1),
        "crit_threshold": Interval(float, 0, 1),
        "mmd_solver": Options(Solver),
        "mmd_gamma": (Interval(float, 0, None, closed="neither"), None),
        "mmd_lambda": Interval(float, 0, None),
        "sieve_eps": Interval(float, 0, 1, closed="neither"),
        "seed": SEED,
    }


@dataclass(frozen=True)
class OutputConfig(Checked):
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

    SECTION: ClassVar[str | None] = "output"
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "root": Text("a non-empty path or URL"),
        "run_id": (
            Text(
                "letters, digits, '.', '_' or '-' (not starting with '.', '_' or '-')",
                r"[A-Za-z0-9][A-Za-z0-9._-]*",
            ),
            None,
        ),
        "overwrite": BOOL,
        "shard_size": POSITIVE,
        "storage_options": MAPPING,
    }


@dataclass(frozen=True)
class AuditConfig(Checked):
    """A whole audit run: the sections, each checked when it was built, and the rules that span
    fields (:meth:`__post_init__`)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    criticism: CriticismConfig = field(default_factory=CriticismConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    SECTION: ClassVar[str | None] = ""
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "data": InstanceOf(DataConfig, "a DataConfig"),
        "model": InstanceOf(ModelConfig, "a ModelConfig"),
        "predict": InstanceOf(PredictConfig, "a PredictConfig"),
        "attack": InstanceOf(AttackConfig, "an AttackConfig"),
        "explain": InstanceOf(ExplainConfig, "an ExplainConfig"),
        "criticism": InstanceOf(CriticismConfig, "a CriticismConfig"),
        "output": InstanceOf(OutputConfig, "an OutputConfig"),
    }

    def __post_init__(self) -> None:
        """The sections' types, then every rule that spans fields or sections."""
        super().__post_init__()
        d, a, e = self.data, self.attack, self.explain
        if isinstance(d.source, tuple) and d.layout not in (Layout.UNLABELED, Layout.AUTO):
            raise ConfigError(
                "The 'data.source' field may be a list only with data.layout 'unlabeled'. "
                f"Got layout {d.layout.value!r} instead."
            )
        if d.layout is Layout.UNLABELED and (d.per_class or d.classes):
            raise ConfigError(
                "The 'data.per_class' and 'data.classes' fields need labels; "
                "data.layout 'unlabeled' has none."
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


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if isinstance(tp, type) and issubclass(tp, Enum):
        return str(Options(tp))
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
            raise config_error(
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
        raise config_error(path, value, _describe(tp))
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            raise config_error(path, value, _describe(tp)) from None
    if origin is tuple:
        item = get_args(tp)[0]
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise config_error(path, value, _describe(tp))
        return tuple(_coerce(path, v, item) for v in value)
    if origin is not None and origin.__name__ == "Mapping":
        if not isinstance(value, Mapping):
            raise config_error(path, value, "a mapping")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise config_error(path, value, "a bool (true or false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise config_error(path, value, "an int")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise config_error(path, value, "a float")
    if tp is str:
        if isinstance(value, str):
            return value
        # YAML reads an unquoted 2024-01-01 as a date and 20240101 as an int; both spell the
        # string back exactly (a float such as 1.10 would not, so it stays an error)
        if type(value) is datetime.date:
            return value.isoformat()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise config_error(path, value, "a string")
    raise TypeError(f"unsupported config type {tp!r} for {path}")  # pragma: no cover


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


def validate(cfg: AuditConfig) -> AuditConfig:
    """``cfg`` unchanged: kept for callers, since every config is checked when it is built."""
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
    return AuditConfig(**sections)


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
