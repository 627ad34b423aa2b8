"""The sections of the stages inside the model actor: ``predict``, ``attack`` (iterative FGSM)
and ``explain`` (LIME)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from audit.config.checks import (
    BOOL,
    CLASS_IDS,
    POSITIVE,
    SEED,
    Amounts,
    Checked,
    FieldRules,
    Interval,
    Items,
    Options,
    Text,
)


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


@dataclass(frozen=True)
class PredictConfig(Checked):
    """The prediction stage.

    Attributes:
        batch_size: Images per model forward pass (per actor).
        num_actors: Model-holding actors; unset means one per GPU, or one on a CPU-only cluster.
        device: ``auto`` uses CUDA when the cluster has GPUs or its autoscaler can add GPU
            nodes; ``cuda`` waits for the autoscaler's GPU nodes (docs/cluster.md).
        cpu_threads: Torch threads per CPU actor; unset means the node's CPU count.
        bf16: Autocast to bfloat16 on GPU (ignored on CPU).
        embeddings: Store the penultimate-layer embedding per image.
        wait_for_resources_s: How long the run waits for the cluster (its autoscaler) to
            provide the model actors' resources before it fails.
        accelerator_type: Ray's ``accelerator_type`` of the model actors' nodes (``A10G``,
            ``H100``...), for a cluster with several GPU kinds; unset: any.
        resources: Custom Ray resources each model actor asks for, name -> amount.
    """

    batch_size: int = 64
    num_actors: int | None = None
    device: Device = Device.AUTO
    cpu_threads: int | None = None
    bf16: bool = True
    embeddings: bool = True
    wait_for_resources_s: float = 600.0
    accelerator_type: str | None = None
    resources: Mapping[str, float] = field(default_factory=dict)

    SECTION: ClassVar[str | None] = "predict"
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "batch_size": POSITIVE,
        "num_actors": (POSITIVE, None),
        "device": Options(Device),
        "cpu_threads": (POSITIVE, None),
        "bf16": BOOL,
        "embeddings": BOOL,
        "wait_for_resources_s": Interval(float, 0, None),
        "accelerator_type": (Text("an accelerator type such as 'A10G'", r"[A-Za-z0-9_.-]+"), None),
        "resources": Amounts(
            "a mapping of custom resource names to amounts > 0 (CPU and GPU are set by "
            "predict.device)",
            reserved=("CPU", "GPU", "memory", "object_store_memory"),
        ),
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

    PER_CLASS = "per_class"  # explain.per_class images of every class, a seeded draw
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
        images_per_unit: Explained images per work unit of the model actor: the actor runs
            LIME on this many images of its batch at a time and hands their rows on when they
            are done (the other rows of the batch go first), so results keep flowing and
            ``data.no_progress_timeout_s`` bounds one unit's work, not a whole batch's.
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
    images_per_unit: int = 1

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
        "images_per_unit": POSITIVE,
    }
