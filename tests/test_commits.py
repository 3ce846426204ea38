"""A job's journal calls while a segment commits on a worker thread: held, then made in
order; none lost when the commit or one of them fails."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pytest

from lwbatch.durability.commits import Commits
from lwbatch.keys import RowKey
from lwbatch.results import Score

ROWS = pa.table({"rev_id": pa.array([1], pa.int64())})
SCORE = Score(True, {"true": 0.9}, "1")


class Recording:
    """The Journal calls Commits makes, in order; commit_rows runs `during` first."""

    def __init__(self, commits: list[Commits], *, fail: str | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.threads: list[str] = []
        self._commits = commits
        self._fail = fail

    def record_answers(self, model: str, answers: Iterable[tuple[RowKey, Score]]) -> None:
        self.calls.append(("answers", model, [key.rev_id for key, _ in answers]))
        if self._fail == f"answers {model}":
            raise OSError("disk full")

    def record_grant(self, wall_time: float) -> None:
        self.calls.append(("grant", wall_time))

    def commit_rows(
        self,
        rows: pa.Table,
        invalid_rows: Sequence[int],
        open_answers: Iterable[tuple[str, RowKey, Score]],
    ) -> None:
        self.threads.append(threading.current_thread().name)
        self.calls.append(("commit", rows.num_rows, [k.rev_id for _, k, _ in open_answers]))
        # Calls that come while the commit runs (on the event loop, in a job).
        self._commits[0].record_answers("m", [(RowKey("", 7), SCORE)])
        self._commits[0].record_grant(2.0)
        if self._fail == "commit":
            raise OSError("segment not written")


def make(*, fail: str | None = None) -> tuple[Commits, Recording, list[tuple[str, list[int]]]]:
    holder: list[Commits] = []
    journal = Recording(holder, fail=fail)
    seen: list[tuple[str, list[int]]] = []
    commits = Commits(
        journal,  # type: ignore[arg-type]
        then=lambda model, answers: seen.append((model, [k.rev_id for k, _ in answers])),
    )
    holder.append(commits)
    return commits, journal, seen


async def test_calls_during_a_commit_wait_for_it_and_keep_their_order() -> None:
    commits, journal, seen = make()
    commits.record_answers("m", [(RowKey("", 5), SCORE)])
    await commits.commit_rows(ROWS, [], [("m", RowKey("", 6), SCORE)])
    commits.record_grant(3.0)
    assert journal.calls == [
        ("answers", "m", [5]),
        ("commit", 1, [6]),
        ("answers", "m", [7]),
        ("grant", 2.0),
        ("grant", 3.0),
    ]
    assert journal.threads != [threading.current_thread().name]
    # The caller's hook sees answers only once the journal has them.
    assert seen == [("m", [5]), ("m", [7])]


async def test_a_failed_commit_still_makes_the_held_calls_and_raises() -> None:
    commits, journal, _ = make(fail="commit")
    with pytest.raises(OSError, match="segment not written"):
        await commits.commit_rows(ROWS, [], [])
    assert journal.calls[1:] == [("answers", "m", [7]), ("grant", 2.0)]
    commits.record_grant(4.0)  # not held any more
    assert journal.calls[-1] == ("grant", 4.0)


async def test_a_held_call_that_fails_does_not_drop_the_others() -> None:
    commits, journal, _ = make(fail="answers m")
    with pytest.raises(OSError, match="disk full"):
        await commits.commit_rows(ROWS, [], [])
    assert journal.calls[1:] == [("answers", "m", [7]), ("grant", 2.0)]
