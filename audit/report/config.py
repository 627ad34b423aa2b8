"""How much of a run the report shows: sample sizes, thumbnail size and the size budget.

Every section samples with the one ``seed``, so the same runs and settings give the same report.
The embedded images (thumbnails and plots) never exceed ``max_images`` pictures nor
``max_image_bytes`` bytes in all; images past either limit are replaced by a short text
placeholder, and the report says how many were left out. Everything else in the page is text
whose length is bounded by the sample sizes below (see docs/report.md for the figures).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from audit.config.checks import NON_NEGATIVE, Checked, FieldRules, Interval


@dataclass(frozen=True)
class ReportConfig(Checked):
    """Sampling and size limits of the HTML report.

    Attributes:
        examples: Misclassified images shown per run (Figure 3), sampled among all of them.
        adversarial_examples: Adversarial images shown per run, with their LIME explanations
            when the run has them (Figures 5 and 6).
        paths: Explanation paths shown per run (Figure 12).
        max_classes: Classes shown per run in the prototypes-and-criticisms section (a seeded
            sample when the run has more).
        classes_per_page: Classes on one page of that section (the page has a search box).
        pairs: Image pairs shown in the paired probe (every pair is counted in its statistics).
        bias_rows: Rows of the bias-probe table shown, by decreasing effect size (every row is
            computed; the rest are counted).
        thumb_size: Longest side of an embedded thumbnail, in pixels (crops are 224).
        jpeg_quality: JPEG quality of thumbnails (1-95).
        max_images: Most embedded images in the whole report.
        max_image_bytes: Most bytes of embedded images (before base64) in the whole report.
        seed: Seed of every sample.
    """

    examples: int = 24
    adversarial_examples: int = 12
    paths: int = 6
    max_classes: int = 50
    classes_per_page: int = 10
    pairs: int = 50
    bias_rows: int = 200
    thumb_size: int = 112
    jpeg_quality: int = 85
    max_images: int = 6000
    max_image_bytes: int = 40_000_000
    seed: int = 0

    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "examples": NON_NEGATIVE,
        "adversarial_examples": NON_NEGATIVE,
        "paths": NON_NEGATIVE,
        "max_classes": NON_NEGATIVE,
        "classes_per_page": Interval(int, 1, None),
        "pairs": NON_NEGATIVE,
        "bias_rows": NON_NEGATIVE,
        "thumb_size": Interval(int, 16, None),
        "jpeg_quality": Interval(int, 1, 95),
        "max_images": NON_NEGATIVE,
        "max_image_bytes": NON_NEGATIVE,
        "seed": Interval(int, None, None),
    }
