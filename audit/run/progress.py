"""Per-stage progress of the pass, counted on the driver as the model actors' batches arrive.

Each output batch says, per row and enabled stage, whether the stage worked on the row and its
share of the stage's time (``stage_done``, ``stage_seconds``: :mod:`audit.model_actor`). From
them :class:`StageProgress` keeps, per stage (``decode`` first, then the actor's stages in
order), the images done, the actor time spent, and a rate over the last :data:`WINDOW_S`
seconds: a rate since the run started would count the minutes of start-up and of the first,
heavier shards, and the time left computed from it would be off by that much.

Example::

    progress = StageProgress(["predict", "attack", "explain"], pending=301, heavy={"explain"})
    progress.add(batch, fresh)           # each output batch, with its rows that are new
    [s.to_json() for s in progress.states()]  # done, total, images_per_second, eta_seconds...
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

WINDOW_S = 20.0
"""Seconds of recent arrivals a stage's rate is computed over."""

DECODE = "decode"


@dataclass(frozen=True)
class StageState:
    """One stage's progress at one moment.

    Attributes:
        name: ``decode`` or a stage's name (``predict``, ``attack``, ``explain``, a plug-in's).
        done: Images the stage worked on so far in this attempt (for ``decode``: every image
            that reached the actors, decoded or not).
        total: Images it will work on in this attempt (the images to stream, less those that
            arrived having failed before it); None where that is known only as the run goes (a
            heavy stage such as ``explain`` picks its images after prediction).
        seconds: Wall seconds since the stage's first image.
        work_seconds: Actor seconds the stage spent (summed over actors; 0 for ``decode``,
            whose time is the decode tasks').
        rate: Images per second over the last :data:`WINDOW_S` seconds (None before two
            arrivals).
    """

    name: str
    done: int
    total: int | None
    seconds: float
    work_seconds: float
    rate: float | None

    @property
    def finished(self) -> bool:
        return self.total is not None and self.done >= self.total

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the recent rate; None without a total or a rate."""
        if self.total is None or not self.rate:
            return None
        return max(self.total - self.done, 0) / self.rate

    def to_json(self) -> dict[str, object]:
        """The manifest's entry for the stage (``stages.<name>``)."""
        eta = self.eta_seconds
        return {
            "state": "done" if self.finished else "running",
            "done": self.done,
            "total": self.total,
            "seconds": round(self.seconds, 3),
            "work_seconds": round(self.work_seconds, 3),
            "images_per_second": round(self.rate, 3) if self.rate else None,
            "eta_seconds": round(eta, 1) if eta is not None and not self.finished else None,
        }


@dataclass
class _Stage:
    name: str
    total: int | None
    done: int = 0
    work: float = 0.0
    first: float | None = None
    recent: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, count: int, work: float, skipped: int = 0) -> None:
        """``count`` images done now, with ``work`` actor seconds; ``skipped`` arrived without
        this stage's work (failed before it): they leave its total."""
        if self.total is not None:
            self.total -= skipped
        if count <= 0:
            return
        self.done += count
        self.work += work
        if self.first is None:  # the first arrival starts the clock: it is not a rate yet
            self.first = now
        self.recent.append((now, self.done))
        while len(self.recent) > 2 and now - self.recent[0][0] > WINDOW_S:
            self.recent.popleft()  # the two latest arrivals stay, however old

    def state(self, now: float) -> StageState:
        rate = None  # from the first arrival in the window, so not before a second one
        if len(self.recent) >= 2:
            (t0, d0), (t1, d1) = self.recent[0], self.recent[-1]
            span = max(now, t1) - t0
            rate = (d1 - d0) / span if span > 0 else None
        seconds = now - self.first if self.first is not None else 0.0
        return StageState(self.name, self.done, self.total, seconds, self.work, rate)


class StageProgress:
    """Counts every stage's work as batches arrive (see the module).

    Args:
        stages: The actor's enabled stages' names, in the order of its ``stage_*`` columns.
        pending: Images this attempt streams (the total of ``decode`` and the cheap stages).
        heavy: Stages whose total is not known up front (they choose their rows).
        clock: Seconds, monotonic (a test's fake clock).
    """

    def __init__(
        self,
        stages: Sequence[str],
        pending: int,
        heavy: set[str] | frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.names = list(stages)
        self.clock = clock
        self._stages = {DECODE: _Stage(DECODE, pending)}
        for name in self.names:
            self._stages[name] = _Stage(name, None if name in heavy else pending)

    def add(self, batch: Mapping[str, np.ndarray], fresh: np.ndarray | None = None) -> None:
        """Count one output batch; ``fresh`` (a bool mask) leaves out rows delivered before."""
        n = len(batch["image_id"])
        keep = np.ones(n, dtype=bool) if fresh is None else np.asarray(fresh, dtype=bool)
        now = self.clock()
        self._stages[DECODE].add(now, int(keep.sum()), 0.0)
        done = batch.get("stage_done")
        seconds = batch.get("stage_seconds")
        if done is None or seconds is None:
            return
        done = np.asarray(done)[keep]
        seconds = np.asarray(seconds, dtype=np.float64)[keep]
        arrived = len(done)
        for k, name in enumerate(self.names):
            count = int(done[:, k].sum())
            self._stages[name].add(now, count, float(seconds[:, k].sum()), arrived - count)

    def states(self) -> list[StageState]:
        """Every stage's state now, ``decode`` first."""
        now = self.clock()
        return [s.state(now) for s in self._stages.values()]

    def state(self, name: str) -> StageState | None:
        stage = self._stages.get(name)
        return stage.state(self.clock()) if stage is not None else None
