"""Reading Mechanical Turk results and ingesting answers: formats, the time filter at its edges,
duplicates, missing answers, malformed rows, and the real MTurk export in tests/data."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from test_human_export import make_run, read_csv

from audit.config import ConfigError
from audit.human.config import ExportConfig, Study, TimeFilter
from audit.human.export import export_study
from audit.human.ingest import STATUSES, ingest_files
from audit.human.mturk import ResultsError, answer_value, read_results
from audit.human.storage import HumanStore

REAL_EXPORT = SHARED_DATA / "mturk-batch-results-example" / "Batch_257568_batch_results.csv"

# The requester columns of a "Download CSV" results file, in MTurk's order (see the real export).
BEFORE = [
    "HITId",
    "HITTypeId",
    "Title",
    "Description",
    "Keywords",
    "Reward",
    "CreationTime",
    "MaxAssignments",
    "RequesterAnnotation",
    "AssignmentDurationInSeconds",
    "AutoApprovalDelayInSeconds",
    "Expiration",
    "NumberOfSimilarHITs",
    "LifetimeInSeconds",
    "AssignmentId",
    "WorkerId",
    "AssignmentStatus",
    "AcceptTime",
    "SubmitTime",
    "AutoApprovalTime",
    "ApprovalTime",
    "RejectionTime",
    "RequesterFeedback",
    "WorkTimeInSeconds",
    "LifetimeApprovalRate",
    "Last30DaysApprovalRate",
    "Last7DaysApprovalRate",
]


def results_csv(
    inputs: list[dict[str, str]],
    answers: list[dict[str, str]],
    meta: list[dict[str, str]],
    trim_trailing: bool = True,
) -> str:
    """A results file like MTurk writes: all cells quoted, values in MTurk's formats, and the
    empty trailing Approve/Reject cells left off (as in the real export)."""
    in_cols = sorted({k for r in inputs for k in r})
    ans_cols = sorted({k for r in answers for k in r})
    header = [*BEFORE, *(f"Input.{c}" for c in in_cols), *(f"Answer.{c}" for c in ans_cols)]
    header += ["Approve", "Reject"]
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(header)
    for i, (inp, ans, m) in enumerate(zip(inputs, answers, meta, strict=True)):
        row = {c: "" for c in header}
        row.update(
            {
                "HITId": m.get("hit", f"HIT{inp.get('item_id', i)}"),
                "HITTypeId": "31AETRIGVE1O2H4W463E7VDNKJEPEC",
                "Title": "Is this class relevant?",
                "Reward": "$0.05",
                "CreationTime": "Thu Nov 07 16:38:49 PST 2019",
                "MaxAssignments": "5",
                "RequesterAnnotation": "BatchId:1;OriginalHitTemplateId:2;",
                "AssignmentId": m.get("assignment", f"A{i:06d}"),
                "WorkerId": m["worker"],
                "AssignmentStatus": m.get("status", "Submitted"),
                "SubmitTime": "Thu Nov 07 16:45:50 PST 2019",
                "WorkTimeInSeconds": m.get("seconds", "60"),
                "LifetimeApprovalRate": "0% (0/0)",
            }
        )
        row.update({f"Input.{k}": v for k, v in inp.items()})
        row.update({f"Answer.{k}": v for k, v in ans.items()})
        cells = [row[c] for c in header]
        w.writerow(cells[:-2] if trim_trailing else cells)
    return buf.getvalue()


def test_reads_the_real_mturk_export() -> None:
    text = REAL_EXPORT.read_text(encoding="utf-8-sig")
    rows = read_results(text, REAL_EXPORT.name)
    assert len(rows) == 1
    a = rows[0]
    # Independent reference: the csv module on the same file.
    header, cells = list(csv.reader(io.StringIO(text)))
    ref = dict(zip(header, cells, strict=False))
    assert len(header) == 140 and len(cells) == 138  # Approve/Reject cells left off
    assert a.hit_id == ref["HITId"] == "3IYI9285XVFUTG91JANI0VYH2Z4CJ6"
    assert a.assignment_id == ref["AssignmentId"]
    assert a.worker_id == ref["WorkerId"]
    assert a.status == "Submitted"
    assert a.work_time_seconds == float(ref["WorkTimeInSeconds"]) == 356
    assert len(a.inputs) == 22 and len(a.answers) == 89
    assert a.inputs["TP_ANS"] == "5" and a.answers["q1"] == ref["Answer.q1"]
    assert (a.row, a.line) == (1, 2)


def test_real_export_is_not_one_of_our_batches(tmp_path: Path) -> None:
    run = make_run(tmp_path / "out")
    export_study(run, ExportConfig(study=Study.MISCLASSIFIED))
    store = HumanStore(run + "/human")
    text = REAL_EXPORT.read_text(encoding="utf-8-sig")
    with pytest.raises(
        ResultsError, match=r"Batch_257568_batch_results.csv: no Input.item_id column"
    ):
        ingest_files(store, "misclassified-batch1", [(REAL_EXPORT.name, text)], TimeFilter())


def test_time_filter_edges() -> None:
    f = TimeFilter()
    assert [f.verdict(s) for s in (0, 19, 19.999, 20, 100, 180, 180.001, 181)] == [
        "too_fast",
        "too_fast",
        "too_fast",
        "kept",
        "kept",
        "kept",
        "too_slow",
        "too_slow",
    ]
    g = TimeFilter(5, 5)
    assert [g.verdict(s) for s in (4, 5, 6)] == ["too_fast", "kept", "too_slow"]
    with pytest.raises(ConfigError, match="min_seconds <= max_seconds"):
        TimeFilter(30, 20)


@pytest.fixture
def batch(tmp_path: Path) -> tuple[HumanStore, list[dict[str, str]]]:
    run = make_run(tmp_path / "out")
    export_study(run, ExportConfig(study=Study.MISCLASSIFIED, batch="b"))
    store = HumanStore(run + "/human")
    return store, read_csv(store, "batches/misclassified-b/mturk_input.csv")


def test_statuses_duplicates_and_missing(batch: tuple[HumanStore, list[dict[str, str]]]) -> None:
    store, items = batch
    one, two = items[0], items[1]
    plan = [  # (item, worker, seconds, answer, status, assignment) -> expected status
        (one, "W1", "19", "yes", "Submitted", "A1", "too_fast"),
        (one, "W2", "20", "yes", "Submitted", "A2", "kept"),
        (one, "W3", "180", "no", "Approved", "A3", "kept"),
        (one, "W4", "181", "yes", "Submitted", "A4", "too_slow"),
        (one, "W5", "60", "yes", "Rejected", "A5", "rejected"),
        (one, "W6", "60", "yes", "Submitted", "A2", "duplicate_assignment"),
        (one, "W2", "60", "no", "Submitted", "A7", "duplicate_worker"),
        (one, "W8", "60", "", "Submitted", "A8", "missing_answer"),
        (two, "W2", "60", "YES", "Submitted", "A9", "kept"),
    ]
    text = results_csv(
        [{"item_id": p[0]["item_id"], "image_url": p[0]["image_url"]} for p in plan],
        [{"relevant": p[3]} for p in plan],
        [{"worker": p[1], "seconds": p[2], "status": p[4], "assignment": p[5]} for p in plan],
    )
    report = ingest_files(store, "misclassified-b", [("r.csv", text)], TimeFilter())
    answers = store.read_parquet("answers/misclassified-b/answers.parquet").to_pylist()
    assert [a["status"] for a in answers] == [p[6] for p in plan]
    assert [a["source_row"] for a in answers] == list(range(1, len(plan) + 1))
    assert answers[-1]["answer"] == "yes"
    expected = {s: sum(p[6] == s for p in plan) for s in STATUSES}
    assert report.statuses == expected and report.rows == len(plan)
    assert report.items == len(items)
    assert report.items_without_answers == len(items) - 2
    assert report.items_short == 2  # both rated items have fewer than 5 kept answers
    assert any("duplicate_assignment 1" in line for line in report.lines())


def test_answers_across_two_files_and_plain_format(
    batch: tuple[HumanStore, list[dict[str, str]]],
) -> None:
    store, items = batch
    meta = [{"worker": "W1", "assignment": "SAME"}]
    text = results_csv([{"item_id": items[0]["item_id"]}], [{"relevant": "no"}], meta)
    report = ingest_files(
        store, "misclassified-b", [("a.csv", text), ("b.csv", text)], TimeFilter()
    )
    assert report.statuses["kept"] == 1 and report.statuses["duplicate_assignment"] == 1
    plain = "item_id,worker_id,answer,work_time_seconds\n" + "".join(
        f"{it['item_id']},P{w},yes,30\n" for it in items[:2] for w in range(3)
    )
    report = ingest_files(
        store, "misclassified-b", [("plain.csv", plain)], TimeFilter(), plain=True
    )
    assert report.statuses["kept"] == 6


def test_crowd_html_flattened_radio_answers() -> None:
    assert answer_value({"relevant.yes": "true", "relevant.no": "false"}, "relevant") == "yes"
    assert answer_value({"relevant.yes": "false", "relevant.no": "false"}, "relevant") == ""
    assert answer_value({"relevant": " no "}, "relevant") == "no"
    assert answer_value({"other": "x"}, "relevant") is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda t: t.replace('"W2"', '"W2","x","y","z"', 1),
            r"r.csv: row 2 \(line 3\): 32 cells, the header has 31 columns",
        ),
        (
            lambda t: t.replace('"60"', '"sixty"', 1),
            r"r.csv: row 1 \(line 2\): WorkTimeInSeconds 'sixty'",
        ),
        (lambda t: t.replace('"W1"', '""', 1), r"r.csv: row 1 \(line 2\): field WorkerId is empty"),
        (
            lambda t: t.replace('"yes"', '"maybe"', 1),
            r"r.csv: row 1 \(line 2\): field Answer.relevant is 'maybe'",
        ),
        (
            lambda t: t.replace('"q00001"', '"q99999"', 1),
            r"r.csv: row 1 \(line 2\): Input.item_id 'q99999' is not an item",
        ),
        (
            lambda t: t.replace("WorkerId", "Worker", 1),
            r"r.csv: missing column\(s\) \['WorkerId'\]",
        ),
        (lambda t: "", "r.csv: empty file"),
    ],
)
def test_malformed_rows_name_file_and_row(
    batch: tuple[HumanStore, list[dict[str, str]]],
    mutate,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    store, _ = batch
    text = results_csv(
        [{"item_id": "q00001"}, {"item_id": "q00002"}],
        [{"relevant": "yes"}, {"relevant": "no"}],
        [{"worker": "W1"}, {"worker": "W2"}],
    )
    ingest_files(store, "misclassified-b", [("r.csv", text)], TimeFilter())  # fine as is
    with pytest.raises(ResultsError, match=message):
        ingest_files(store, "misclassified-b", [("r.csv", mutate(text))], TimeFilter())


def test_short_row_beyond_approve_reject_is_an_error() -> None:
    text = results_csv([{"item_id": "q1"}], [{"relevant": "yes"}], [{"worker": "W"}])
    header, row = text.splitlines()
    cut = ",".join(row.split(",")[:-1])  # drop the last Answer cell too
    with pytest.raises(ResultsError, match=r"x.csv: row 1 \(line 2\): 28 cells, the header has 31"):
        read_results(header + "\n" + cut + "\n", "x.csv")
    full = results_csv([{"item_id": "q1"}], [{"relevant": "yes"}], [{"worker": "W"}], False)
    assert read_results(full, "x.csv")[0].answers == {"relevant": "yes"}


def test_unknown_batch(batch: tuple[HumanStore, list[dict[str, str]]]) -> None:
    from audit.human.studies import StudyError

    store, _ = batch
    with pytest.raises(StudyError, match=r"no batch 'nope'.*misclassified-b"):
        ingest_files(store, "nope", [], TimeFilter())


def test_results_of_another_batch_are_refused(tmp_path: Path) -> None:
    # The two adversarial batches share item ids and answers but show the items' images in
    # other orders: results of one ingested into the other must stop, naming the row.
    run = make_run(tmp_path / "out")
    export_study(run, ExportConfig(study=Study.ADVERSARIAL, batch="p"))
    store = HumanStore(run + "/human")
    whole = read_csv(store, "batches/adversarial-p-whole/mturk_input.csv")
    text = results_csv(
        whole, [{"relevant": "yes"}] * len(whole), [{"worker": f"W{i}"} for i in range(len(whole))]
    )
    report = ingest_files(store, "adversarial-p-whole", [("whole.csv", text)], TimeFilter())
    assert report.statuses["kept"] == len(whole)
    shown = read_csv(store, "batches/adversarial-p-explanation/mturk_input.csv")
    explanation = {r["item_id"]: r for r in shown}
    first = next(i for i, r in enumerate(whole) if explanation[r["item_id"]] != r)
    with pytest.raises(
        ResultsError,
        match=rf"whole.csv: row {first + 1} .*Input\.\w+ is .*adversarial-p-explanation showed",
    ):
        ingest_files(store, "adversarial-p-explanation", [("whole.csv", text)], TimeFilter())
