"""The attack stage's columns and the ``adversarial`` table (declarations only, no torch)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from audit.columns import IMAGE_ID, LABEL, MODEL, RUN_ID, Column, Null, Table

COLUMNS: tuple[Column, ...] = (
    Column("target", pa.int32(), np.int32, doc="the class the attack moves away from"),
    Column(
        "steps_to_flip",
        pa.int16(),
        np.int16,
        nullable=True,
        doc="0 = wrong before the attack, 1..M = first flipped step; null (-1) = never",
        null_if=Null.NEGATIVE,
    ),
    Column("adv_class", pa.int32(), np.int32, doc="top-1 class of the adversarial image"),
    Column("adv_prob", pa.float32(), np.float32, doc="its softmax probability there"),
    Column("linf", pa.float32(), np.float32, doc="L-infinity norm of adversarial - clean"),
    Column("l2", pa.float32(), np.float32, doc="L2 norm of adversarial - clean"),
    Column(
        "stored_flips",
        pa.bool_(),
        np.bool_,
        nullable=True,
        doc="whether the stored 8-bit image still flips; null unless attack.keep_images",
        optional=True,
    ),
    Column(
        "image_png",
        pa.binary(),
        object,
        nullable=True,
        doc="the adversarial image as a PNG; null unless attack.keep_images",
        optional=True,
    ),
)
"""What the attack stage adds to a batch, in order (the last two only with ``keep_images``)."""

ADVERSARIAL_TABLE = Table("adversarial", (RUN_ID, MODEL, IMAGE_ID, LABEL, *COLUMNS))
