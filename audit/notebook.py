"""A run, opened for a notebook: ``audit.open_run(url)``.

Everything here reads what the run stored (through :class:`audit.run.reader.RunReader`, so only
the files its manifest lists as committed); nothing is recomputed but the per-class frame,
which is aggregated from the ``predictions`` and ``adversarial`` tables.

Example::

    import audit

    run = audit.open_run("audit-output/20261204-120000-demo_digits")
    run.state, run.manifest.model.name            # "succeeded", "demo_digits"
    preds = run.df("predictions", columns=["image_id", "label", "correct_top1"])
    adv = run.df("adversarial")                   # steps_to_flip: Int16, <NA> = never flipped
    run.per_class().sort_values("top1_error", ascending=False).head()
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from audit.calibration import BINS, Calibration, predictions_calibration
from audit.run.manifest_types import Manifest
from audit.run.reader import RunReader

if TYPE_CHECKING:
    import pandas as pd

PER_CLASS_COLUMNS = (
    "index",
    "class_id",
    "name",
    "images",
    "top1_error",
    "top5_error",
    "mean_loss",
    "mean_label_prob",
    "attacked",
    "adv_top1_accuracy",
    "mean_steps_to_flip",
    "never_flipped",
)
"""The columns of :meth:`AuditRun.per_class`, in order (docs/notebook.md says what each is)."""


def _pandas_dtype(t: pa.DataType) -> Any:
    """The nullable pandas dtype of an Arrow type (None: pandas' own choice, lists and binary
    stay object columns)."""
    import pandas as pd

    if pa.types.is_boolean(t):
        return pd.BooleanDtype()
    if pa.types.is_integer(t):
        return pd.api.types.pandas_dtype(str(t).replace("int", "Int").replace("uInt", "UInt"))
    if pa.types.is_floating(t) and t.bit_width in (32, 64):
        return pd.Float32Dtype() if t.bit_width == 32 else pd.Float64Dtype()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pd.StringDtype()
    return None


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as a pandas frame with nullable dtypes: a null integer is ``<NA>`` in an
    ``Int16``/``Int32`` column (not NaN in a float one), a null bool ``<NA>`` in a ``boolean``
    column, strings are ``string``; list columns hold NumPy arrays."""
    return table.to_pandas(types_mapper=_pandas_dtype)


class AuditRun:
    """One run folder, read lazily (the manifest once, each table when asked for).

    A run still being written is shown as its manifest was when first read: open it again to
    follow it.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.reader = RunReader(url, storage_options)

    def __repr__(self) -> str:
        m = self.manifest
        return f"AuditRun({self.url!r}: {m.state}, model {m.model.name})"

    @property
    def url(self) -> str:
        return self.reader.url

    @property
    def manifest(self) -> Manifest:
        """The typed manifest (``audit.run.manifest_types.Manifest``)."""
        return self.reader.manifest

    @property
    def raw_manifest(self) -> dict[str, Any]:
        """``manifest.json`` as JSON gives it."""
        return self.reader.raw_manifest

    @property
    def state(self) -> str | None:
        """``running``, ``succeeded``, ``failed`` (None in a manifest too old to say)."""
        return self.manifest.state

    @property
    def tables(self) -> list[str]:
        """The tables the manifest lists files for, sorted."""
        return sorted(n for n in self.manifest.tables if self.manifest.files(n))

    def table(
        self,
        name: str,
        columns: Sequence[str] | None = None,
        filters: pc.Expression | None = None,
    ) -> pa.Table:
        """Table ``name`` as Arrow, cast to its declared schema (see :meth:`RunReader.table`)."""
        return self.reader.table(name, columns=columns, filters=filters)

    def df(
        self,
        name: str,
        columns: Sequence[str] | None = None,
        filters: pc.Expression | None = None,
    ) -> pd.DataFrame:
        """Table ``name`` as pandas with nullable dtypes (:func:`to_pandas`). A predictions
        table with embeddings is large: name the ``columns`` you need."""
        return to_pandas(self.table(name, columns=columns, filters=filters))

    @functools.cached_property
    def _classes(self) -> pa.Table:
        index = self.reader.classes()
        if index is None:  # an old run with a class list of its own: indices only
            ids = [f"class_{i}" for i in range(self.manifest.model.num_classes)]
            return classes_table(ids, ids)
        return classes_table(index.ids, index.names)

    def classes(self) -> pd.DataFrame:
        """The model's classes: ``index`` (what ``label`` and ``top5_classes`` hold),
        ``class_id`` and ``name``."""
        return to_pandas(self._classes)

    def per_class(self) -> pd.DataFrame:
        """One row per class with labeled, predicted images (the classes the ``metrics``
        table has rows for), sorted by index; columns :data:`PER_CLASS_COLUMNS`."""
        return to_pandas(per_class_table(self.table, self._classes))

    def calibration(self, bins: int = BINS) -> Calibration | None:
        """The top-1 confidence of the labeled predictions against their accuracy in ``bins``
        equal-width bins (:mod:`audit.calibration`: ``.ece``, ``.mce``, ``.counts``, ...), the
        figures of the report's calibration section; None without labeled predictions."""
        cols = ["label", "top5_probs", "correct_top1"]
        return predictions_calibration(self.table("predictions", columns=cols), bins)


def classes_table(ids: Sequence[str], names: Sequence[str]) -> pa.Table:
    """The ``classes`` table's columns (``index``, ``class_id``, ``name``) for a class list."""
    return pa.table(
        {
            "index": pa.array(range(len(ids)), pa.int32()),
            "class_id": pa.array(ids, pa.string()),
            "name": pa.array(names, pa.string()),
        }
    )


def per_class_table(read: Any, classes: pa.Table) -> pa.Table:
    """The per-class frame as Arrow, from ``read(name, columns=...)`` (a table reader) and the
    run's ``classes`` table.

    - ``images``: labeled, predicted images of the class; ``top1_error``, ``top5_error``,
      ``mean_loss`` and ``mean_label_prob`` over them.
    - ``attacked``: those with an adversarial row; ``adv_top1_accuracy``: the share whose
      adversarial class is still the label; ``mean_steps_to_flip``: the mean steps of those
      that flipped (0 included: already misclassified); ``never_flipped``: the share that did
      not flip within ``attack.max_steps``. Null when the class has no adversarial row.
    """
    preds = read(
        "predictions", columns=["label", "correct_top1", "correct_top5", "loss", "label_prob"]
    ).filter(pc.is_valid(pc.field("label")))
    p = preds.group_by("label").aggregate(
        [
            ([], "count_all"),
            ("correct_top1", "mean"),
            ("correct_top5", "mean"),
            ("loss", "mean"),
            ("label_prob", "mean"),
        ]
    )
    adv = read("adversarial", columns=["label", "adv_class", "steps_to_flip"]).filter(
        pc.is_valid(pc.field("label"))
    )
    adv = adv.append_column("same", pc.equal(adv.column("adv_class"), adv.column("label")))
    adv = adv.append_column("never", pc.is_null(adv.column("steps_to_flip")))
    adv = adv.set_column(
        adv.schema.get_field_index("steps_to_flip"),
        "steps_to_flip",
        pc.cast(adv.column("steps_to_flip"), pa.float64()),
    )
    a = adv.group_by("label").aggregate(
        [([], "count_all"), ("same", "mean"), ("steps_to_flip", "mean"), ("never", "mean")]
    )
    a = a.rename_columns(["label", "attacked", "adv_top1_accuracy", "mean_steps", "never_flipped"])
    p = p.rename_columns(
        ["label", "images", "top1_acc", "top5_acc", "mean_loss", "mean_label_prob"]
    )
    joined = p.join(a, "label", join_type="left outer")
    joined = joined.join(
        classes.rename_columns(["label", "class_id", "name"]), "label", join_type="left outer"
    ).sort_by("label")
    one = pa.scalar(1.0)
    out = {
        "index": joined.column("label").cast(pa.int32()),
        "class_id": joined.column("class_id"),
        "name": joined.column("name"),
        "images": joined.column("images"),
        "top1_error": pc.subtract(one, joined.column("top1_acc")),
        "top5_error": pc.subtract(one, joined.column("top5_acc")),
        "mean_loss": joined.column("mean_loss"),
        "mean_label_prob": joined.column("mean_label_prob"),
        "attacked": pc.coalesce(joined.column("attacked"), pa.scalar(0, pa.int64())),
        "adv_top1_accuracy": joined.column("adv_top1_accuracy"),
        "mean_steps_to_flip": joined.column("mean_steps"),
        "never_flipped": joined.column("never_flipped"),
    }
    assert tuple(out) == PER_CLASS_COLUMNS
    return pa.table(out)


def open_run(url: str, storage_options: Mapping[str, Any] | None = None) -> AuditRun:
    """Open the run folder ``url`` (a local path or any fsspec URL; ``storage_options`` as
    fsspec takes them, never printed).

    Raises:
        NoRunError: the folder holds no manifest (a ``FileNotFoundError`` too).
        ManifestError: the manifest is not valid, or of a newer format.
        OSError: the storage refused the read.
    """
    run = AuditRun(url, storage_options)
    run.manifest  # noqa: B018  (read now: a wrong path fails here, not at the first table)
    return run
