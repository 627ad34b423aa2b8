"""The stage protocol and registry: what the model actor runs on every batch, in which order.

A stage is a class registered with :func:`register_stage`. It names its configuration section
(``predict``, ``attack``, ...; a section with ``enabled: false`` leaves the stage out), the
columns it adds to a batch (declared in ``audit/stages/<stage>_table.py``) and what it needs:
the actor's inputs (:data:`INPUTS`) and earlier stages, whose output columns it then finds in
the batch. :meth:`StageRegistry.build` instantiates the enabled stages and orders them so that
every stage runs after what it needs.

Example:
    >>> from audit.stages.registry import STAGES
    >>> STAGES.names()
    ('predict', 'attack', 'explain')
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from audit.columns import Column
from audit.models import AuditModel

INPUTS = ("image", "label", "segments")
"""What every stage may read from the batch without an earlier stage: the decoded crops
``(n, h, w, 3) uint8``, the labels ``(n,) int64`` (-1 unknown) and the super-pixel maps as
PNG bytes (empty where the row is not explained)."""

BUILTIN = ("audit.stages.predict", "audit.stages.attack", "audit.stages.explain")
"""Modules that register the shipped stages, imported on the registry's first use."""


@dataclass(frozen=True)
class StageContext:
    """What every stage of one model actor shares.

    Attributes:
        model: The model, in eval mode, on ``device``.
        device: Where it runs.
        bf16: Autocast to bfloat16 on CUDA.
        sizes: The named per-row sizes of the columns (``k`` for top-k, ``dim`` for the kept
            embedding, 0 when it is not kept).
    """

    model: AuditModel
    device: torch.device
    bf16: bool
    sizes: Mapping[str, int]


class Stage(Protocol):
    """One step of the model actor.

    Attributes:
        name: The stage's name, what other stages list in ``needs``.
        section: Its configuration section; the section's ``enabled`` field (when it has one)
            says whether the stage runs.
        needs: Inputs (:data:`INPUTS`) and stages that must run before it.
        uses: Stages that run before it when they are enabled, whose outputs it uses if present.
        columns: Every column it may add to a batch, in order.
    """

    name: ClassVar[str]
    section: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]
    uses: ClassVar[tuple[str, ...]]
    columns: ClassVar[tuple[Column, ...]]

    def __init__(self, config: Any, context: StageContext) -> None: ...

    def outputs(self) -> tuple[Column, ...]:
        """The columns it adds with its configuration (a subset of ``columns``, in order)."""
        ...

    def run(self, batch: Mapping[str, np.ndarray], state: dict[str, Any]) -> dict[str, np.ndarray]:
        """Compute its columns for a batch.

        Args:
            batch: The inputs and the columns of the stages that ran before, one row per image.
            state: What stages hand on to later ones beyond columns (the attack's unrounded
                adversarial images, ``state["adversarial"]``); shared by the stages of one batch.

        Returns:
            Its :meth:`outputs` columns, one row per image of ``batch``.
        """
        ...


def dependency_order(stages: Sequence[type[Stage]]) -> list[type[Stage]]:
    """``stages`` ordered so that each runs after its ``needs`` and its enabled ``uses``.

    Ties keep the given order.

    Raises:
        ValueError: a stage needs something that is neither an input nor among ``stages``, or
            the stages' needs form a cycle.
    """
    by_name = {s.name: s for s in stages}
    for s in stages:
        for need in s.needs:
            if need not in by_name and need not in INPUTS:
                raise ValueError(
                    f"Stage {s.name!r} needs {need!r}, which is neither an input "
                    f"{list(INPUTS)} nor an enabled stage {list(by_name)}."
                )
    before = {s.name: [d for d in (*s.needs, *s.uses) if d in by_name] for s in stages}
    ordered: list[type[Stage]] = []
    done: set[str] = set()
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = [*visiting[visiting.index(name) :], name]
            raise ValueError(f"Stages depend on each other in a cycle: {' -> '.join(cycle)}.")
        visiting.append(name)
        for dep in before[name]:
            visit(dep)
        visiting.pop()
        done.add(name)
        ordered.append(by_name[name])

    for s in stages:
        visit(s.name)
    return ordered


class StageRegistry:
    """Stage classes by name, in registration order."""

    def __init__(self, builtin: Sequence[str] = ()) -> None:
        self._stages: dict[str, type[Stage]] = {}
        self._builtin = tuple(builtin)
        self._loaded = not self._builtin

    def register(self, cls: type[Stage]) -> type[Stage]:
        """Add a stage class (usable as a class decorator).

        Raises:
            ValueError: a stage of that name is already registered.
        """
        if cls.name in self._stages:
            raise ValueError(
                f"A stage named {cls.name!r} is already registered "
                f"({self._stages[cls.name].__qualname__})."
            )
        self._stages[cls.name] = cls
        return cls

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtin:
                importlib.import_module(module)

    def _classes(self) -> list[type[Stage]]:
        """The stage classes: built-in ones in :data:`BUILTIN` order (whichever module was
        imported first), then the others in registration order."""
        self._load()
        rank = {m: i for i, m in enumerate(self._builtin)}
        return sorted(self._stages.values(), key=lambda c: rank.get(c.__module__, len(rank)))

    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self._classes())

    def get(self, name: str) -> type[Stage]:
        """The stage class called ``name``.

        Raises:
            ValueError: no stage has that name; the message lists the registered ones.
        """
        self._load()
        if name not in self._stages:
            raise ValueError(f"Unknown stage {name!r}. Valid stages: {', '.join(self._stages)}.")
        return self._stages[name]

    def build(self, sections: Mapping[str, Any], context: StageContext) -> list[Stage]:
        """The enabled stages, instantiated with their sections, in dependency order.

        Args:
            sections: Configuration sections by name (``{"predict": PredictConfig(...), ...}``);
                every registered stage's section must be there.
            context: What the stages share.

        Raises:
            ValueError: a section is missing, or :func:`dependency_order` refuses the stages.
        """
        enabled = []
        for cls in self._classes():
            if cls.section not in sections:
                raise ValueError(
                    f"Stage {cls.name!r} reads the config section {cls.section!r}, "
                    f"which is not among {sorted(sections)}."
                )
            if getattr(sections[cls.section], "enabled", True):
                enabled.append(cls)
        return [cls(sections[cls.section], context) for cls in dependency_order(enabled)]


STAGES = StageRegistry(BUILTIN)
"""The registry the model actor runs."""

register_stage = STAGES.register
