"""The ``data`` section: where the images come from and which of them to audit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from audit.config.checks import (
    BOOL,
    CLASS_IDS,
    MAPPING,
    POSITIVE,
    STRING,
    Checked,
    FieldRules,
    Interval,
    Items,
    Options,
    Text,
)


class Layout(str, Enum):
    """How the input folder is organised."""

    AUTO = "auto"
    IMAGEFOLDER = "imagefolder"  # val/<wnid>/<image_id>.JPEG
    KAGGLE = "kaggle"  # flat folder + LOC_val_solution.csv
    DEVKIT = "devkit"  # flat folder + ILSVRC2012_validation_ground_truth.txt
    UNLABELED = "unlabeled"  # any folder or list of images, no labels
    DEMO = "demo"  # the embedded digits demo set


DEMO_SOURCE = "demo"
BIAS_DEMO_SOURCES = {"demo-bias-patch": "patch", "demo-bias-stripes": "stripes"}
"""The planted-bias demos (:mod:`audit.data.demo_bias`) by ``data.source``, with their cue."""


class FlushUnits(str, Enum):
    """``data.flush_units``: when the model actors' work units are handed on one by one."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class _Off(Interval):
    def __str__(self) -> str:
        return "-1 (disabled)"


DISABLED = _Off(float, -1, -1)
"""-1, the value that turns a timeout off."""
# PIL's own threshold for DecompressionBombWarning; larger images are refused as bombs.
DEFAULT_MAX_PIXELS = 89_478_485


@dataclass(frozen=True)
class DataConfig(Checked):
    """Where the images come from and which of them to audit.

    Attributes:
        source: A local path or fsspec URL of the image folder, a list of image paths/URLs
            (``layout: unlabeled`` only), ``"demo"`` for the embedded demo set, or one of
            :data:`BIAS_DEMO_SOURCES` for a planted-bias demo.
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
        no_progress_timeout_s: Seconds the pass may go without a block moving (Ray Data's
            ``execution_no_progress_timeout_s``) before it fails with ``ExecutionTimeoutError``;
            -1 disables the guard. The model actor hands on each work unit as it is done (one
            LIME explanation by default), so this bounds one unit's work or a wait for cluster
            capacity, not a whole batch's, when the units are flushed.
        flush_units: ``auto`` hands on each work unit as it is done when a batch's heavy work
            may come near the timeout on a CPU (:mod:`audit.run.units`), ``always``, ``never``.
        boxes: Object boxes of the images (docs/boxes.md): Kaggle's ``LOC_val_solution.csv``,
            a folder of the devkit's per-image XML files, or a CSV
            ``image_id,wnid,x0,y0,x1,y1``; bias discovery measures how much of each
            explanation lies outside them. A planted-bias demo brings its own.
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
    no_progress_timeout_s: float = 1800.0
    flush_units: FlushUnits = FlushUnits.AUTO
    boxes: str | None = None

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
        "no_progress_timeout_s": (Interval(float, 0, None, closed="neither"), DISABLED),
        "flush_units": Options(FlushUnits),
        "boxes": (Text("a non-empty path or URL"), None),
    }

    @property
    def is_demo(self) -> bool:
        """The embedded demo or a planted-bias demo (rendered on first use)."""
        return (
            self.layout is Layout.DEMO
            or self.source == DEMO_SOURCE
            or (isinstance(self.source, str) and self.source in BIAS_DEMO_SOURCES)
        )

    @property
    def demo_model(self) -> str:
        """The model a demo source is audited with (``demo_digits``, ``demo_bias_patch``)."""
        cue = BIAS_DEMO_SOURCES.get(self.source) if isinstance(self.source, str) else None
        return f"demo_bias_{cue}" if cue else "demo_digits"
