"""Render the images raters see as PNG bytes, under names that reveal nothing.

* ``crop``: the evaluation crop of the input with the run's recorded transform
  (``audit.data.decode``), what the model saw;
* ``adversarial``: the stored adversarial image (``adversarial.image_png``);
* ``explanation``: the adversarial image with only its top-K LIME super-pixels visible
  (``audit.stages.explain.attention_image`` on the adversarial explanation's segments).

A file name is a hash of a secret salt (kept in the human folder's ``export-salt.txt``, next
to the private keys, never in ``images/``), the kind and the image id, so it gives away neither
the image's file name (from which a public label list would give its ground truth), nor its class
folder or condition. An explanation's name also includes how many super-pixels it shows.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from audit.config import DEFAULT_MAX_PIXELS
from audit.data.decode import ImageLoadError, load_image
from audit.data.segments import decode_segments
from audit.human.studies import ImageRef, StudyError
from audit.models.transform import STANDARD, EvalTransform
from audit.stages.explain import attention_image


def image_name(salt: str, ref: ImageRef, explanation_features: int) -> str:
    """``<kind>/<32 hex digits>.png``: the image's path under the ``images`` folder.

    Args:
        salt: The human folder's secret (:func:`audit.human.export.export_salt`).
        ref: The image.
        explanation_features: Super-pixels an explanation shows (part of its name only, so an
            explanation rendered with another count is a different file).
    """
    shown = f"/{explanation_features}" if ref.kind == "explanation" else ""
    digest = hashlib.sha256(f"{salt}/{ref.kind}{shown}/{ref.image_id}".encode()).hexdigest()
    return f"{ref.kind}/{digest[:32]}.png"


def png_bytes(image: np.ndarray) -> bytes:
    """``(H, W, 3) uint8`` -> lossless PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> ``(H, W, 3) uint8``."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


class Renderer:
    """Produces the PNG of any :class:`ImageRef` of one run.

    Args:
        uris: image_id -> input URI (from ``predictions``), for crops.
        adversarial: image_id -> adversarial row with ``image_png``.
        explanations: image_id -> explanation row (``segments``, ``top_features``) of the
            adversarial image.
        explanation_features: Super-pixels an explanation image shows.
        storage_options: fsspec options for reading the inputs.
        max_pixels: The run's ``data.max_pixels``.
        draft: The run's ``data.jpeg_draft``, so that a crop is the one the model saw.
        transform: The run's evaluation transform (its manifest's ``model.transform``).
    """

    def __init__(
        self,
        uris: Mapping[str, str],
        adversarial: Mapping[str, Mapping[str, Any]] | None = None,
        explanations: Mapping[str, Mapping[str, Any]] | None = None,
        explanation_features: int = 8,
        storage_options: Mapping[str, Any] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        draft: bool = False,
        transform: EvalTransform = STANDARD,
    ) -> None:
        self.uris = uris
        self.transform = transform
        self.max_pixels = max_pixels
        self.draft = draft
        self.adversarial = adversarial or {}
        self.explanations = explanations or {}
        self.k = explanation_features
        self.storage_options = storage_options

    def render(self, ref: ImageRef) -> bytes:
        """PNG bytes of ``ref``.

        Raises:
            StudyError: The input cannot be read or decoded, or the rows it needs are missing.
        """
        if ref.kind == "crop":
            uri = self.uris.get(ref.image_id)
            if uri is None:
                raise StudyError(f"image {ref.image_id!r} is not in the predictions table")
            try:
                return png_bytes(
                    load_image(
                        uri,
                        self.max_pixels,
                        self.storage_options,
                        transform=self.transform,
                        draft=self.draft,
                    )
                )
            except ImageLoadError as exc:
                raise StudyError(f"cannot render {uri}: {exc}") from None
        row = self.adversarial.get(ref.image_id)
        if row is None or row.get("image_png") is None:
            raise StudyError(f"no stored adversarial image for {ref.image_id!r}")
        if ref.kind == "adversarial":
            return bytes(row["image_png"])
        if ref.kind == "explanation":
            expl = self.explanations.get(ref.image_id)
            if expl is None:
                raise StudyError(f"no adversarial explanation for {ref.image_id!r}")
            image = decode_png(row["image_png"])
            segments = decode_segments(expl["segments"])
            if segments.shape != image.shape[:2]:
                raise StudyError(
                    f"explanation of {ref.image_id!r} has segments {segments.shape}, "
                    f"the image is {image.shape[:2]}"
                )
            top = np.asarray(expl["top_features"], dtype=np.int64)
            return png_bytes(attention_image(image, segments, top, k=self.k))
        raise StudyError(f"unknown image kind {ref.kind!r}")
