"""The one reader of a run folder: its typed manifest, its tables, its classes.

Only the files the manifest lists as committed are read: a shard file on disk that the manifest
does not list (a shard in flight when the driver died) is not part of the run.

Example::

    run = RunReader("s3://bucket/audit/resnet50-x")
    run.manifest.model.name                  # typed, read once
    run.table("predictions", columns=["image_id", "correct_top1"])
    run.table("adversarial", filters=pc.field("image_id").isin(ids))
    run.classes()                            # ClassIndex, or None for an old run of unknown list
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from audit.data.classes import ClassIndex
from audit.run.manifest_types import Manifest, ManifestError, NoRunError

MANIFEST = "manifest.json"


class TableError(ManifestError):
    """A table the manifest lists but that lacks columns the reader asked for."""


def shipped_class_index(name: str | None) -> ClassIndex | None:
    """The shipped class list a manifest names (``imagenet``, ``digits``), None for another."""
    if name == "imagenet":
        from audit.data.classes import imagenet_classes

        return imagenet_classes()
    if name == "digits":
        from audit.data.demo import DIGIT_CLASSES

        return DIGIT_CLASSES
    return None


class RunReader:
    """Reads one run folder (a local path or any fsspec URL).

    The manifest is read on first use and kept: a reader shows the run as it was then, so
    make a new reader to follow a running run.

    Args:
        run: The run folder.
        storage_options: fsspec options for reading it.
        manifest: The run's manifest when the caller has read it already: the tables are
            then read as that manifest lists them.
    """

    def __init__(
        self,
        run: str,
        storage_options: Mapping[str, Any] | None = None,
        manifest: Manifest | None = None,
    ) -> None:
        self.url = run
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        self.fs, base = fsspec.core.url_to_fs(run, **self.storage_options)
        self.path = base.rstrip("/")
        if manifest is not None:
            self.__dict__["manifest"] = manifest  # what the cached property would hold

    def exists(self) -> bool:
        """Whether the folder holds a manifest."""
        return bool(self.fs.exists(self.path + "/" + MANIFEST))

    @functools.cached_property
    def raw_manifest(self) -> dict[str, Any]:
        """``manifest.json`` as JSON gives it (what ``status --json`` shows).

        Raises:
            NoRunError: there is no manifest (a ``FileNotFoundError`` too).
            ManifestError: it is not valid JSON.
            OSError: the storage refused the read.
        """
        try:
            with self.fs.open(self.path + "/" + MANIFEST, "r", encoding="utf-8") as f:
                data: dict[str, Any] = json.load(f)
        except FileNotFoundError:
            raise NoRunError(f"{self.url}: no {MANIFEST}, not a run folder") from None
        except UnicodeDecodeError as exc:
            raise ManifestError(f"the manifest of {self.url!r} is not UTF-8: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"the manifest of {self.url!r} is not valid JSON: {exc}") from None
        return data

    @functools.cached_property
    def manifest(self) -> Manifest:
        """The typed manifest.

        Raises:
            NoRunError, ManifestError (a newer format: ManifestVersionError), OSError: as
            :attr:`raw_manifest`, and a manifest this version cannot read.
        """
        return Manifest.from_json(self.raw_manifest, where=repr(self.url))

    def dataset(self, name: str) -> pads.Dataset | None:
        """A pyarrow dataset over the committed files of table ``name``; None when it has
        none (a table with no file yet, or one the manifest does not list)."""
        from audit.store import table_dataset

        files = self.manifest.files(name)
        return table_dataset(self.url, files, self.storage_options) if files else None

    def table(
        self,
        name: str,
        columns: Sequence[str] | None = None,
        filters: pc.Expression | None = None,
    ) -> pa.Table:
        """Table ``name`` from its committed files, cast to its declared schema.

        Args:
            name: A table of the run (``predictions``, ``errors``, ``classes``...).
            columns: Only these columns, in this order (all by default): a predictions table
                is then read without its embeddings.
            filters: A pyarrow expression rows must satisfy, applied while reading.

        Raises:
            TableError: the files lack a column asked for (written by an older version).
            OSError, pyarrow.ArrowInvalid: a file cannot be read.
        """
        from audit.store import SCHEMAS

        declared = SCHEMAS.get(name)
        dataset = self.dataset(name)
        if dataset is None:
            if declared is None:
                return pa.table({c: pa.array([], pa.null()) for c in columns or ()})
            schema = declared if columns is None else _select(declared, columns)
            empty: pa.Table = schema.empty_table()
            return empty
        wanted = list(columns) if columns is not None else None
        if declared is not None:
            have = set(dataset.schema.names)
            missing = [c for c in (wanted or declared.names) if c not in have]
            if missing:
                raise TableError(
                    f"The {name} table of run {self.url!r} lacks the column(s) "
                    f"{', '.join(missing)}: was it written by an older version?"
                )
        data = dataset.to_table(columns=wanted, filter=filters)
        if declared is None:
            return data
        return data.cast(declared if wanted is None else _select(declared, wanted))

    def classes(self) -> ClassIndex | None:
        """The run's classes in output-index order: its ``classes`` table, else (an older run)
        the shipped list its manifest names when the number of classes matches; None when
        neither tells."""
        model = self.manifest.model
        table = self.table("classes")
        if table.num_rows:
            t = table.sort_by("index")
            return ClassIndex(
                model.classes or "classes",
                tuple(t.column("class_id").to_pylist()),
                tuple(t.column("name").to_pylist()),
            )
        shipped = shipped_class_index(model.classes)
        if shipped is not None and (not model.num_classes or model.num_classes == len(shipped)):
            return shipped
        return None


def _select(schema: pa.Schema, columns: Sequence[str]) -> pa.Schema:
    return pa.schema([schema.field(c) for c in columns])
