"""Ray Data adapters: the stateless decode step and the model-holding actor.

Rows flow through the pass as numpy batches with these columns:

- after :func:`decode_batch`: ``image_id``, ``uri``, ``label`` (int64, -1 unknown), ``image``
  (``(n, 224, 224, 3) uint8``, zeros where decoding failed), ``error`` (str, ``""`` when fine),
  ``stage`` (str, where it failed);
- after :class:`ModelActor`: the same without ``image``, plus ``top5_classes``, ``top5_probs``,
  ``correct_top1``, ``correct_top5``, ``loss``, ``label_prob``, ``embedding`` (when kept), and with the attack on
  ``target``, ``steps_to_flip`` (-1 = never), ``adv_class``, ``adv_prob``, ``linf``, ``l2``
  (and ``stored_flips``, ``image_png`` when adversarial images are kept). Rows whose ``error`` is
  set carry zeros there.

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

from audit.config import AttackConfig, AttackTarget
from audit.data.decode import CROP, ImageLoadError, load_image
from audit.models import AuditModel
from audit.stages.attack import attack_columns
from audit.stages.predict import predict

log = logging.getLogger(__name__)


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
        attack: IFGSM step counting on the same decoded images; None or disabled skips it.
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

    def _process(self, images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Every stage on decoded images; returns their output columns."""
        p = predict(
            self.model,
            images,
            labels,
            device=self.device,
            bf16=self.bf16,
            embeddings=self.embeddings,
        )
        cols: dict[str, np.ndarray] = {
            "top5_classes": p.top5_classes,
            "top5_probs": p.top5_probs,
            "correct_top1": p.correct_top1,
            "correct_top5": p.correct_top5,
            "loss": p.loss,
            "label_prob": p.label_prob,
        }
        if p.embedding is not None and self.dim:
            cols["embedding"] = p.embedding
        if self.attack.enabled:
            labels = np.asarray(labels, dtype=np.int64)
            clean = p.top5_classes[:, 0].astype(np.int64)
            use_label = (labels >= 0) & (self.attack.target is AttackTarget.LABEL)
            targets = np.where(use_label, labels, clean)
            cols["target"] = targets.astype(np.int32)
            cols.update(
                attack_columns(
                    self.model,
                    images,
                    targets,
                    eps_step=self.attack.eps_step,
                    max_steps=self.attack.max_steps,
                    norm=self.attack.norm.value,
                    device=self.device,
                    bf16=self.bf16,
                    keep_images=self.attack.keep_images,
                )
            )
        return cols

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["image_id"])
        errors = np.asarray(batch["error"], dtype=object).copy()
        stages = np.asarray(batch["stage"], dtype=object).copy()
        out: dict[str, np.ndarray] = {}
        ok = np.flatnonzero(errors == "")
        if len(ok):
            try:
                self._fill(out, n, ok, self._process(batch["image"][ok], batch["label"][ok]))
            except Exception:  # retry one by one so that only the culprit becomes an error row
                log.exception("the model failed on a batch of %d; retrying per image", len(ok))
                for i in ok:
                    try:
                        one = self._process(batch["image"][i : i + 1], batch["label"][i : i + 1])
                        self._fill(out, n, np.array([i]), one)
                    except Exception as exc:
                        errors[i], stages[i] = f"{type(exc).__name__}: {exc}", "predict"
        return {
            "image_id": batch["image_id"],
            "uri": batch["uri"],
            "label": batch["label"],
            "error": errors,
            "stage": stages,
            **self._complete(out, n),
        }

    def _fill(
        self, out: dict[str, np.ndarray], n: int, rows: np.ndarray, cols: dict[str, np.ndarray]
    ) -> None:
        """Scatter ``cols`` (one entry per row in ``rows``) into ``n``-row output columns."""
        for name, values in cols.items():
            if name not in out:
                out[name] = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
            out[name][rows] = values

    def _complete(self, out: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """Every output column, also when no row of the batch reached the model."""
        shapes: dict[str, tuple[tuple[int, ...], Any]] = {
            "top5_classes": ((self.k,), np.int32),
            "top5_probs": ((self.k,), np.float32),
            "correct_top1": ((), bool),
            "correct_top5": ((), bool),
            "loss": ((), np.float32),
            "label_prob": ((), np.float32),
        }
        if self.dim:
            shapes["embedding"] = ((self.dim,), np.float32)
        if self.attack.enabled:
            shapes.update(
                {
                    "target": ((), np.int32),
                    "steps_to_flip": ((), np.int16),
                    "adv_class": ((), np.int32),
                    "adv_prob": ((), np.float32),
                    "linf": ((), np.float32),
                    "l2": ((), np.float32),
                }
            )
            if self.attack.keep_images:
                shapes["stored_flips"] = ((), bool)
                shapes["image_png"] = ((), object)
        for name, (shape, dtype) in shapes.items():
            if name not in out:
                out[name] = np.zeros((n, *shape), dtype=dtype)
                if dtype is object:
                    out[name][:] = b""
        return out
