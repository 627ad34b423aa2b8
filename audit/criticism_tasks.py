"""Ray adapter of the criticism stage: one task per class over the finished Parquet tables.

Each task reads only its class's rows (a pyarrow dataset scan with a ``label == class`` filter on
the predictions and adversarial files the manifest lists), runs the selectors of
:mod:`audit.criticism.selectors`, and returns that class's ``selections`` rows; the driver
writes them with the one Parquet writer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc

from audit.config import CriticismConfig, SelectionMethod
from audit.criticism.selectors import (
    AdversarialSelector,
    MMDCriticSelector,
    ProbabilitySelector,
    RandomSelector,
)
from audit.store import table_dataset

log = logging.getLogger(__name__)


def read_class(
    run_url: str,
    files: Sequence[str],
    columns: Sequence[str],
    cls: int,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Rows of one class (``label == cls``) from a table's files, as numpy columns."""
    table = table_dataset(run_url, files, storage_options).to_table(
        columns=list(columns), filter=pc.field("label") == cls
    )
    out: dict[str, np.ndarray] = {}
    for name in columns:
        col = table.column(name)
        if name in ("embedding", "top5_probs", "top5_classes"):
            out[name] = np.array(col.to_pylist(), dtype=np.float64)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def select_class(
    run_url: str,
    tables: Mapping[str, Sequence[str]],
    cls: int,
    cfg: CriticismConfig,
    methods: Sequence[str],
    storage_options: Mapping[str, Any] | None = None,
) -> list[tuple[str, str, int, str, float]]:
    """Run every selector in ``methods`` on class ``cls``.

    Args:
        run_url: The run folder.
        tables: Table name -> files (relative to the run folder), from the manifest.
        cls: Class index.
        methods: :class:`~audit.config.SelectionMethod` values to run.

    Returns:
        Rows ``(method, role, rank, image_id, score)``, rank 1 = best.
    """
    cols = ["image_id", "label_prob", "top5_classes", "top5_probs"]
    if SelectionMethod.MMD_CRITIC.value in methods:
        cols.append("embedding")
    pred = read_class(run_url, tables["predictions"], cols, cls, storage_options)
    ids = [str(x) for x in pred["image_id"]]
    if not ids:
        return []
    rows: list[tuple[str, str, int, str, float]] = []

    def emit(method: str, sel: Any) -> None:
        for role, picked, scores in (
            ("prototype", sel.prototypes_, sel.prototype_scores_),
            ("criticism", sel.criticisms_, sel.criticism_scores_),
        ):
            for rank, (image_id, score) in enumerate(zip(picked, scores, strict=True), start=1):
                rows.append((method, role, rank, image_id, float(score)))

    p, c = cfg.n_prototypes, cfg.n_criticisms
    for method in methods:
        if method == SelectionMethod.ADVERSARIAL.value:
            adv = read_class(
                run_url,
                tables["adversarial"],
                ["image_id", "steps_to_flip", "adv_prob"],
                cls,
                storage_options,
            )
            by_id = {
                str(i): (s, a)
                for i, s, a in zip(
                    adv["image_id"], adv["steps_to_flip"], adv["adv_prob"], strict=True
                )
            }
            steps = np.array(
                [-1 if np.isnan(by_id[i][0]) else int(by_id[i][0]) for i in ids], dtype=np.int64
            )
            adv_prob = np.array([by_id[i][1] for i in ids], dtype=np.float64)
            top_c, top_p = pred["top5_classes"], pred["top5_probs"]
            correct = top_c[:, 0] == cls
            runner_up = np.where(correct, top_p[:, 1] if top_p.shape[1] > 1 else 0.0, top_p[:, 0])
            margin = pred["label_prob"].astype(np.float64) - runner_up
            # only correctly classified images: with attack.target 'prediction', "never
            # flipped" also holds for an image that stays misclassified
            keep = np.flatnonzero(correct)
            emit(
                method,
                AdversarialSelector(p, c).fit(
                    [ids[i] for i in keep], steps[keep], margin[keep], adv_prob[keep]
                ),
            )
        elif method == SelectionMethod.MMD_CRITIC.value:
            sel = MMDCriticSelector(
                p,
                c,
                gamma=cfg.mmd_gamma,
                lam=cfg.mmd_lambda,
                solver=cfg.mmd_solver.value,
                eps=cfg.sieve_eps,
                seed=cfg.seed,
            )
            emb = np.asarray(pred["embedding"], dtype=np.float64).reshape(len(ids), -1)
            finite = np.flatnonzero(np.isfinite(emb).all(axis=1))  # a NaN row cannot be ranked
            if len(finite) < len(ids):
                log.warning(
                    "class %d: %d of %d embeddings are not finite; MMD-critic ranks the rest",
                    cls,
                    len(ids) - len(finite),
                    len(ids),
                )
            if len(finite):
                emit(method, sel.fit([ids[i] for i in finite], emb[finite]))
        elif method == SelectionMethod.PROBABILITY.value:
            sel_p = ProbabilitySelector(p, c, cfg.proto_threshold, cfg.crit_threshold)
            emit(method, sel_p.fit(ids, pred["label_prob"]))
        elif method == SelectionMethod.RANDOM.value:
            emit(method, RandomSelector(p, c, seed=cfg.seed, stream=cls).fit(ids))
        else:  # pragma: no cover - the config's enum rules this out
            raise ValueError(f"unknown selection method {method!r}")
    return rows
