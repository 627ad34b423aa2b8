"""LIME's local linear model: proximity weights, lasso-path feature selection, the weighted fit.

Steps 3 to 5 of :mod:`audit.stages.explain`'s recipe, as lime 0.2's ``LimeBase`` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # sklearn is imported where LIME runs: seconds of start-up in every actor
    from sklearn.linear_model import LinearRegression, Ridge

REGRESSORS = ("wls", "ridge")


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}. Got {value!r} instead.")


def kernel_weights(masks: np.ndarray, kernel_width: float = 0.25) -> np.ndarray:
    """lime_image's proximity weights.

    Args:
        masks: ``(n, d)`` in {0, 1}, row 0 the original (all ones).
        kernel_width: ``sigma`` of ``sqrt(exp(-D^2 / sigma^2))``.

    Returns:
        ``(n,) float64`` weights, ``D`` the cosine distance of each row to row 0 (1 for an
        all-zero row, as sklearn's ``pairwise_distances(metric='cosine')`` gives).

    Raises:
        ValueError: If ``kernel_width`` is not positive.
    """
    if not kernel_width > 0:
        raise ValueError(f"kernel_width must be > 0. Got {kernel_width} instead.")
    m = np.asarray(masks, dtype=np.float64)
    ref = m[0]
    norms = np.linalg.norm(m, axis=1) * np.linalg.norm(ref)
    cos = np.divide(m @ ref, norms, out=np.zeros(len(m)), where=norms > 0)
    dist = np.clip(1.0 - cos, 0.0, 2.0)
    return np.sqrt(np.exp(-(dist**2) / kernel_width**2))


@dataclass(frozen=True)
class Surrogate:
    """A sparse local linear model ``g(z') = weights . z' + intercept``.

    Attributes:
        weights: ``(d,) float64``: the chosen features' coefficients in place, 0 elsewhere.
        intercept: The regressor's intercept.
        score: Weighted R^2 of the surrogate on the samples.
        local_pred: The surrogate's value at the all-ones sample (the original image).
        top_features: ``(K,) int64`` chosen features by decreasing ``|coefficient|`` (ties:
            smaller index first): the explanation path.
    """

    weights: np.ndarray
    intercept: float
    score: float
    local_pred: float
    top_features: np.ndarray


def _lasso_path_features(
    data: np.ndarray, labels: np.ndarray, weights: np.ndarray, num_features: int
) -> np.ndarray:
    """``LimeBase.feature_selection(method='lasso_path')``, line for line."""
    weighted_data = (data - np.average(data, axis=0, weights=weights)) * np.sqrt(
        weights[:, np.newaxis]
    )
    weighted_labels = (labels - np.average(labels, weights=weights)) * np.sqrt(weights)
    from sklearn.linear_model import lars_path

    nonzero = np.arange(weighted_data.shape[1])
    _, _, coefs = lars_path(weighted_data, weighted_labels, method="lasso", verbose=False)
    for i in range(len(coefs.T) - 1, 0, -1):
        nonzero = coefs.T[i].nonzero()[0]
        if len(nonzero) <= num_features:
            break
    return np.asarray(nonzero, dtype=np.int64)


def fit_surrogate(
    masks: np.ndarray,
    target: np.ndarray,
    sample_weight: np.ndarray,
    num_features: int = 8,
    regressor: str = "wls",
) -> Surrogate:
    """Select features on the lasso path and fit the weighted linear surrogate.

    Args:
        masks: ``(n, d)`` in {0, 1}, row 0 the original image.
        target: ``(n,)`` the model's output on each perturbed image.
        sample_weight: ``(n,)`` proximity weights (:func:`kernel_weights`).
        num_features: At most this many features ``K`` are kept.
        regressor: ``"wls"`` (``LinearRegression``) or ``"ridge"`` (``Ridge(alpha=1.0)``).

    Returns:
        The :class:`Surrogate`; ``top_features`` may hold fewer than ``K`` entries when the
        lasso path selects fewer.

    Raises:
        ValueError: On an unknown regressor, ``num_features < 1`` or mismatched shapes.
    """
    _check_choice("regressor", regressor, REGRESSORS)
    if num_features < 1:
        raise ValueError(f"num_features must be >= 1. Got {num_features} instead.")
    data = np.asarray(masks, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64).reshape(-1)
    w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if data.ndim != 2 or len(y) != len(data) or len(w) != len(data):
        raise ValueError(
            f"masks must be (n, d) with target and sample_weight of length n. Got {data.shape}, "
            f"{y.shape} and {w.shape} instead."
        )
    from sklearn.linear_model import LinearRegression, Ridge

    used = _lasso_path_features(data, y, w, num_features)
    model: LinearRegression | Ridge = (
        LinearRegression() if regressor == "wls" else Ridge(alpha=1.0, fit_intercept=True)
    )
    x = data[:, used]
    model.fit(x, y, sample_weight=w)
    score = float(model.score(x, y, sample_weight=w))
    local_pred = float(model.predict(x[:1])[0])
    coef = np.asarray(model.coef_, dtype=np.float64).reshape(-1)
    weights = np.zeros(data.shape[1], dtype=np.float64)
    weights[used] = coef
    order = np.lexsort((used, -np.abs(coef)))
    return Surrogate(
        weights=weights,
        intercept=float(model.intercept_),
        score=score,
        local_pred=local_pred,
        top_features=used[order].astype(np.int64),
    )
