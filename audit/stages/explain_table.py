"""The explain stage's column and the ``explanations`` table (declarations only, no torch).

The stage adds one column to a batch, ``explanations``: per image a JSON list with one object per
explained variant, whose keys are the table's per-variant columns (:data:`SURROGATE_KEYS`). The
driver expands it into ``explanations`` rows, one per (image, variant).
"""

from __future__ import annotations

import pyarrow as pa

from audit.columns import IMAGE_ID, MODEL, RUN_ID, Column, Table

COLUMNS: tuple[Column, ...] = (
    Column(
        "explanations",
        pa.string(),
        object,
        doc="JSON list of the image's explained variants; empty when not explained",
    ),
)
"""What the explain stage adds to a batch."""

VARIANT_COLUMNS: tuple[Column, ...] = (
    Column("variant", pa.string(), doc="clean or adversarial"),
    Column("explained_class", pa.int32(), doc="the class the surrogate explains"),
)
SEGMENT_COLUMNS: tuple[Column, ...] = (
    Column("segments", pa.binary(), doc="the super-pixel map as a 16-bit PNG"),
    Column("n_segments", pa.int32(), doc="number of super-pixels"),
)
SURROGATE_COLUMNS: tuple[Column, ...] = (
    Column("weights", pa.list_(pa.float64()), doc="one weight per super-pixel"),
    Column("intercept", pa.float64(), doc="the surrogate's intercept"),
    Column("score", pa.float64(), doc="weighted R^2 of the surrogate"),
    Column("local_pred", pa.float64(), doc="the surrogate at the full image"),
    Column(
        "top_features", pa.list_(pa.int32()), doc="the chosen super-pixels, most important first"
    ),
)
SETTING_COLUMNS: tuple[Column, ...] = (
    Column("n_samples", pa.int32(), doc="perturbed samples (explain.n_samples)"),
    Column("kernel_width", pa.float32(), doc="LIME kernel width (explain.kernel_width)"),
    Column("seed", pa.int64(), doc="seed of segmentation and sampling (explain.seed)"),
)

SURROGATE_KEYS: tuple[str, ...] = tuple(c.name for c in (*VARIANT_COLUMNS, *SURROGATE_COLUMNS))
"""The keys of one variant's object in the ``explanations`` batch column."""

EXPLANATIONS_TABLE = Table(
    "explanations",
    (
        RUN_ID,
        MODEL,
        IMAGE_ID,
        *VARIANT_COLUMNS,
        *SEGMENT_COLUMNS,
        *SURROGATE_COLUMNS,
        *SETTING_COLUMNS,
    ),
)
