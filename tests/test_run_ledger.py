"""The shard ledger on hand-made arrivals: no Ray, no storage."""

from __future__ import annotations

import pytest

from audit.run import ledger as ledger_module
from audit.run.ledger import EXIT_AFTER_COMMITS_ENV, ShardLedger, exit_after_commits_from_env


def take_all(ledger: ShardLedger, shard: int, ids: list[str]) -> list[bool]:
    return [ledger.take(shard, i, f"file:///{i}.png") for i in ids]


def test_a_duplicate_is_refused_and_counted_once() -> None:
    ledger = ShardLedger((2, 2))
    assert take_all(ledger, 0, ["a", "a", "b"]) == [True, False, True]
    assert ledger.done == 2
    # the same image id under another URI is another input
    assert ledger.take(1, "c", "file:///c.png") and ledger.take(1, "c", "s3://b/c.png")
    assert ledger.done == 4


def test_out_of_order_shards_are_ready_when_complete_in_shard_order() -> None:
    ledger = ShardLedger((2, 2, 1))
    take_all(ledger, 2, ["e"])
    take_all(ledger, 1, ["c", "d"])
    take_all(ledger, 0, ["a"])
    assert ledger.ready([2, 1, 0, 1, 2]) == [1, 2]
    ledger.commit(2)
    ledger.commit(1)
    assert ledger.ready([0, 1, 2]) == []  # shard 0 lacks an image; 1 and 2 are committed
    assert ledger.pending == [0] and ledger.missing() == (1, 1)
    take_all(ledger, 0, ["b"])
    assert ledger.ready([0]) == [0]
    ledger.commit(0)
    assert ledger.committed == {0, 1, 2} and ledger.missing() == (0, 0)


def test_an_image_of_a_committed_or_unknown_shard_is_a_duplicate() -> None:
    ledger = ShardLedger((1,))
    take_all(ledger, 0, ["a"])
    ledger.commit(0)
    assert take_all(ledger, 0, ["b"]) == [False]
    assert take_all(ledger, 7, ["z"]) == [False]
    assert ledger.done == 1


def test_an_incomplete_or_committed_shard_cannot_be_committed() -> None:
    ledger = ShardLedger((2,))
    take_all(ledger, 0, ["a"])
    with pytest.raises(ValueError, match="not a complete pending shard"):
        ledger.commit(0)
    take_all(ledger, 0, ["b"])
    ledger.commit(0)
    with pytest.raises(ValueError, match="not a complete pending shard"):
        ledger.commit(0)


def test_a_shard_of_listing_errors_only_commits_without_any_batch() -> None:
    # listing errors are taken like any other arrival: a shard made of them alone is complete
    ledger = ShardLedger((2, 1))
    assert take_all(ledger, 0, ["bad0", "bad1"]) == [True, True]
    assert ledger.ready([0, 0]) == [0]


def test_adopt_counts_the_shards_as_done_and_refuses_their_images() -> None:
    ledger = ShardLedger((3, 3, 2))
    ledger.adopt([2, 0])
    assert ledger.committed == {0, 2}
    assert ledger.done == ledger.done_at_start == 5
    assert ledger.pending == [1]
    assert take_all(ledger, 0, ["a"]) == [False]  # a late delivery of an adopted shard
    assert ledger.ready([0, 2]) == []
    take_all(ledger, 1, ["d", "e", "f"])
    ledger.commit(1)
    assert ledger.done == ledger.total == 8 and ledger.commits == 1


@pytest.mark.parametrize("shards", [[3], [-1]])
def test_adopt_refuses_a_shard_the_run_does_not_have(shards: list[int]) -> None:
    ledger = ShardLedger((1, 1))
    with pytest.raises(ValueError, match="cannot adopt shard"):
        ledger.adopt(shards)
    assert ledger.committed == set() and ledger.done == 0


def test_adopt_refuses_a_shard_already_taken_from() -> None:
    ledger = ShardLedger((2,))
    take_all(ledger, 0, ["a"])
    with pytest.raises(ValueError, match="cannot adopt shard 0"):
        ledger.adopt([0])


def test_on_commit_runs_after_persist_with_the_commit_count() -> None:
    events: list[object] = []
    ledger = ShardLedger((1, 1), on_commit=lambda shard, n: events.append((shard, n)))
    ledger.adopt([0])
    take_all(ledger, 1, ["b"])
    ledger.commit(1, persist=lambda: events.append(sorted(ledger.committed)))
    assert events == [[0, 1], (1, 1)]  # persisted with the shard listed, then the hook


class Exited(Exception):
    pass


def test_exit_after_commits_ends_the_process_right_after_the_nth_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fake_exit(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(ledger_module.os, "_exit", fake_exit)
    monkeypatch.setenv(EXIT_AFTER_COMMITS_ENV, "2")
    persisted: list[int] = []
    ledger = ShardLedger((1, 1, 1))
    for shard in (2, 0):
        take_all(ledger, shard, [f"i{shard}"])
    ledger.commit(2, persist=lambda: persisted.append(2))
    with pytest.raises(Exited):
        ledger.commit(0, persist=lambda: persisted.append(0))
    assert persisted == [2, 0]  # the second commit was persisted before the exit


def test_exit_after_commits_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXIT_AFTER_COMMITS_ENV, raising=False)
    assert exit_after_commits_from_env() is None


@pytest.mark.parametrize("raw", ["0", "-1", "two"])
def test_exit_after_commits_rejects_a_bad_value(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXIT_AFTER_COMMITS_ENV, raw)
    with pytest.raises(ValueError, match=f"must be a positive integer. Got {raw!r}"):
        ShardLedger((1,))
