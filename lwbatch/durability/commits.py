"""A running job's journal calls, with its commits on a worker thread.

Committing a segment (its Parquet file, then the answer log's rotation) takes 10-25 ms
of CPU; on the event loop that would hold every request for as long. On a worker thread
it runs while answers keep arriving, so the journal calls that come meanwhile are held
and then made in order once it is done: a Journal's calls never overlap, and the rotated
log gets every answer of the rows left open. An answer held so is on disk a commit
later: a SIGKILL within those milliseconds costs its request again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial

import pyarrow as pa

from lwbatch.keys import RowKey
from lwbatch.results import Score
from lwbatch.seams import Journal
from lwbatch.threads import on_thread


class Commits:
    """The calls a running job makes to its journal (answers, grants, commits)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._held: list[Callable[[], None]] | None = None

    def record_answers(self, model: str, answers: Iterable[tuple[RowKey, Score]]) -> None:
        if self._held is None:
            self.journal.record_answers(model, answers)
        else:
            self._held.append(partial(self.journal.record_answers, model, list(answers)))

    def record_grant(self, wall_time: float) -> None:
        if self._held is None:
            self.journal.record_grant(wall_time)
        else:
            self._held.append(partial(self.journal.record_grant, wall_time))

    async def commit_rows(
        self,
        rows: pa.Table,
        invalid_rows: Sequence[int],
        open_answers: Iterable[tuple[str, RowKey, Score]],
    ) -> None:
        """Commit on a worker thread; `open_answers` are read now, on the caller's."""
        opened = list(open_answers)
        self._held = []
        try:
            await on_thread(partial(self.journal.commit_rows, rows, invalid_rows, opened))
        finally:
            held, self._held = self._held, None
            for call in held:
                call()


__all__ = ["Commits"]
