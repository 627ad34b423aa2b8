"""The report's bias probe and paired probe on hand-made data: rates, Fisher's exact test
against a brute-force hypergeometric sum, Benjamini-Hochberg and Wilson against hand
calculations, and the CSV readers' one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pytest

from audit.config import ConfigError
from audit.report.bias import (
    Pair,
    benjamini_hochberg,
    bias_probe,
    change_rates,
    fisher_two_sided,
    paired_probe,
    read_attributes,
    read_pairs,
    wilson_interval,
)
from audit.store import ERRORS, PREDICTIONS, SELECTIONS


def brute_force_fisher(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher p by enumerating every table with the same margins (hypergeometric)."""
    row1, col1, n = a + b, a + c, a + b + c + d

    def prob(x: int) -> float:
        return math.comb(col1, x) * math.comb(n - col1, row1 - x) / math.comb(n, row1)

    observed = prob(a)
    lo, hi = max(0, row1 + col1 - n), min(row1, col1)
    return sum(prob(x) for x in range(lo, hi + 1) if prob(x) <= observed * (1 + 1e-7))


@pytest.mark.parametrize(
    "table",
    [[[3, 0], [1, 6]], [[0, 5], [5, 0]], [[2, 2], [2, 2]], [[1, 9], [11, 3]], [[7, 1], [20, 40]]],
)
def test_fisher_matches_brute_force(table: list[list[int]]) -> None:
    (a, b), (c, d) = table
    _, p = fisher_two_sided(table)
    assert p == pytest.approx(brute_force_fisher(a, b, c, d), rel=1e-9)


def test_fisher_hand_value() -> None:
    # N=10 images, K=4 with the attribute, n=3 selected, all 3 with it:
    # P(X=3) = C(4,3) C(6,0) / C(10,3) = 4/120, and no other outcome is as unlikely.
    odds, p = fisher_two_sided([[3, 0], [1, 6]])
    assert p == pytest.approx(4 / 120)
    assert math.isinf(odds)


def test_benjamini_hochberg_hand_computed() -> None:
    # sorted: 0.01 (rank 1), 0.03 (2), 0.04 (3), 0.5 (4); p*m/rank = .04, .06, .0533, .5;
    # running minimum from the top: .04, .0533, .0533, .5
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    assert q == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert benjamini_hochberg([]) == []
    assert benjamini_hochberg([0.9, 0.95]) == pytest.approx([0.95, 0.95])


def test_wilson_interval_hand_computed() -> None:
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4)
    assert high == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0 < high < 0.2


def predictions(rows: list[tuple[str, int | None, int]]) -> pa.Table:
    """(image_id, label, top-1 class) -> a predictions table."""
    return pa.Table.from_pydict(
        {
            "run_id": ["r"] * len(rows),
            "model": ["m"] * len(rows),
            "image_id": [r[0] for r in rows],
            "uri": [f"file:///x/{r[0]}.png" for r in rows],
            "label": [r[1] for r in rows],
            "top5_classes": [[r[2], (r[2] + 1) % 3] for r in rows],
            "top5_probs": [[0.75, 0.25] for _ in rows],
            "correct_top1": [None if r[1] is None else r[1] == r[2] for r in rows],
            "correct_top5": [None for _ in rows],
            "loss": [None for _ in rows],
            "label_prob": [None for _ in rows],
            "embedding": [None for _ in rows],
        },
        schema=PREDICTIONS,
    )


def selections(rows: list[tuple[int, str, str, str]]) -> pa.Table:
    """(class, method, role, image_id) -> a selections table."""
    return pa.Table.from_pydict(
        {
            "run_id": ["r"] * len(rows),
            "model": ["m"] * len(rows),
            "class": [r[0] for r in rows],
            "class_id": [f"c{r[0]}" for r in rows],
            "method": [r[1] for r in rows],
            "role": [r[2] for r in rows],
            "rank": [i + 1 for i in range(len(rows))],
            "image_id": [r[3] for r in rows],
            "score": [0.0] * len(rows),
        },
        schema=SELECTIONS,
    )


@pytest.fixture
def world(tmp_path: Path) -> tuple[pa.Table, pa.Table, Path]:
    # class 0: a0..a9; attribute "dark" true for a0..a3 (4 of 10); a9 not annotated.
    # class 1: b0..b5; "dark" true for b0 only.
    preds = predictions(
        [(f"a{i}", 0, 0) for i in range(10)]
        + [(f"b{i}", 1, 1) for i in range(6)]
        + [("u", None, 2)]
    )
    sel = selections(
        [
            (0, "adversarial", "prototype", "a0"),
            (0, "adversarial", "prototype", "a1"),
            (0, "adversarial", "prototype", "a2"),
            (0, "adversarial", "criticism", "a9"),  # not annotated: no row for "dark"
            (1, "random", "criticism", "b1"),
            (1, "random", "criticism", "b2"),
        ]
    )
    lines = ["image_id,attribute,value"]
    lines += [f"a{i},dark,{'yes' if i < 4 else 'no'}" for i in range(9)]  # a0..a8
    lines += [f"b{i},dark,{'1' if i == 0 else '0'}" for i in range(6)]
    lines += ["a0,dark,yes"]  # an identical repeat is not a conflict
    lines += ["a0,colour,red", "a1,colour,blue", "a2,colour,red", "a3,colour,red"]
    lines += ["zz_not_in_run,dark,true"]
    path = tmp_path / "attributes.csv"
    path.write_text("\n".join(lines) + "\n")
    return preds, sel, path


def test_bias_probe_rates_and_tests(world: tuple[pa.Table, pa.Table, Path]) -> None:
    preds, sel, path = world
    attrs = read_attributes(str(path))
    assert attrs.binary == frozenset({"dark"})
    result = bias_probe(attrs, preds, sel, "run")
    assert result.unknown_images == ["zz_not_in_run"]
    rows = {(r.class_index, r.feature, r.method, r.role): r for r in result.rows}
    # class 0 prototypes, dark: 3 of 3 selected vs 4 of 9 annotated class images
    r = rows[(0, "dark", "adversarial", "prototype")]
    assert (r.selected_with, r.selected, r.class_with, r.class_images) == (3, 3, 4, 9)
    assert r.effect == pytest.approx(1 - 4 / 9)
    assert r.p_value == pytest.approx(brute_force_fisher(3, 0, 1, 5))
    # class 1 random criticisms, dark: 0 of 2 vs 1 of 6
    r = rows[(1, "dark", "random", "criticism")]
    assert (r.selected_with, r.selected, r.class_with, r.class_images) == (0, 2, 1, 6)
    assert r.p_value == pytest.approx(brute_force_fisher(0, 2, 1, 3))
    # categorical: colour = red among class 0 prototypes: a0, a2 red, a1 blue -> 2 of 3;
    # class: 3 red of the 4 annotated (a0..a3)
    r = rows[(0, "colour = red", "adversarial", "prototype")]
    assert (r.selected_with, r.selected, r.class_with, r.class_images) == (2, 3, 3, 4)
    r = rows[(0, "colour = blue", "adversarial", "prototype")]
    assert (r.selected_with, r.selected, r.class_with, r.class_images) == (1, 3, 1, 4)
    # the criticism a9 is annotated for nothing; class 1 has no colour annotations
    assert (0, "dark", "adversarial", "criticism") not in rows
    assert not any(k[0] == 1 and k[1].startswith("colour") for k in rows)
    # 3 features x 3 selection sets = 9 candidates: dark for the class 0 prototypes and the
    # class 1 criticisms, each colour for the class 0 prototypes; 5 sets without annotations
    assert len(result.rows) == 4 and result.unannotated_selections == 5
    effects = [abs(r.effect) for r in result.rows]
    assert effects == sorted(effects, reverse=True)
    q = benjamini_hochberg([r.p_value for r in result.rows])
    assert [r.q_value for r in result.rows] == pytest.approx(q)


def write(tmp_path: Path, text: str, name: str = "f.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image_id,attr,value\na,b,c\n", "line 1: the header lacks the column(s) attribute"),
        (
            "image_id,attribute,value\na,dark,yes\n,dark,no\n",
            "line 3: the field 'image_id' is empty",
        ),
        (
            "image_id,attribute,value\na,dark,yes\nb,dark\n",
            "line 3: 2 fields, but the header has 3",
        ),
        (
            "image_id,attribute,value\na,dark,yes\nb,dark,no\na,dark,no\n",
            "line 4: image 'a' has attribute 'dark' = 'no', but line 2 says 'yes'",
        ),
        ("image_id,attribute,value\n", "no attribute rows"),
        ("", "empty file"),
    ],
)
def test_attribute_csv_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_attributes(path)
    assert message in str(info.value)
    assert str(info.value).startswith(path)
    assert "\n" not in str(info.value)


def test_attribute_csv_missing_and_binary_garbage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        read_attributes(str(tmp_path / "nope.csv"))
    (tmp_path / "bad.csv").write_bytes(b"image_id,attribute,value\n\xff\xfe,a,b\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_attributes(str(tmp_path / "bad.csv"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image_a,other\nx,y\n", "lacks the column(s) image_b"),
        ("image_a,image_b\nx,x\n", "line 2: image_a and image_b are the same image 'x'"),
        ("image_a,image_b,pair_id\nx,y,p1\nz,w,p1\n", "line 3: pair_id 'p1' repeats line 2"),
        ("image_a,image_b\nx,\n", "line 2: the field 'image_b' is empty"),
    ],
)
def test_pair_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_pairs(path)


def test_paired_probe_counts_changes(tmp_path: Path) -> None:
    preds = predictions([("p1", 0, 0), ("p2", 0, 0), ("p3", 1, 1), ("p4", 1, 2), ("p5", 2, 0)])
    errors = pa.Table.from_pydict(
        {
            "run_id": ["r"],
            "image_id": ["broken"],
            "uri": ["file:///x/broken.png"],
            "stage": ["decode"],
            "reason": ["empty file"],
        },
        schema=ERRORS,
    )
    path = write(
        tmp_path,
        "image_a,image_b,attribute\n"
        "p1,p2,skin\n"  # 0 vs 0: same
        "p1,p3,skin\n"  # 0 vs 1: changed
        "p3,p4,hat\n"  # 1 vs 2: changed
        "p4,p5,hat\n"  # 2 vs 0: changed
        "p5,broken,hat\n"  # not comparable
        "p2,ghost,skin\n",  # not comparable
    )
    pairs = read_pairs(path)
    assert pairs[0] == Pair("line 2", "p1", "p2", "skin")
    outcomes = paired_probe(pairs, preds, errors)
    assert [o.changed for o in outcomes] == [False, True, True, True, None, None]
    assert outcomes[4].missing == "broken: decode: empty file"
    assert outcomes[5].missing == "ghost: not in this run"
    assert (outcomes[2].pred_a, outcomes[2].pred_b) == (1, 2)
    rates = {c.attribute: c for c in change_rates(outcomes)}
    assert (rates["all pairs"].pairs, rates["all pairs"].changed, rates["all pairs"].missing) == (
        4,
        3,
        2,
    )
    assert (rates["skin"].pairs, rates["skin"].changed, rates["skin"].missing) == (2, 1, 1)
    assert (rates["hat"].pairs, rates["hat"].changed, rates["hat"].missing) == (2, 2, 1)
    assert rates["all pairs"].rate == pytest.approx(0.75)
    assert (rates["all pairs"].low, rates["all pairs"].high) == pytest.approx(wilson_interval(3, 4))
