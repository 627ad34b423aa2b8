"""Settings of the human studies: what an export asks, how answers are filtered, the k-of-n rule.

Frozen dataclasses checked when built, by the rules and the one-line
:class:`~audit.config.ConfigError` message of :mod:`audit.config.checks` (scikit-learn's style:
``The 'k' parameter of AgreementRule must be an int in [1, 5]. Got 6 instead.``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from audit.config.checks import (
    BOOL,
    NON_NEGATIVE,
    POSITIVE,
    STRING,
    Checked,
    ConfigError,
    FieldRules,
    Interval,
    Items,
    Options,
    Text,
)


class Study(str, Enum):
    """The three studies of Stock & Cisse (2018), section 3."""

    MISCLASSIFIED = "misclassified"  # 3.1: is the predicted class relevant? yes/no
    ADVERSARIAL = "adversarial"  # 3.2: whole adversarial image vs its LIME explanation
    ASSIGNMENT = "assignment"  # 3.3: assign a target image to one of 6 classes


class Subset(str, Enum):
    """Which images the misclassified study asks about."""

    TOP1_ERRORS = "top1_errors"  # top-1 prediction differs from the label
    TOP5_ERRORS = "top5_errors"  # the label is not among the top 5


class Shown(str, Enum):
    """Which predicted classes the misclassified study shows with an image."""

    TOP1 = "top1"  # the top-1 prediction
    TOP5 = "top5"  # the five top predictions (yes = at least one of them is relevant)


ASSIGNMENT_CONDITIONS: dict[str, tuple[str, int, int]] = {
    # condition -> (selection method, prototypes, criticisms) shown for each class
    "adversarial_6p": ("adversarial", 6, 0),
    "adversarial_3p3c": ("adversarial", 3, 3),
    "mmd_critic_6p": ("mmd_critic", 6, 0),
    "mmd_critic_3p3c": ("mmd_critic", 3, 3),
    "probability_6p": ("probability", 6, 0),
    "probability_3p3c": ("probability", 3, 3),
    "random": ("random", 3, 3),  # random prototypes and criticisms are disjoint random draws
}

DEFAULT_QUESTIONS: dict[str, str] = {
    "misclassified/top1": "Is the class '{classes}' relevant for this image?",
    "misclassified/top5": "Is at least one of these classes relevant for this image: {classes}?",
    "adversarial": "Is the class '{classes}' relevant for this image?",
    "assignment": "Which group of images does the image on top belong to?",
}


@dataclass(frozen=True)
class ExportConfig(Checked):
    """What one exported batch asks, of how many raters.

    Attributes:
        study: Which study.
        batch: Batch name; the batch folder is ``<study>-<batch>``. Letters, digits, ``_``, ``-``.
        raters_per_item: Raters asked per item (MTurk's "assignments per task").
        question: Question text; ``{classes}`` is replaced by the class name(s) shown. ``None``
            takes the study's entry of ``DEFAULT_QUESTIONS``.
        seed: Seeds every shuffle and draw of the export.
        max_items: Keep a seeded random sample of at most this many items (misclassified and
            adversarial studies); ``None`` keeps all.
        subset: Misclassified study: top-1 or top-5 errors.
        shown: Misclassified study: show the top-1 or the top-5 predicted classes (top 5 only
            with ``subset`` top-5 errors, whose top 5 never holds the label).
        explanation_features: Adversarial study: super-pixels visible in the explanation image.
        conditions: Assignment study: names from ``ASSIGNMENT_CONDITIONS``.
        questions_per_condition: Assignment study: questions drawn per condition.
        classes_per_question: Assignment study: classes (rows of images) per question.
        show_class_names: Assignment study: print class names above the rows.
        image_base_url: Public URL prefix under which the batch's ``images/`` folder will be
            served (MTurk needs https). ``None`` writes the storage URLs of the images instead.
    """

    study: Study
    batch: str = "batch1"
    raters_per_item: int = 5
    question: str | None = None
    seed: int = 0
    max_items: int | None = None
    subset: Subset = Subset.TOP1_ERRORS
    shown: Shown = Shown.TOP1
    explanation_features: int = 8
    conditions: tuple[str, ...] = tuple(ASSIGNMENT_CONDITIONS)
    questions_per_condition: int = 20
    classes_per_question: int = 6
    show_class_names: bool = False
    image_base_url: str | None = None

    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "study": Options(Study),
        "batch": Text("a non-empty name of letters, digits, '_' and '-'", r"[\w-]+"),
        "raters_per_item": POSITIVE,
        "question": (Text("a non-empty string"), None),
        "seed": NON_NEGATIVE,
        "max_items": (POSITIVE, None),
        "subset": Options(Subset),
        "shown": Options(Shown),
        "explanation_features": POSITIVE,
        "conditions": Items(
            Options(tuple(ASSIGNMENT_CONDITIONS)),
            f"a list of distinct names from {sorted(ASSIGNMENT_CONDITIONS)}",
            min_len=1,
            unique=True,
        ),
        "questions_per_condition": POSITIVE,
        "classes_per_question": Interval(int, 2, None),
        "show_class_names": BOOL,
        "image_base_url": (STRING, None),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shown is Shown.TOP5 and self.subset is not Subset.TOP5_ERRORS:
            raise ConfigError(
                "The 'shown' parameter of ExportConfig may be 'top5' only with subset "
                "'top5_errors': a top-1 error's top 5 can hold its ground-truth label, which "
                f"raters must not be shown. Got subset {self.subset.value!r} instead."
            )

    @property
    def name(self) -> str:
        """The batch folder's name, ``<study>-<batch>``."""
        return f"{self.study.value}-{self.batch}"

    def question_text(self) -> str:
        if self.question is not None:
            return self.question
        if self.study is Study.MISCLASSIFIED:
            return DEFAULT_QUESTIONS[f"misclassified/{self.shown.value}"]
        return DEFAULT_QUESTIONS[self.study.value]


@dataclass(frozen=True)
class TimeFilter(Checked):
    """Keep answers whose ``WorkTimeInSeconds`` lies in ``[min_seconds, max_seconds]``.

    The paper keeps answers given in 20 s to 3 min; both ends are inclusive.
    """

    min_seconds: float = 20.0
    max_seconds: float = 180.0

    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "min_seconds": Interval(float, 0, None),
        "max_seconds": Interval(float, 0, None, finite=False),  # inf: no upper limit
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_seconds > self.max_seconds:
            raise ConfigError(
                "The time filter needs 0 <= min_seconds <= max_seconds. "
                f"Got min_seconds={self.min_seconds} and max_seconds={self.max_seconds} instead."
            )

    def verdict(self, seconds: float) -> str:
        """``kept``, ``too_fast`` or ``too_slow``."""
        if seconds < self.min_seconds:
            return "too_fast"
        if seconds > self.max_seconds:
            return "too_slow"
        return "kept"


@dataclass(frozen=True)
class AgreementRule(Checked):
    """An item counts as positive when at least ``k`` of its first ``n`` kept answers say yes.

    ``n`` is the number of raters per item; an item with more kept answers uses the first ``n``
    in file order, one with fewer is judged on those it has (it then needs ``k`` yes all the same).
    """

    k: int = 4
    n: int = 5

    RULES: ClassVar[Mapping[str, FieldRules]] = {"k": POSITIVE, "n": POSITIVE}

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_field("k", Interval(int, 1, self.n))  # k of the n answers

    def positive(self, yes: int) -> bool:
        return yes >= self.k
