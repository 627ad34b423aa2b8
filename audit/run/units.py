"""Whether the model actors' work units are handed on one by one (``data.flush_units``).

The actor yields the rows of each work unit of a heavy stage (LIME) as soon as they are done
(:class:`audit.model_actor.ModelActor`). Ray Data gathers a task's yields into blocks of
``target_max_block_size`` (128 MiB) and hands a block on only when it is full or the task ends,
and it has no per-operator setting: a dataset flushes every yield only with a block size so
small that every block, the decode tasks' too, is cut to about one row. That costs about 75 ms
per image on a 2-core machine (the demo's pass takes twice as long), nothing next to a unit of
LIME on a real model on a CPU, but far too much on a GPU or for the demo's small model.

So ``auto`` flushes when one actor batch's heavy work may come near Ray Data's no-progress
timeout: on a CPU, when a batch's estimated heavy work exceeds :data:`FLUSH_FRACTION` of
``data.no_progress_timeout_s``. The estimate is the stage's forward passes per heavy row times
one timed forward of the model on the driver, for a whole batch of heavy rows; a heavy stage
that does not say how many forward passes it makes is always long. On a GPU a batch of LIME
takes seconds, so ``auto`` never flushes there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from audit.config.data import FlushUnits

log = logging.getLogger(__name__)

FLUSH_FRACTION = 0.25
"""``auto`` flushes when a batch's estimated heavy work exceeds this share of the timeout."""

UNIT_BLOCK_BYTES = 1
"""``target_max_block_size`` of a dataset that flushes: every yield is over it, so Ray Data
hands each one on at once instead of gathering them up to 128 MiB (its ``BlockOutputBuffer``);
blocks are then cut to about one row."""

PROBE_BATCH = 8
"""Images in the timed forward pass of the estimate."""


def heavy_forwards(stages: Sequence[Any], sections: dict[str, Any]) -> float | None:
    """Forward passes per heavy row of the enabled heavy stages, summed; None when no stage is
    heavy, ``inf`` when a heavy stage does not say (``forwards_per_row``)."""
    total: float | None = None
    for stage in stages:
        if getattr(stage, "unit_rows", None) is None:
            continue
        count = getattr(stage, "forwards_per_row", None)
        per_row = float("inf") if count is None else float(count(sections[stage.section]))
        total = per_row + (total or 0.0)
    return total


def seconds_per_image(module: torch.nn.Module, crop: tuple[int, int]) -> float:
    """One timed forward of ``module`` on a grey batch at the crop size, per image (CPU)."""
    x = torch.zeros(PROBE_BATCH, 3, *crop)
    with torch.inference_mode():
        module(x[:1])  # the first call pays for lazy set-up
        start = time.perf_counter()
        module(x)
    return (time.perf_counter() - start) / PROBE_BATCH


def should_flush(plan: Any, timer: Callable[[], float] | None = None) -> bool:
    """Whether the pass of ``plan`` hands on every work unit at once (see the module).

    Args:
        plan: The :class:`~audit.run.plan.RunPlan`.
        timer: Seconds per image of one forward pass; by default a timed forward of the plan's
            model on the driver (asked only when the estimate is needed).
    """
    mode = FlushUnits(plan.cfg.data.flush_units)
    forwards = heavy_forwards(plan.stages, plan.sections)
    if mode is FlushUnits.NEVER or forwards is None:
        return False
    if mode is FlushUnits.ALWAYS:
        return True
    timeout = float(plan.cfg.data.no_progress_timeout_s)
    if plan.device != "cpu" or timeout < 0:
        return False
    if forwards == float("inf"):
        return True
    per_image = (
        timer() if timer else seconds_per_image(plan.model.module, plan.model.transform.crop)
    )
    estimate = forwards * per_image * plan.cfg.predict.batch_size
    flush = estimate > FLUSH_FRACTION * timeout
    log.debug("heavy work per actor batch about %.0f s; flush units: %s", estimate, flush)
    return flush
