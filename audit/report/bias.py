"""Bias probes: is an image attribute over- or under-represented among a class's prototypes or
criticisms, and does the prediction change between two images that differ in one attribute?

**Bias probe.** The user gives a CSV of per-image attributes with the header
``image_id,attribute,value`` (one row per image and attribute; the paper's example: how many
basketball prototypes and criticisms contain a black person). An attribute whose values are all
``true/false``, ``yes/no`` or ``1/0`` is binary (the feature is "value is true"); any other
attribute is categorical and gives one feature ``attribute = value`` per value. An image counts
for an attribute only when it is annotated for it. For each class, attribute feature and set of
selected images (one method, one role) the probe reports:

- ``class_with / class_images``: the feature's rate among the class's annotated images (class =
  the ground-truth label),
- ``selected_with / selected``: its rate among the annotated selected images,
- ``effect = rate_selected - rate_class``,
- ``p_value``: Fisher's exact test (two-sided) of the 2x2 table selected vs the class's other
  annotated images, with vs without the feature: the hypergeometric test of drawing
  ``selected`` images from the class,
- ``q_value``: Benjamini-Hochberg adjusted over all rows of the probe.

Rows are sorted by ``|effect|`` (largest first), then by ``p_value``.

**Paired probe.** The user gives a CSV of pairs with the header ``image_a,image_b`` and optional
``attribute`` and ``pair_id`` columns (the paper's Figure 9: two images that differ mainly in one
attribute). For each pair the two top-1 predictions are compared; the summary is the fraction of
pairs whose predicted class changes, with a Wilson 95 % interval, overall and per attribute.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import fsspec
import pyarrow as pa
from scipy.stats import fisher_exact

from audit.config import ConfigError

TRUE = frozenset({"true", "yes", "1"})
FALSE = frozenset({"false", "no", "0"})
Z95 = 1.959963984540054


def _read_csv(
    path: str, required: Sequence[str], storage_options: Mapping[str, Any] | None
) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    """Rows of a CSV as ``(line number, row)``; checks the header and empty fields.

    Raises:
        ConfigError: missing file, missing header column, a short row or an empty required
            field, naming the file, line and column.
    """
    try:
        with fsspec.open(path, "rb", **dict(storage_options or {})) as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found.") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ConfigError(f"{path}: empty file; expected a header {','.join(required)}.") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise ConfigError(
            f"{path}: line 1: the header lacks the column(s) {', '.join(missing)} "
            f"(expected {','.join(required)}). Got {','.join(header)!r} instead."
        )
    rows: list[tuple[int, dict[str, str]]] = []
    for values in reader:
        line = reader.line_num
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise ConfigError(
                f"{path}: line {line}: {len(values)} fields, but the header has {len(header)}."
            )
        row = {h: v.strip() for h, v in zip(header, values, strict=True)}
        for column in required:
            if not row[column]:
                raise ConfigError(f"{path}: line {line}: the field {column!r} is empty.")
        rows.append((line, row))
    return rows, header


@dataclass(frozen=True)
class Attributes:
    """Per-image attribute annotations.

    Attributes:
        source: Where they were read from.
        values: attribute -> image_id -> value (as written, stripped).
        binary: The attributes whose values are all true/false, yes/no or 1/0.
    """

    source: str
    values: Mapping[str, Mapping[str, str]]
    binary: frozenset[str]

    def features(self) -> list[tuple[str, str, str | None]]:
        """``(feature label, attribute, value)``: value None for a binary attribute (the
        feature is "true"), else one feature per distinct value. Sorted."""
        out: list[tuple[str, str, str | None]] = []
        for attribute in sorted(self.values):
            if attribute in self.binary:
                out.append((attribute, attribute, None))
            else:
                for value in sorted(set(self.values[attribute].values())):
                    out.append((f"{attribute} = {value}", attribute, value))
        return out

    def has(self, attribute: str, value: str | None, image_id: str) -> bool | None:
        """Whether the image has the feature; None when it is not annotated for ``attribute``."""
        got = self.values[attribute].get(image_id)
        if got is None:
            return None
        if value is None:
            return got.lower() in TRUE
        return got == value

    @property
    def image_ids(self) -> set[str]:
        return {i for per in self.values.values() for i in per}


def read_attributes(path: str, storage_options: Mapping[str, Any] | None = None) -> Attributes:
    """Read an ``image_id,attribute,value`` CSV (local path or fsspec URL).

    Raises:
        ConfigError: a bad header, an empty field, or one image given two different values of
            the same attribute (naming the file and both lines).
    """
    rows, _ = _read_csv(path, ("image_id", "attribute", "value"), storage_options)
    values: dict[str, dict[str, str]] = defaultdict(dict)
    first_line: dict[tuple[str, str], int] = {}
    for line, row in rows:
        key = (row["attribute"], row["image_id"])
        old = values[row["attribute"]].get(row["image_id"])
        if old is not None and old != row["value"]:
            raise ConfigError(
                f"{path}: line {line}: image {row['image_id']!r} has attribute "
                f"{row['attribute']!r} = {row['value']!r}, but line {first_line[key]} says "
                f"{old!r}."
            )
        values[row["attribute"]][row["image_id"]] = row["value"]
        first_line.setdefault(key, line)
    if not values:
        raise ConfigError(f"{path}: no attribute rows after the header.")
    binary = frozenset(
        a for a, per in values.items() if all(v.lower() in TRUE | FALSE for v in per.values())
    )
    return Attributes(path, {a: dict(v) for a, v in values.items()}, binary)


def fisher_two_sided(table: Sequence[Sequence[int]]) -> tuple[float, float]:
    """Fisher's exact test of a 2x2 table ``[[a, b], [c, d]]``: ``(sample odds ratio, p)``."""
    result = fisher_exact(
        [[int(table[0][0]), int(table[0][1])], [int(table[1][0]), int(table[1][1])]]
    )
    return float(result[0]), float(result[1])


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    q = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        q[i] = min(1.0, running)
    return q


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; ``(0, 1)`` when ``n`` is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class BiasRow:
    """One (class, feature, method, role) test of the bias probe (see the module docstring)."""

    run: str
    class_index: int
    feature: str
    method: str
    role: str
    selected: int
    selected_with: int
    class_images: int
    class_with: int
    odds_ratio: float
    p_value: float
    q_value: float = 1.0

    @property
    def rate_selected(self) -> float:
        return self.selected_with / self.selected

    @property
    def rate_class(self) -> float:
        return self.class_with / self.class_images

    @property
    def effect(self) -> float:
        return self.rate_selected - self.rate_class


@dataclass(frozen=True)
class BiasResult:
    """The bias probe's rows (sorted) and what it could not use.

    Attributes:
        rows: Every test, sorted by ``|effect|`` then ``p_value``.
        unknown_images: Annotated image ids that are not among the run's labeled predictions.
        unannotated_selections: (class, method, role) sets none of whose images is annotated
            for a feature's attribute, counted per feature.
    """

    rows: list[BiasRow]
    unknown_images: list[str]
    unannotated_selections: int


def bias_probe(
    attributes: Attributes,
    predictions: pa.Table,
    selections: pa.Table,
    run: str = "",
) -> BiasResult:
    """Test every (class, feature, method, role) of a run (see the module docstring).

    Args:
        attributes: From :func:`read_attributes`.
        predictions: The run's predictions (``image_id``, ``label``).
        selections: The run's selections (``class``, ``method``, ``role``, ``image_id``).
        run: How the rows name the run.
    """
    labels = dict(
        zip(
            predictions.column("image_id").to_pylist(),
            predictions.column("label").to_pylist(),
            strict=True,
        )
    )
    members: dict[int, list[str]] = defaultdict(list)
    for image_id, label in labels.items():
        if label is not None:
            members[int(label)].append(image_id)
    known = {i for i, label in labels.items() if label is not None}
    unknown = sorted(attributes.image_ids - known)
    chosen: dict[tuple[int, str, str], list[str]] = defaultdict(list)
    for row in selections.select(["class", "method", "role", "image_id"]).to_pylist():
        chosen[(int(row["class"]), row["method"], row["role"])].append(row["image_id"])
    rows: list[BiasRow] = []
    empty = 0
    for feature, attribute, value in attributes.features():
        for (cls, method, role), image_ids in sorted(chosen.items()):
            class_flags = [attributes.has(attribute, value, i) for i in members.get(cls, [])]
            class_flags_known = [f for f in class_flags if f is not None]
            sel_flags = [
                f for f in (attributes.has(attribute, value, i) for i in image_ids) if f is not None
            ]
            if not sel_flags:
                empty += 1
                continue
            n_class, k_class = len(class_flags_known), sum(class_flags_known)
            n_sel, k_sel = len(sel_flags), sum(sel_flags)
            odds, p = fisher_two_sided(
                [[k_sel, n_sel - k_sel], [k_class - k_sel, (n_class - n_sel) - (k_class - k_sel)]]
            )
            rows.append(
                BiasRow(run, cls, feature, method, role, n_sel, k_sel, n_class, k_class, odds, p)
            )
    q = benjamini_hochberg([r.p_value for r in rows])
    rows = [replace(r, q_value=qv) for r, qv in zip(rows, q, strict=True)]
    rows.sort(key=lambda r: (-abs(r.effect), r.p_value, r.class_index, r.feature, r.method, r.role))
    return BiasResult(rows, unknown, empty)


@dataclass(frozen=True)
class Pair:
    """Two images that differ mainly in one attribute.

    Attributes:
        pair_id: The ``pair_id`` column, or the CSV line number.
        image_a: image_id of the first image.
        image_b: image_id of the second.
        attribute: What differs (may be empty).
    """

    pair_id: str
    image_a: str
    image_b: str
    attribute: str


def read_pairs(path: str, storage_options: Mapping[str, Any] | None = None) -> list[Pair]:
    """Read an ``image_a,image_b[,attribute][,pair_id]`` CSV (local path or fsspec URL).

    Raises:
        ConfigError: a bad header, an empty field, a pair of one image with itself, or a
            repeated ``pair_id``, naming the file and line.
    """
    rows, _ = _read_csv(path, ("image_a", "image_b"), storage_options)
    pairs: list[Pair] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        if row["image_a"] == row["image_b"]:
            raise ConfigError(
                f"{path}: line {line}: image_a and image_b are the same image {row['image_a']!r}."
            )
        pair_id = row.get("pair_id") or f"line {line}"
        if pair_id in seen:
            raise ConfigError(
                f"{path}: line {line}: pair_id {pair_id!r} repeats line {seen[pair_id]}."
            )
        seen[pair_id] = line
        pairs.append(Pair(pair_id, row["image_a"], row["image_b"], row.get("attribute", "")))
    if not pairs:
        raise ConfigError(f"{path}: no pairs after the header.")
    return pairs


@dataclass(frozen=True)
class PairOutcome:
    """One pair's two top-1 predictions under one run.

    Attributes:
        pair: The pair.
        pred_a: Top-1 class of image_a (None when the run has no prediction for it).
        pred_b: Top-1 class of image_b.
        prob_a: Its probability.
        prob_b: Its probability.
        missing: Why the pair could not be compared (empty when it could).
    """

    pair: Pair
    pred_a: int | None
    pred_b: int | None
    prob_a: float | None
    prob_b: float | None
    missing: str = ""

    @property
    def changed(self) -> bool | None:
        """Whether the predicted class differs within the pair; None when not comparable."""
        if self.pred_a is None or self.pred_b is None:
            return None
        return self.pred_a != self.pred_b


def paired_probe(
    pairs: Sequence[Pair], predictions: pa.Table, errors: pa.Table | None = None
) -> list[PairOutcome]:
    """The top-1 prediction of both images of every pair, in the pairs' order.

    A pair whose image the run did not predict gets ``missing`` saying so (with the errors
    table's reason when the image failed to load).
    """
    top = {
        i: (int(c[0]), float(p[0]))
        for i, c, p in zip(
            predictions.column("image_id").to_pylist(),
            predictions.column("top5_classes").to_pylist(),
            predictions.column("top5_probs").to_pylist(),
            strict=True,
        )
        if c
    }
    failed: dict[str, str] = {}
    if errors is not None and errors.num_rows:
        for row in errors.select(["image_id", "stage", "reason"]).to_pylist():
            failed[row["image_id"]] = f"{row['stage']}: {row['reason']}"
    out = []
    for pair in pairs:
        a, b = top.get(pair.image_a), top.get(pair.image_b)
        reasons = []
        for image_id, got in ((pair.image_a, a), (pair.image_b, b)):
            if got is None:
                why = failed.get(image_id, "not in this run")
                reasons.append(f"{image_id}: {why}")
        out.append(
            PairOutcome(
                pair,
                a[0] if a else None,
                b[0] if b else None,
                a[1] if a else None,
                b[1] if b else None,
                "; ".join(reasons),
            )
        )
    return out


@dataclass(frozen=True)
class ChangeRate:
    """How often the predicted class changes within pairs.

    Attributes:
        attribute: The attribute, or ``"all pairs"``.
        pairs: Comparable pairs.
        changed: Pairs whose two predictions differ.
        low: Wilson 95 % lower bound of ``changed / pairs``.
        high: Upper bound.
        missing: Pairs that could not be compared.
    """

    attribute: str
    pairs: int
    changed: int
    low: float
    high: float
    missing: int

    @property
    def rate(self) -> float | None:
        return self.changed / self.pairs if self.pairs else None


def change_rates(outcomes: Sequence[PairOutcome]) -> list[ChangeRate]:
    """Overall change rate first, then one per attribute (sorted), when pairs name attributes."""
    groups: dict[str, list[PairOutcome]] = defaultdict(list)
    for o in outcomes:
        if o.pair.attribute:
            groups[o.pair.attribute].append(o)

    def rate(name: str, group: Sequence[PairOutcome]) -> ChangeRate:
        flags = [o.changed for o in group if o.changed is not None]
        low, high = wilson_interval(sum(flags), len(flags))
        return ChangeRate(name, len(flags), sum(flags), low, high, len(group) - len(flags))

    return [rate("all pairs", outcomes)] + [rate(a, groups[a]) for a in sorted(groups)]
