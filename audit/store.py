"""The output tables' schemas, the one Parquet writer, and the run manifest.

Layout of a run (``root`` is a local path or any fsspec URL)::

    <root>/<run_id>/manifest.json
    <root>/<run_id>/<table>/shard-00000.parquet, shard-00001.parquet, ...  (per-image tables)
    <root>/<run_id>/<table>/all.parquet                                      (selections, metrics)

Every table is written with the explicit schema below (derived from the column declarations
of :mod:`audit.columns` and the stages), so a table with no rows still has one
(empty) file that readers can open. The schemas are a public contract: docs/tables.md documents
them, and changing a column is a breaking change.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from audit.columns import IMAGE_ID, MODEL, RUN_ID, URI, Column, Table
from audit.config import ConfigError
from audit.run.manifest_types import FileChecksum
from audit.stages.attack_table import ADVERSARIAL_TABLE
from audit.stages.explain_table import EXPLANATIONS_TABLE
from audit.stages.predict_table import PREDICTIONS_TABLE

ERRORS_TABLE = Table(
    "errors",
    (
        RUN_ID,
        IMAGE_ID,
        replace(URI, doc="where the input was"),
        Column("stage", pa.string(), doc="list, read, decode, segment or predict"),
        Column("reason", pa.string(), doc="one line saying why"),
    ),
)

_CLASS_ID = Column("class_id", pa.string(), doc="the class id, e.g. the WordNet id")

SELECTIONS_TABLE = Table(
    "selections",
    (
        RUN_ID,
        MODEL,
        Column("class", pa.int32(), doc="class index"),
        _CLASS_ID,
        Column("method", pa.string(), doc="adversarial, mmd_critic, probability, random"),
        Column("role", pa.string(), doc="prototype or criticism"),
        Column("rank", pa.int16(), doc="1 = best"),
        replace(IMAGE_ID, dtype=None, doc="the chosen image"),
        Column("score", pa.float64(), doc="what the method ranked by"),
    ),
)

METRICS_TABLE = Table(
    "metrics",
    (
        RUN_ID,
        MODEL,
        Column("name", pa.string(), doc="the metric's name"),
        Column("scope", pa.string(), doc='"all" or a class id (wnid)'),
        Column("value", pa.float64(), doc="the metric"),
        Column("count", pa.int64(), doc="images the value is computed over"),
    ),
)

CLASSES_TABLE = Table(
    "classes",
    (
        Column("index", pa.int32(), doc="the model's output index"),
        _CLASS_ID,
        Column("name", pa.string(), doc="human-readable name"),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        PREDICTIONS_TABLE,
        ERRORS_TABLE,
        ADVERSARIAL_TABLE,
        EXPLANATIONS_TABLE,
        SELECTIONS_TABLE,
        METRICS_TABLE,
        CLASSES_TABLE,
    )
}
"""Every table's column declarations, by table name (the per-image tables' come from their
stages: :mod:`audit.stages.predict_table`, ``attack_table``, ``explain_table``)."""

SCHEMAS: dict[str, pa.Schema] = {name: t.schema() for name, t in TABLES.items()}

SHIPPED_TABLES = tuple(TABLES)
"""The tables every run has; an optional or plug-in stage adds its own with
:func:`register_table`, and a run that enables it with :meth:`RunStore.add_table`."""


def register_table(table: Table) -> None:
    """Add a plug-in stage's per-image table to :data:`TABLES` and :data:`SCHEMAS` (the
    stage registry calls this); the same declaration again changes nothing.

    Raises:
        ValueError: another table of that name is declared already.
    """
    known = TABLES.get(table.name)
    if known is not None and known != table:
        raise ValueError(f"A table named {table.name!r} is declared already, with other columns.")
    TABLES[table.name] = table
    SCHEMAS[table.name] = table.schema()


def unregister_table(name: str) -> None:
    """Remove a plug-in table again (shipped tables stay)."""
    if name not in SHIPPED_TABLES:
        TABLES.pop(name, None)
        SCHEMAS.pop(name, None)


BIAS_CANDIDATES_TABLE = Table(
    "bias_candidates",
    (
        Column("class", pa.int32(), doc="class index"),
        Column("class_id", pa.string(), doc="class id (WordNet id)"),
        Column("kind", pa.string(), doc="context, coactivation or slice"),
        Column("evidence", pa.string(), doc="one sentence saying what was found"),
        Column("statistic", pa.float64(), doc="the kind's ranking statistic"),
        Column("p_value", pa.float64(), nullable=True, doc="Benjamini-Hochberg adjusted"),
        Column("effect_size", pa.float64(), nullable=True, doc="the kind's effect size"),
        Column("exemplar_ids", pa.list_(pa.string()), doc="images that show it"),
        Column("rank", pa.int32(), doc="1 = strongest of its kind"),
    ),
)
"""Bias discovery's table (:mod:`audit.bias.candidates`), written by a run with object boxes
(``data.boxes``): declared here, with the others, but not one of :data:`SHIPPED_TABLES`."""
register_table(BIAS_CANDIDATES_TABLE)


PREDICTIONS = SCHEMAS["predictions"]
ERRORS = SCHEMAS["errors"]
ADVERSARIAL = SCHEMAS["adversarial"]
EXPLANATIONS = SCHEMAS["explanations"]
SELECTIONS = SCHEMAS["selections"]
METRICS = SCHEMAS["metrics"]
CLASSES = SCHEMAS["classes"]


MANIFEST = "manifest.json"

WRITE_ATTEMPTS = 3
"""Tries per Parquet file or manifest write before the run fails."""

WRITE_BACKOFF_S = 0.5
"""Wait before the second try; doubled before each later one."""

OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss"})
"""fsspec protocols of object stores: a root there starts with a bucket, which :class:`RunStore`
checks for and never creates (``makedirs`` on s3fs would create it)."""


def run_url(root: str, run_id: str) -> str:
    return root.rstrip("/") + "/" + run_id


class RunStore:
    """Writes one run's tables and manifest through fsspec.

    Files are written under their final names (a given name such as ``shard-00012``, else
    ``part-NNNNN`` numbered per table in write order) and recorded in the manifest only after
    they are complete. The manifest is replaced
    atomically on local disk (write then rename) and written in one PUT elsewhere.

    Args:
        root: Output root, a local path or fsspec URL.
        run_id: The run's folder name.
        storage_options: Passed to fsspec (credentials stay out of the manifest).
    """

    def __init__(self, root: str, run_id: str, storage_options: Mapping[str, Any] | None = None):
        self.fs, base = fsspec.core.url_to_fs(root, **dict(storage_options or {}))
        self.run_id = run_id
        self.path = base.rstrip("/") + "/" + run_id
        self._parts: dict[str, int] = {}
        self.files: dict[str, list[str]] = {name: [] for name in SHIPPED_TABLES}
        self.rows: dict[str, int] = {name: 0 for name in SHIPPED_TABLES}
        self.checksums: dict[str, FileChecksum] = {}
        """Size and sha256 of each file written (or adopted with one), by relative path: the
        manifest records those of the listed files."""
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.object_store = bool(set(protocols) & OBJECT_STORE_PROTOCOLS)
        """Whether the root is on an object store, whose first path part is a bucket: then no
        folder is ever created (creating one would create a missing bucket)."""

    @property
    def url(self) -> str:
        return str(self.fs.unstrip_protocol(self.path))

    def exists(self) -> bool:
        return bool(self.fs.exists(self.path + "/" + MANIFEST))

    def refuse_existing(self, overwrite: bool) -> None:
        """Raise unless the run folder is absent or empty, or holds a run and ``overwrite`` is set.

        A run is a folder holding this tool's ``manifest.json`` (a JSON object with a
        ``run_id``). Anything else at the run path (a file, a folder of someone's files, a
        folder with another program's ``manifest.json``) is refused even with ``overwrite``:
        overwriting deletes the folder, and only a run may be deleted.

        Raises:
            ConfigError: the run exists and ``overwrite`` is false, or the path holds something
                that is not a run.
        """
        if not self.fs.exists(self.path):
            return
        folder = bool(self.fs.isdir(self.path))
        if folder and not self.fs.ls(self.path):
            return  # an empty folder is taken as it is
        try:
            with self.fs.open(self.path + "/" + MANIFEST, "r", encoding="utf-8") as f:
                manifest = json.load(f)
            is_run = isinstance(manifest, dict) and "run_id" in manifest
        except (OSError, ValueError):  # no manifest (or the path is a file), or not JSON
            is_run = False
        if not is_run:
            raise ConfigError(
                f"The output path {self.url!r} {'is not empty' if folder else 'is a file'} and "
                "holds no manifest.json of this tool, so it is not a run of this tool: choose "
                "another 'output.run_id' or 'output.root' (output.overwrite replaces only runs)."
            )
        if not overwrite:
            raise ConfigError(
                f"The output run {self.url!r} already exists: choose another "
                "'output.run_id' or set output.overwrite=true to replace it."
            )

    def prepare(self, overwrite: bool) -> None:
        """Create the run folder, replacing an existing run only if ``overwrite``
        (:meth:`refuse_existing` says what is a run; nothing else is ever deleted).

        On an object store (:data:`OBJECT_STORE_PROTOCOLS`) the root's bucket must exist: it is
        checked once here and never created (an object store has no folders to create).

        Raises:
            ConfigError: the run exists and ``overwrite`` is false, the path holds something
                that is not a run, or the root's bucket does not exist.
        """
        if self.object_store:
            bucket = self.path.split("/", 1)[0]
            self.fs.invalidate_cache(bucket)
            if not self.fs.exists(bucket):
                raise ConfigError(
                    f"output.root names bucket {bucket!r}, which does not exist: create it first"
                )
        self.refuse_existing(overwrite)
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)
        if not self.object_store:
            self.fs.makedirs(self.path, exist_ok=True)

    def write(
        self,
        table: str,
        data: pa.Table | Mapping[str, Any],
        name: str | None = None,
        record: bool = True,
    ) -> str:
        """Write one Parquet file of ``table`` with its schema; returns its path in the run.

        ``data`` may be a pyarrow Table or a mapping of column name to values; it is cast to the
        table's schema, so a missing or mistyped column fails here, not in a reader. ``name``
        gives the file a fixed name (``<table>/<name>.parquet``, replaced if it exists), else
        files are numbered ``part-NNNNN`` in write order. With ``record=False`` the file is
        written but not listed (the caller lists it with :meth:`record` once a whole group of
        files is written). A failing write is retried
        :data:`WRITE_ATTEMPTS` times in all, with backoff, before it raises.

        The file is encoded in memory and stored in one PUT; its size and sha256 go into
        :attr:`checksums` (the manifest records them). On an object store no folder is created,
        so a write into a bucket that is gone fails instead of creating it again.

        Raises:
            OSError: the storage refused every attempt; the file is then not recorded.
        """
        schema = SCHEMAS[table]
        if isinstance(data, pa.Table):
            arrow = data.select(schema.names).cast(schema)
        else:
            arrow = pa.Table.from_pydict(dict(data), schema=schema)
        if name is None:
            part = self._parts.get(table, 0)
            self._parts[table] = part + 1
            name = f"part-{part:05d}"
        rel = f"{table}/{name}.parquet"
        full = self.path + "/" + rel
        buffer = io.BytesIO()
        pq.write_table(arrow, buffer, compression="zstd")
        payload = buffer.getvalue()

        def put() -> None:
            if not self.object_store:  # on an object store makedirs would create the bucket
                self.fs.makedirs(self.path + "/" + table, exist_ok=True)
            self.fs.pipe_file(full, payload)  # one PUT of the bytes hashed below

        self._retrying(f"writing {rel}", put)
        self.checksums[rel] = FileChecksum(len(payload), hashlib.sha256(payload).hexdigest())
        if record:
            self.record(table, rel, arrow.num_rows)
        return rel

    def add_table(self, table: str) -> None:
        """Make ``table`` (a registered stage's, :func:`register_table`) one of this run's
        tables: listed in the manifest, and given an empty file when it gets no rows."""
        self.files.setdefault(table, [])
        self.rows.setdefault(table, 0)

    def record(self, table: str, rel: str, rows: int) -> None:
        """List a written file (relative path) and its rows; listing it again does nothing."""
        files = self.files.setdefault(table, [])
        if rel not in files:
            files.append(rel)
            self.rows[table] = self.rows.get(table, 0) + rows

    def adopt(
        self, tables: Mapping[str, Mapping[str, Any]], keep: Callable[[str], bool]
    ) -> dict[str, str]:
        """Take over the files an earlier attempt of this run committed (resume).

        Files listed in ``tables`` (the manifest's ``tables``) for which ``keep(rel)`` holds are
        verified (:func:`audit.run.verify.check_file`: present, of the recorded size and sha256
        when one is recorded, a readable Parquet footer) and, when sound, recorded as written
        with their row counts read from their footers and their recorded checksums. A file that
        fails is not recorded: it is returned, and the caller redoes what it held. Nothing is
        deleted here: once a manifest listing only the adopted files is written,
        :meth:`remove_unlisted` deletes the rest (uncommitted shards, an old ``selections``,
        rejected files), so that a manifest on disk never lists a file that is gone.

        Returns:
            ``{relative path: why}`` of the kept files that were not adopted (empty when all
            were).

        Raises:
            OSError: the storage refused a read (not taken as a bad file: nothing is redone).
        """
        from audit.run.manifest_types import TableInfo
        from audit.run.verify import check_file

        rejected: dict[str, str] = {}
        for table in self.files:
            info = TableInfo.from_json(tables.get(table, {}))
            adopted, rows = [], 0
            for rel in info.files:
                if not keep(rel):
                    continue
                expected = info.checksums.get(rel)
                found = check_file(self.fs, self.path + "/" + rel, expected)
                if found.problem is not None:
                    rejected[rel] = found.problem
                    continue
                adopted.append(rel)
                rows += found.rows
                if expected is not None:
                    self.checksums[rel] = expected
            self.files[table] = adopted
            self.rows[table] = rows
        return rejected

    def remove_unlisted(self) -> None:
        """Delete every file under the table folders that this store has not recorded."""
        for table in self.files:
            folder = self.path + "/" + table
            if not self.fs.exists(folder):
                continue
            wanted = {self.path + "/" + rel for rel in self.files[table]}
            for found in self.fs.ls(folder, detail=False):
                if str(found).rstrip("/") not in wanted:
                    self.fs.rm(found, recursive=True)

    def read_manifest(self) -> dict[str, Any] | None:
        """This run's manifest, or None when there is none yet."""
        if not self.exists():
            return None
        with self.fs.open(self.path + "/" + MANIFEST, "r", encoding="utf-8") as f:
            data: dict[str, Any] = json.load(f)
        return data

    def ensure_tables(self) -> None:
        """Give every table with no file yet one empty file, so that it can be read."""
        for name, files in self.files.items():
            if not files:
                self.write(name, SCHEMAS[name].empty_table(), name="empty")

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Replace ``manifest.json``: write-then-rename on local disk, one PUT elsewhere (an
        object store has no rename, and a single PUT is atomic there). Retried like
        :meth:`write`."""
        text = json.dumps(manifest, indent=2, sort_keys=False, default=str)
        full = self.path + "/" + MANIFEST

        def put() -> None:
            if isinstance(self.fs, LocalFileSystem):
                tmp = f"{full}.{uuid.uuid4().hex}.tmp"
                try:
                    with open(tmp, "w", encoding="utf-8") as f:
                        f.write(text)
                    os.replace(tmp, full)
                finally:  # a failed attempt leaves no temp file behind
                    if os.path.exists(tmp):
                        os.remove(tmp)
            else:
                self.fs.pipe_file(full, text.encode("utf-8"))

        self._retrying("writing the manifest", put)

    def _retrying(self, what: str, put: Callable[[], None]) -> None:
        """Run ``put`` up to :data:`WRITE_ATTEMPTS` times, backing off between tries
        (:data:`WRITE_BACKOFF_S`, doubled each time), while it fails with a transient storage
        error (:func:`audit.storage_errors.is_transient`: botocore's and aiohttp's connection
        errors, throttling and 5xx responses, timeouts) or another ``OSError``. An error that
        says what the path is (missing, a folder, forbidden) or a bug propagates at once.

        Raises:
            TransientStorageError: every try failed; one line naming ``what``, the run and the
                last error (an ``OSError`` too).
        """
        from audit.storage_errors import PERMANENT, is_transient, retry, secret_values

        def worth_retrying(exc: BaseException) -> bool:
            return is_transient(exc) or (
                isinstance(exc, OSError) and not isinstance(exc, PERMANENT)
            )

        retry(
            put,
            f"{what} of run {self.run_id!r}",
            WRITE_ATTEMPTS,
            WRITE_BACKOFF_S,
            retry_on=worth_retrying,
            secrets=secret_values(getattr(self.fs, "storage_options", None)),
        )


def read_manifest(run: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read ``<run>/manifest.json`` as JSON gives it; ``run`` is the run folder's path or URL.
    (:class:`audit.run.reader.RunReader` gives it typed.)

    Raises:
        audit.run.manifest_types.NoRunError: no manifest there (a ``FileNotFoundError``).
        audit.run.manifest_types.ManifestError: not valid JSON (a ``ValueError``).
    """
    from audit.run.reader import RunReader

    return RunReader(run, storage_options).raw_manifest


def table_dataset(
    run: str, files: Sequence[str], storage_options: Mapping[str, Any] | None = None
) -> pads.Dataset:
    """A pyarrow dataset over a table's files (paths relative to the run folder, as the manifest
    lists them), so readers can filter and pick columns without loading the whole table."""
    fs, base = fsspec.core.url_to_fs(run, **dict(storage_options or {}))
    paths = [base.rstrip("/") + "/" + rel for rel in files]
    return pads.dataset(paths, format="parquet", filesystem=fs)


def read_table(run: str, table: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Read one table of a finished or running run, as listed in its manifest
    (:meth:`audit.run.reader.RunReader.table`)."""
    from audit.run.reader import RunReader

    return RunReader(run, storage_options).table(table)


def read_classes(
    run: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[list[str], list[str]] | None:
    """``(class ids, names)`` in output-index order from a run's ``classes`` table, or None for
    a run written before the table existed (or with it empty)."""
    from audit.run.reader import RunReader

    t = RunReader(run, storage_options).table("classes")
    if not t.num_rows:
        return None
    t = t.sort_by("index")
    return t.column("class_id").to_pylist(), t.column("name").to_pylist()


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
