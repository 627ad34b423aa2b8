"""Where the human-study files of a run live, read and written through fsspec.

Layout under the human folder (``<run>/human`` unless ``--output`` names another URL)::

    images/<kind>/<opaque name>.png          what raters see (crop, adversarial, explanation)
    batches/<study>-<batch>/                 one exported batch (see audit.human.export)
    answers/<study>-<batch>/answers.parquet  one row per answer of an ingested results file
    tables/<name>.parquet                    the analysis tables (Tables 1-3, Figure 2, public)
    judged/<source>.parquet                  a public source's per-image judgments
    figures/<name>.png                       plots
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

IMAGES = "images"
BATCHES = "batches"
ANSWERS = "answers"
TABLES = "tables"
JUDGED = "judged"
FIGURES = "figures"


def read_columns(
    run: str,
    table: str,
    columns: Sequence[str],
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Only ``columns`` of one of a run's tables (as its manifest lists the files), so that a
    50,000-row predictions table is read without its embeddings
    (:meth:`audit.run.reader.RunReader.table`).

    Raises:
        audit.run.manifest_types.NoRunError: ``run`` has no manifest (a ``FileNotFoundError``).
    """
    from audit.run.reader import RunReader

    return RunReader(run, storage_options).table(table, columns=columns)


def human_root(run: str, output: str | None = None) -> str:
    """The human folder of ``run``: ``output`` if given, else ``<run>/human``."""
    return output if output is not None else run.rstrip("/") + "/human"


class HumanStore:
    """Reads and writes files under one human folder (a local path or any fsspec URL).

    Args:
        root: The human folder (:func:`human_root`).
        storage_options: Passed to fsspec.
    """

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.fs, base = fsspec.core.url_to_fs(root, **dict(storage_options or {}))
        self.path = base.rstrip("/")

    def full(self, rel: str) -> str:
        return self.path + "/" + rel

    def url(self, rel: str = "") -> str:
        """The fsspec URL of ``rel`` (the folder itself when empty)."""
        return str(self.fs.unstrip_protocol(self.full(rel) if rel else self.path))

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.full(rel)))

    def write_bytes(self, rel: str, data: bytes) -> None:
        parent = self.full(rel).rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        with self.fs.open(self.full(rel), "wb") as f:
            f.write(data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def write_json(self, rel: str, data: Any) -> None:
        self.write_text(rel, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open(self.full(rel), "rb") as f:
            data: bytes = f.read()
        return data

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel).decode("utf-8"))

    def write_parquet(self, rel: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(rel, buf.getvalue())

    def read_parquet(self, rel: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(rel)))

    def list_names(self, rel: str) -> list[str]:
        """Names of the entries of folder ``rel``, sorted; empty when it does not exist."""
        if not self.exists(rel):
            return []
        entries = self.fs.ls(self.full(rel), detail=False)
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def remove(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.rm(self.full(rel), recursive=True)
