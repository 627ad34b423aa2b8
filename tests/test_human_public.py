"""Public judgments (vendored in tests/data): ReaL, cleanlab's MTurk file, MadryLab's labels.

Counts of full files are the published ones (quoted in tests/data/README.md); files trimmed for
the repository are counted by plain loops here. Accuracies are checked against plain loops over
the raw JSON. Predictions are cleanlab's cross-validated baseline (ImageFolder order, mapped to
file names through cleanlab's index -> file path list here, in the test).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import SHARED_DATA

from audit.human.judgments import (
    PublicDataError,
    cleanlab_table,
    madrylab_table,
    read_cleanlab,
    read_index_to_filepath,
    read_madrylab,
    read_real,
    real_table,
)

REAL = SHARED_DATA / "reassessed-imagenet" / "real.json"
CLEANLAB = SHARED_DATA / "cleanlab-label-errors"
MADRY = SHARED_DATA / "derived" / "madrylab_classify_task.jsonl"


@cache
def filepaths() -> list[str]:
    return json.loads((CLEANLAB / "imagenet_val_set_index_to_filepath.json").read_text())


def stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].split(".")[0]


@cache
def baseline() -> pa.Table:
    """cleanlab's out-of-sample predictions as a predictions table (top-1 only)."""
    labels = np.load(CLEANLAB / "imagenet_val_set_original_labels.npy").astype(int)
    preds = np.load(CLEANLAB / "imagenet_val_set_pyx_argmax_predicted_labels.npy").astype(int)
    ids = [stem(p) for p in filepaths()]
    return pa.table(
        {
            "image_id": ids,
            "label": labels.tolist(),
            "top5_classes": [[int(p)] for p in preds],
        }
    )


def measures(table: pa.Table) -> dict[str, tuple[float | None, int]]:
    return {r["measure"]: (r["accuracy"], r["images"]) for r in table.to_pylist()}


def test_real_counts() -> None:
    real = read_real(REAL.read_text())
    assert len(real) == 50000
    assert sum(1 for v in real.values() if v) == 46837
    sizes = Counter(len(v) for v in real.values() if v)
    assert sizes == {1: 39394, 2: 5408, 3: 1319, 4: 411, 5: 161, 6: 88, 7: 41, 8: 13, 9: 2}
    assert real["ILSVRC2012_val_00000001"] == [] and real["ILSVRC2012_val_00000002"] == [970, 795]


def test_index_mapping_agrees_with_the_filename_order_ground_truth() -> None:
    t = baseline()
    got = dict(zip(t.column("image_id").to_pylist(), t.column("label").to_pylist(), strict=True))
    # All 50000 against the official devkit ground truth (devkit IDs in filename order), mapped
    # to the torchvision index (position among the sorted wnids) through map_clsloc.txt.
    devkit = SHARED_DATA / "ilsvrc2012-devkit"
    wnid_of = {}
    for line in (devkit / "map_clsloc.txt").read_text().splitlines():
        wnid, devkit_id, _name = line.split()
        wnid_of[int(devkit_id)] = wnid
    index_of = {wnid: i for i, wnid in enumerate(sorted(wnid_of.values()))}
    gt = (devkit / "ILSVRC2012_validation_ground_truth.txt").read_text().split()
    assert len(wnid_of) == len(index_of) == 1000 and len(gt) == 50000
    assert got == {
        f"ILSVRC2012_val_{n:08d}": index_of[wnid_of[int(d)]] for n, d in enumerate(gt, 1)
    }
    # The derived filename-order ground truth: only its first rows are vendored.
    with open(SHARED_DATA / "derived" / "val_ground_truth.csv") as f:
        truth = {r["filename"].split(".")[0]: int(r["class_index"]) for r in csv.DictReader(f)}
    assert list(truth) == [f"ILSVRC2012_val_{n:08d}" for n in range(1, len(truth) + 1)]
    assert truth and {k: got[k] for k in truth} == truth


def test_real_accuracy_of_a_predictions_table() -> None:
    raw = json.loads(REAL.read_text())
    table = real_table(baseline(), read_real(REAL.read_text()))
    m = measures(table)
    t = baseline().to_pylist()
    top1 = sum(r["top5_classes"][0] == r["label"] for r in t) / 50000
    assert m["original top-1 accuracy, all labeled predictions"] == (top1, 50000)
    assert round(top1 * 100, 3) == 72.732  # the README's figure: the mapping is right
    hits = []
    orig = []
    for r in t:
        labels = raw[int(r["image_id"][-8:]) - 1]
        if labels:
            hits.append(r["top5_classes"][0] in labels)
            orig.append(r["top5_classes"][0] == r["label"])
    assert m["ReaL top-1 accuracy"] == (pytest.approx(sum(hits) / len(hits)), 46837)
    assert m["ReaL top-5 accuracy"] == m["ReaL top-1 accuracy"]  # only one class predicted
    assert m["original top-1 accuracy, same images"] == (
        pytest.approx(sum(orig) / len(orig)),
        46837,
    )
    assert m["predictions with an empty ReaL label set (skipped)"] == (None, 3163)
    assert m["predictions without a ReaL entry"] == (None, 0)


def test_real_of_perfect_predictions_on_a_subset() -> None:
    """Predicting the original label scores the share of labels ReaL keeps; unknown ids count."""
    real = read_real(REAL.read_text())
    t = baseline().slice(0, 2000).to_pylist()
    ids = [r["image_id"] for r in t] + ["not_imagenet"]
    labels = [r["label"] for r in t] + [3]
    table = pa.table({"image_id": ids, "label": labels, "top5_classes": [[x] for x in labels]})
    m = measures(real_table(table, real))
    kept = [r for r in t if real[r["image_id"]]]
    expected = sum(r["label"] in real[r["image_id"]] for r in kept) / len(kept)
    assert m["ReaL top-1 accuracy"] == (pytest.approx(expected), len(kept))
    assert m["original top-1 accuracy, same images"] == (1.0, len(kept))
    assert m["predictions without a ReaL entry"] == (None, 1)


def test_cleanlab_counts() -> None:
    raw = json.loads((CLEANLAB / "imagenet_mturk.json").read_text())
    votes = read_cleanlab((CLEANLAB / "imagenet_mturk.json").read_text())
    assert len(votes) == 5440
    assert sum(v.votes["given"] < 3 for v in votes) == 2916
    cats = Counter(v.category(3) for v in votes)
    assert (cats["guessed"], cats["both"], cats["neither"]) == (1428, 597, 293)
    assert cats["confirmed"] == 5440 - 2916
    for v, r in zip(votes, raw, strict=True):  # id is the file number in the url
        assert r["url"].endswith(v.image_id + ".JPEG")
    assert votes[0].image_id == "ILSVRC2012_val_00000293" and votes[0].guessed == 48


def test_cleanlab_rectified_accuracy() -> None:
    raw = json.loads((CLEANLAB / "imagenet_mturk.json").read_text())
    by_file = {r["id"]: r for r in raw}
    hits, orig, k_of_n = [], [], []
    for r in baseline().to_pylist():
        pred, label = r["top5_classes"][0], r["label"]
        c = by_file.get(int(r["image_id"][-8:]))
        # k-of-n (k = 3): the given label, or the guess with 3+ votes for guessed or both
        backed = c is not None and c["mturk"]["guessed"] + c["mturk"]["both"] >= 3
        k_of_n.append(pred == label or (backed and pred == c["our_guessed_label"]))
        if c is None or c["mturk"]["given"] >= 3:
            ok = {label}
        elif c["mturk"]["guessed"] >= 3:
            ok = {c["our_guessed_label"]}
        elif c["mturk"]["both"] >= 3:
            ok = {label, c["our_guessed_label"]}
        else:
            continue  # neither, or no majority: the majority rule cannot judge it
        hits.append(pred in ok)
        orig.append(pred == label)
    m = measures(cleanlab_table(baseline(), read_cleanlab(json.dumps(raw))))
    # the headline figure keeps the run's whole denominator
    assert m["cleanlab-rectified (3 of 5) top-1 accuracy"] == (
        pytest.approx(sum(k_of_n) / len(k_of_n)),
        50000,
    )
    assert m["images the k-of-n reading could not judge"] == (None, 0)
    assert m["cleanlab majority-rule (3 of 5) top-1 accuracy"] == (
        pytest.approx(sum(hits) / len(hits)),
        len(hits),
    )
    assert len(hits) == 50000 - 293 - (2916 - 1428 - 597 - 293)
    assert m["original top-1 accuracy, images the majority rule judges"][0] == pytest.approx(
        sum(orig) / len(orig)
    )
    assert m["majority rule could not judge: neither label fits"] == (None, 293)
    assert m["majority rule could not judge: no majority"] == (None, 2916 - 1428 - 597 - 293)
    assert m["predictions among cleanlab's MTurk-checked candidates"] == (None, 5440)
    assert m["validated label errors among them (given < majority)"] == (None, 2916)
    assert m["candidates whose given label differs from the prediction table's"] == (None, 0)
    print(
        f"k-of-n {sum(k_of_n) / len(k_of_n):.6f} over {len(k_of_n)}; "
        f"majority {sum(hits) / len(hits):.6f} over {len(hits)}; "
        f"guess backed: {m['guessed label also right: 3+ votes for guessed or both'][1]}"
    )


def test_cleanlab_k_is_a_parameter() -> None:
    votes = read_cleanlab((CLEANLAB / "imagenet_mturk.json").read_text())
    tables = {k: measures(cleanlab_table(baseline(), votes, k=k)) for k in (1, 3, 5)}
    acc = [tables[k][f"cleanlab-rectified ({k} of 5) top-1 accuracy"][0] for k in (1, 3, 5)]
    assert acc[0] >= acc[1] >= acc[2]  # a stricter k accepts fewer guessed labels
    assert tables[5]["guessed label also right: 5+ votes for guessed or both"][1] == sum(
        v.votes["guessed"] + v.votes["both"] >= 5 for v in votes
    )
    with pytest.raises(PublicDataError, match="k must be between 1 and 5"):
        cleanlab_table(baseline(), votes, k=0)


def test_madrylab_counts_and_accuracy() -> None:
    text = MADRY.read_text()
    sel = read_madrylab(text, MADRY.name)
    # The vendored file holds only the first lines of the 6761: count them with a plain loop.
    records = [json.loads(line) for line in text.splitlines()]
    assert sel == {r["filename"].split(".")[0]: r["selected"] for r in records}
    assert len(sel) == len(records)
    workers = Counter(len(r["selected"]) for r in records)
    assert Counter(len(w) for w in sel.values()) == workers
    assert workers == Counter(r["num_workers"] for r in records)
    truth = {r["image_id"]: r["label"] for r in baseline().to_pylist()}
    for r in records:  # the README's check: label = ground truth, index = ImageFolder index
        assert r["imagenet_label"] == truth[r["filename"].split(".")[0]]
        assert filepaths()[r["imagefolder_index"]].endswith("/" + r["filename"])
    m = measures(madrylab_table(baseline(), sel, 0.5))
    preds = {r["image_id"]: r["top5_classes"][0] for r in baseline().to_pylist()}
    hits = []
    for line in text.splitlines():
        rec = json.loads(line)
        workers = rec["selected"]
        valid = {c for c in range(1000) if sum(c in w for w in workers) * 2 >= len(workers)}
        if valid:
            hits.append(preds[rec["filename"].split(".")[0]] in valid)
    assert m["MadryLab multi-label top-1 accuracy"] == (
        pytest.approx(sum(hits) / len(hits)),
        len(hits),
    )
    assert m["predictions among MadryLab's images"] == (None, len(records))


def test_madrylab_by_imagefolder_index_needs_the_file_list() -> None:
    lines = MADRY.read_text().splitlines()[:50]
    by_index = []
    for line in lines:
        rec = json.loads(line)
        by_index.append(
            json.dumps({"image_number": rec["imagefolder_index"], "selected": rec["selected"]})
        )
    text = "\n".join(by_index)
    with pytest.raises(PublicDataError, match=r"madry.jsonl: line 1: .*index-to-filepath"):
        read_madrylab(text, "madry.jsonl")
    order = read_index_to_filepath(
        (CLEANLAB / "imagenet_val_set_index_to_filepath.json").read_text()
    )
    assert read_madrylab(text, "madry.jsonl", order) == read_madrylab("\n".join(lines), "m.jsonl")


@pytest.mark.parametrize(
    ("reader", "text", "message"),
    [
        (read_real, "{}", "real.json: expected a JSON list"),
        (read_real, "[[1], [2, -1]]", r"real.json: entry 1: expected a list of class indices"),
        (read_real, "[[1],", "real.json: not JSON"),
        (read_cleanlab, '[{"id": 1}]', "imagenet_mturk.json: entry 0: missing field"),
        (
            read_cleanlab,
            json.dumps(
                [
                    {
                        "id": 0,
                        "given_original_label": 1,
                        "our_guessed_label": 2,
                        "mturk": {"given": 5, "guessed": 0, "neither": 0, "both": 0},
                    }
                ]
            ),
            "entry 0: id 0 is not a new 1-based file number",
        ),
        (read_madrylab, '{"filename": "a.JPEG"}', r"madrylab.jsonl: line 1: no 'selected' list"),
    ],
)
def test_malformed_public_files(reader, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PublicDataError, match=message):
        reader(text)


def test_per_image_judgments_match_the_files_and_the_totals() -> None:
    """judge() gives each source's per-image label sets beside its table: ReaL's sets and
    cleanlab's k-of-n reading on its candidates, against plain loops over the raw JSON, and
    the top-1 accuracy over those sets equals the source's own total."""
    from audit.human.judgments import JUDGED_SCHEMA, judge

    files = {"real": str(REAL), "cleanlab": str(CLEANLAB / "imagenet_mturk.json")}
    out = {j.name: j for j in judge(baseline(), files, lambda p: Path(p).read_text())}
    preds = {r["image_id"]: r for r in baseline().to_pylist()}

    real = json.loads(REAL.read_text())
    want_real = {
        f"ILSVRC2012_val_{i + 1:08d}": set(v)
        for i, v in enumerate(real)
        if v and f"ILSVRC2012_val_{i + 1:08d}" in preds
    }
    raw = json.loads((CLEANLAB / "imagenet_mturk.json").read_text())
    want_clean = {}
    for c in raw:
        image_id = f"ILSVRC2012_val_{c['id']:08d}"
        label = preds[image_id]["label"]
        backed = c["mturk"]["guessed"] + c["mturk"]["both"] >= 3
        want_clean[image_id] = {label, c["our_guessed_label"]} if backed else {label}
    for name, want in (("real", want_real), ("cleanlab", want_clean)):
        labels = out[name].labels
        assert labels is not None and labels.schema == JUDGED_SCHEMA
        got = {r["image_id"]: set(r["valid_labels"]) for r in labels.to_pylist()}
        assert got == want, name
    real_hits = [preds[i]["top5_classes"][0] in v for i, v in want_real.items()]
    assert measures(out["real"].table)["ReaL top-1 accuracy"] == (
        pytest.approx(sum(real_hits) / len(real_hits)),
        len(real_hits),
    )
