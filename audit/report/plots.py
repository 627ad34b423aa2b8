"""Plots for the report, drawn with matplotlib's object API (no pyplot state) as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def steps_histogram(bins: Sequence[str], series: Sequence[tuple[str, Sequence[int]]]) -> bytes:
    """Grouped bar chart of how many images flip after each number of IFGSM steps.

    Args:
        bins: Bar labels (``"0"``, ``"1"``, ..., ``"M"``, ``"never"``).
        series: ``(run title, counts per bin)`` for each run, counts as long as ``bins``.

    Returns:
        PNG bytes.
    """
    fig = Figure(figsize=(7.5, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(bins))
    width = 0.8 / max(1, len(series))
    for i, (title, counts) in enumerate(series):
        total = max(1, int(sum(counts)))
        shares = np.asarray(counts, dtype=np.float64) / total * 100.0
        ax.bar(x + (i - (len(series) - 1) / 2) * width, shares, width, label=title)
    ax.set_xticks(x, list(bins))
    ax.set_xlabel("IFGSM steps to flip the decision (0 = wrong before the attack)")
    ax.set_ylabel("% of attacked images")
    if len(series) > 1:
        ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def rate_bars(
    labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], ylabel: str
) -> bytes:
    """Grouped bars of rates in [0, 1] (shown in %), one group per label, one bar per run."""
    fig = Figure(figsize=(7.5, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    for i, (title, values) in enumerate(series):
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width, np.asarray(values) * 100.0, width, label=title
        )
    ax.set_xticks(x, list(labels))
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
