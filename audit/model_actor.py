"""Ray Data adapters: the stateless decode step and the model-holding actor.

Rows flow through the pass as numpy batches with these columns:

- after :func:`decode_batch`: ``image_id``, ``uri``, ``label`` (int64, -1 unknown), ``image``
  (``(n, 224, 224, 3) uint8``, zeros where decoding failed), ``error`` (str, ``""`` when fine),
  ``stage`` (str, where it failed);
- after :class:`ModelActor`: the same without ``image``, plus the prediction columns
  (see :data:`PREDICTION_COLUMNS`). Rows whose ``error`` is set carry zeros there.

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

from audit.data.decode import CROP, ImageLoadError, load_image
from audit.models import AuditModel
from audit.stages.predict import Predictions, predict

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = (
    "top5_classes",
    "top5_probs",
    "correct_top1",
    "correct_top5",
    "loss",
    "embedding",
)


def decode_batch(
    batch: dict[str, np.ndarray],
    max_pixels: int,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Read and decode every row of ``batch``; failures become ``error``/``stage`` values."""
    n = len(batch["image_id"])
    images = np.zeros((n, CROP, CROP, 3), dtype=np.uint8)
    errors = np.full(n, "", dtype=object)
    stages = np.full(n, "", dtype=object)
    for i, uri in enumerate(batch["uri"]):
        try:
            images[i] = load_image(str(uri), max_pixels, storage_options)
        except ImageLoadError as exc:
            errors[i], stages[i] = exc.reason, exc.stage
        except Exception as exc:  # an unexpected failure on one file must not sink the batch
            errors[i], stages[i] = f"{type(exc).__name__}: {exc}", "decode"
    return {
        "image_id": batch["image_id"],
        "uri": batch["uri"],
        "label": batch["label"].astype(np.int64),
        "image": images,
        "error": errors,
        "stage": stages,
    }


class ModelActor:
    """Holds one model on one device and predicts batches of decoded images.

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

    def _predict(self, images: np.ndarray, labels: np.ndarray) -> Predictions:
        return predict(
            self.model,
            images,
            labels,
            device=self.device,
            bf16=self.bf16,
            embeddings=self.embeddings,
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["image_id"])
        errors = np.asarray(batch["error"], dtype=object).copy()
        stages = np.asarray(batch["stage"], dtype=object).copy()
        out: dict[str, np.ndarray] = {
            "top5_classes": np.zeros((n, self.k), dtype=np.int32),
            "top5_probs": np.zeros((n, self.k), dtype=np.float32),
            "correct_top1": np.zeros(n, dtype=bool),
            "correct_top5": np.zeros(n, dtype=bool),
            "loss": np.full(n, np.nan, dtype=np.float32),
        }
        if self.dim:
            out["embedding"] = np.zeros((n, self.dim), dtype=np.float32)
        ok = np.flatnonzero(errors == "")
        if len(ok):
            try:
                self._fill(out, ok, self._predict(batch["image"][ok], batch["label"][ok]))
            except Exception:  # retry one by one so that only the culprit becomes an error row
                log.exception("prediction failed on a batch of %d; retrying per image", len(ok))
                for i in ok:
                    try:
                        one = self._predict(batch["image"][i : i + 1], batch["label"][i : i + 1])
                        self._fill(out, np.array([i]), one)
                    except Exception as exc:
                        errors[i], stages[i] = f"{type(exc).__name__}: {exc}", "predict"
        return {
            "image_id": batch["image_id"],
            "uri": batch["uri"],
            "label": batch["label"],
            "error": errors,
            "stage": stages,
            **out,
        }

    @staticmethod
    def _fill(out: dict[str, np.ndarray], rows: np.ndarray, p: Predictions) -> None:
        out["top5_classes"][rows] = p.top5_classes
        out["top5_probs"][rows] = p.top5_probs
        out["correct_top1"][rows] = p.correct_top1
        out["correct_top5"][rows] = p.correct_top5
        out["loss"][rows] = p.loss
        if p.embedding is not None and "embedding" in out:
            out["embedding"][rows] = p.embedding
