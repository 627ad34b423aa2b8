"""Human-study export: item selection, rendered images, batch files (hand-made run tables).

``make_run`` builds a small run with the real writer (``RunStore``) and real image files, so the
other human-study tests reuse it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audit.config import DEFAULT_MAX_PIXELS, ConfigError
from audit.data.decode import load_image
from audit.data.demo import DIGIT_CLASSES
from audit.data.segments import encode_segments
from audit.human.config import ASSIGNMENT_CONDITIONS, ExportConfig, Shown, Study, Subset
from audit.human.export import export_salt, export_study
from audit.human.render import decode_png, image_name, png_bytes
from audit.human.storage import HumanStore
from audit.human.studies import ImageRef, StudyError, adversarial_candidates, misclassified_items
from audit.stages.explain import attention_image
from audit.store import RunStore, read_table

RUN_ID = "handmade"
PER_CLASS = 10
N_CLASSES = 10


def truth(cls: int, j: int) -> dict:
    """The hand-made prediction of image ``j`` of class ``cls``.

    j < 6: correct; j in 6, 7: top-1 wrong, label second (top-5 correct); j >= 8: label not in
    the top 5.
    """
    if j < 6:
        top5 = [cls, *[(cls + d) % N_CLASSES for d in (1, 2, 3, 4)]]
    elif j < 8:
        top5 = [(cls + 1) % N_CLASSES, cls, *[(cls + d) % N_CLASSES for d in (2, 3, 4)]]
    else:
        top5 = [(cls + d) % N_CLASSES for d in (1, 2, 3, 4, 5)]
    return {"top5": top5, "top1": top5[0] == cls, "top5_ok": cls in top5}


def image_id(cls: int, j: int) -> str:
    return f"IMG_{cls:02d}_{j:02d}"


def grid_segments() -> np.ndarray:
    """(224, 224) map of 16 square super-pixels of 56 px."""
    blocks = np.arange(16).reshape(4, 4)
    return np.repeat(np.repeat(blocks, 56, 0), 56, 1).astype(np.int32)


def make_run(root: Path, n_prototypes: int = 6, short_class: int | None = None) -> str:
    """Write a run of 100 images (10 digit classes x 10) and return its folder.

    Adversarial rows: images j in (0, 1) flip after one step (adv class cls + 2), j = 2 flips but
    its stored PNG no longer does (``stored_flips`` false), j in 3..5 never flip; misclassified
    images have steps 0. Every flipped image has an adversarial explanation on a 4x4 grid with
    top features 0..7. Selections: per method and class, prototypes j = 0..n_prototypes-1 and
    criticisms j = 6..8 (``short_class`` gets only 2 prototypes).
    """
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    rng = np.random.default_rng(7)
    preds: dict[str, list] = {k: [] for k in ("image_id", "uri", "label", "top5_classes")}
    preds.update({k: [] for k in ("correct_top1", "correct_top5", "top5_probs")})
    adv: dict[str, list] = {
        k: []
        for k in (
            "image_id",
            "label",
            "target",
            "steps_to_flip",
            "adv_class",
            "stored_flips",
            "image_png",
        )
    }
    expl: dict[str, list] = {k: [] for k in ("image_id", "explained_class", "top_features")}
    for cls in range(N_CLASSES):
        for j in range(PER_CLASS):
            iid = image_id(cls, j)
            path = img_dir / f"{iid}.png"
            pixels = rng.integers(0, 256, (40 + j, 50, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
            t = truth(cls, j)
            preds["image_id"].append(iid)
            preds["uri"].append(str(path))
            preds["label"].append(cls)
            preds["top5_classes"].append(t["top5"])
            preds["top5_probs"].append([0.5, 0.2, 0.1, 0.1, 0.1])
            preds["correct_top1"].append(t["top1"])
            preds["correct_top5"].append(t["top5_ok"])
            steps = 0 if j >= 6 else (1 if j < 3 else None)
            adv["image_id"].append(iid)
            adv["label"].append(cls)
            adv["target"].append(cls)
            adv["steps_to_flip"].append(steps)
            adv["adv_class"].append((cls + 2) % N_CLASSES if steps == 1 else t["top5"][0])
            adv["stored_flips"].append(j != 2)
            png = png_bytes(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
            adv["image_png"].append(png)
            if steps == 1:
                expl["image_id"].append(iid)
                expl["explained_class"].append((cls + 2) % N_CLASSES)
                expl["top_features"].append(list(range(8)))
    store = RunStore(str(root), RUN_ID)
    store.prepare(overwrite=False)
    n = len(preds["image_id"])
    common = {"run_id": [RUN_ID] * n, "model": ["demo_digits"] * n}
    store.write(
        "predictions",
        {
            **common,
            **preds,
            "loss": [1.0] * n,
            "label_prob": [0.5] * n,
            "embedding": [None] * n,
        },
    )
    store.write(
        "adversarial",
        {
            **common,
            **adv,
            "adv_prob": [0.9] * n,
            "linf": [0.001] * n,
            "l2": [0.1] * n,
        },
    )
    m = len(expl["image_id"])
    seg = encode_segments(grid_segments())
    store.write(
        "explanations",
        {
            "run_id": [RUN_ID] * m,
            "model": ["demo_digits"] * m,
            **expl,
            "variant": ["adversarial"] * m,
            "segments": [seg] * m,
            "n_segments": [16] * m,
            "weights": [[0.0] * 16] * m,
            "intercept": [0.0] * m,
            "score": [0.5] * m,
            "local_pred": [0.5] * m,
            "n_samples": [100] * m,
            "kernel_width": [0.25] * m,
            "seed": [0] * m,
        },
    )
    sel: dict[str, list] = {
        k: [] for k in ("class", "class_id", "method", "role", "rank", "image_id")
    }
    for cls in range(N_CLASSES):
        for method in ("adversarial", "mmd_critic", "probability", "random"):
            protos = 2 if cls == short_class else n_prototypes
            for role, js in (("prototype", range(protos)), ("criticism", range(6, 9))):
                for rank, j in enumerate(js, start=1):
                    sel["class"].append(cls)
                    sel["class_id"].append(DIGIT_CLASSES.ids[cls])
                    sel["method"].append(method)
                    sel["role"].append(role)
                    sel["rank"].append(rank)
                    sel["image_id"].append(image_id(cls, j))
    k = len(sel["class"])
    store.write(
        "selections",
        {"run_id": [RUN_ID] * k, "model": ["demo_digits"] * k, **sel, "score": [0.0] * k},
    )
    store.ensure_tables()
    store.write_manifest(
        {
            "run_id": RUN_ID,
            "state": "succeeded",
            "model": {"name": "demo_digits", "classes": "digits"},
            "tables": {t: {"rows": store.rows[t], "files": store.files[t]} for t in store.files},
        }
    )
    return store.url


@pytest.fixture
def run(tmp_path: Path) -> str:
    return make_run(tmp_path / "out")


def read_csv(store: HumanStore, rel: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(store.read_bytes(rel).decode("utf-8"))))


def test_misclassified_top1_items_are_the_top1_errors(run: str) -> None:
    batches = export_study(run, ExportConfig(study=Study.MISCLASSIFIED, batch="b1"))
    assert [b.name for b in batches] == ["misclassified-b1"]
    store = HumanStore(run + "/human")
    key = store.read_json("batches/misclassified-b1/key.json")
    expected = {
        image_id(c, j)
        for c in range(N_CLASSES)
        for j in range(PER_CLASS)
        if not truth(c, j)["top1"]
    }
    assert {k["image_id"] for k in key} == expected
    for k in key:
        c, j = int(k["image_id"][4:6]), int(k["image_id"][7:9])
        assert k["label"] == c
        assert k["shown_classes"] == [truth(c, j)["top5"][0]]
    rows = read_csv(store, "batches/misclassified-b1/mturk_input.csv")
    assert [r["item_id"] for r in rows] == [k["item_id"] for k in key]
    by_item = {k["item_id"]: k for k in key}
    for r in rows:
        k = by_item[r["item_id"]]
        name = DIGIT_CLASSES.names[k["shown_classes"][0]]
        assert r["question"] == f"Is the class '{name}' relevant for this image?"
        # The image is the evaluation crop of the input, under an opaque name.
        assert r["image_url"].endswith(image_name(export_salt(store), _crop(k["image_id"]), 8))
        png = store.read_bytes("images/" + image_name(export_salt(store), _crop(k["image_id"]), 8))
        uri = read_table(run, "predictions").to_pandas().set_index("image_id").uri[k["image_id"]]
        np.testing.assert_array_equal(decode_png(png), load_image(uri, DEFAULT_MAX_PIXELS))


def _crop(iid: str) -> ImageRef:
    return ImageRef("crop", iid)


def test_rater_files_never_show_the_ground_truth(run: str) -> None:
    export_study(run, ExportConfig(study=Study.MISCLASSIFIED, batch="b1"))
    export_study(run, ExportConfig(study=Study.ASSIGNMENT, batch="a1", questions_per_condition=3))
    store = HumanStore(run + "/human")
    slots = [f"slot{s}_img{j}_url" for s in range(1, 7) for j in range(1, 7)]
    columns = {
        "misclassified-b1": ["item_id", "question", "classes", "image_url"],
        "assignment-a1": [
            "item_id",
            "question",
            *[f"slot{s}_name" for s in range(1, 7)],
            "target_url",
            *slots,
        ],
    }
    for batch, expected in columns.items():
        rows = read_csv(store, f"batches/{batch}/mturk_input.csv")
        assert list(rows[0]) == expected  # no label, condition or correct answer column
        # MTurk refuses a template whose ${placeholders} are not all input columns
        html = store.read_bytes(f"batches/{batch}/template.html").decode()
        assert set(re.findall(r"\$\{(\w+)\}", html)) == set(expected) - {"classes"}
        assert read_csv(store, f"batches/{batch}/items.csv") == rows
        for name in ("mturk_input.csv", "items.csv", "items.json"):
            assert "IMG_" not in store.read_bytes(f"batches/{batch}/{name}").decode()
        assert "never upload" in store.read_bytes(f"batches/{batch}/README.txt").decode()
    key = {k["item_id"]: k for k in store.read_json("batches/misclassified-b1/key.json")}
    for r in read_csv(store, "batches/misclassified-b1/mturk_input.csv"):
        assert DIGIT_CLASSES.names[key[r["item_id"]]["label"]] not in r["question"]


def test_export_is_deterministic_per_seed(tmp_path: Path) -> None:
    run = make_run(tmp_path / "out")
    texts = []
    for batch, seed in (("x", 0), ("y", 0), ("z", 1)):
        export_study(run, ExportConfig(study=Study.MISCLASSIFIED, batch=batch, seed=seed))
        store = HumanStore(run + "/human")
        key = store.read_json(f"batches/misclassified-{batch}/key.json")
        texts.append([k["image_id"] for k in key])
    assert texts[0] == texts[1]
    assert texts[0] != texts[2] and sorted(texts[0]) == sorted(texts[2])


def test_top5_variant_and_max_items(run: str) -> None:
    cfg = ExportConfig(
        study=Study.MISCLASSIFIED,
        batch="t5",
        subset=Subset.TOP5_ERRORS,
        shown=Shown.TOP5,
        max_items=7,
        raters_per_item=3,
    )
    export_study(run, cfg)
    store = HumanStore(run + "/human")
    key = store.read_json("batches/misclassified-t5/key.json")
    assert len(key) == 7
    for k in key:
        c, j = int(k["image_id"][4:6]), int(k["image_id"][7:9])
        assert j >= 8  # only top-5 errors
        assert sorted(k["shown_classes"]) == sorted(truth(c, j)["top5"])
    meta = store.read_json("batches/misclassified-t5/batch.json")
    assert meta["raters_per_item"] == 3 and meta["items"] == 7
    readme = " ".join(store.read_bytes("batches/misclassified-t5/README.txt").decode().split())
    assert "'Number of assignments per task' to 3 (raters per item)" in readme


def test_adversarial_writes_two_batches_with_explanations(run: str) -> None:
    batches = export_study(
        run, ExportConfig(study=Study.ADVERSARIAL, batch="adv", question="{classes}?")
    )
    assert sorted(b.name for b in batches) == [
        "adversarial-adv-explanation",
        "adversarial-adv-whole",
    ]
    store = HumanStore(run + "/human")
    adv = read_table(run, "adversarial").to_pandas().set_index("image_id")
    expected = {image_id(c, j) for c in range(N_CLASSES) for j in (0, 1)}  # j=2: stored_flips false
    for cond in ("whole", "explanation"):
        folder = f"batches/adversarial-adv-{cond}"
        key = store.read_json(f"{folder}/key.json")
        assert {k["image_id"] for k in key} == expected
        readme = store.read_bytes(f"{folder}/README.txt").decode()
        assert "DAYS APART" in readme and "DIFFERENT" in readme
        rows = {r["item_id"]: r for r in read_csv(store, f"{folder}/mturk_input.csv")}
        for k in key:
            c = int(k["image_id"][4:6])
            assert k["adv_class"] == (c + 2) % N_CLASSES
            assert rows[k["item_id"]]["question"] == DIGIT_CLASSES.names[(c + 2) % N_CLASSES] + "?"
            kind = "adversarial" if cond == "whole" else "explanation"

            png = decode_png(
                store.read_bytes(
                    "images/" + image_name(export_salt(store), ImageRef(kind, k["image_id"]), 8)
                )
            )
            original = decode_png(adv.image_png[k["image_id"]])
            if cond == "whole":
                np.testing.assert_array_equal(png, original)
            else:
                # top 8 of the 16 grid cells are cells 0..7: the top half of the image.
                np.testing.assert_array_equal(png[:112], original[:112])
                assert (png[112:] == 0).all()
                np.testing.assert_array_equal(
                    png, attention_image(original, grid_segments(), np.arange(8), k=8)
                )


def test_assignment_questions(run: str) -> None:
    cfg = ExportConfig(study=Study.ASSIGNMENT, batch="a", questions_per_condition=4, seed=3)
    export_study(run, cfg)
    store = HumanStore(run + "/human")
    key = store.read_json("batches/assignment-a/key.json")
    rows = {r["item_id"]: r for r in read_csv(store, "batches/assignment-a/mturk_input.csv")}
    assert len(key) == 4 * len(ASSIGNMENT_CONDITIONS)
    html = store.read_bytes("batches/assignment-a/template.html").decode()
    for s in range(1, 7):
        for j in range(1, 7):
            assert f"${{slot{s}_img{j}_url}}" in html
    for k in key:
        _, n_proto, n_crit = ASSIGNMENT_CONDITIONS[k["condition"]]
        assert len(set(k["classes"])) == 6
        target_class = k["classes"][k["correct_slot"] - 1]
        assert target_class == k["target_class"] == int(k["target_image_id"][4:6])
        for cls, images in zip(k["classes"], k["slot_images"], strict=True):
            js = sorted(int(i[7:9]) for i in images)
            assert all(int(i[4:6]) == cls for i in images)
            assert js == [*range(n_proto), *range(6, 6 + n_crit)]
        assert k["target_image_id"] not in k["slot_images"][k["correct_slot"] - 1]
        row = rows[k["item_id"]]
        assert row["slot1_name"] == ""  # class names hidden by default

        assert row["target_url"].endswith(
            image_name(export_salt(store), ImageRef("crop", k["target_image_id"]), 8)
        )


def test_assignment_refuses_conditions_it_cannot_fill(tmp_path: Path) -> None:
    run = make_run(tmp_path / "out", n_prototypes=3)
    with pytest.raises(
        StudyError,
        match=r"too few for adversarial_6p \(6 prototypes \+ 0 criticisms of 'adversarial'\): 0 classes.*this run can fill: \['adversarial_3p3c'",
    ):
        export_study(run, ExportConfig(study=Study.ASSIGNMENT))
    # 3 prototypes + 3 criticisms still work; a class short of prototypes is left out.
    run2 = make_run(tmp_path / "out2", n_prototypes=3, short_class=4)
    export_study(
        run2, ExportConfig(study=Study.ASSIGNMENT, conditions=("random", "mmd_critic_3p3c"))
    )
    key = HumanStore(run2 + "/human").read_json("batches/assignment-batch1/key.json")
    assert all(4 not in k["classes"] for k in key)


def test_existing_batch_and_bad_config(run: str) -> None:
    cfg = ExportConfig(study=Study.MISCLASSIFIED)
    export_study(run, cfg)
    with pytest.raises(StudyError, match="exists"):
        export_study(run, cfg)
    export_study(run, cfg, overwrite=True)
    with pytest.raises(ConfigError, match="'raters_per_item' parameter of ExportConfig"):
        ExportConfig(study=Study.MISCLASSIFIED, raters_per_item=0)
    with pytest.raises(ConfigError, match="'conditions'"):
        ExportConfig(study=Study.ASSIGNMENT, conditions=("nope",))
    with pytest.raises(ConfigError, match="'batch'"):
        ExportConfig(study=Study.ASSIGNMENT, batch="a/b")


def test_image_base_url_and_other_output(run: str, tmp_path: Path) -> None:
    out = str(tmp_path / "elsewhere")
    export_study(
        run,
        ExportConfig(study=Study.MISCLASSIFIED, image_base_url="https://cdn.example/h/images/"),
        output=out,
    )
    store = HumanStore(out)
    rows = read_csv(store, "batches/misclassified-batch1/mturk_input.csv")
    assert all(r["image_url"].startswith("https://cdn.example/h/images/crop/") for r in rows)
    for r in rows:
        assert store.exists("images/" + r["image_url"].split("/images/", 1)[1])
    items = json.loads(store.read_bytes("batches/misclassified-batch1/items.json"))
    assert [i["item_id"] for i in items] == [r["item_id"] for r in rows]


def test_no_errors_is_a_clear_error() -> None:
    import pyarrow as pa

    table = pa.table(
        {
            "image_id": ["a"],
            "label": [1],
            "top5_classes": [[1, 2]],
            "correct_top1": [True],
            "correct_top5": [True],
        }
    )
    with pytest.raises(StudyError, match="nothing to ask"):
        misclassified_items(table, DIGIT_CLASSES, ExportConfig(study=Study.MISCLASSIFIED))


def test_top5_shown_only_for_top5_errors() -> None:
    # a top-1 error's top 5 can hold its label: showing it would ask raters about the label
    with pytest.raises(ConfigError, match="'shown' parameter of ExportConfig may be 'top5' only"):
        ExportConfig(study=Study.MISCLASSIFIED, subset=Subset.TOP1_ERRORS, shown=Shown.TOP5)
    ExportConfig(study=Study.MISCLASSIFIED, subset=Subset.TOP5_ERRORS, shown=Shown.TOP1)


def test_adversarial_never_asks_about_the_label() -> None:
    import pyarrow as pa

    png = png_bytes(np.zeros((4, 4, 3), dtype=np.uint8))
    adv = pa.table(
        {
            "image_id": ["a", "b", "c"],
            "label": [3, 3, None],
            "steps_to_flip": [1, 1, 1],
            "adv_class": [3, 5, 3],  # "a" was misclassified and the attack flipped it to its label
            "stored_flips": [True, True, True],
            "image_png": [png, png, png],
        }
    )
    expl = pa.table(
        {
            "image_id": ["a", "b", "c"],
            "variant": ["adversarial"] * 3,
            "explained_class": [3, 5, 3],
            "segments": [b""] * 3,
            "top_features": [[0]] * 3,
        }
    )
    assert [c["image_id"] for c in adversarial_candidates(adv, expl)] == ["b", "c"]


def test_overwrite_drops_the_old_answers(run: str) -> None:
    from audit.human.config import TimeFilter
    from audit.human.ingest import ingest_files

    cfg = ExportConfig(study=Study.MISCLASSIFIED, batch="ow")
    export_study(run, cfg)
    store = HumanStore(run + "/human")
    rows = read_csv(store, "batches/misclassified-ow/mturk_input.csv")
    text = "\n".join(
        ["WorkerId,AssignmentId,HITId,WorkTimeInSeconds,Input.item_id,Answer.relevant"]
        + [f"W1,A{i},H{i},60,{r['item_id']},yes" for i, r in enumerate(rows)]
    )
    ingest_files(store, "misclassified-ow", [("results.csv", text)], TimeFilter())
    assert store.exists("answers/misclassified-ow/answers.parquet")
    export_study(run, ExportConfig(study=Study.MISCLASSIFIED, batch="ow", seed=5), overwrite=True)
    assert not store.exists("answers/misclassified-ow")


def test_image_names_are_salted_and_explanations_name_their_k(run: str, tmp_path: Path) -> None:
    # the names cannot be recomputed from the run id and a guessed image id, and an explanation
    # shown with fewer super-pixels is another file, not the cached one
    out = str(tmp_path / "second")
    export_study(run, ExportConfig(study=Study.ADVERSARIAL, batch="k8"))
    export_study(run, ExportConfig(study=Study.ADVERSARIAL, batch="k8"), output=out)
    first, second = HumanStore(run + "/human"), HumanStore(out)
    ref = ImageRef("explanation", image_id(0, 0))
    assert export_salt(first) != export_salt(second)
    assert image_name(export_salt(first), ref, 8) != image_name(export_salt(second), ref, 8)
    export_study(run, ExportConfig(study=Study.ADVERSARIAL, batch="k2", explanation_features=2))
    k8 = decode_png(first.read_bytes("images/" + image_name(export_salt(first), ref, 8)))
    k2 = decode_png(first.read_bytes("images/" + image_name(export_salt(first), ref, 2)))
    # top features 0..7 of a 4x4 grid of 56 px cells: 8 cells are two rows, 2 cells half a row
    assert (k8[:112] != 0).any(axis=2).mean() > 0.9 and (k8[112:] == 0).all()
    assert (k2[:56, :112] != 0).any(axis=2).mean() > 0.9
    assert (k2[56:] == 0).all() and (k2[:, 112:] == 0).all()
