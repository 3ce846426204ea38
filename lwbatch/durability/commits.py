"""A running job's journal calls, with its commits on a worker thread.

Committing a segment (its Parquet file, then the answer log's rotation) takes 10-25 ms
of CPU; on the event loop that would hold every request for as long. On a worker thread
it runs while answers keep arriving, so the journal calls that come meanwhile are held
and then made in order once it is done: a Journal's calls never overlap, and the rotated
log gets every answer of the rows left open. What is held is in memory only for the
commit's milliseconds: a SIGKILL then costs those answers' requests again, and a rerun's
ledger misses those grants (a few requests at the tier's rates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial

import pyarrow as pa

from lwbatch.keys import RowKey
from lwbatch.results import Score
from lwbatch.seams import Journal
from lwbatch.threads import on_thread

Answers = Callable[[str, list[tuple[RowKey, Score]]], None]


class Commits:
    """The calls a running job makes to its journal (answers, grants, commits); `then`
    sees each model's answers once the journal has them."""

    def __init__(self, journal: Journal, then: Answers | None = None) -> None:
        self.journal = journal
        self._then = then
        self._held: list[Callable[[], None]] | None = None

    def record_answers(self, model: str, answers: Iterable[tuple[RowKey, Score]]) -> None:
        self._make(partial(self._record, model, list(answers)))

    def record_grant(self, wall_time: float) -> None:
        self._make(partial(self.journal.record_grant, wall_time))

    def _make(self, call: Callable[[], None]) -> None:
        """`call` now, or once the commit under way is done."""
        if self._held is None:
            call()
        else:
            self._held.append(call)

    def _record(self, model: str, answers: list[tuple[RowKey, Score]]) -> None:
        self.journal.record_answers(model, answers)
        if self._then is not None:
            self._then(model, answers)

    async def commit_rows(
        self,
        rows: pa.Table,
        invalid_rows: Sequence[int],
        open_answers: Iterable[tuple[str, RowKey, Score]],
    ) -> None:
        """Commit on a worker thread; `open_answers` are read now, on the caller's."""
        opened = list(open_answers)
        self._held = []
        failure: BaseException | None = None
        try:
            await on_thread(partial(self.journal.commit_rows, rows, invalid_rows, opened))
        except BaseException as exc:
            failure = exc
        held, self._held = self._held, None
        # Every held call is made, even after one failed; the first failure is raised.
        for call in held:
            try:
                call()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure


__all__ = ["Commits"]
