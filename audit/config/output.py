"""The ``output`` section: where the tables go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from audit.config.checks import BOOL, MAPPING, POSITIVE, Checked, FieldRules, Text


@dataclass(frozen=True)
class OutputConfig(Checked):
    """Where the tables go: ``<root>/<run_id>/<table>/*.parquet`` and ``manifest.json``.

    Attributes:
        root: Local path or fsspec URL.
        run_id: Name of the run folder; unset means ``<UTC time>-<model name>``.
        overwrite: Replace an existing run of the same id instead of refusing. Only a run (a
            folder holding this tool's ``manifest.json``) is ever replaced: any other non-empty
            folder there is refused either way, and so is a run folder that is, contains or
            lies inside the inputs. An unfinished run of the same id with the same
            configuration is resumed instead.
        shard_size: Images per shard. The input, sorted by image_id, is cut into shards of
            this many images; a shard's rows in every table are committed together, so a rerun
            skips committed shards and redoes at most the shards that were in flight.
        storage_options: Passed through to fsspec for writing outputs.
    """

    root: str = "./audit-output"
    run_id: str | None = None
    overwrite: bool = False
    shard_size: int = 1000
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    SECTION: ClassVar[str | None] = "output"
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "root": Text("a non-empty path or URL"),
        "run_id": (
            Text(
                "letters, digits, '.', '_' or '-' (not starting with '.', '_' or '-')",
                r"[A-Za-z0-9][A-Za-z0-9._-]*",
            ),
            None,
        ),
        "overwrite": BOOL,
        "shard_size": POSITIVE,
        "storage_options": MAPPING,
    }
