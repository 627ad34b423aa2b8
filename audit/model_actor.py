"""Ray Data adapters: the stateless decode step and the model-holding actor.

Rows flow through the pass as numpy batches with these columns:

- after :func:`decode_batch`: ``image_id``, ``uri``, ``label`` (int64, -1 unknown), ``image``
  (``(n, crop_h, crop_w, 3) uint8`` at the model's crop size, zeros where decoding failed), ``error`` (str, ``""`` when fine),
  ``stage`` (str, where it failed);
- after :class:`ModelActor`: the same without ``image``, plus the columns of the enabled stages
  (:mod:`audit.stages.registry`: ``predict``, then ``attack`` and ``explain`` when enabled), in
  that order, as declared in ``audit/stages/*_table.py``. Rows whose ``error`` is set carry
  zeros there (``""`` or ``b""`` in string and bytes columns).

Errors travel with the data instead of being raised, so one bad file never fails a batch and
every input comes out exactly once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from audit.columns import Column
from audit.config import AttackConfig, ExplainConfig, PredictConfig
from audit.data.decode import ImageLoadError, decode_image, load_image
from audit.data.segments import encode_segments
from audit.models import STANDARD, AuditModel, EvalTransform
from audit.stages.explain import segment
from audit.stages.registry import STAGES, StageContext

log = logging.getLogger(__name__)


def decode_batch(
    batch: dict[str, np.ndarray],
    max_pixels: int,
    storage_options: Mapping[str, Any] | None = None,
    segmentation: str | None = None,
    seed: int = 0,
    jpeg_draft: bool = False,
    transform: EvalTransform | dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Read and decode every row of ``batch``; failures become ``error``/``stage`` values.

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
        except Exception as exc:  # an unexpected failure on one file must not sink the batch
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

    The stages come from :data:`audit.stages.registry.STAGES`, in dependency order. A batch on
    which a stage raises is retried image by image, so that only the culprit becomes an error
    row (stage ``predict``).

    Args:
        model_ref: An object-store reference to the :class:`~audit.models.AuditModel` the driver
            loaded and validated, so every actor runs exactly those weights and that
            architecture set-up, and worker nodes need no weight cache.
        num_classes: Outputs of the model (top-k is ``min(5, num_classes)``).
        embedding_dim: Size of the penultimate embedding.
        device: ``cuda`` or ``cpu``.
        bf16: Autocast to bfloat16 on CUDA.
        embeddings: Store penultimate-layer embeddings.
        cpu_threads: Torch intra-op threads on CPU; None means the node's CPU count (Ray sets
            ``OMP_NUM_THREADS`` to the actor's CPU reservation otherwise).
        attack: IFGSM step counting on the same decoded images; None or disabled skips it.
        explain_cfg: LIME for rows flagged ``explain`` (segmented by the decode tasks).
    """

    def __init__(
        self,
        model_ref: Any,
        num_classes: int,
        embedding_dim: int,
        device: str,
        bf16: bool,
        embeddings: bool,
        cpu_threads: int | None = None,
        attack: AttackConfig | None = None,
        explain_cfg: ExplainConfig | None = None,
    ) -> None:
        import ray

        if device == "cpu":
            torch.set_num_threads(cpu_threads or os.cpu_count() or 1)
        self.device = torch.device(device)
        model: AuditModel = (
            ray.get(model_ref) if isinstance(model_ref, ray.ObjectRef) else model_ref
        )
        self.model = model.to(self.device).eval()
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.k = min(5, num_classes)
        self.dim = embedding_dim if embeddings else 0
        self.bf16 = bf16
        self.embeddings = embeddings
        self.attack = attack or AttackConfig(enabled=False)
        self.explain_cfg = explain_cfg or ExplainConfig(enabled=False)
        self.sizes = {"k": self.k, "dim": self.dim}
        sections = {
            "predict": PredictConfig(cpu_threads=cpu_threads, bf16=bf16, embeddings=embeddings),
            "attack": self.attack,
            "explain": self.explain_cfg,
        }
        context = StageContext(self.model, self.device, bf16, self.sizes)
        self.stages = STAGES.build(sections, context)
        self.columns: dict[str, Column] = {
            c.name: c for stage in self.stages for c in stage.outputs()
        }
        """The enabled stages' output columns, in the order they are added."""

    def _process(
        self, images: np.ndarray, labels: np.ndarray, segments: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Every enabled stage on decoded images, in dependency order; returns their columns."""
        cols: dict[str, np.ndarray] = {}
        state: dict[str, Any] = {}
        inputs = {"image": images, "label": labels, "segments": segments}
        for stage in self.stages:
            cols.update(stage.run({**inputs, **cols}, state))
        return cols

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["image_id"])
        errors = np.asarray(batch["error"], dtype=object).copy()
        stages = np.asarray(batch["stage"], dtype=object).copy()
        out: dict[str, np.ndarray] = {}
        ok = np.flatnonzero(errors == "")
        if len(ok):
            try:
                self._fill(
                    out,
                    n,
                    ok,
                    self._process(batch["image"][ok], batch["label"][ok], batch["segments"][ok]),
                )
            except Exception:  # retry one by one so that only the culprit becomes an error row
                log.exception("the model failed on a batch of %d; retrying per image", len(ok))
                for i in ok:
                    try:
                        one = self._process(
                            batch["image"][i : i + 1],
                            batch["label"][i : i + 1],
                            batch["segments"][i : i + 1],
                        )
                        self._fill(out, n, np.array([i]), one)
                    except Exception as exc:
                        errors[i], stages[i] = f"{type(exc).__name__}: {exc}", "predict"
        return {
            "image_id": batch["image_id"],
            "uri": batch["uri"],
            "label": batch["label"],
            "shard": np.asarray(batch.get("shard", np.full(n, -1)), dtype=np.int64),
            "error": errors,
            "stage": stages,
            "segments": batch["segments"],
            **self._complete(out, n),
        }

    def _fill(
        self, out: dict[str, np.ndarray], n: int, rows: np.ndarray, cols: dict[str, np.ndarray]
    ) -> None:
        """Scatter ``cols`` (one entry per row in ``rows``) into ``n``-row output columns."""
        for name, values in cols.items():
            if name not in out:
                out[name] = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
                if values.dtype == object:  # keep one Python type per column for Arrow
                    out[name][:] = self.columns[name].empty
            out[name][rows] = values

    def _complete(self, out: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """Every output column, also when no row of the batch reached the model."""
        for name, col in self.columns.items():
            if name not in out:
                out[name] = np.zeros((n, *col.row_shape(self.sizes)), dtype=col.dtype)
                if out[name].dtype == object:
                    out[name][:] = col.empty
        return out
