"""The judgment-source registry, and :func:`public_tables`, which runs the sources given.

A source says how to read its file's text into judgments and how to score a predictions table
against them. Example (a source whose file is one class index that every image accepts)::

    def read(text: str, source: str, params: Mapping[str, Any], read_text: ReadText) -> int:
        return int(text)

    def table(predictions: pa.Table, judgments: int, params: Mapping[str, Any]) -> pa.Table:
        preds = _predictions(predictions)
        valid = {i: {judgments} for i in preds}
        rows = _all_rows(preds) + _set_rows("Any-one", preds, valid)
        return pa.Table.from_pylist(rows, schema=PUBLIC_SCHEMA)

    register_source(JudgmentSource("anyone", "--anyone", "One class for all.", 40, read, table))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from audit.human.judgments.common import judged_table
from audit.registry import Registry

ReadText = Callable[[str], str]
"""Opens a file path or fsspec URL and returns its text (the CLI's reader, with its storage
options); a source uses it for files beyond its own, such as MadryLab's index list."""

Reader = Callable[[str, str, Mapping[str, Any], ReadText], Any]
"""``(text, source, params, read_text) -> judgments``: ``text`` is the file's content,
``source`` its path (for error messages), ``params`` the source's parameters with defaults
filled in. Raises :class:`~audit.human.judgments.common.PublicDataError` on a malformed file."""

Scorer = Callable[[pa.Table, Any, Mapping[str, Any]], pa.Table]
"""``(predictions, judgments, params) -> table`` with
:data:`~audit.human.judgments.common.PUBLIC_SCHEMA` rows; ``predictions`` has ``image_id``,
``label`` and ``top5_classes``."""

Labeler = Callable[[pa.Table, Any, Mapping[str, Any]], Mapping[str, set[int]]]
"""``(predictions, judgments, params) -> image_id -> the classes the source accepts`` for the
images it judges (the report's image cards show them)."""

_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class JudgmentSource:
    """One registered source of public judgments.

    Attributes:
        name: Names the output table ``public_<name>`` and the ``--judgment NAME=FILE`` key.
        flag: Its dedicated option of ``audit-cli human public`` (``--real``). The command
            declares that option itself (Typer needs a static signature); a source without
            one there is still reachable with ``--judgment NAME=FILE``.
        help: The option's help line.
        order: Where it runs and prints among the sources, smallest first.
        read: How to read the file's text (:data:`Reader`).
        table: How to score a predictions table against the judgments (:data:`Scorer`).
        params: Its extra parameters and their defaults; the CLI passes its options of the
            same names (``majority``), other callers anything they like.
        labels: Its per-image judgments (:data:`Labeler`), written as
            ``human/judged/<name>.parquet``; None for a source that has only totals.
    """

    name: str
    flag: str
    help: str
    order: int
    read: Reader
    table: Scorer
    params: Mapping[str, Any] = field(default_factory=dict)
    labels: Labeler | None = None


# the built-in sources are imported by the package (audit/human/judgments/__init__.py)
_SOURCES: Registry[JudgmentSource] = Registry(
    "judgment source",
    order=lambda s: s.order,
    unique=("flag", "order"),
    duplicate="Judgment source {name!r} has name {name!r}, already taken by {name!r}.",
    unknown="Unknown judgment source {name!r}; registered sources: {names}.",
)


def register_source(source: JudgmentSource) -> JudgmentSource:
    """Add ``source`` to the registry; returns it.

    Raises:
        ValueError: A bad name, or a name, flag or order already registered.
    """
    if not isinstance(source.name, str) or not _NAME.fullmatch(source.name):
        raise ValueError(
            "The 'name' parameter of JudgmentSource must match "
            f"{_NAME.pattern!r}. Got {source.name!r} instead."
        )
    return _SOURCES.register(source)


def unregister_source(name: str) -> JudgmentSource:
    """Remove source ``name`` (for tests and plugins); returns it.

    Raises:
        ValueError: No such source.
    """
    return _SOURCES.unregister(name)


def get_source(name: str) -> JudgmentSource:
    """The source registered as ``name``.

    Raises:
        ValueError: No such source; the message lists the registered names.
    """
    return _SOURCES.get(name)


def registered_sources() -> tuple[JudgmentSource, ...]:
    """Every registered source, in ``order``."""
    return _SOURCES.values()


@dataclass(frozen=True)
class Judged:
    """What one source says of a predictions table.

    Attributes:
        name: The source's name.
        table: Its :data:`~audit.human.judgments.common.PUBLIC_SCHEMA` rows (``public_<name>``).
        labels: Its per-image judgments
            (:data:`~audit.human.judgments.common.JUDGED_SCHEMA`), or None when the source has
            no :data:`Labeler`.
    """

    name: str
    table: pa.Table
    labels: pa.Table | None


def judge(
    predictions: pa.Table,
    files: Mapping[str, str],
    read_text: ReadText,
    params: Mapping[str, Any] | None = None,
) -> list[Judged]:
    """Score ``predictions`` against every source in ``files``; what ``human public`` runs.

    Args:
        predictions: Columns ``image_id``, ``label``, ``top5_classes``.
        files: Source name -> its file (path or URL, opened with ``read_text``).
        read_text: Opens a file and returns its text.
        params: Parameter name -> value, for any source's ``params``; names no source
            declares are an error, names of sources not in ``files`` are ignored.

    Returns:
        One :class:`Judged` per source given, in the sources' ``order``.

    Raises:
        ValueError: An unknown source or parameter name; a source's
            :class:`~audit.human.judgments.common.PublicDataError` or bad parameter value.
    """
    params = dict(params or {})
    for name in files:
        get_source(name)
    declared = {k for s in registered_sources() for k in s.params}
    unknown = sorted(set(params) - declared)
    if unknown:
        raise ValueError(f"Unknown judgment parameter(s) {unknown}; declared: {sorted(declared)}.")
    out = []
    for source in registered_sources():
        if source.name not in files:
            continue
        own = {k: params.get(k, default) for k, default in source.params.items()}
        path = files[source.name]
        judgments = source.read(read_text(path), path, own, read_text)
        table = source.table(predictions, judgments, own)
        labels = None
        if source.labels is not None:
            labels = judged_table(predictions, source.labels(predictions, judgments, own))
        out.append(Judged(source.name, table, labels))
    return out


def public_tables(
    predictions: pa.Table,
    files: Mapping[str, str],
    read_text: ReadText,
    params: Mapping[str, Any] | None = None,
) -> dict[str, pa.Table]:
    """The tables of :func:`judge`: ``public_<name>`` -> its table, in the sources' ``order``.

    Raises:
        ValueError: As :func:`judge`.

    Example::

        public_tables(preds, {"real": "real.json"}, lambda p: Path(p).read_text())
    """
    return {f"public_{j.name}": j.table for j in judge(predictions, files, read_text, params)}
