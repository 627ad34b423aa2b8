"""Mechanical Turk's CSV formats: the batch input file and the requester's "Download CSV" results.

Input: one row per HIT; every column can be used as ``${column}`` in the HTML question template.

Results (one row per assignment): ``HITId, HITTypeId, ..., AssignmentId, WorkerId,
AssignmentStatus, ..., WorkTimeInSeconds, ..., Input.<column>..., Answer.<field>..., Approve,
Reject``. Every value is quoted; times look like ``Thu Nov 07 16:45:50 PST 2019``. Exports end a
row early when its trailing ``Approve``/``Reject`` cells are empty (a real export has 140 header
columns and 138 cells); that is accepted, any other length mismatch is an error.

A malformed row raises :class:`ResultsError` naming the file and the row: nothing is dropped
silently.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

from audit.errors import AuditError

REQUIRED = ("HITId", "AssignmentId", "WorkerId", "WorkTimeInSeconds")
TRAILING_OPTIONAL = ("Approve", "Reject")


class ResultsError(AuditError, ValueError):
    """A results file cannot be read; the message names the file, the row and the field."""


@dataclass(frozen=True)
class Assignment:
    """One row of a results file.

    Attributes:
        source: The file it came from (as given).
        row: 1-based data row (the header is row 0).
        line: Line of the file where the row ends (quoted fields may span lines).
        inputs: ``Input.<name>`` columns without the prefix.
        answers: ``Answer.<name>`` columns without the prefix.
    """

    source: str
    row: int
    line: int
    hit_id: str
    assignment_id: str
    worker_id: str
    status: str
    work_time_seconds: float
    inputs: dict[str, str]
    answers: dict[str, str]


def write_input_csv(rows: Sequence[dict[str, str]], columns: Sequence[str]) -> str:
    """The batch input file: a header of ``columns`` and one row per HIT, every value quoted."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[c] for c in columns])
    return buf.getvalue()


def _seconds(value: str, where: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ResultsError(f"{where}: WorkTimeInSeconds {value!r} is not a number") from None
    if not seconds >= 0:
        raise ResultsError(f"{where}: WorkTimeInSeconds {value!r} is negative or not a number")
    return seconds


def read_results(text: str, source: str) -> list[Assignment]:
    """Parse a batch results CSV.

    Args:
        text: The file's content (a leading byte-order mark is ignored).
        source: The file's name, for messages.

    Returns:
        One :class:`Assignment` per data row, in file order.

    Raises:
        ResultsError: A required column is missing, a row has the wrong number of cells, a
            required cell is empty or ``WorkTimeInSeconds`` is not a non-negative number.
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ResultsError(f"{source}: empty file, expected a header row") from None
    except csv.Error as exc:
        raise ResultsError(f"{source}: header: {exc}") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ResultsError(
            f"{source}: missing column(s) {missing}; is this a Mechanical Turk batch results file?"
        )
    if len(set(header)) != len(header):
        dup = sorted({c for c in header if header.count(c) > 1})
        raise ResultsError(f"{source}: duplicate column(s) {dup} in the header")
    index = {c: i for i, c in enumerate(header)}
    out = []
    row_no = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ResultsError(
                f"{source}: row {row_no + 1} (line {reader.line_num}): {exc}"
            ) from None
        if not cells:
            continue  # a blank line between records carries nothing
        row_no += 1
        where = f"{source}: row {row_no} (line {reader.line_num})"
        if len(cells) > len(header) or (
            len(cells) < len(header)
            and any(c not in TRAILING_OPTIONAL for c in header[len(cells) :])
        ):
            raise ResultsError(f"{where}: {len(cells)} cells, the header has {len(header)} columns")
        cells = cells + [""] * (len(header) - len(cells))
        for name in ("HITId", "AssignmentId", "WorkerId"):
            if not cells[index[name]].strip():
                raise ResultsError(f"{where}: field {name} is empty")
        status = cells[index["AssignmentStatus"]] if "AssignmentStatus" in index else ""
        out.append(
            Assignment(
                source=source,
                row=row_no,
                line=reader.line_num,
                hit_id=cells[index["HITId"]],
                assignment_id=cells[index["AssignmentId"]],
                worker_id=cells[index["WorkerId"]],
                status=status,
                work_time_seconds=_seconds(cells[index["WorkTimeInSeconds"]], where),
                inputs={
                    c[6:]: v for c, v in zip(header, cells, strict=True) if c.startswith("Input.")
                },
                answers={
                    c[7:]: v for c, v in zip(header, cells, strict=True) if c.startswith("Answer.")
                },
            )
        )
    return out


def answer_value(answers: dict[str, str], name: str) -> str | None:
    """The answer to form field ``name``, or ``None`` when the file has no column for it.

    A plain HTML input comes back as ``Answer.<name>`` (its value; empty when not answered).
    crowd-html radio groups with ``answer-format="flatten-objects"`` come back as one column per
    option, ``Answer.<name>.<option>`` = ``true``/``false``: the option marked ``true`` is the
    answer (empty when none or several are).
    """
    if name in answers:
        return answers[name].strip()
    prefix = name + "."
    options = {k[len(prefix) :]: v for k, v in answers.items() if k.startswith(prefix)}
    if not options:
        return None
    chosen = [k for k, v in options.items() if v.strip().lower() in ("true", "1", "on")]
    return chosen[0] if len(chosen) == 1 else ""


def read_plain(text: str, source: str) -> list[Assignment]:
    """Answers collected elsewhere, as a CSV with columns ``item_id, worker_id, answer,
    work_time_seconds`` (and optionally ``assignment_id``), turned into :class:`Assignment` rows
    whose ``Input.item_id`` and ``Answer.answer`` are those columns.

    Raises:
        ResultsError: As :func:`read_results`.
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    needed = ("item_id", "worker_id", "answer", "work_time_seconds")
    missing = [c for c in needed if c not in (reader.fieldnames or [])]
    if missing:
        raise ResultsError(f"{source}: missing column(s) {missing} of a plain answers file")
    out = []
    for n, rec in enumerate(reader, start=1):
        where = f"{source}: row {n} (line {reader.line_num})"
        if None in rec or any(rec[c] is None for c in needed):
            raise ResultsError(f"{where}: the row does not have one cell per column")
        for name in ("item_id", "worker_id"):
            if not rec[name].strip():
                raise ResultsError(f"{where}: field {name} is empty")
        out.append(
            Assignment(
                source=source,
                row=n,
                line=reader.line_num,
                hit_id=rec["item_id"],
                assignment_id=(rec.get("assignment_id") or "").strip() or f"{source}#{n}",
                worker_id=rec["worker_id"],
                status="",
                work_time_seconds=_seconds(rec["work_time_seconds"], where),
                inputs={"item_id": rec["item_id"]},
                answers={"answer": rec["answer"]},
            )
        )
    return out
