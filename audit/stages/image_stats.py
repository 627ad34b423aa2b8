"""Photometric statistics of each decoded crop: brightness, contrast, saturation (off by default).

A stage in one file: its config section, its columns, its table and its code. It is also the
file to copy for a stage of your own (docs/architecture.md, "Adding a stage"): the registry
imports every module of ``audit.stages``, so dropping this file in is all it takes.

Enable it with ``image_stats: {enabled: true}`` in the run config (or
``--set image_stats.enabled=true``); each predicted image then gets one row of the
``image_stats`` table, beside its ``predictions`` row. The figures are of the crop the model saw
(after resize and centre crop, before normalisation), so they can be joined with the
predictions to ask whether dark, flat or grey images are more often wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from audit.columns import IMAGE_ID, MODEL, RUN_ID, Column, Table
from audit.config.checks import BOOL, Checked, FieldRules
from audit.stages.registry import StageBase, register_stage

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
"""ITU-R BT.601 weights of R, G, B in the luminance."""


@dataclass(frozen=True)
class ImageStatsConfig(Checked):
    """The ``image_stats`` section.

    Attributes:
        enabled: Compute the statistics (off by default: the table is extra output).
    """

    enabled: bool = False

    SECTION: ClassVar[str | None] = "image_stats"
    RULES: ClassVar[Mapping[str, FieldRules]] = {"enabled": BOOL}


COLUMNS: tuple[Column, ...] = (
    Column("brightness", pa.float32(), np.float32, doc="mean BT.601 luminance of the crop, 0 to 1"),
    Column("contrast", pa.float32(), np.float32, doc="standard deviation of that luminance"),
    Column(
        "saturation", pa.float32(), np.float32, doc="mean HSV saturation (max - min) / max, 0 to 1"
    ),
)
"""What the stage adds to a batch."""

IMAGE_STATS_TABLE = Table("image_stats", (RUN_ID, MODEL, IMAGE_ID, *COLUMNS))


def image_stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """The statistics of ``(n, h, w, 3) uint8`` crops, each ``(n,) float32``."""
    x = np.asarray(images, dtype=np.float64) / 255.0
    luma = x @ LUMA
    hi, lo = x.max(axis=-1), x.min(axis=-1)
    sat = np.divide(hi - lo, hi, out=np.zeros_like(hi), where=hi > 0)
    return {
        "brightness": luma.mean(axis=(1, 2)).astype(np.float32),
        "contrast": luma.std(axis=(1, 2)).astype(np.float32),
        "saturation": sat.mean(axis=(1, 2)).astype(np.float32),
    }


@register_stage
class ImageStatsStage(StageBase):
    """Adds :data:`COLUMNS` to every decoded image; one ``image_stats`` row per image."""

    name: ClassVar[str] = "image_stats"
    section: ClassVar[str] = "image_stats"
    config_type: ClassVar[type] = ImageStatsConfig
    needs: ClassVar[tuple[str, ...]] = ("image",)
    columns: ClassVar[tuple[Column, ...]] = COLUMNS
    table: ClassVar[Table | None] = IMAGE_STATS_TABLE

    def run(self, batch: Mapping[str, np.ndarray], state: dict[str, Any]) -> dict[str, np.ndarray]:
        return image_stats(batch["image"])
