"""What each Spark task runs: the same Scorer as the command, over one partition, with
its share of the job's budget, committing its answers to the job's progress area (when
it has one) as they come."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlparse

import anyio
import anyio.to_thread
import pyarrow as pa
from pyspark import TaskContext

from lwbatch.config import Budget
from lwbatch.durability.answer_log import decode_answer
from lwbatch.durability.progress import PartitionProgress, ProgressArea
from lwbatch.engine.resume import WIKI_WIDE, ResumeState
from lwbatch.engine.scorer import Scorer
from lwbatch.errors import primary_error
from lwbatch.io.columns import Columns
from lwbatch.io.row_reader import RowReader
from lwbatch.io.rows import RowBuffer
from lwbatch.pacing.limiter import BudgetLimiter
from lwbatch.results import InvalidRow, Score
from lwbatch.settings import Connection, Pacing
from lwbatch.spark.counters import Counters
from lwbatch.wikis import wikipedia

log = logging.getLogger("lwbatch")
# Output batches a task keeps ready ahead of Spark's reading them.
_AHEAD = 4
_ROWS_PER_BATCH = 8192
# Seconds a task that ends waits for its answers to be committed.
_LAST_COMMIT = 60.0
# The input column that carries a row's answers from the score cache (journal lines).
CACHED_COLUMN = "__lwbatch_cached"
# The input column of each row's partition (of the job's repartition by key).
PARTITION_COLUMN = "__lwbatch_partition"
# The input columns of each row's file, and its row there (from 0): Spark's _metadata.
ORIGIN_COLUMNS = ("__lwbatch_file", "__lwbatch_row")


@dataclass(frozen=True, slots=True)
class PartitionTask:
    """What each Spark task runs (`mapInArrow`): picklable settings, and the scoring of
    one partition with its share of the budget."""

    models: tuple[str, ...]
    budget: Budget  # the job's; each partition takes its share
    slots: int
    connection: Connection
    pacing: Pacing
    columns: Columns
    lang: str
    counters: Counters | None
    # Where answers are committed as they come (None: nowhere, a retry pays again).
    progress: ProgressArea | None = None
    run: str = ""  # this job's id, in the names of its attempts' files
    commit_every: float = 5.0
    # The driver's pre-flight answers (journal lines), and when it sent them (wall clock).
    known: tuple[bytes, ...] = ()
    sent_before: tuple[float, ...] = ()
    # The input carries the score cache's answers for its row (CACHED_COLUMN), and the
    # fresh answers are kept in the progress area for the cache.
    cached: bool = False
    # The input carries each row's file and row number (ORIGIN_COLUMNS).
    located: bool = False

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        context = TaskContext.get()
        task = _TaskInfo(
            self.run,
            context.stageId() if context is not None else 0,
            context.attemptNumber() if context is not None else 0,
            # Unique within the Spark application: names this attempt's files.
            context.taskAttemptId() if context is not None else 0,
        )
        # The event loop runs in a thread of its own: Spark pulls output from this
        # generator while the loop pulls input from Spark's iterator, both bounded.
        ready: queue.Queue[pa.RecordBatch | BaseException | None] = queue.Queue(_AHEAD)
        # Set when Spark stops reading (limit(), a failed task): scoring stops too.
        closed = threading.Event()
        worker = threading.Thread(
            target=self._run,
            args=(task, batches, ready, closed),
            name=f"lwbatch-spark-task-{task.task_attempt}",
            daemon=True,
        )
        worker.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            closed.set()
            # Its last commit lands before Spark hears of the end (a retry reads it).
            worker.join(_LAST_COMMIT)
            if worker.is_alive():
                log.warning("lwbatch: a task's last commit took over %d s", _LAST_COMMIT)

    def _run(
        self,
        task: _TaskInfo,
        batches: Iterator[pa.RecordBatch],
        ready: queue.Queue[Any],
        closed: threading.Event,
    ) -> None:
        try:
            first = next(batches, None)
            if first is None:
                _put(ready, None, closed)  # an empty partition: nothing to ask
                return
            # The partition of the job's repartition these rows belong to, from the rows:
            # a coalesce() after score() runs several in one Spark task.
            names = first.schema.names
            partition = (
                int(first.column(PARTITION_COLUMN)[0].as_py()) if PARTITION_COLUMN in names else 0
            )
            attempt = _Attempt(partition, task.id(partition))
            if task.attempt_number > 0 and self.progress is None:
                log.warning(
                    "lwbatch: partition %d, attempt %d: an earlier attempt failed, and this "
                    "one scores the whole partition again (its requests are paid again)",
                    partition,
                    task.attempt_number + 1,
                )
            share = (
                self.budget
                if self.budget.is_unlimited
                else self.budget.share(self.slots, partition)
            )
            rows = itertools.chain([first], batches)
            anyio.run(self._score, attempt, share, rows, ready, closed)
        except _Abandoned:
            return
        except BaseException as exc:  # handed to the task's own thread, which raises it
            error = primary_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
            if isinstance(error, _Abandoned):
                return
            _put(ready, error, closed)
            return
        _put(ready, None, closed)

    async def _score(
        self,
        attempt: _Attempt,
        share: Budget,
        batches: Iterator[pa.RecordBatch],
        ready: queue.Queue[Any],
        closed: threading.Event,
    ) -> None:
        columns = self.columns
        reader = RowReader(columns, wikipedia(self.lang))
        keeper, resume, resumed = await self._resume(attempt)

        kept = _Kept(keeper) if self.cached else None

        async def items() -> Any:
            while (batch := await anyio.to_thread.run_sync(next, batches, None)) is not None:
                if kept is not None:
                    kept.fill(batch.column(CACHED_COLUMN))
                wikis_ = batch.column(columns.wiki) if columns.wiki is not None else None
                pages = [batch.column(name) for name in columns.pages]
                # Row numbers within a partition mean nothing to the user: where Spark
                # knows them, an invalid row names its file and row there instead.
                converted = reader.convert(batch.column(columns.id_column), wikis_, pages, None)
                yield _located(converted, batch) if self.located else converted

        scorer = Scorer(
            list(self.models),
            rate=share,
            lang=self.lang,
            connection=self.connection,
            pacing=self.pacing,
            cache=kept,
        )
        self._charge(scorer, attempt.partition)
        buffer = RowBuffer(scorer.specs, columns.layout)

        async def hand_over() -> None:
            table, _ = buffer.take()
            for out in table.to_batches():
                if not await anyio.to_thread.run_sync(_put, ready, out, closed):
                    raise _Abandoned

        # Small batches first, so that a `limit()` that stops reading soon stops the
        # requests soon; then larger ones, which cost less per row.
        threshold = 16

        async def stop_when_closed(scope: anyio.CancelScope) -> None:
            # Between two hand-overs the scorer may send thousands of requests: once
            # Spark stops reading, stop them at once, not at the next hand-over.
            await anyio.to_thread.run_sync(closed.wait, abandon_on_cancel=True)
            scope.cancel()

        async with anyio.create_task_group() as watch:
            watch.start_soon(stop_when_closed, watch.cancel_scope)
            async with scorer:
                rows = scorer.score(
                    items(),
                    resume=resume if resume.resumed else None,
                    on_answer=keeper.add if keeper is not None else None,
                )
                committer = _Committer(keeper, rows.stats)
                if keeper is not None:
                    watch.start_soon(committer.every, self.commit_every)
                try:
                    async for row in rows:
                        buffer.add(row)
                        if len(buffer) >= threshold:
                            await hand_over()
                            threshold = min(2 * threshold, _ROWS_PER_BATCH)
                finally:
                    # What came in is kept, also when this attempt fails or is stopped.
                    with anyio.CancelScope(shield=True):
                        await committer.commit()
            watch.cancel_scope.cancel()
        if closed.is_set():
            raise _Abandoned
        if len(buffer):
            await hand_over()
        if self.counters is not None:
            self.counters.add(rows.stats, answers_resumed=resumed)

    async def _resume(self, attempt: _Attempt) -> tuple[PartitionProgress | None, ResumeState, int]:
        """The answers this partition has already (the progress area's, the driver's
        pre-flight ones), and where to keep the fresh ones."""
        keeper: PartitionProgress | None = None
        resume, resumed = ResumeState(), 0
        if self.progress is not None:
            keeper = self.progress.partition(attempt.partition, attempt.id)
            loaded = await anyio.to_thread.run_sync(keeper.load, self.models)
            resume, resumed = loaded.state, loaded.answers
            if self.counters is not None:
                failed = sum(n for a, n in loaded.requests.items() if attempt.follows(a))
                self.counters.add_failed_attempts(failed)
        for line in self.known:
            answer = decode_answer(line)
            if answer is not None:
                model, key, score = answer
                resume.partial.setdefault(key, {}).setdefault(model, score)
                if score.error in WIKI_WIDE:  # the rest of that wiki is not asked
                    resume.refused.add((model, key.wiki, score.error))
        return keeper, resume, resumed

    def _charge(self, scorer: Scorer, partition: int) -> None:
        """Count this partition's part of the driver's pre-flight requests in its share:
        they were sent just before, inside the job's budget."""
        mine = self.sent_before[partition :: self.slots]
        if (
            mine
            and isinstance(scorer.limiter, BudgetLimiter)
            and self.pacing.clock is time.monotonic
        ):
            offset = time.monotonic() - time.time()
            scorer.limiter.restore([sent + offset for sent in mine])


@dataclass(frozen=True, slots=True)
class _TaskInfo:
    run: str
    stage: int
    attempt_number: int
    task_attempt: int

    def id(self, partition: int) -> str:
        """run.stage.attempt.task-attempt.partition: unique to this call."""
        return f"{self.run}.{self.stage}.{self.attempt_number}.{self.task_attempt}.{partition}"


@dataclass(frozen=True, slots=True)
class _Attempt:
    partition: int
    id: str  # _TaskInfo.id

    def follows(self, other: str) -> bool:
        """Whether attempt `other` is an earlier, failed attempt of this task (same run
        and stage, a lower attempt number)."""
        mine, theirs = self.id.split("."), other.split(".")
        if len(theirs) != len(mine):
            return False
        return theirs[:2] == mine[:2] and int(theirs[2]) < int(mine[2])


def _located(items: list[Any], batch: pa.RecordBatch) -> list[Any]:
    """`items`, each invalid row's reason preceded by its file and row number."""
    if not any(isinstance(item, InvalidRow) for item in items):
        return items
    files = batch.column(ORIGIN_COLUMNS[0]).to_pylist()
    rows = batch.column(ORIGIN_COLUMNS[1]).to_pylist()
    out = []
    for item, file, row in zip(items, files, rows, strict=True):
        if isinstance(item, InvalidRow) and file is not None and row is not None:
            where = unquote(urlparse(file).path) if file.startswith("file:") else file
            item = replace(item, reason=f"{where}, row {row + 1}: {item.reason}")
        out.append(item)
    return out


class _Kept:
    """The score cache's answers for the rows of this task (they come with the rows):
    each costs no request. Fresh answers go to the progress area, and from there into
    the cache once the job is done."""

    def __init__(self, keeper: PartitionProgress | None) -> None:
        self._keeper = keeper
        self._answers: dict[tuple[str, str, int], Score] = {}

    def fill(self, column: pa.Array) -> None:
        for lines in column.to_pylist():
            for line in lines or ():
                answer = decode_answer(line)
                if answer is not None:
                    model, key, score = answer
                    self._answers[(model, key.wiki, key.rev_id)] = score

    def get(self, model: str, wiki: str, rev_id: int) -> Score | None:
        # Each key is routed once: its entry is not needed again.
        return self._answers.pop((model, wiki, rev_id), None)

    def put(self, model: str, answers: Sequence[tuple[str, int, Score]]) -> None:
        if self._keeper is not None:
            self._keeper.add_for_cache(model, answers)

    def close(self) -> None:
        self._answers.clear()


class _Committer:
    """Commits a task's fresh answers to its partition's progress, one at a time."""

    def __init__(self, keeper: PartitionProgress | None, stats: Any) -> None:
        self._keeper = keeper
        self._stats = stats
        self._lock = anyio.Lock()
        self._failed = False

    async def every(self, seconds: float) -> None:
        # On a fixed schedule: a commit slowed by a busy machine does not push every later
        # one back (the answers a rerun pays for again stay within `seconds` of them).
        due = anyio.current_time() + seconds
        while True:
            await anyio.sleep_until(due)
            await self.commit()
            due = max(due + seconds, anyio.current_time())

    async def commit(self) -> None:
        keeper = self._keeper
        if keeper is None:
            return
        async with self._lock:
            taken = keeper.take()
            try:
                await anyio.to_thread.run_sync(keeper.commit, taken, self._stats.requests_sent)
            except (OSError, pa.ArrowException) as exc:
                # A file system's hiccup must not end a task of hours: the answers go
                # with the next commit (a rerun pays for them if none succeeds).
                keeper.put_back(taken)
                if not self._failed:
                    self._failed = True
                    log.warning("lwbatch: a commit to the progress area failed: %s", exc)


class _Abandoned(Exception):
    """Spark stopped reading this task's output: no more requests for it."""


def _put(ready: queue.Queue[Any], item: Any, closed: threading.Event) -> bool:
    """Hand `item` to the task's thread; False once that thread has stopped reading."""
    while not closed.is_set():
        try:
            ready.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


__all__ = ["PartitionTask"]
