"""Ray Data adapters: the stateless decode step and the model-holding actor.

Rows flow through the pass as numpy batches with these columns:

- after :func:`decode_batch`: ``image_id``, ``uri``, ``label`` (int64, -1 unknown), ``image``
  (``(n, crop_h, crop_w, 3) uint8`` at the model's crop size, zeros where decoding failed), ``error`` (str, ``""`` when fine),
  ``stage`` (str, where it failed);
- after :class:`ModelActor`: the same without ``image``, plus the columns of the enabled stages
  (:mod:`audit.stages.registry`: ``predict``, then ``attack`` and ``explain`` when enabled, then
  optional and plug-in stages), as the stages declare them. Rows whose ``error`` is set carry
  zeros there (``""`` or ``b""`` in string and bytes columns); a stage that failed on a row
  sets its ``error`` and its ``stage`` to the stage's name. Two more columns say what each
  enabled stage did, for progress (never a table): ``stage_done`` (``(n, stages) uint8``, 1
  where the stage worked on the row: every row it ran on, but only the heavy rows of a heavy
  stage) and ``stage_seconds`` (``(n, stages) float32``, the row's share of each stage call's
  time), columns in the order of ``ModelActor.stages``.

Errors travel with the data instead of being raised, so one bad file never fails a batch and
every input comes out exactly once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from audit.columns import Column
from audit.config import PredictConfig
from audit.data.decode import ImageLoadError, decode_image, load_image
from audit.data.segments import encode_segments
from audit.models import STANDARD, AuditModel, EvalTransform
from audit.stages.explain import segment
from audit.stages.registry import INPUTS, STAGES, Stage, StageContext
from audit.storage_errors import TransientStorageError, describe, is_transient, secret_values

log = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]

PROGRESS_COLUMNS = ("stage_done", "stage_seconds")
"""The output columns that say how the work ran (for progress), not what it found."""


def decode_batch(
    batch: dict[str, np.ndarray],
    max_pixels: int,
    storage_options: Mapping[str, Any] | None = None,
    segmentation: str | None = None,
    seed: int = 0,
    jpeg_draft: bool = False,
    transform: EvalTransform | dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Read and decode every row of ``batch``; failures of a file become ``error``/``stage``
    values, but a storage outage raises :class:`~audit.storage_errors.TransientStorageError`
    (after :func:`audit.data.decode.read_bytes`'s retries), failing the task and the run, which
    a rerun of the same run id resumes: an outage is not a property of the images.

    ``transform`` is the model's evaluation transform (or its ``to_dict()``); unset means the
    standard one (resize 256, crop 224). ``jpeg_draft`` decodes large JPEGs in PIL's draft mode (``data.jpeg_draft``; see
    :func:`audit.data.decode.decode_image`).

    Rows whose ``explain`` flag is set are also segmented into super-pixels here, in the CPU
    tasks ahead of the model actor, so the device never waits for segmentation; the map travels
    as PNG bytes in ``segments`` (empty for other rows).
    """
    n = len(batch["image_id"])
    if transform is None:
        transform = STANDARD
    elif not isinstance(transform, EvalTransform):
        transform = EvalTransform.from_dict(transform)
    images = np.zeros((n, *transform.crop_hw, 3), dtype=np.uint8)
    errors = np.full(n, "", dtype=object)
    stages = np.full(n, "", dtype=object)
    segments = np.full(n, b"", dtype=object)
    explain = np.asarray(batch.get("explain", np.zeros(n, dtype=bool)), dtype=bool)
    carried = batch.get("data")  # bytes the driver read for inputs workers cannot reach
    for i, uri in enumerate(batch["uri"]):
        try:
            if carried is not None and len(carried[i]):
                images[i] = decode_image(bytes(carried[i]), max_pixels, transform, draft=jpeg_draft)
            else:
                images[i] = load_image(
                    str(uri), max_pixels, storage_options, transform=transform, draft=jpeg_draft
                )
        except ImageLoadError as exc:
            errors[i], stages[i] = exc.reason, exc.stage
            continue
        except TransientStorageError:
            raise  # the storage, not the file: the task (and the run) fails, a rerun resumes
        except Exception as exc:  # an unexpected failure on one file must not sink the batch
            if is_transient(exc):
                raise TransientStorageError(
                    f"reading {uri} failed: {describe(exc, secret_values(storage_options))}"
                ) from exc
            errors[i], stages[i] = f"{type(exc).__name__}: {exc}", "decode"
            continue
        if segmentation and explain[i]:
            try:
                segments[i] = encode_segments(segment(images[i], segmentation, seed=seed))
            except Exception as exc:
                errors[i], stages[i] = f"{type(exc).__name__}: {exc}", "segment"
    return {
        "image_id": batch["image_id"],
        "uri": batch["uri"],
        "label": batch["label"].astype(np.int64),
        "shard": np.asarray(batch.get("shard", np.full(n, -1)), dtype=np.int64),
        "explain": explain,
        "segments": segments,
        "image": images,
        "error": errors,
        "stage": stages,
    }


class ModelActor:
    """Holds one model on one device and runs the enabled stages on batches of decoded images.

    The stages come from :data:`audit.stages.registry.STAGES` (or ``stages``), in dependency
    order, each built with its config section. A stage that raises on a batch is retried image
    by image, so that only the culprits become error rows (stage: that stage's name); they leave
    the batch and the later stages run on the others. A heavy stage (``unit_rows`` set) runs in
    work units, and each finished unit's rows are yielded at once (:meth:`__call__`).

    Args:
        model_ref: An object-store reference to the :class:`~audit.models.AuditModel` the driver
            loaded and validated, so every actor runs exactly those weights and that
            architecture set-up, and worker nodes need no weight cache.
        num_classes: Outputs of the model (top-k is ``min(5, num_classes)``).
        embedding_dim: Size of the penultimate embedding.
        device: ``cuda`` or ``cpu``.
        sections: Every stage's config section by name (``RunPlan.sections``); ``predict``'s
            ``bf16``, ``embeddings`` and ``cpu_threads`` set up the actor. Missing sections take
            their defaults.
        stages: The stage classes to run (the driver's ``RunPlan.stages``, so that a plug-in
            the driver imported runs on workers that did not); None means the registry's.
    """

    def __init__(
        self,
        model_ref: Any,
        num_classes: int,
        embedding_dim: int,
        device: str,
        sections: Mapping[str, Any] | None = None,
        stages: Sequence[type[Stage]] | None = None,
    ) -> None:
        import ray

        pool = list(STAGES.classes() if stages is None else stages)
        given = dict(sections or {})
        self.sections = {c.section: given.get(c.section) or c.config_type() for c in pool}
        predict: PredictConfig = self.sections.get("predict") or PredictConfig()
        if device == "cpu":
            torch.set_num_threads(predict.cpu_threads or os.cpu_count() or 1)
        self.device = torch.device(device)
        # (outside Ray, in tests, asking would start a local Ray instance)
        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        """The Ray node this actor runs on (each output batch's ``node_id`` column)."""
        model: AuditModel = (
            ray.get(model_ref) if isinstance(model_ref, ray.ObjectRef) else model_ref
        )
        self.model = model.to(self.device).eval()
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.k = min(5, num_classes)
        self.dim = embedding_dim if predict.embeddings else 0
        self.bf16 = predict.bf16
        self.sizes = {"k": self.k, "dim": self.dim}
        context = StageContext(self.model, self.device, self.bf16, self.sizes)
        self.stages = STAGES.build(self.sections, context, pool)
        self.columns: dict[str, Column] = {
            c.name: c for stage in self.stages for c in stage.outputs()
        }
        """The enabled stages' output columns, in the order they are added."""
        self._work = np.zeros((0, len(self.stages)), dtype=np.float32)
        self._done = np.zeros((0, len(self.stages)), dtype=np.uint8)
        """Per row that reached the model (positions in ``_process``'s inputs) and stage: its
        share of the stage's time, and whether the stage worked on it (``stage_*`` columns)."""
        self._ok = np.zeros(0, dtype=np.int64)
        """Those rows' positions in the batch being processed."""

    def _process(
        self, inputs: Batch, failed: dict[int, tuple[str, str]]
    ) -> Iterator[tuple[np.ndarray, Batch]]:
        """Every enabled stage on the decoded images ``inputs``, in dependency order and in
        work units: the cheap stages on the whole batch, a heavy stage (``unit_rows``) and the
        stages after it on its light rows together, then on units of its heavy rows.

        Args:
            inputs: The rows that reached the model (:data:`INPUTS` columns).
            failed: Filled as stages fail on rows: position in ``inputs`` -> (stage, reason).

        Yields:
            Per finished group, the rows (positions in ``inputs``) every stage ran on and their
            columns; every row of ``inputs`` ends in one group or in ``failed``.
        """
        rows = np.arange(len(inputs["image"]))
        yield from self._run(inputs, self.stages, rows, {}, {}, failed, split=True)

    def _run(
        self,
        inputs: Batch,
        stages: Sequence[Stage],
        rows: np.ndarray,
        cols: Batch,
        state: dict[str, Any],
        failed: dict[int, tuple[str, str]],
        split: bool,
    ) -> Iterator[tuple[np.ndarray, Batch]]:
        """``stages`` one after another on ``rows`` (with their ``cols`` and ``state`` so far);
        at a heavy stage (the first one too when ``split``), :meth:`_units` takes over."""
        for i, stage in enumerate(stages):
            if not len(rows):
                break
            batch = {**{k: v[rows] for k, v in inputs.items()}, **cols}
            if stage.unit_rows is not None and (split or i > 0):
                yield from self._units(inputs, stages[i:], rows, cols, state, failed, batch)
                return
            k, t0 = self.stages.index(stage), time.perf_counter()
            if stage.unit_rows is None:  # a heavy stage's own rows are marked by _units
                self._done[rows, k] = 1
            try:
                cols.update(stage.run(batch, state))
                self._work[rows, k] += (time.perf_counter() - t0) / len(rows)
                continue
            except Exception:  # retry one by one so that only the culprits become error rows
                log.exception(
                    "stage %r failed on a batch of %d; retrying per image", stage.name, len(rows)
                )
            out, keep, state = self._per_image(stage, batch, state, rows, failed)
            self._work[rows, k] += (time.perf_counter() - t0) / len(rows)
            rows = rows[keep]
            cols = {k: v[keep] for k, v in cols.items()}
            cols.update(out)
        yield rows, cols

    def _units(
        self,
        inputs: Batch,
        stages: Sequence[Stage],
        rows: np.ndarray,
        cols: Batch,
        state: dict[str, Any],
        failed: dict[int, tuple[str, str]],
        batch: Batch,
    ) -> Iterator[tuple[np.ndarray, Batch]]:
        """``stages`` (a heavy one first) on ``rows`` in groups: the rows it calls light all
        together, then its heavy rows ``unit_rows`` at a time, each group to the end."""
        heavy = np.asarray(stages[0].heavy_rows(batch), dtype=bool)
        size = max(1, int(stages[0].unit_rows or 1))
        light, hard = np.flatnonzero(~heavy), np.flatnonzero(heavy)
        self._done[rows[hard], self.stages.index(stages[0])] = 1
        groups = [light] if len(light) else []
        groups += [hard[j : j + size] for j in range(0, len(hard), size)]
        for pos in groups:
            yield from self._run(
                inputs,
                stages,
                rows[pos],
                {k: v[pos] for k, v in cols.items()},
                {k: _take(v, pos) for k, v in state.items()},
                failed,
                split=False,
            )

    @staticmethod
    def _per_image(
        stage: Stage,
        batch: Batch,
        state: dict[str, Any],
        rows: np.ndarray,
        failed: dict[int, tuple[str, str]],
    ) -> tuple[Batch, np.ndarray, dict[str, Any]]:
        """``stage`` on each row of ``batch`` alone; the failures go into ``failed``.

        Returns:
            The stage's columns of the rows it ran on, those rows (positions in ``batch``) and
            the state of those rows.
        """
        outs: list[Batch] = []
        states: list[dict[str, Any]] = []
        keep = []
        for j in range(len(rows)):
            one = {k: v[j : j + 1] for k, v in batch.items()}
            mine = {k: v[j : j + 1] for k, v in state.items()}
            try:
                outs.append(stage.run(one, mine))
            except Exception as exc:
                failed[int(rows[j])] = (stage.name, f"{type(exc).__name__}: {exc}")
                continue
            states.append(mine)
            keep.append(j)
        out = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]} if outs else {}
        new_state = {k: _concat([m[k] for m in states]) for k in states[0]} if states else {}
        return out, np.array(keep, dtype=np.int64), new_state

    def __call__(self, batch: Batch) -> Iterator[Batch]:
        """The output rows of ``batch``, as complete output batches (every column) yielded as
        they are done: the light rows (and the rows that came with an error) after the cheap
        stages, then each work unit of a heavy stage; a row that fails goes with the next
        batch out. Every row comes out exactly once, in input order within a batch.

        Ray Data hands each yield on as a block of its own only where the dataset's
        ``target_max_block_size`` is below it (``data.flush_units``, :mod:`audit.run.units`);
        otherwise it gathers a task's yields into one block.
        """
        for _, rows in self._batches(batch):
            yield rows

    def _batches(self, batch: Batch) -> Iterator[tuple[np.ndarray, Batch]]:
        """:meth:`__call__`'s batches, each with its rows' positions in ``batch``."""
        n = len(batch["image_id"])
        errors = np.asarray(batch["error"], dtype=object).copy()
        stages = np.asarray(batch["stage"], dtype=object).copy()
        out: Batch = {}
        ok = np.flatnonzero(errors == "")
        pending = np.ones(n, dtype=bool)  # rows not handed on yet
        failed: dict[int, tuple[str, str]] = {}
        self._work = np.zeros((len(ok), len(self.stages)), dtype=np.float32)
        self._done = np.zeros((len(ok), len(self.stages)), dtype=np.uint8)
        self._ok = ok
        groups = self._process({k: batch[k][ok] for k in INPUTS}, failed) if len(ok) else ()
        for rows, cols in groups:
            self._fill(out, n, ok[rows], cols)
            for j, (stage, reason) in failed.items():
                errors[ok[j]], stages[ok[j]] = reason, stage
            ready = np.zeros(n, dtype=bool)
            ready[ok[rows]] = True
            ready = pending & (ready | (errors != ""))
            if ready.any():
                pending &= ~ready
                sel = np.flatnonzero(ready)
                yield sel, self._rows(batch, sel, errors, stages, out)
        if pending.any() or not n:
            sel = np.flatnonzero(pending)
            yield sel, self._rows(batch, sel, errors, stages, out)

    def run_batch(self, batch: Batch) -> Batch:
        """Every batch :meth:`__call__` yields for ``batch``, merged back in its row order: the
        one batch the actor returned before work units (for tests and notebooks)."""
        parts = list(self._batches(batch))
        order = np.argsort(np.concatenate([sel for sel, _ in parts]))
        return {k: np.concatenate([p[k] for _, p in parts])[order] for k in parts[0][1]}

    def _rows(
        self, batch: Batch, sel: np.ndarray, errors: np.ndarray, stages: np.ndarray, out: Batch
    ) -> Batch:
        """The output batch of the rows ``sel`` (positions in ``batch``). Every batch the actor
        yields is built here, so a key added to this dict is in all of them."""
        n = len(batch["image_id"])
        work = np.zeros((n, len(self.stages)), dtype=np.float32)
        done = np.zeros((n, len(self.stages)), dtype=np.uint8)
        work[self._ok], done[self._ok] = self._work, self._done
        return {
            "image_id": batch["image_id"][sel],
            "uri": batch["uri"][sel],
            "label": batch["label"][sel],
            "shard": np.asarray(batch.get("shard", np.full(n, -1)), dtype=np.int64)[sel],
            "error": errors[sel],
            "stage": stages[sel],
            "segments": batch["segments"][sel],
            "node_id": np.full(len(sel), self.node_id, dtype=object),  # manifest, not a table
            "stage_done": done[sel],  # progress, not a table
            "stage_seconds": work[sel],
            **self._complete({k: v[sel] for k, v in out.items()}, len(sel)),
        }

    def _fill(self, out: Batch, n: int, rows: np.ndarray, cols: Batch) -> None:
        """Scatter ``cols`` (one entry per row in ``rows``) into ``n``-row output columns."""
        for name, values in cols.items():
            if name not in out:
                out[name] = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
                if values.dtype == object:  # keep one Python type per column for Arrow
                    out[name][:] = self.columns[name].empty
            out[name][rows] = values

    def _complete(self, out: Batch, n: int) -> Batch:
        """Every output column, also when no row of the batch reached the model."""
        for name, col in self.columns.items():
            if name not in out:
                out[name] = np.zeros((n, *col.row_shape(self.sizes)), dtype=col.dtype)
                if out[name].dtype == object:
                    out[name][:] = col.empty
        return out


def _take(value: Any, pos: np.ndarray) -> Any:
    """The rows ``pos`` of a row-aligned state value (a torch tensor or a numpy array)."""
    if isinstance(value, torch.Tensor):
        return value[torch.as_tensor(pos, dtype=torch.long, device=value.device)]
    return value[pos]


def _concat(parts: list[Any]) -> Any:
    """Row-aligned state values of single rows back into one (torch tensors or numpy arrays)."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return np.concatenate(parts)
