"""What a section renders from: the runs, the report settings, the probes' inputs and the
shared picture budget, with the samples and crops every section draws the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.report.bias import Attributes, Pair
from audit.report.config import ReportConfig
from audit.report.data import RunData
from audit.report.images import Pictures
from audit.report.sections.tables import by_id


@dataclass
class SectionContext:
    """The inputs of every section, and what sections leave for those rendered after them.

    Attributes:
        cfg: Sampling and size limits.
        runs: The runs, side by side; the first names the classes.
        pictures: Turns crops and PNGs into embedded images within the report's budget.
        attributes: Per-image attributes for the bias probe, if given.
        pairs: Image pairs for the paired probe (empty if none given).
        notes: Notes for the summary (the builder adds the image-budget note).
        missing: ``"<title>: <why>"`` of each section with nothing to show, filled by the
            builder before the ``after_others`` sections render.
    """

    cfg: ReportConfig
    runs: list[RunData]
    pictures: Pictures
    attributes: Attributes | None = None
    pairs: Sequence[Pair] = ()
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    _preds: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def preds(self, run: RunData) -> dict[str, dict[str, Any]]:
        """image_id -> prediction row (uri, label, top-5, correct_top1), built once per run."""
        key = id(run)
        if key not in self._preds:
            self._preds[key] = by_id(run)
        return self._preds[key]

    def rng(self, section: str, run: int) -> np.random.Generator:
        """The generator of ``section``'s sample of run number ``run``, from ``cfg.seed``."""
        key = sum(ord(c) * (i + 1) for i, c in enumerate(section))
        return np.random.default_rng([self.cfg.seed, run, key])

    def crop(self, run: RunData, pred: Mapping[str, Any] | None) -> np.ndarray | str:
        """The image of prediction row ``pred`` as the run decoded it, or why there is none."""
        if pred is None:
            return "image not in the predictions table"
        return self.pictures.crop(pred["uri"], run.max_pixels, run.jpeg_draft, run.transform)


def sample(items: Sequence[Any], k: int, rng: np.random.Generator) -> list[Any]:
    """``k`` of ``items`` drawn without replacement, kept in their original order."""
    if len(items) <= k:
        return list(items)
    keep = np.sort(rng.choice(len(items), size=k, replace=False))
    return [items[int(i)] for i in keep]
