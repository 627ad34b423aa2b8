"""The prediction stage's columns and the ``predictions`` table (declarations only, no torch)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from audit.columns import IMAGE_ID, LABEL, MODEL, RUN_ID, URI, Column, Null, Table

COLUMNS: tuple[Column, ...] = (
    Column(
        "top5_classes",
        pa.list_(pa.int32()),
        np.int32,
        ("k",),
        doc="the k = min(5, classes) most probable classes, most probable first",
    ),
    Column("top5_probs", pa.list_(pa.float32()), np.float32, ("k",), doc="their probabilities"),
    Column(
        "correct_top1",
        pa.bool_(),
        np.bool_,
        nullable=True,
        doc="top-1 class equals the label; null when unlabeled",
        null_if=Null.UNLABELED,
    ),
    Column(
        "correct_top5",
        pa.bool_(),
        np.bool_,
        nullable=True,
        doc="the label is among the top k; null when unlabeled",
        null_if=Null.UNLABELED,
    ),
    Column(
        "loss",
        pa.float32(),
        np.float32,
        nullable=True,
        doc="cross-entropy against the label; null when unlabeled",
        null_if=Null.NAN,
    ),
    Column(
        "label_prob",
        pa.float32(),
        np.float32,
        nullable=True,
        doc="softmax probability of the label; null when unlabeled",
        null_if=Null.NAN,
    ),
    Column(
        "embedding",
        pa.list_(pa.float32()),
        np.float32,
        ("dim",),
        nullable=True,
        doc="penultimate-layer features; null when predict.embeddings is false",
        optional=True,
    ),
)
"""What the prediction stage adds to a batch, in order (``embedding`` only when kept)."""

PREDICTIONS_TABLE = Table("predictions", (RUN_ID, MODEL, IMAGE_ID, URI, LABEL, *COLUMNS))
