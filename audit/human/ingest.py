"""Ingest raters' answers to an exported batch: every row kept, each with a status.

Each results row becomes one row of ``<human>/answers/<batch>/answers.parquet`` with a
``status``, decided in this order:

1. ``rejected``: ``AssignmentStatus`` is ``Rejected``;
2. ``duplicate_assignment``: an ``AssignmentId`` already seen (in this or an earlier file of the
   same ingest);
3. ``missing_answer``: the answer field is empty;
4. ``duplicate_worker``: this worker already has a counted answer for this item;
5. ``too_fast`` / ``too_slow``: ``WorkTimeInSeconds`` outside the time filter;
6. ``kept``: everything else. The analysis uses only ``kept`` answers.

A row whose ``item_id`` is not in the batch, or whose answer is not one the question allows, is
malformed: :class:`~audit.human.mturk.ResultsError` names the file, row and field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from audit.human.config import TimeFilter
from audit.human.mturk import Assignment, ResultsError, answer_value, read_plain, read_results
from audit.human.storage import ANSWERS, BATCHES, HumanStore
from audit.human.studies import StudyError
from audit.store import utc_now

ANSWERS_SCHEMA = pa.schema(
    [
        pa.field("batch", pa.string(), nullable=False),
        pa.field("study", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("worker_id", pa.string(), nullable=False),
        pa.field("assignment_id", pa.string(), nullable=False),
        pa.field("hit_id", pa.string(), nullable=False),
        pa.field("work_time_seconds", pa.float64(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),  # yes/no, or the chosen group 1..n
        pa.field("status", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
    ]
)

STATUSES = (
    "kept",
    "too_fast",
    "too_slow",
    "duplicate_assignment",
    "duplicate_worker",
    "missing_answer",
    "rejected",
)

_YES = {"yes", "y", "true", "1"}
_NO = {"no", "n", "false", "0"}


@dataclass(frozen=True)
class IngestReport:
    """Counts of one ingest.

    Attributes:
        batch: The batch name.
        rows: Results rows read.
        statuses: Rows per status (every status of ``STATUSES``, zeros included).
        items: Items in the batch.
        items_without_answers: Items with no kept answer.
        items_short: Items with fewer kept answers than raters asked.
        answers_url: Where the answers were written.
    """

    batch: str
    rows: int
    statuses: dict[str, int]
    items: int
    items_without_answers: int
    items_short: int
    answers_url: str

    def lines(self) -> list[str]:
        counts = ", ".join(f"{k} {v}" for k, v in self.statuses.items())
        return [
            f"batch {self.batch}: {self.rows} answer rows: {counts}",
            f"items: {self.items}, without a kept answer: {self.items_without_answers}, "
            f"with fewer kept answers than raters asked: {self.items_short}",
            f"answers -> {self.answers_url}",
        ]


def _normalise(value: str, allowed: Sequence[str], where: str, field: str) -> str:
    v = value.strip().lower()
    if list(allowed) == ["yes", "no"]:
        if v in _YES:
            return "yes"
        if v in _NO:
            return "no"
    elif v in allowed:
        return v
    raise ResultsError(
        f"{where}: field Answer.{field} is {value!r}, expected one of {list(allowed)}"
    )


def _checked_item(
    a: Assignment,
    where: str,
    batch: Mapping[str, Any],
    item_ids: set[str],
    shown: Mapping[str, Mapping[str, Any]] | None,
) -> str:
    """The row's item id, once it is known to be this batch's and every echoed ``Input.*``
    equals what the batch showed (see :func:`classify`)."""
    item_id = a.inputs.get("item_id")
    if item_id is None:
        raise ResultsError(
            f"{a.source}: no Input.item_id column; was this batch exported by audit-cli?"
        )
    if item_id not in item_ids:
        raise ResultsError(f"{where}: Input.item_id {item_id!r} is not an item of {batch['name']}")
    expected = (shown or {}).get(item_id, {})
    for column, value in a.inputs.items():
        if column in expected and value != str(expected[column]):
            raise ResultsError(
                f"{where}: Input.{column} is {value!r}, but item {item_id} of "
                f"{batch['name']} showed {str(expected[column])!r}: these results belong "
                "to another batch or to an earlier export of this one"
            )
    return str(item_id)


def classify(
    rows: Sequence[Assignment],
    batch: Mapping[str, Any],
    item_ids: set[str],
    time_filter: TimeFilter,
    shown: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Give every results row a status (module docstring) and its normalised answer.

    Args:
        rows: Parsed results, in file order.
        batch: The batch's ``batch.json``.
        item_ids: The batch's item ids.
        time_filter: Which work times count.
        shown: item_id -> the batch's rater-facing row (``items.json``). Every ``Input.<column>``
            a results row echoes must equal that row's value: item ids repeat across batches
            (``q00001``, ...), so this is what tells results of another batch, or of an earlier
            export of this one, from results of this batch.

    Returns:
        One dict per row with the columns of ``ANSWERS_SCHEMA``.

    Raises:
        ResultsError: A row has no ``Input.item_id``, an unknown one, an ``Input.*`` value that
            differs from what the batch showed, or an answer that is not allowed; or the file has
            no column for the answer at all.
    """
    field = str(batch["answer_field"])
    allowed = [str(v) for v in batch["answer_values"]]
    seen_assignments: set[str] = set()
    seen_worker_item: set[tuple[str, str]] = set()
    out = []
    for a in rows:
        where = f"{a.source}: row {a.row} (line {a.line})"
        item_id = _checked_item(a, where, batch, item_ids, shown)
        raw = answer_value(a.answers, field)
        if raw is None and set(a.answers) == {"answer"}:  # a plain answers file
            raw = a.answers["answer"].strip()
        if raw is None:
            raise ResultsError(f"{a.source}: no Answer.{field} column (the question's answer)")
        answer = _normalise(raw, allowed, where, field) if raw else ""
        if a.status.strip().lower() == "rejected":
            status = "rejected"
        elif a.assignment_id in seen_assignments:
            status = "duplicate_assignment"
        elif not answer:
            status = "missing_answer"
        elif (a.worker_id, item_id) in seen_worker_item:
            status = "duplicate_worker"
        else:
            status = time_filter.verdict(a.work_time_seconds)
        seen_assignments.add(a.assignment_id)
        if status in ("kept", "too_fast", "too_slow"):
            seen_worker_item.add((a.worker_id, item_id))
        out.append(
            {
                "batch": str(batch["name"]),
                "study": str(batch["study"]),
                "item_id": item_id,
                "worker_id": a.worker_id,
                "assignment_id": a.assignment_id,
                "hit_id": a.hit_id,
                "work_time_seconds": a.work_time_seconds,
                "answer": answer,
                "status": status,
                "source_file": a.source,
                "source_row": a.row,
            }
        )
    return out


def load_batch(store: HumanStore, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A batch's ``batch.json`` and ``key.json``.

    Raises:
        StudyError: No such batch.
    """
    folder = f"{BATCHES}/{name}"
    if not store.exists(f"{folder}/batch.json"):
        known = [n for n in store.list_names(BATCHES) if store.exists(f"{BATCHES}/{n}/batch.json")]
        raise StudyError(f"no batch {name!r} under {store.url(BATCHES)}; batches: {known}")
    return store.read_json(f"{folder}/batch.json"), store.read_json(f"{folder}/key.json")


def ingest_files(
    store: HumanStore,
    batch_name: str,
    files: Sequence[tuple[str, str]],
    time_filter: TimeFilter,
    plain: bool = False,
) -> IngestReport:
    """Ingest results files into ``answers/<batch>/answers.parquet`` (replacing earlier ones).

    Args:
        store: The human folder.
        batch_name: The batch folder's name, e.g. ``misclassified-batch1``.
        files: ``(name, text)`` of each results file, read in this order.
        time_filter: Which work times count.
        plain: The files are plain answers CSVs (:func:`audit.human.mturk.read_plain`).

    Raises:
        StudyError: No such batch.
        ResultsError: A malformed file or row.
    """
    batch, key = load_batch(store, batch_name)
    rows: list[Assignment] = []
    for name, text in files:
        rows += read_plain(text, name) if plain else read_results(text, name)
    item_ids = {str(k["item_id"]) for k in key}
    shown = {str(r["item_id"]): r for r in store.read_json(f"{BATCHES}/{batch_name}/items.json")}
    records = classify(rows, batch, item_ids, time_filter, shown)
    table = pa.Table.from_pylist(records, schema=ANSWERS_SCHEMA)
    folder = f"{ANSWERS}/{batch_name}"
    store.write_parquet(f"{folder}/answers.parquet", table)
    statuses = Counter(r["status"] for r in records)
    kept = Counter(r["item_id"] for r in records if r["status"] == "kept")
    n = int(batch["raters_per_item"])
    report = IngestReport(
        batch=batch_name,
        rows=len(records),
        statuses={s: statuses.get(s, 0) for s in STATUSES},
        items=len(item_ids),
        items_without_answers=sum(1 for i in item_ids if kept[i] == 0),
        items_short=sum(1 for i in item_ids if 0 < kept[i] < n),
        answers_url=store.url(f"{folder}/answers.parquet"),
    )
    store.write_json(
        f"{folder}/ingest.json",
        {
            "ingested": utc_now(),
            "files": [name for name, _ in files],
            "time_filter": {
                "min_seconds": time_filter.min_seconds,
                "max_seconds": time_filter.max_seconds,
            },
            **{k: v for k, v in report.__dict__.items() if k != "answers_url"},
        },
    )
    return report
