"""The four seams of lwbatch, as protocols: where a new input, output, budget policy or
durable store attaches without touching the engine.

    Source ──> Scorer (engine: dedup, batching, budget, HTTP, merging) ──> Sink
                  │          └── Limiter (the budget)
                  └── Journal (answers + budget ledger + finished rows)

Default implementations: :class:`~lwbatch.io.sources.ParquetSource` and
:class:`~lwbatch.io.sources.CsvSource`; :class:`~lwbatch.io.parquet_sink.ParquetSink`;
:class:`~lwbatch.pacing.limiter.BudgetLimiter`; :class:`~lwbatch.durability.journal.FileJournal`.

Threads: a run calls a Sink's and a Journal's methods one at a time, never two at once,
but not all from one thread: opening, reading back, committing, folding and writing
rows happen on a worker thread (file work off the event loop), recording answers and
grants on the event loop's. An implementation bound to one thread (a sqlite3 connection made with
its default check_same_thread) must allow the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from lwbatch.config import Budget
from lwbatch.engine.resume import ResumeState
from lwbatch.keys import KeyLayout, RowKey
from lwbatch.results import InvalidRow, Revision, Score

Item = Revision | InvalidRow


@runtime_checkable
class Source(Protocol):
    """Input rows, in batches, plus what identifies the input for a resume.

    Opening (and validating) happens before :meth:`batches` is called, so a bad input
    fails before any request is sent. Rows without a usable key come out as
    :class:`InvalidRow` (never dropped); row numbers count from 1 over the whole input.
    """

    @property
    def name(self) -> str:
        """How messages name the input (a path, ``-``, a table name)."""
        ...

    @property
    def total_rows(self) -> int | None:
        """Rows in the input, when known up front (for progress bars)."""
        ...

    @property
    def key_layout(self) -> KeyLayout:
        """The key columns: the input's wiki column, if it names one per row."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """A JSON-able value that changes when the input does (compared on resume)."""
        ...

    def batches(self) -> Iterator[list[Item]]:
        """The rows in input order. May block (it runs in a worker thread)."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Merged rows out (Arrow tables in the layout of :mod:`lwbatch.io.rows`).

    Nothing appears at the destination before :meth:`commit`, and :meth:`abort`
    leaves the destination exactly as it was. A sink knows nothing of journals.
    """

    @property
    def name(self) -> str: ...

    @property
    def rows_written(self) -> int: ...

    def open(self, schema: pa.Schema) -> None:
        """Check the destination can be written, before any request is sent."""
        ...

    def write(self, rows: pa.Table) -> None: ...

    def commit(self, metadata: Mapping[str, bytes]) -> None:
        """Make everything written durable and visible at once (atomically).

        `metadata` describes the run; formats that can store it do, so that rerunning
        a finished run can adopt its output (see :class:`ReadableSink`).
        """
        ...

    def abort(self) -> None: ...


@runtime_checkable
class ReadableSink(Sink, Protocol):
    """A sink whose committed output can be read back: rerunning a finished run then
    asks again only what failed transiently, instead of refusing or starting over."""

    def read_back(self) -> tuple[dict[str, bytes], Iterator[pa.Table]] | None:
        """The metadata given to :meth:`commit` and the rows, or None if nothing is there."""
        ...


@runtime_checkable
class Limiter(Protocol):
    """The request budget. Every attempt, retries included, acquires first."""

    @property
    def budget(self) -> Budget: ...

    async def acquire(self) -> None:
        """Wait until one request may leave, and count it as sent."""
        ...

    def pause(self, seconds: float) -> None:
        """Hold every request for `seconds` (a 429's Retry-After)."""
        ...

    def watch(self, callback: Callable[[float], None]) -> Callable[[], None]:
        """Call `callback(t)` with the clock time of every grant (the durable ledger)
        until the function returned is called."""
        ...

    def restore(self, grants: Sequence[float]) -> None:
        """Count requests sent earlier (clock times, oldest first), as after a restart."""
        ...


@runtime_checkable
class Journal(Protocol):
    """The durable record of a run: answers, budget ledger, finished rows. Format-neutral:
    it stores merged-row tables its own way and folds them into any :class:`Sink`."""

    @property
    def location(self) -> str:
        """Where the progress is kept (for messages)."""
        ...

    def open(
        self,
        *,
        restart: bool,
        retry_failed: bool,
        ledger_keep: int,
        previous: Callable[[], tuple[dict[str, bytes], Iterator[pa.Table]] | None] | None = None,
    ) -> ResumeState:
        """Start afresh (`restart`, or nothing kept) or return what an earlier run did;
        `previous()` reads a committed output back, adopted when nothing else is kept.
        Keeps the last `ledger_keep` grant times; with `retry_failed`, transient
        failures come back as not done."""
        ...

    def record_answers(self, model: str, answers: Iterable[tuple[RowKey, Score]]) -> None:
        """Make answers durable before the rows they belong to count as done."""
        ...

    def record_grant(self, wall_time: float) -> None: ...

    def commit_rows(
        self,
        rows: pa.Table,
        invalid_rows: Sequence[int],
        open_answers: Iterable[tuple[str, RowKey, Score]],
    ) -> None:
        """Keep finished rows durably; `open_answers` are those of rows not finished yet."""
        ...

    def fold_into(self, sink: Sink) -> int:
        """Write every finished row, in order, to `sink`; the number of rows."""
        ...

    def metadata(self) -> dict[str, bytes]:
        """What the committed output should carry so that a rerun can adopt it."""
        ...

    def holds_work(self) -> bool:
        """Whether a rerun would resume anything (else a failed run may remove it)."""
        ...

    def suspend(self) -> None:
        """Make everything durable and release the output for the next run."""
        ...

    def remove(self) -> None:
        """The run is committed: the journal goes, atomically."""
        ...


@runtime_checkable
class ScoreCache(Protocol):
    """Final answers kept across runs, keyed by (model, model version, wiki, rev_id):
    an answer found here costs no request."""

    def get(self, model: str, wiki: str, rev_id: int) -> Score | None:
        """The answer `model`'s current version gave for the revision, if kept."""
        ...

    def put(self, model: str, answers: Sequence[tuple[str, int, Score]]) -> None:
        """Keep fresh answers (wiki, rev_id, score) of `model`; a version that differs
        from the one kept makes the older entries of `model` untrusted."""
        ...

    def close(self) -> None: ...
