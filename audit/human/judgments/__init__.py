"""Public human judgments: rectified accuracy of any predictions table, without a study.

Each source is one module here that registers a :class:`JudgmentSource` (:mod:`.registry`):
``real`` (ReaL), ``cleanlab`` (cleanlab's MTurk-validated label errors), ``madrylab``
(MadryLab's per-worker selections). :mod:`.common` holds what they share (the table schema,
image ids, the accuracy rows). Every module of this package is imported here, so a new source
is one new file (docs/architecture.md, "Adding a judgment source"); :func:`public_tables` runs
the sources given, as ``audit-cli human public`` does. The user passes every file; nothing is
downloaded or bundled.
"""

from __future__ import annotations

import importlib
import pkgutil

from audit.human.judgments.cleanlab import CleanlabVote, cleanlab_table, read_cleanlab
from audit.human.judgments.common import (
    JUDGED_SCHEMA,
    PUBLIC_SCHEMA,
    PublicDataError,
    image_stem,
    val_image_id,
)
from audit.human.judgments.madrylab import madrylab_table, read_index_to_filepath, read_madrylab
from audit.human.judgments.real import read_real, real_table
from audit.human.judgments.registry import (
    Judged,
    JudgmentSource,
    ReadText,
    get_source,
    judge,
    public_tables,
    register_source,
    registered_sources,
    unregister_source,
)

__all__ = [
    "JUDGED_SCHEMA",
    "PUBLIC_SCHEMA",
    "CleanlabVote",
    "Judged",
    "JudgmentSource",
    "PublicDataError",
    "ReadText",
    "cleanlab_table",
    "get_source",
    "image_stem",
    "judge",
    "madrylab_table",
    "public_tables",
    "read_cleanlab",
    "read_index_to_filepath",
    "read_madrylab",
    "read_real",
    "real_table",
    "register_source",
    "registered_sources",
    "unregister_source",
    "val_image_id",
]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
