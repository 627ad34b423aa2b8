"""imagenet-audit: audit ImageNet classifiers on Ray.

``audit.open_run(url)`` opens a run folder for a notebook (:mod:`audit.notebook`). It is
imported on first use, so ``import audit`` (which every Ray worker does) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit.notebook import AuditRun, open_run

__all__ = ["AuditRun", "open_run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from audit import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
