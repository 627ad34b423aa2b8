"""Segment maps stored losslessly as 16-bit grayscale PNG bytes (the ``explanations.segments``
column), so masks can be rebuilt exactly by any PNG reader::

    segments = np.asarray(Image.open(io.BytesIO(row["segments"]))).astype(np.int32)
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode_segments(segments: np.ndarray) -> bytes:
    """``(H, W)`` integer labels in [0, 65535] -> PNG bytes.

    Raises:
        ValueError: labels outside the 16-bit range.
    """
    seg = np.asarray(segments)
    if seg.ndim != 2 or seg.size == 0 or seg.min() < 0 or seg.max() > 65535:
        raise ValueError("segments must be a non-empty (H, W) map of labels in [0, 65535]")
    buf = io.BytesIO()
    Image.fromarray(seg.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def decode_segments(data: bytes) -> np.ndarray:
    """PNG bytes from :func:`encode_segments` -> ``(H, W) int32`` labels."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img).astype(np.int32)
