"""The ``criticism`` section: per-class prototypes and criticisms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from audit.config.checks import (
    BOOL,
    NON_NEGATIVE,
    SEED,
    Checked,
    FieldRules,
    Interval,
    Items,
    Options,
)


def selection_methods() -> tuple[str, ...]:
    """The registered selectors' names, sorted: the valid ``methods`` and their default.

    Imported when called, not with this module: the selectors import the config.
    """
    from audit.criticism.selectors import selector_names

    return selector_names()


class Solver(str, Enum):
    GREEDY = "greedy"
    SIEVE = "sieve"


@dataclass(frozen=True)
class CriticismConfig(Checked):
    """Per-class prototypes and criticisms (Stock & Cisse 2018, section 3.3), one Ray task a class.

    Attributes:
        enabled: Run the stage and write the ``selections`` table.
        methods: Which selectors run, by their registered names (default: every registered
            one, sorted; :mod:`audit.criticism.selectors`). ``adversarial`` is skipped when the
            attack is off and ``mmd_critic`` when embeddings are off (the manifest says so).
        n_prototypes: Prototypes per class and method.
        n_criticisms: Criticisms per class and method.
        proto_threshold: Probability baseline: prototypes have p(label) above this.
        crit_threshold: Probability baseline: criticisms have p(label) below this.
        mmd_solver: ``greedy`` (the default: a class of ImageNet's validation set has 50 images,
            where greedy is cheap and closer to the optimum) or ``sieve`` (one streaming pass
            with O(m log m / eps) candidates, for classes far larger than memory allows).
        mmd_gamma: RBF kernel width; unset means the median heuristic per class.
        mmd_lambda: Weight of the log-determinant diversity term of criticisms (the paper: 1e-5).
        sieve_eps: Grid ratio of the sieve's thresholds (its guarantee is 1/2 - eps).
        seed: Seed of the random baseline and of the sieve's pass order.
    """

    enabled: bool = True
    methods: tuple[str, ...] = field(default_factory=selection_methods)
    n_prototypes: int = 3
    n_criticisms: int = 3
    proto_threshold: float = 0.9
    crit_threshold: float = 0.1
    mmd_solver: Solver = Solver.GREEDY
    mmd_gamma: float | None = None
    mmd_lambda: float = 1e-5
    sieve_eps: float = 0.1
    seed: int = 0

    SECTION: ClassVar[str | None] = "criticism"
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "enabled": BOOL,
        "methods": Items(Options(selection_methods)),
        "n_prototypes": NON_NEGATIVE,
        "n_criticisms": NON_NEGATIVE,
        "proto_threshold": Interval(float, 0, 1),
        "crit_threshold": Interval(float, 0, 1),
        "mmd_solver": Options(Solver),
        "mmd_gamma": (Interval(float, 0, None, closed="neither"), None),
        "mmd_lambda": Interval(float, 0, None),
        "sieve_eps": Interval(float, 0, 1, closed="neither"),
        "seed": SEED,
    }
