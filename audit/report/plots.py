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


def reliability_diagram(
    edges: Sequence[float],
    series: Sequence[
        tuple[str, Sequence[int], Sequence[float | None], Sequence[float | None], float]
    ],
) -> bytes:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with a black
    tick at the bin's mean confidence (above), and the share of images per bin (below), one bar
    per run in each bin.

    Args:
        edges: The ``M + 1`` bin edges over [0, 1].
        series: ``(run title, images per bin, mean confidence per bin, accuracy per bin,
            ECE)`` for each run, the per-bin sequences ``M`` long, means None when empty.

    Returns:
        PNG bytes.
    """
    fig = Figure(figsize=(7.5, 5.2), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    lo = np.asarray(edges[:-1], dtype=np.float64)
    widths = np.diff(np.asarray(edges, dtype=np.float64))
    k = max(1, len(series))
    top.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="0.4", linewidth=1, label="calibrated")
    for i, (title, counts, confidence, accuracy, ece) in enumerate(series):
        color = f"C{i % 10}"
        x = lo + widths * (i + 0.5) / k
        full = np.asarray([a is not None for a in accuracy])
        acc = np.asarray([a if a is not None else 0.0 for a in accuracy], dtype=np.float64)
        top.bar(
            x[full],
            acc[full],
            widths[full] / k,
            color=color,
            alpha=0.75,
            edgecolor="white",
            label=f"{title} (ECE {ece * 100:.2f} %)",
        )
        conf = np.asarray([c if c is not None else np.nan for c in confidence], np.float64)
        top.plot(
            x[full],
            conf[full],
            linestyle="none",
            marker="_",
            markersize=max(4.0, 200.0 / len(lo) / k),
            markeredgewidth=2,
            color="black",
            label="mean confidence of the bin" if i == 0 else None,
        )
        n = np.asarray(counts, dtype=np.float64)
        bottom.bar(x, n / max(1.0, float(n.sum())) * 100.0, widths / k, color=color, alpha=0.75)
    top.set_xlim(0.0, 1.0)
    top.set_ylim(0.0, 1.0)
    top.set_ylabel("accuracy in the bin")
    top.legend(fontsize="small", loc="upper left")
    top.grid(alpha=0.3)
    bottom.set_xlabel("top-1 confidence")
    bottom.set_ylabel("% of images")
    bottom.grid(axis="y", alpha=0.3)
    return _png(fig)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
