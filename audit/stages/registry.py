"""The stage protocol and registry: what the model actor runs on every batch, in which order.

A stage is a class registered with :func:`register_stage`, usually a subclass of
:class:`StageBase`. It names its configuration section (``predict``, ``attack``, ...; a section
with ``enabled: false`` leaves the stage out) and the dataclass of that section, the columns it
adds to a batch, the per-image table its rows go to (if any), and what it needs: the actor's
inputs (:data:`INPUTS`) and earlier stages, whose output columns it then finds in the batch.
:meth:`StageRegistry.build` instantiates the enabled stages and orders them so that every stage
runs after what it needs.

The registry finds its stages by itself: the shipped ones (:data:`BUILTIN`), every other module
of the ``audit.stages`` package (so a new stage is one new file there), and the entry points of
the ``imagenet_audit.stages`` group (a stage in a package of its own). A stage whose section is
not one of :class:`~audit.config.AuditConfig`'s fields gets a section of its own in the run
config (``my_stage: {enabled: true, ...}``), built with its ``config_type`` dataclass.

Example:
    >>> from audit.stages.registry import STAGES
    >>> STAGES.names()
    ('predict', 'attack', 'explain', 'image_stats')
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
import torch

from audit.columns import Column, Table
from audit.models import AuditModel

log = logging.getLogger(__name__)

ENTRY_POINTS = "imagenet_audit.stages"
"""The entry-point group of stages that live in packages of their own."""

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
        config_type: The section's dataclass (a :class:`audit.config.checks.Checked`), built from the
            run config's section of that name, or with its defaults when the config has none.
        needs: Inputs (:data:`INPUTS`) and stages that must run before it.
        uses: Stages that run before it when they are enabled, whose outputs it uses if present.
        columns: Every column it may add to a batch, in order.
        table: The per-image table its rows go to (one file per shard, committed with the
            shard), or None when it writes none.
        unit_rows: None for a cheap stage, which runs on the whole batch; for a heavy one
            (LIME), the most rows of one work unit: the actor runs it, and the stages after it,
            on sub-batches of that many of its :meth:`heavy_rows` and hands each unit's rows on
            as soon as they are done, so that one long batch never goes silent (Ray Data fails
            a dataset that emits nothing for ``data.no_progress_timeout_s``). A class attribute
            that an instance may set from its config.
    """

    name: ClassVar[str]
    section: ClassVar[str]
    config_type: ClassVar[type]
    needs: ClassVar[tuple[str, ...]]
    uses: ClassVar[tuple[str, ...]]
    columns: ClassVar[tuple[Column, ...]]
    table: ClassVar[Table | None]
    unit_rows: int | None

    def __init__(self, config: Any, context: StageContext) -> None: ...

    def heavy_rows(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Which rows of ``batch`` (its inputs and the earlier stages' columns) are heavy work,
        a bool mask; the others run together in one call, ahead of the units. Only asked of a
        stage whose ``unit_rows`` is set."""
        ...

    def outputs(self) -> tuple[Column, ...]:
        """The columns it adds with its configuration (a subset of ``columns``, in order)."""
        ...

    def run(self, batch: Mapping[str, np.ndarray], state: dict[str, Any]) -> dict[str, np.ndarray]:
        """Compute its columns for a batch.

        Args:
            batch: The inputs and the columns of the stages that ran before, one row per image.
            state: What stages hand on to later ones beyond columns (the attack's unrounded
                adversarial images, ``state["adversarial"]``); shared by the stages of one batch.
                Every value is row-aligned with ``batch`` (its first axis is the batch's rows, a
                numpy array or a torch tensor), so the actor can retry a stage image by image.

        Returns:
            Its :meth:`outputs` columns, one row per image of ``batch``.
        """
        ...

    @classmethod
    def table_rows(
        cls, batch: Mapping[str, np.ndarray], constants: Mapping[str, object], config: Any
    ) -> pa.Table | None:
        """Rows of :attr:`table` for the predicted images of one shard, on the driver.

        Args:
            batch: The model actors' output rows that were predicted (no ``error``).
            constants: The run's constant columns (``run_id``, ``model``).
            config: The stage's section.

        Returns:
            The rows (any number per image), or None when there are none.
        """
        ...


class StageBase:
    """What most stages share: keeps ``config`` and ``context``, adds every declared column,
    and writes one :attr:`table` row per predicted image from the column declarations.

    A subclass sets ``name``, ``section``, ``config_type``, ``columns`` (and ``table``), and
    implements :meth:`run`.
    """

    name: ClassVar[str]
    section: ClassVar[str]
    config_type: ClassVar[type]
    needs: ClassVar[tuple[str, ...]] = ("image",)
    uses: ClassVar[tuple[str, ...]] = ()
    columns: ClassVar[tuple[Column, ...]] = ()
    table: ClassVar[Table | None] = None
    unit_rows: int | None = None

    def __init__(self, config: Any, context: StageContext) -> None:
        self.config = config
        self.context = context

    def outputs(self) -> tuple[Column, ...]:
        return self.columns

    def heavy_rows(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Every row (a heavy stage that skips some rows cheaply says which it works on)."""
        return np.ones(len(next(iter(batch.values()))), dtype=bool)

    def run(self, batch: Mapping[str, np.ndarray], state: dict[str, Any]) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"stage {self.name!r} does not implement run()")

    @classmethod
    def table_rows(
        cls, batch: Mapping[str, np.ndarray], constants: Mapping[str, object], config: Any
    ) -> pa.Table | None:
        if cls.table is None:
            return None
        return cls.table.from_batch(batch, constants)


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
    """Stage classes by name, in registration order.

    Args:
        builtin: Modules that register the shipped stages, imported on first use and ranked
            first, in this order.
        package: A package every other module of which is imported on first use too (a stage
            dropped in as a new file registers itself); None imports nothing more.
        group: The entry-point group whose entry points (stage classes or modules) are loaded
            on first use; a broken one is logged and skipped.
    """

    def __init__(
        self, builtin: Sequence[str] = (), package: str | None = None, group: str | None = None
    ) -> None:
        self._stages: dict[str, type[Stage]] = {}
        self._builtin = tuple(builtin)
        self._package = package
        self._group = group
        self._loaded = not (self._builtin or package or group)

    def register(self, cls: type[Stage]) -> type[Stage]:
        """Add a stage class (usable as a class decorator); its table joins the store's tables.

        Raises:
            ValueError: a stage of that name is already registered, or its table's name is
                another table's.
        """
        from audit.store import register_table

        if cls.name in self._stages and self._stages[cls.name] is not cls:
            raise ValueError(
                f"A stage named {cls.name!r} is already registered "
                f"({self._stages[cls.name].__qualname__})."
            )
        if getattr(cls, "table", None) is not None:
            register_table(cls.table)  # type: ignore[arg-type]
        self._stages[cls.name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove a stage (and its table, unless a shipped table); for tests and notebooks."""
        from audit.store import unregister_table

        cls = self._stages.pop(name)
        if getattr(cls, "table", None) is not None:
            unregister_table(cls.table.name)  # type: ignore[union-attr]

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin:
            importlib.import_module(module)
        if self._package:
            pkg = importlib.import_module(self._package)
            for info in pkgutil.iter_modules(pkg.__path__, self._package + "."):
                if info.name not in self._builtin:
                    importlib.import_module(info.name)
        if self._group:
            for ep in metadata.entry_points(group=self._group):
                try:
                    found = ep.load()  # a module registers its stages when imported
                    if isinstance(found, type):
                        self.register(found)
                except Exception as exc:  # a broken plugin must not stop the run
                    log.warning("Skipping the stage plugin %r: %s", ep.name, exc)

    def classes(self) -> list[type[Stage]]:
        """The stage classes: built-in ones in :data:`BUILTIN` order (whichever module was
        imported first), then the others in registration order."""
        self._load()
        rank = {m: i for i, m in enumerate(self._builtin)}
        return sorted(self._stages.values(), key=lambda c: rank.get(c.__module__, len(rank)))

    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes())

    def get(self, name: str) -> type[Stage]:
        """The stage class called ``name``.

        Raises:
            ValueError: no stage has that name; the message lists the registered ones.
        """
        self._load()
        if name not in self._stages:
            raise ValueError(f"Unknown stage {name!r}. Valid stages: {', '.join(self._stages)}.")
        return self._stages[name]

    def by_section(self, section: str) -> type[Stage] | None:
        """The stage that reads config section ``section``, or None."""
        return next((c for c in self.classes() if c.section == section), None)

    def sections(self, cfg: Any) -> dict[str, Any]:
        """Every registered stage's section of the run config ``cfg`` (an
        :class:`~audit.config.AuditConfig`): its field, else its plug-in section, else the
        section's defaults."""
        out = {}
        for cls in self.classes():
            found = cfg.section(cls.section)
            out[cls.section] = found if found is not None else cls.config_type()
        return out

    def enabled(
        self, sections: Mapping[str, Any], classes: Sequence[type[Stage]] | None = None
    ) -> list[type[Stage]]:
        """The stage classes whose sections are enabled, in dependency order.

        Args:
            sections: Configuration sections by name (``{"predict": PredictConfig(...), ...}``);
                every stage's section must be there.
            classes: The stage classes to consider (the driver's, handed to a worker that may
                not have imported a plug-in); None means every registered one.

        Raises:
            ValueError: a section is missing, or :func:`dependency_order` refuses the stages.
        """
        enabled = []
        for cls in self.classes() if classes is None else classes:
            if cls.section not in sections:
                raise ValueError(
                    f"Stage {cls.name!r} reads the config section {cls.section!r}, "
                    f"which is not among {sorted(sections)}."
                )
            if getattr(sections[cls.section], "enabled", True):
                enabled.append(cls)
        return dependency_order(enabled)

    def build(
        self,
        sections: Mapping[str, Any],
        context: StageContext,
        classes: Sequence[type[Stage]] | None = None,
    ) -> list[Stage]:
        """The :meth:`enabled` stages, instantiated with their sections and ``context``."""
        return [cls(sections[cls.section], context) for cls in self.enabled(sections, classes)]


STAGES = StageRegistry(BUILTIN, package="audit.stages", group=ENTRY_POINTS)
"""The registry the model actor runs."""

register_stage = STAGES.register
