"""Read what the report shows from a run folder: manifest, tables (without the heavy columns),
class names, and the human-study tables and figures under ``<run>/human/``.

Nothing is recomputed here: LIME, the attack and the selections are read as the run stored them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from audit.config import ConfigError
from audit.models.transform import EvalTransform
from audit.run.manifest_types import Manifest, ManifestError
from audit.run.reader import MANIFEST, RunReader, TableError
from audit.store import SCHEMAS

HUMAN_TABLES = "human/tables"
HUMAN_FIGURES = "human/figures"
HUMAN_JUDGED = "human/judged"

# Columns the report never needs in memory (embeddings are 512-2208 floats a row; adversarial
# pixels are read only for the few images shown, by adversarial_pngs).
_SKIP = {"predictions": {"embedding"}, "adversarial": {"image_png"}}


@dataclass(frozen=True)
class ClassNames:
    """Display names of a model's output indices.

    Attributes:
        ids: Class ids (WordNet ids, ``digit_3``), one per output index.
        names: Human-readable names, same length.
    """

    ids: tuple[str, ...]
    names: tuple[str, ...]

    def label(self, index: int | None) -> str:
        """``"tench (n01440764)"``; ``"unlabeled"`` for None; ``"class 17"`` when unknown."""
        if index is None:
            return "unlabeled"
        if 0 <= index < len(self.ids):
            name, cid = self.names[index], self.ids[index]
            return cid if name == cid else f"{name} ({cid})"
        return f"class {index}"

    def short(self, index: int | None) -> str:
        """The name alone (``"tench"``)."""
        if index is None:
            return "unlabeled"
        return self.names[index] if 0 <= index < len(self.names) else f"class {index}"


@dataclass(frozen=True)
class RunData:
    """One run as the report reads it.

    Attributes:
        url: The run folder as given.
        manifest: ``manifest.json``, typed.
        classes: Names of the model's classes.
        tables: ``predictions`` (no embedding), ``errors``, ``adversarial`` (no pixels),
            ``explanations``, ``selections``, ``metrics``.
        human: Every ``<run>/human/tables/*.parquet``, by file stem, sorted by name.
        human_figures: Every ``<run>/human/figures/*.png``, by file stem.
        judged: Every public source's per-image judgments, ``<run>/human/judged/<source>.parquet``
            (``audit-cli human public``), by source name: image stem -> the classes it accepts.
        storage_options: fsspec options the run was read with.
    """

    url: str
    manifest: Manifest
    classes: ClassNames
    tables: dict[str, pa.Table]
    human: dict[str, pa.Table] = field(default_factory=dict)
    human_figures: dict[str, bytes] = field(default_factory=dict)
    judged: dict[str, dict[str, frozenset[int]]] = field(default_factory=dict)
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.manifest.run_id or posixpath.basename(self.url.rstrip("/"))

    @property
    def model(self) -> str:
        return self.manifest.model.name

    @property
    def title(self) -> str:
        """``"<model> (<run_id>)"``: how columns and headings name the run."""
        return f"{self.model} ({self.run_id})"

    @property
    def max_steps(self) -> int | None:
        value = self.manifest.config_value("attack", "max_steps")
        return int(value) if isinstance(value, int) else None

    @property
    def keep_images(self) -> bool:
        return bool(self.manifest.config_value("attack", "keep_images"))

    @property
    def max_pixels(self) -> int:
        value = self.manifest.config_value("data", "max_pixels")
        return int(value) if isinstance(value, int) else 89_478_485

    @property
    def transform(self) -> EvalTransform:
        """The evaluation transform the run's model used (resize 256 / crop 224 for a run
        written before transforms were recorded)."""
        return self.manifest.model.eval_transform()

    @property
    def jpeg_draft(self) -> bool:
        """Whether the run decoded large JPEGs in draft mode (``data.jpeg_draft``)."""
        return bool(self.manifest.config_value("data", "jpeg_draft"))


def class_names(reader: RunReader, selections: pa.Table | None = None) -> ClassNames:
    """The class list a run's model used (:meth:`RunReader.classes`: its ``classes`` table,
    or for a run written before that table existed the shipped list its manifest names).

    For another list of an older run the ids come from the selections table where it has
    them, and the index stands in for the rest.
    """
    index = reader.classes()
    if index is not None:
        return ClassNames(index.ids, index.names)
    n = reader.manifest.model.num_classes
    ids = [f"class_{i}" for i in range(n)]
    if selections is not None and selections.num_rows:
        for cls, cid in zip(
            selections.column("class").to_pylist(),
            selections.column("class_id").to_pylist(),
            strict=True,
        ):
            if 0 <= cls < n:
                ids[cls] = cid
    return ClassNames(tuple(ids), tuple(ids))


def _fs(url: str, storage_options: Mapping[str, Any]) -> tuple[Any, str]:
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options))
    return fs, path.rstrip("/")


def read_run_table(reader: RunReader, name: str) -> pa.Table:
    """One table of the run as its manifest lists it, without the columns the report skips.

    Raises:
        ConfigError: the files lack a column (written by an older version).
    """
    columns = [c for c in SCHEMAS[name].names if c not in _SKIP.get(name, set())]
    try:
        return reader.table(name, columns=columns)
    except TableError as exc:
        raise ConfigError(str(exc)) from None


def adversarial_pngs(run: RunData, image_ids: Iterable[str]) -> dict[str, bytes]:
    """The stored adversarial PNGs of ``image_ids`` (only those that have one)."""
    wanted = sorted(set(image_ids))
    if not wanted or not run.manifest.files("adversarial"):
        return {}
    reader = RunReader(run.url, run.storage_options, manifest=run.manifest)
    table = reader.table(
        "adversarial",
        columns=["image_id", "image_png"],
        filters=pc.field("image_id").isin(wanted),
    )
    out: dict[str, bytes] = {}
    for image_id, png in zip(
        table.column("image_id").to_pylist(), table.column("image_png").to_pylist(), strict=True
    ):
        if png:
            out[image_id] = png
    return out


def _read_parquet_folder(fs: Any, folder: str) -> dict[str, pa.Table]:
    """file stem -> table, for every ``folder/*.parquet`` (none when the folder is absent)."""
    tables: dict[str, pa.Table] = {}
    if fs.exists(folder):
        for path in sorted(fs.glob(folder + "/*.parquet")):
            stem = posixpath.splitext(posixpath.basename(path))[0]
            try:
                with fs.open(path, "rb") as f:
                    tables[stem] = pq.read_table(f)
            except (OSError, pa.ArrowInvalid) as exc:
                raise ConfigError(
                    f"Cannot read the human-study table {fs.unstrip_protocol(path)!r}: {exc}"
                ) from None
    return tables


def _read_judged(
    run: str, storage_options: Mapping[str, Any]
) -> dict[str, dict[str, frozenset[int]]]:
    fs, base = _fs(run, storage_options)
    out = {}
    for name, t in _read_parquet_folder(fs, base + "/" + HUMAN_JUDGED).items():
        if not {"image_id", "valid_labels"} <= set(t.column_names):
            raise ConfigError(
                f"The per-image judgments {name!r} of run {run!r} lack the columns image_id "
                "and valid_labels."
            )
        out[name] = {
            i: frozenset(v or ())
            for i, v in zip(
                t.column("image_id").to_pylist(), t.column("valid_labels").to_pylist(), strict=True
            )
        }
    return out


def _read_human(
    run: str, storage_options: Mapping[str, Any]
) -> tuple[dict[str, pa.Table], dict[str, bytes]]:
    fs, base = _fs(run, storage_options)
    tables = _read_parquet_folder(fs, base + "/" + HUMAN_TABLES)
    figures: dict[str, bytes] = {}
    folder = base + "/" + HUMAN_FIGURES
    if fs.exists(folder):
        for path in sorted(fs.glob(folder + "/*.png")):
            stem = posixpath.splitext(posixpath.basename(path))[0]
            figures[stem] = fs.cat_file(path)
    return tables, figures


def load_run(run: str, storage_options: Mapping[str, Any] | None = None) -> RunData:
    """Read everything the report needs from the run folder ``run`` (path or fsspec URL).

    Raises:
        ConfigError: no manifest there, or a table or human-study file that cannot be read.
    """
    options = dict(storage_options or {})
    reader = RunReader(run, options)
    if not reader.exists():
        raise ConfigError(f"No run at {run!r}: {MANIFEST} not found there.")
    try:
        manifest = reader.manifest
    except ManifestError as exc:
        raise ConfigError(str(exc)) from None
    try:
        tables = {name: read_run_table(reader, name) for name in SCHEMAS}
        classes = class_names(reader, tables["selections"])
    except (OSError, pa.ArrowInvalid) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"Cannot read the tables of run {run!r}: {first}") from None
    human, figures = _read_human(run, options)
    return RunData(
        url=run,
        manifest=manifest,
        classes=classes,
        tables=tables,
        human=human,
        human_figures=figures,
        judged=_read_judged(run, options),
        storage_options=options,
    )
