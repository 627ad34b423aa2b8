"""Tables 1-3 and Figure 2 from simulated raters with known answers; the k-of-n rule's edges.

Every expected number is computed here by plain loops over the planned answers, never by the
code under test.
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

import pytest
from test_human_export import N_CLASSES, PER_CLASS, make_run, truth
from test_human_ingest import results_csv

from audit.config import ConfigError
from audit.human.analysis import FIG2, TABLE1, TABLE2, TABLE3, analyze, format_table
from audit.human.config import AgreementRule, ExportConfig, Shown, Study, Subset, TimeFilter
from audit.human.export import export_study
from audit.human.ingest import ingest_files
from audit.human.storage import HumanStore
from audit.store import read_table

IMAGES = N_CLASSES * PER_CLASS
TOP1_ERRORS = sum(not truth(c, j)["top1"] for c in range(N_CLASSES) for j in range(PER_CLASS))
TOP5_ERRORS = sum(not truth(c, j)["top5_ok"] for c in range(N_CLASSES) for j in range(PER_CLASS))


def items_of(store: HumanStore, batch: str) -> list[dict[str, str]]:
    text = store.read_bytes(f"batches/{batch}/mturk_input.csv").decode()
    return list(csv.DictReader(io.StringIO(text)))


def simulate(
    store: HumanStore, batch: str, answers_for: dict[str, list[str]], noise: bool = True
) -> str:
    """A results CSV where item i gets exactly ``answers_for[i]`` as kept answers (file order),
    plus rows that must not count: too fast, too slow, rejected, a repeated assignment, a
    repeated worker, a missing answer, and one kept answer beyond n=5."""
    inputs, answers, meta = [], [], []
    serial = 0

    def add(item: str, worker: str, answer: str, seconds: str = "45", **kw: str) -> None:
        nonlocal serial
        serial += 1
        inputs.append({"item_id": item})
        answers.append({"answer_field": answer})
        meta.append({"worker": worker, "seconds": seconds, "assignment": f"A{serial}", **kw})

    for item, planned in answers_for.items():
        for w, ans in enumerate(planned):
            # the first kept answer at the lower time bound, the last at the upper one
            seconds = "20" if w == 0 else ("180" if w == len(planned) - 1 else "45")
            add(item, f"W{w}", ans, seconds)
        if noise:
            wrong = "no" if planned and planned[0] in ("yes", "no") else "1"
            flip = {"yes": "no", "no": "yes"}.get(wrong, wrong)
            add(item, "Wfast", flip, "19")
            add(item, "Wslow", flip, "181")
            add(item, "Wrej", flip, status="Rejected")
            add(item, "Wdup", flip, assignment=f"A{serial}")  # repeats the previous AssignmentId
            add(item, "W0", flip)  # W0 answered this item already
            add(item, "Wmiss", "")
            if len(planned) == 5:
                add(item, "Wsixth", flip)  # kept, but beyond the first n = 5
    field = store.read_json(f"batches/{batch}/batch.json")["answer_field"]
    return results_csv(inputs, [{field: a["answer_field"]} for a in answers], meta)


@pytest.fixture
def run(tmp_path: Path) -> str:
    return make_run(tmp_path / "out")


def test_table1_and_fig2_from_simulated_raters(run: str) -> None:
    export_study(run, ExportConfig(study=Study.MISCLASSIFIED, batch="t1"))
    export_study(
        run,
        ExportConfig(
            study=Study.MISCLASSIFIED, batch="t5", subset=Subset.TOP5_ERRORS, shown=Shown.TOP5
        ),
    )
    store = HumanStore(run + "/human")
    # top-1 batch: item number i gets i % 6 yes answers out of 5 (mod 6 gives 0..5).
    t1_items = [r["item_id"] for r in items_of(store, "misclassified-t1")]
    yes_t1 = {item: int(item[1:]) % 6 for item in t1_items}
    plan = {i: ["yes"] * y + ["no"] * (5 - y) for i, y in yes_t1.items()}
    # interleave: yes answers last for odd items, so order within an item does not matter
    plan = {i: (a if int(i[1:]) % 2 else a[::-1]) for i, a in plan.items()}
    text = simulate(store, "misclassified-t1", plan)
    report = ingest_files(store, "misclassified-t1", [("t1.csv", text)], TimeFilter())
    assert report.statuses["kept"] == 6 * len(t1_items)  # 5 + the sixth beyond n
    # top-5 batch: even items 5 yes, odd items 3 yes.
    t5_items = [r["item_id"] for r in items_of(store, "misclassified-t5")]
    yes_t5 = {i: 5 if int(i[1:]) % 2 == 0 else 3 for i in t5_items}
    text5 = simulate(
        store, "misclassified-t5", {i: ["yes"] * y + ["no"] * (5 - y) for i, y in yes_t5.items()}
    )
    ingest_files(store, "misclassified-t5", [("t5.csv", text5)], TimeFilter())

    preds = read_table(run, "predictions")
    tables, notes = analyze(store, preds, AgreementRule(4, 5))
    assert notes == []
    t1 = {r["batch"]: r for r in tables[TABLE1].to_pylist()}
    rect1 = sum(1 for y in yes_t1.values() if y >= 4)
    rect5 = sum(1 for y in yes_t5.values() if y >= 4)
    assert t1["misclassified-t1"] == {
        "batch": "misclassified-t1",
        "metric": "top-1 error",
        "classes_shown": "top-1 prediction",
        "images": IMAGES,
        "errors": TOP1_ERRORS,
        "standard_error": TOP1_ERRORS / IMAGES,
        "rated_errors": len(t1_items),
        "rectified_images": rect1,
        "rectified_error": (TOP1_ERRORS - rect1) / IMAGES,
        "rule": "at least 4 of 5 raters",
    }
    assert len(t1_items) == TOP1_ERRORS == 40 and rect1 == 13  # hand count: i % 6 in {4, 5}
    assert t1["misclassified-t5"]["metric"] == "top-5 error"
    assert t1["misclassified-t5"]["errors"] == TOP5_ERRORS == 20
    assert t1["misclassified-t5"]["rectified_error"] == (TOP5_ERRORS - rect5) / IMAGES == 0.1
    hist = [
        (r["positive_answers"], r["images"], r["fraction"])
        for r in tables[FIG2].to_pylist()
        if r["batch"] == "misclassified-t1"
    ]
    expected = [
        (y, list(yes_t1.values()).count(y), list(yes_t1.values()).count(y) / 40) for y in range(6)
    ]
    assert hist == expected
    assert store.exists("tables/table1_rectified.parquet")
    assert store.read_parquet("tables/fig2_positive_answers.parquet").equals(tables[FIG2])
    png = store.read_bytes("figures/fig2_positive_answers.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "rectified_error" in format_table(tables[TABLE1])


def test_k_of_n_rule_edges(run: str) -> None:
    export_study(run, ExportConfig(study=Study.MISCLASSIFIED, batch="k", max_items=6))
    store = HumanStore(run + "/human")
    items = [r["item_id"] for r in items_of(store, "misclassified-k")]
    yes = dict(zip(items, range(6), strict=True))  # 0..5 yes of 5
    plan = {i: ["yes"] * y + ["no"] * (5 - y) for i, y in yes.items()}
    ingest_files(
        store,
        "misclassified-k",
        [("k.csv", simulate(store, "misclassified-k", plan, False))],
        TimeFilter(),
    )
    preds = read_table(run, "predictions")
    for k in range(1, 6):
        tables, _ = analyze(store, preds, AgreementRule(k, 5), plot=False)
        row = tables[TABLE1].to_pylist()[0]
        assert row["rectified_images"] == sum(1 for y in yes.values() if y >= k) == 6 - k
    # n = 3 looks at the first 3 answers only: yes answers come first, so min(y, 3) of them.
    tables, _ = analyze(store, preds, AgreementRule(3, 3), plot=False)
    assert tables[TABLE1].to_pylist()[0]["rectified_images"] == sum(
        1 for y in yes.values() if y >= 3
    )
    tables, _ = analyze(store, preds, AgreementRule(2, 2), plot=False)
    assert tables[TABLE1].to_pylist()[0]["rectified_images"] == sum(
        1 for y in yes.values() if y >= 2
    )
    hist = {r["positive_answers"]: r["images"] for r in tables[FIG2].to_pylist()}
    assert hist == {0: 1, 1: 1, 2: 4}  # y capped at n = 2
    rule = AgreementRule(4, 5)
    assert [rule.positive(y) for y in (3, 4, 5)] == [False, True, True]
    for bad in ((0, 5), (6, 5), (1, 0)):
        with pytest.raises(ConfigError):
            AgreementRule(*bad)


def test_table2_whole_vs_explanation(run: str) -> None:
    export_study(run, ExportConfig(study=Study.ADVERSARIAL, batch="a"))
    store = HumanStore(run + "/human")
    expected = {}
    for cond, rule_yes in (("whole", lambda i: 5 - i % 2), ("explanation", lambda i: i % 3)):
        name = f"adversarial-a-{cond}"
        items = [r["item_id"] for r in items_of(store, name)]
        yes = {i: rule_yes(int(i[1:])) for i in items}
        plan = {i: ["no"] * (5 - y) + ["yes"] * y for i, y in yes.items()}
        ingest_files(store, name, [("r.csv", simulate(store, name, plan))], TimeFilter())
        relevant = sum(1 for y in yes.values() if y >= 4)
        expected[name] = {
            "study": "adversarial-a",
            "batch": name,
            "condition": "whole image" if cond == "whole" else "explanation",
            "images": len(items),
            "rated_images": len(items),
            "answers": 5 * len(items),
            "yes_fraction": sum(yes.values()) / (5 * len(items)),
            "relevant_images": relevant,
            "relevant_fraction": relevant / len(items),
            "rule": "at least 4 of 5 raters",
        }
    tables, _ = analyze(store, read_table(run, "predictions"), AgreementRule())
    got = {r["batch"]: r for r in tables[TABLE2].to_pylist()}
    assert got == expected
    assert got["adversarial-a-whole"]["relevant_fraction"] == 1.0
    assert got["adversarial-a-explanation"]["relevant_images"] == 0


def test_table3_assignment_success(run: str) -> None:
    export_study(run, ExportConfig(study=Study.ASSIGNMENT, batch="s", questions_per_condition=3))
    store = HumanStore(run + "/human")
    key = {k["item_id"]: k for k in store.read_json("batches/assignment-s/key.json")}
    correct = {i: int(i[1:]) % 6 for i in key}  # raters (of 5) choosing the right group
    plan = {}
    for i, k in key.items():
        right = str(k["correct_slot"])
        wrong = str(k["correct_slot"] % 6 + 1)
        plan[i] = [right] * correct[i] + [wrong] * (5 - correct[i])
    ingest_files(
        store, "assignment-s", [("r.csv", simulate(store, "assignment-s", plan))], TimeFilter()
    )
    tables, _ = analyze(store, read_table(run, "predictions"), AgreementRule())
    rows = {r["condition"]: r for r in tables[TABLE3].to_pylist()}
    assert len(rows) == 7
    for cond, row in rows.items():
        mine = [i for i, k in key.items() if k["condition"] == cond]
        rates = [min(correct[i], 5) / 5 for i in mine]
        assert row["questions"] == row["rated_questions"] == 3
        assert row["answers"] == 15
        assert row["mean_success"] == pytest.approx(sum(min(correct[i], 5) for i in mine) / 15)
        assert row["std_success"] == pytest.approx(statistics.pstdev(rates))
    assert rows["random"]["method"] == "random" and rows["mmd_critic_6p"]["prototypes"] == 6


def test_batches_without_answers_are_noted(run: str) -> None:
    export_study(run, ExportConfig(study=Study.MISCLASSIFIED, batch="none"))
    store = HumanStore(run + "/human")
    tables, notes = analyze(store, read_table(run, "predictions"), AgreementRule())
    assert tables == {} and notes == ["batch misclassified-none: no answers ingested yet"]


def test_batches_with_fewer_raters_than_k_are_noted(run: str) -> None:
    export_study(run, ExportConfig(study=Study.MISCLASSIFIED, batch="three", raters_per_item=3))
    store = HumanStore(run + "/human")
    items = [r["item_id"] for r in items_of(store, "misclassified-three")]
    text = simulate(store, "misclassified-three", {i: ["yes"] * 3 for i in items}, noise=False)
    ingest_files(store, "misclassified-three", [("r.csv", text)], TimeFilter())
    tables, notes = analyze(store, read_table(run, "predictions"), AgreementRule())
    assert notes == [
        "batch misclassified-three: asked 3 raters per item, fewer than the rule's k=4, so no "
        "item of it can count as rectified"
    ]
    assert tables[TABLE1].column("rectified_images").to_pylist() == [0]
    tables, notes = analyze(store, read_table(run, "predictions"), AgreementRule(k=3, n=3))
    assert notes == [] and tables[TABLE1].column("rectified_images").to_pylist() == [len(items)]
