"""The selector protocol, in scikit-learn's shape (no Ray here).

A selector is a dataclass: its fields are its parameters (checked when it is built, one-line
``ValueError`` otherwise), :meth:`Selector.fit` takes one class's :class:`ClassFrame` and sets
the learned attributes, which end in ``_``:

- ``prototypes_`` / ``criticisms_``: image ids, best first;
- ``prototype_scores_`` / ``criticism_scores_``: what they were ranked by, same length.

Class attributes say what the pipeline needs to know without running it: ``name`` (its
registry key, the method name of ``criticism.methods``) and ``requires`` (the table
columns :meth:`fit` reads from the frame). Every selector first sorts the frame by image id, so
the result never depends on the order rows arrive in; ties are broken by image id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from audit.config import NON_NEGATIVE, CriticismConfig, FieldRules, check
from audit.criticism.frame import ClassFrame, Column

S = TypeVar("S", bound="Selector")


class _Learned:
    """The learned attributes (declared outside the dataclass so that they are no parameters)."""

    prototypes_: list[str]
    criticisms_: list[str]
    prototype_scores_: list[float]
    criticism_scores_: list[float]


@dataclass
class Selector(_Learned):
    """Base of the selectors: ``n_prototypes`` / ``n_criticisms`` at most, per class.

    Subclasses add their parameters as fields, with their rules in ``PARAMETERS``, and
    implement :meth:`fit` and :meth:`from_config`.
    """

    n_prototypes: int = 3
    n_criticisms: int = 3

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[Column, ...]] = ()
    PARAMETERS: ClassVar[Mapping[str, FieldRules]] = {
        "n_prototypes": NON_NEGATIVE,
        "n_criticisms": NON_NEGATIVE,
    }

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            rules = self.PARAMETERS[f.name]
            rules = rules if isinstance(rules, tuple) else (rules,)
            value = check(f.name, getattr(self, f.name), *rules, owner=type(self).__name__)
            setattr(self, f.name, value)

    @classmethod
    def from_config(cls: type[S], cfg: CriticismConfig, label: int) -> S:
        """The selector the criticism stage runs on class ``label`` with ``cfg``."""
        raise NotImplementedError

    def fit(self: S, frame: ClassFrame) -> S:
        """Select among ``frame``'s images; returns ``self`` with the learned attributes set.

        A frame with fewer images than asked for gives what it has (possibly nothing).
        """
        raise NotImplementedError

    def disjoint_roles(self) -> bool:
        """Whether this selector promises that no image is both a prototype and a criticism."""
        return True

    def get_params(self) -> dict[str, Any]:
        """The parameters, by name (scikit-learn's ``get_params``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _set_result(
        self: S,
        prototypes: tuple[list[str], list[float]],
        criticisms: tuple[list[str], list[float]],
    ) -> S:
        self.prototypes_, self.prototype_scores_ = prototypes
        self.criticisms_, self.criticism_scores_ = criticisms
        return self


def rank(
    ids: np.ndarray, scores: np.ndarray, k: int, descending: bool
) -> tuple[list[str], list[float]]:
    """The ``k`` best ids by score (ties: smaller image id first); ``ids`` are sorted already."""
    key = -scores if descending else scores
    order = np.lexsort((np.arange(len(ids)), key))[:k]
    return [str(ids[i]) for i in order], [float(scores[i]) for i in order]
