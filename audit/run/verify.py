"""Checking a run's committed files against what its manifest recorded when they were written.

The manifest records each committed file's size and sha256 (``tables.<name>.checksums``). A file
is sound when it exists, has that size and that sha256, and its Parquet footer reads; a file of
an older run, with no checksum recorded, is checked for existence and a readable footer only.
``audit-cli verify``, ``audit-cli status --verify`` and ``audit-cli report`` use
:func:`verify_run`; a resume checks every file it adopts with :func:`check_file`
(:meth:`audit.store.RunStore.adopt`) and redoes the shards of the bad ones.

Example::

    report = verify_run("s3://bucket/audits/resnet50-x", {"anon": False})
    for line in report.lines():   # "ok: 62 files verified", or one line per bad file
        print(line)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from audit.errors import AuditError
from audit.run.manifest_types import FileChecksum
from audit.run.reader import RunReader

__all__ = [
    "BadFile",
    "FileCheck",
    "RunFilesError",
    "VerifyReport",
    "check_file",
    "shard_of",
    "verify_run",
]


class RunFilesError(AuditError):
    """A run whose committed files are missing or altered (one line naming them)."""


@dataclass(frozen=True)
class FileCheck:
    """What :func:`check_file` found.

    Attributes:
        problem: Why the file is not sound, in a few words; None when it is.
        rows: The rows its Parquet footer says (0 when it is not sound).
    """

    problem: str | None = None
    rows: int = 0


def check_file(fs: Any, path: str, expected: FileChecksum | None) -> FileCheck:
    """Check one committed file (``path`` on the fsspec filesystem ``fs``) against its
    recorded checksum, or (None: an older run) for existence and a readable footer only.

    Raises:
        OSError: the storage refused the read; a missing file is a problem, not an error.
    """
    try:
        if expected is not None:
            data = bytes(fs.cat_file(path))
            if len(data) != expected.bytes:
                return FileCheck(
                    f"{len(data)} bytes, but {expected.bytes} were committed (truncated or "
                    "rewritten)"
                )
            if hashlib.sha256(data).hexdigest() != expected.sha256:
                return FileCheck("sha256 differs from the one recorded at commit")
            rows = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
        else:
            with fs.open(path, "rb") as f:
                rows = pq.ParquetFile(f).metadata.num_rows
    except FileNotFoundError:
        return FileCheck("missing")
    except (pa.ArrowException, ValueError) as exc:  # ArrowInvalid is a ValueError
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return FileCheck(f"unreadable Parquet footer ({reason})")
    return FileCheck(None, int(rows))


_SHARD = re.compile(r"(?:^|/)shard-(\d+)\.parquet$")


def shard_of(rel: str) -> int | None:
    """The shard a per-image table's file (``<table>/shard-NNNNN.parquet``) belongs to; None
    for another file (``classes/all.parquet``...)."""
    found = _SHARD.search(rel)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class BadFile:
    """One committed file that is not as committed: its path in the run and why."""

    rel: str
    why: str

    def line(self) -> str:
        return f"{self.rel}: {self.why}"


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_run` found.

    Attributes:
        url: The run folder.
        checked: Files the manifest lists (all checked).
        bad: The files that are missing or altered, in manifest order.
    """

    url: str
    checked: int
    bad: tuple[BadFile, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.bad

    def lines(self) -> list[str]:
        """``ok: N files verified``, or one line per bad file (``<rel>: <why>``)."""
        if self.ok:
            return [f"ok: {self.checked} files verified"]
        return [b.line() for b in self.bad]

    def summary(self) -> str:
        """``N file(s) ... missing or altered`` in words (for ``status --verify``)."""
        n = len(self.bad)
        return f"{n} file is missing or altered" if n == 1 else f"{n} files are missing or altered"

    def refusal(self) -> str:
        """One line refusing the run, naming every bad file (``report`` raises it)."""
        named = "; ".join(b.line() for b in self.bad)
        return (
            f"run {self.url!r} has {len(self.bad)} missing or altered committed "
            f"file{'s' if len(self.bad) != 1 else ''} ({named}): rerun it with output.overwrite"
            "=true, or check it with 'audit-cli verify'"
        )

    def raise_if_bad(self) -> None:
        """Raises: RunFilesError: with :meth:`refusal`, when a file is bad."""
        if not self.ok:
            raise RunFilesError(self.refusal())


def verify_run(run: str, storage_options: Mapping[str, Any] | None = None) -> VerifyReport:
    """Check every file the manifest of ``run`` (a folder path or fsspec URL) lists.

    Raises:
        NoRunError: no manifest there.
        ManifestError: a manifest that cannot be read (a newer format, not JSON).
        OSError: the storage refused a read.
    """
    reader = RunReader(run, storage_options)
    checked = 0
    bad = []
    for info in reader.manifest.tables.values():
        for rel in info.files:
            checked += 1
            found = check_file(reader.fs, reader.path + "/" + rel, info.checksums.get(rel))
            if found.problem is not None:
                bad.append(BadFile(rel, found.problem))
    return VerifyReport(run, checked, tuple(bad))
