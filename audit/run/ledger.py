"""The shard ledger: which images of which shard have arrived, and which shards are committed.

The inputs are cut into shards (see :class:`audit.run.plan.RunPlan`). The ledger knows only
shard numbers and ``(image_id, uri)`` keys: it holds no rows and touches no storage. The driver
asks it whether a delivered image is new (:meth:`ShardLedger.take`: a retried task may deliver
an image twice), which shards are complete (:meth:`ShardLedger.ready`), records a commit once
the shard's files are written (:meth:`ShardLedger.commit`), and, when resuming, adopts the
shards an earlier attempt committed (:meth:`ShardLedger.adopt`).

Example::

    ledger = ShardLedger((2, 1))
    ledger.take(0, "a", "file:///a.png"), ledger.take(0, "a", "file:///a.png")  # (True, False)
    ledger.take(0, "b", "file:///b.png")
    ledger.ready([0, 0])  # [0]
    ledger.commit(0, persist=write_manifest)

**Test-only fault injection.** With the environment variable :data:`EXIT_AFTER_COMMITS_ENV`
set to ``N``, the process ends with ``os._exit`` (no cleanup, no ``failed`` manifest: as if
SIGKILLed) right after the ``N``-th shard commit of this attempt has been persisted. The tests of
resume use it to kill a driver at an exact point; it is not a feature, and a production run
never sets it. Unit tests inject ``on_commit`` instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence

log = logging.getLogger(__name__)

EXIT_AFTER_COMMITS_ENV = "AUDIT_TEST_EXIT_AFTER_COMMITS"
"""Test only: end the driver process right after this many shard commits (see the module)."""

EXIT_AFTER_COMMITS_CODE = 75
"""The exit status of a driver ended by :data:`EXIT_AFTER_COMMITS_ENV`."""

OnCommit = Callable[[int, int], None]
"""Called with (shard, commits so far in this attempt) once a commit is persisted."""


def exit_after_commits_from_env() -> OnCommit | None:
    """The test-only hook :data:`EXIT_AFTER_COMMITS_ENV` asks for, or None when it is unset.

    Raises:
        ValueError: the variable is set to something other than a positive integer.
    """
    raw = os.environ.get(EXIT_AFTER_COMMITS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"The {EXIT_AFTER_COMMITS_ENV} environment variable must be a positive integer. "
            f"Got {raw!r} instead."
        )
    limit = int(raw)

    def exit_after(shard: int, commits: int) -> None:
        if commits >= limit:
            log.warning(
                "%s=%d: ending the driver after shard %d", EXIT_AFTER_COMMITS_ENV, limit, shard
            )
            logging.shutdown()
            os._exit(EXIT_AFTER_COMMITS_CODE)

    return exit_after


class ShardLedger:
    """Arrivals and commits of the shards of one run.

    Args:
        sizes: Images per shard, in shard order.
        on_commit: Called with (shard, commits in this attempt) after each persisted commit;
            None reads the test-only :data:`EXIT_AFTER_COMMITS_ENV`.

    Attributes:
        committed: Shards committed, by this attempt or adopted from an earlier one.
        done: Images that arrived in this attempt or belong to a committed shard.
        done_at_start: ``done`` after :meth:`adopt` (0 for a new run).
        commits: Shards this attempt committed.
    """

    def __init__(self, sizes: Sequence[int], on_commit: OnCommit | None = None):
        self.sizes = tuple(int(n) for n in sizes)
        self.total = sum(self.sizes)
        self._seen: dict[int, set[tuple[str, str]]] = {k: set() for k in range(len(self.sizes))}
        self.committed: set[int] = set()
        self.done = 0
        self.done_at_start = 0
        self.commits = 0
        self._on_commit = on_commit if on_commit is not None else exit_after_commits_from_env()

    @property
    def shards_total(self) -> int:
        return len(self.sizes)

    @property
    def pending(self) -> list[int]:
        """Shards not committed yet, in order."""
        return sorted(self._seen)

    def is_committed(self, shard: int) -> bool:
        return shard in self.committed

    def take(self, shard: int, image_id: str, uri: str) -> bool:
        """Whether this input is new; counts it as arrived if so.

        An input of a committed (or unknown) shard, or one already taken, is a duplicate (a
        retried task may deliver an image twice): it is logged and refused.
        """
        seen = self._seen.get(shard)
        if seen is None or (image_id, uri) in seen:
            log.warning("dropped a duplicate result for %s (shard %d)", uri, shard)
            return False
        seen.add((image_id, uri))
        self.done += 1
        return True

    def ready(self, touched: Iterable[int]) -> list[int]:
        """Those of the ``touched`` shards, in order and once each, whose every image arrived
        and that are not committed yet."""
        out = []
        for shard in sorted({int(k) for k in touched}):
            seen = self._seen.get(shard)
            if seen is not None and len(seen) >= self.sizes[shard]:
                out.append(shard)
        return out

    def commit(self, shard: int, persist: Callable[[], None] | None = None) -> None:
        """Record ``shard`` as committed, then ``persist`` (write the manifest that lists it),
        then call the ``on_commit`` hook.

        Raises:
            ValueError: the shard is not complete, or not pending.
        """
        seen = self._seen.get(shard)
        if seen is None or len(seen) < self.sizes[shard]:
            raise ValueError(f"shard {shard} is not a complete pending shard")
        del self._seen[shard]
        self.committed.add(shard)
        if persist is not None:
            persist()
        self.commits += 1
        if self._on_commit is not None:
            self._on_commit(shard, self.commits)

    def adopt(self, committed: Iterable[int]) -> None:
        """Take over the shards an earlier attempt committed (resume): their images count as
        done, and any later delivery of one of them is a duplicate.

        Raises:
            ValueError: a shard number that this run does not have, or one already taken from.
        """
        shards = sorted({int(k) for k in committed})
        for k in shards:
            if self._seen.get(k) != set():
                raise ValueError(f"cannot adopt shard {k}: not an untouched shard of this run")
        for k in shards:
            del self._seen[k]
            self.done += self.sizes[k]
        self.committed |= set(shards)
        self.done_at_start = self.done

    def missing(self) -> tuple[int, int]:
        """``(shards, images)`` not complete yet."""
        images = sum(self.sizes[k] - len(seen) for k, seen in self._seen.items())
        return len(self._seen), images
