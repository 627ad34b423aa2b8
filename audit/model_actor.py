"""Ray Data adapters: the stateless decode step and the model-holding actor.

Rows flow through the pass as numpy batches with these columns:

- after :func:`decode_batch`: ``image_id``, ``uri``, ``label`` (int64, -1 unknown), ``image``
  (``(n, crop_h, crop_w, 3) uint8`` at the model's crop size, zeros where decoding failed), ``error`` (str, ``""`` when fine),
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

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from audit.config import AttackConfig, AttackTarget, ExplainConfig, ExplainWhich, Variant
from audit.data.decode import ImageLoadError, decode_image, load_image
from audit.data.segments import decode_segments, encode_segments
from audit.models import STANDARD, AuditModel, EvalTransform
from audit.stages.attack import attack_columns
from audit.stages.explain import explain, segment
from audit.stages.predict import predict

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

    def _process(
        self, images: np.ndarray, labels: np.ndarray, segments: np.ndarray
    ) -> dict[str, np.ndarray]:
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
            attacked, adversarial = attack_columns(
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
            cols.update(attacked)
        else:
            adversarial = None
        if self.explain_cfg.enabled:
            cols["explanations"] = self._explain(images, labels, segments, cols, adversarial)
        return cols

    def _explain(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        segments: np.ndarray,
        cols: dict[str, np.ndarray],
        adversarial: torch.Tensor | None,
    ) -> np.ndarray:
        """LIME for the flagged rows that meet ``explain.which``; one JSON list per row."""
        e = self.explain_cfg
        out = np.full(len(images), "", dtype=object)
        labels = np.asarray(labels, dtype=np.int64)
        top1 = cols["top5_classes"][:, 0].astype(np.int64)
        steps = cols.get("steps_to_flip")
        for i in range(len(images)):
            if not segments[i]:
                continue
            flipped = steps is not None and steps[i] >= 1
            if e.which is ExplainWhich.MISCLASSIFIED and not (
                labels[i] >= 0 and top1[i] != labels[i]
            ):
                continue
            if e.which is ExplainWhich.FLIPPED and not flipped:
                continue
            seg = decode_segments(segments[i])
            found = []
            jobs: list[tuple[str, Any, int]] = []
            if Variant.CLEAN in e.variants:
                jobs.append(("clean", images[i], int(top1[i])))
            if Variant.ADVERSARIAL in e.variants and flipped and adversarial is not None:
                adv = adversarial[i].detach().float().permute(1, 2, 0).cpu().numpy()
                jobs.append(("adversarial", adv, int(cols["adv_class"][i])))
            for variant, image, cls in jobs:
                ex = explain(
                    self.model,
                    image,
                    seg,
                    cls,
                    n_samples=e.n_samples,
                    kernel_width=e.kernel_width,
                    num_features=e.num_features,
                    fill=e.fill.value,
                    regressor=e.regressor.value,
                    batch_size=e.batch_size or (250 if self.device.type == "cuda" else 10),
                    seed=e.seed,
                    device=self.device,
                    bf16=self.bf16,
                )
                sur = ex.surrogate
                found.append(
                    {
                        "variant": variant,
                        "explained_class": cls,
                        "weights": [float(w) for w in sur.weights],
                        "intercept": float(sur.intercept),
                        "score": float(sur.score),
                        "local_pred": float(sur.local_pred),
                        "top_features": [int(f) for f in sur.top_features],
                    }
                )
            out[i] = json.dumps(found)
        return out

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
                    out[name][:] = "" if name == "explanations" else b""
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
        if self.explain_cfg.enabled:
            shapes["explanations"] = ((), object)
        for name, (shape, dtype) in shapes.items():
            if name not in out:
                out[name] = np.zeros((n, *shape), dtype=dtype)
                if dtype is object:
                    out[name][:] = "" if name == "explanations" else b""
        return out
