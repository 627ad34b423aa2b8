"""A new selection method is one class: registered, the config accepts its name and runs it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audit.config import ConfigError, CriticismConfig, build_config
from audit.criticism.frame import ClassFrame, Column
from audit.criticism.selectors import (
    Selector,
    register_selector,
    runnable_methods,
    selector_names,
    unregister_selector,
)
from audit.criticism.tasks import select_class


@pytest.fixture
def by_id() -> Iterator[type[Selector]]:
    """A selector that exists only in this test: prototypes are the smallest image ids,
    criticisms the largest, each scored by its ``label_prob``."""

    @register_selector
    @dataclasses.dataclass
    class ByIdSelector(Selector):
        name = "by_id"
        requires = (Column("predictions", "label_prob"),)

        @classmethod
        def from_config(cls, cfg: CriticismConfig, label: int) -> Any:
            return cls(cfg.n_prototypes, cfg.n_criticisms)

        def fit(self, frame: ClassFrame) -> Any:
            frame = frame.sorted_by_id()
            ids, p = frame.image_ids.tolist(), frame["predictions.label_prob"].tolist()
            last = slice(len(ids) - 1, None, -1)
            return self._set_result(
                (ids[: self.n_prototypes], p[: self.n_prototypes]),
                (ids[last][: self.n_criticisms], p[last][: self.n_criticisms]),
            )

    try:
        yield ByIdSelector
    finally:
        unregister_selector("by_id")


def test_a_config_names_a_selector_registered_by_a_test(by_id: type[Selector]) -> None:
    assert "by_id" in selector_names()
    cfg = build_config({"criticism": {"methods": ["by_id", "random"]}})
    assert cfg.criticism.methods == ("by_id", "random")
    assert CriticismConfig().methods == (
        "adversarial",
        "by_id",
        "mmd_critic",
        "probability",
        "random",
    )
    needs = {"predictions": ["image_id", "label", "label_prob"]}
    assert runnable_methods(cfg.criticism.methods, needs) == (["by_id", "random"], {})


def test_the_selection_task_runs_a_selector_registered_by_a_test(
    by_id: type[Selector], tmp_path: Path
) -> None:
    ids = ["img3", "img1", "img4", "img0", "img2", "other"]
    pq.write_table(
        pa.table(
            {
                "image_id": ids,
                "label": [7, 7, 7, 7, 7, 8],
                "label_prob": [0.3, 0.1, 0.4, 0.0, 0.2, 0.9],
            }
        ),
        tmp_path / "predictions.parquet",
    )
    cfg = CriticismConfig(methods=("by_id",), n_prototypes=2, n_criticisms=1)
    tables = {"predictions": ["predictions.parquet"]}
    rows = select_class(str(tmp_path), tables, 7, cfg, cfg.methods)
    assert rows == [
        ("by_id", "prototype", 1, "img0", 0.0),
        ("by_id", "prototype", 2, "img1", 0.1),
        ("by_id", "criticism", 1, "img4", 0.4),
    ]


def test_an_unregistered_name_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"criticism": {"methods": ["by_id"]}})
    message = str(err.value)
    assert message.startswith("The 'criticism.methods' field must be a list of one of ")
    assert "'adversarial', 'mmd_critic', 'probability', 'random'." in message
    assert "by_id" not in message.split("Got")[0]
