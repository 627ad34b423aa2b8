"""Settings of the human studies: what an export asks, how answers are filtered, the k-of-n rule.

Frozen dataclasses validated at construction, with one-line :class:`~audit.config.ConfigError`
messages in scikit-learn's style.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from audit.config import ConfigError


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


def _positive_int(owner: str, name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"The {name!r} parameter of {owner} must be an integer >= {minimum}. "
            f"Got {value!r} instead."
        )


@dataclass(frozen=True)
class ExportConfig:
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

    def __post_init__(self) -> None:
        owner = "ExportConfig"
        object.__setattr__(self, "study", Study(self.study))
        object.__setattr__(self, "subset", Subset(self.subset))
        object.__setattr__(self, "shown", Shown(self.shown))
        if not self.batch or not all(c.isalnum() or c in "_-" for c in self.batch):
            raise ConfigError(
                f"The 'batch' parameter of {owner} must be a non-empty name of letters, digits, "
                f"'_' and '-'. Got {self.batch!r} instead."
            )
        _positive_int(owner, "raters_per_item", self.raters_per_item)
        _positive_int(owner, "seed", self.seed, minimum=0)
        if self.max_items is not None:
            _positive_int(owner, "max_items", self.max_items)
        _positive_int(owner, "explanation_features", self.explanation_features)
        _positive_int(owner, "questions_per_condition", self.questions_per_condition)
        _positive_int(owner, "classes_per_question", self.classes_per_question, minimum=2)
        conditions = tuple(self.conditions)
        unknown = [c for c in conditions if c not in ASSIGNMENT_CONDITIONS]
        if unknown or not conditions or len(set(conditions)) != len(conditions):
            raise ConfigError(
                f"The 'conditions' parameter of {owner} must list distinct names from "
                f"{sorted(ASSIGNMENT_CONDITIONS)}. Got {list(conditions)} instead."
            )
        object.__setattr__(self, "conditions", conditions)
        if self.shown is Shown.TOP5 and self.subset is not Subset.TOP5_ERRORS:
            raise ConfigError(
                f"The 'shown' parameter of {owner} may be 'top5' only with subset "
                f"'top5_errors': a top-1 error's top 5 can hold its ground-truth label, which "
                f"raters must not be shown. Got subset {self.subset.value!r} instead."
            )
        if self.question is not None and not self.question.strip():
            raise ConfigError(f"The 'question' parameter of {owner} must not be empty.")

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
class TimeFilter:
    """Keep answers whose ``WorkTimeInSeconds`` lies in ``[min_seconds, max_seconds]``.

    The paper keeps answers given in 20 s to 3 min; both ends are inclusive.
    """

    min_seconds: float = 20.0
    max_seconds: float = 180.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_seconds <= self.max_seconds:
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
class AgreementRule:
    """An item counts as positive when at least ``k`` of its first ``n`` kept answers say yes.

    ``n`` is the number of raters per item; an item with more kept answers uses the first ``n``
    in file order, one with fewer is judged on those it has (it then needs ``k`` yes all the same).
    """

    k: int = 4
    n: int = 5

    def __post_init__(self) -> None:
        _positive_int("AgreementRule", "n", self.n)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= self.n:
            raise ConfigError(
                f"The 'k' parameter of AgreementRule must be an integer in [1, n={self.n}]. "
                f"Got {self.k!r} instead."
            )

    def positive(self, yes: int) -> bool:
        return yes >= self.k
