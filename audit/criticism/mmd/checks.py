"""Argument checks shared by the MMD-critic solvers; each raises ``ValueError`` with one line."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def check_x(x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"x must be a non-empty 2-D array (n, d). Got shape {arr.shape} instead.")
    return arr


def check_gamma(gamma: float) -> None:
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"The 'gamma' parameter must be a positive float. Got {gamma!r} instead.")


def check_indices(idx: Sequence[int], n: int, name: str) -> np.ndarray:
    arr = np.asarray(list(idx), dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"The '{name}' indices must lie in [0, {n}). Got {arr.tolist()} instead.")
    return arr


def check_count(k: int, upper: int, name: str) -> None:
    if not (isinstance(k, int | np.integer) and 0 <= k <= upper):
        raise ValueError(
            f"The '{name}' parameter must be an int in [0, {upper}]. Got {k!r} instead."
        )


def check_eps(eps: float) -> None:
    if not (0 < eps < 1):
        raise ValueError(f"The 'eps' parameter must be a float in (0, 1). Got {eps!r} instead.")


def check_order(order: np.ndarray | None, n: int) -> np.ndarray:
    if order is None:
        return np.arange(n)
    arr = np.asarray(order, dtype=np.int64)
    if arr.ndim != 1 or arr.size != n or not np.array_equal(np.sort(arr), np.arange(n)):
        raise ValueError("The 'order' parameter must be a permutation of range(n).")
    return arr
