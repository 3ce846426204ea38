"""One `score()` call: revisions in, merged rows out, through the Scorer's client.

    producer ──jobs (bounded)──> workers ──> Dispatcher (limiter, HTTP, retries)
       │                              │
       └── admission (max open rows) <┴── a row leaves once every model is terminal

The producer sorts each item through the :class:`~lwbatch.engine.router.Router`, admits a
new revision only while fewer than `max_open` rows are open, and fans it out to every
model in turn, so models interleave per revision and complete rows accumulate even
under a tight budget. Memory is bounded by `max_open`, the job queue and the compressed
bitmap of seen keys, not by the input size.

Each call has its own open rows, streams and accounting (:class:`RunStats`); calls in
a row or at the same time share the Scorer's client, limiter and dispatcher, and so the
budget.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from lwbatch.engine.batching import Batcher
from lwbatch.engine.dispatch import Dispatcher, Stopped
from lwbatch.engine.resume import ResumeState
from lwbatch.engine.router import Answered, Kind, Router
from lwbatch.engine.stats import RunStats
from lwbatch.errors import IncompleteRunError, NoModelDeployedError
from lwbatch.keys import RowKey
from lwbatch.pacing.concurrency import Concurrency
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.results import ErrorType, InvalidRow, Revision, Score, ScoredRow
from lwbatch.seams import Item, ScoreCache

# Jobs made ready ahead of the workers; a job holds at most one batch of rows.
_QUEUE = 64
# Rows sorted without a request (done, duplicate) between two turns of the loop.
_SKIPPED_PER_TURN = 512
OnAnswer = Callable[[str, list[tuple[RowKey, Score]]], None]


class _OpenRow:
    __slots__ = ("revision", "key", "scores", "remaining")

    def __init__(self, revision: Revision, key: RowKey, models: int) -> None:
        self.revision = revision
        self.key = key
        self.scores: dict[str, Score] = {}
        self.remaining = models


@dataclass(frozen=True, slots=True)
class _Job:
    column: str  # the model as named: a template's column takes each wiki's model
    spec: ModelSpec  # the model the request goes to
    rows: list[_OpenRow]


@dataclass(frozen=True, slots=True, kw_only=True)
class Engine:
    """What every call shares: the Scorer's dispatcher and settings."""

    specs: Sequence[ModelSpec]
    dispatcher: Dispatcher
    concurrency: Concurrency
    # Requests in flight across every call: the concurrency limit holds for them all.
    slots: anyio.CapacityLimiter
    router: Callable[[ResumeState | None], Router]
    cache: ScoreCache | None
    keep: Callable[[ModelSpec, list[tuple[str, int, Score]]], Awaitable[None]]
    linger: float
    max_open: int
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]


class Pipeline:
    """One call's rows: an async iterator of merged rows, with its own accounting."""

    def __init__(
        self, engine: Engine, *, resume: ResumeState | None, on_answer: OnAnswer | None
    ) -> None:
        self._engine = engine
        self._by_name = {s.name: s for s in engine.specs}
        self._resume = resume
        self._on_answer = on_answer
        self.stats = RunStats()
        self.rows_emitted = 0
        # Rows this call must emit (new distinct revisions and new invalid rows).
        self.rows_admitted = 0
        self.stopped = False
        self.started: float | None = None
        self.finished: float | None = None
        self._open: dict[RowKey, _OpenRow] = {}
        # Per column, the models its rows were sent to: when every one of them answered
        # 404 and nothing scored, the endpoint serves none of the models asked for.
        self._sent_to: dict[str, set[str]] = {s.name: set() for s in engine.specs}
        self._scope = anyio.CancelScope()
        self._starved = False
        self._workers = 0
        self._closing = False
        send, receive = anyio.create_memory_object_stream[ScoredRow](max_buffer_size=1024)
        self._out = send
        self._receive = receive
        # Rows out of the pipeline that the consumer has not taken yet (the stream's
        # buffer, and a send waiting for room): their answers are open until taken.
        self._handed: deque[ScoredRow] = deque()

    # -- the consumer's side ---------------------------------------------------------
    def __aiter__(self) -> Pipeline:
        return self

    async def __anext__(self) -> ScoredRow:
        try:
            row = self._receive.receive_nowait()
        except anyio.WouldBlock:
            pass
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._receive.close()
            raise StopAsyncIteration from None
        else:
            self._handed.popleft()
            return row
        try:
            row = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._receive.close()
            raise StopAsyncIteration from None
        self._handed.popleft()
        return row

    def close(self) -> None:
        """Stop this call: no more requests for it; rows not yet taken are dropped (a
        journal keeps their answers). Calling it after the last row is harmless."""
        self.cancel()
        self._receive.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def open_answers(self) -> list[tuple[str, RowKey, Score]]:
        """Answers already in for revisions whose row the consumer does not hold yet:
        rows not complete, and complete rows not yet taken."""
        answers = [(m, key, s) for key, row in self._open.items() for m, s in row.scores.items()]
        for done in self._handed:
            if done.key is not None and done.invalid is None:
                answers.extend((m, done.key, s) for m, s in done.scores.items())
        return answers

    @property
    def workers(self) -> int:
        return self._workers

    def halt(self) -> None:
        """Take no new revisions (the Scorer is stopping)."""
        self.stopped = True

    def cancel(self) -> None:
        """End the call now: rows already complete still come out."""
        self.stopped = True
        self._scope.cancel()
        if self.started is None:
            # Cancelled before it started: its run, which closes the rows' stream, never
            # will, and a consumer would wait for ever.
            self._out.close()

    # -- the producer's side ---------------------------------------------------------
    async def run(self, batches: AsyncIterable[Sequence[Item]]) -> None:
        engine = self._engine
        self.started = time.monotonic()
        self._admission = anyio.Semaphore(engine.max_open, fast_acquire=True)
        jobs, work = anyio.create_memory_object_stream[_Job](max_buffer_size=_QUEUE)
        batchers = {
            s.name: Batcher[_OpenRow](s.max_batch, engine.linger, engine.clock)
            for s in engine.specs
            if s.max_batch > 1
        }
        router = engine.router(self._resume)
        # stop() cancels this scope; closing `out` then ends the consumer's loop.
        async with self._out, work, jobs:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    self._workers_tg = tg
                    self._work = work
                    self._grow()
                    nap = _Nap()
                    async with anyio.create_task_group() as lingering:
                        if batchers:
                            lingering.start_soon(self._flush_lingering, batchers, jobs, nap)
                        try:
                            await self._produce(router, batches, batchers, jobs)
                        finally:
                            # Only the flusher's sleep is cancelled, never a hand-over:
                            # it may hold batches it took out of a batcher.
                            nap.wake_for_good()
                    async with jobs:
                        for name, batcher in batchers.items():
                            for batch in batcher.drain():
                                await _put(jobs, self._batch_job(name, batch))
                        # From here the pool neither grows nor shrinks; closing the
                        # stream ends each worker once the jobs are taken.
                        self._closing = True
        self.finished = time.monotonic()
        if not self.stopped:
            # A run too short to reach the limit of failed connections in a row must not
            # pass for complete either: every row would be transient_error.
            engine.dispatcher.raise_if_never_reached()
            self._check_accounting()

    def _check_accounting(self) -> None:
        check_every_row_out(self.rows_admitted, self.rows_emitted, len(self._open))

    def _batch_job(self, name: str, rows: list[_OpenRow]) -> _Job:
        # Batched models name no wiki (no template): the column's model takes the batch.
        return _Job(name, self._by_name[name], rows)

    async def _produce(
        self,
        router: Router,
        batches: AsyncIterable[Sequence[Item]],
        batchers: dict[str, Batcher[_OpenRow]],
        jobs: MemoryObjectSendStream[_Job],
    ) -> None:
        stats = self.stats
        pending = aiter(batches)
        while True:
            self._starved = True
            try:
                batch = await anext(pending)
            except StopAsyncIteration:
                break
            self._starved = False
            if self.stopped:
                return
            skipped = 0
            for item in batch:
                kind = router.sort(item, stats)
                if kind is Kind.DUPLICATE or kind is Kind.DONE or kind is Kind.INVALID_DONE:
                    # Rows that cost no request (a resume's first pieces are all done)
                    # yield now and then, or one piece holds the loop for 10+ ms.
                    skipped += 1
                    if skipped % _SKIPPED_PER_TURN == 0:
                        await anyio.lowlevel.checkpoint()
                elif kind is Kind.INVALID:
                    assert isinstance(item, InvalidRow)
                    self.rows_admitted += 1
                    await self._emit_invalid(item)
                elif kind is Kind.NEW:
                    assert isinstance(item, Revision)
                    if self.stopped:
                        return
                    await self._admit(router, item, batchers, jobs)

    async def _admit(
        self,
        router: Router,
        item: Revision,
        batchers: dict[str, Batcher[_OpenRow]],
        jobs: MemoryObjectSendStream[_Job],
    ) -> None:
        if not self._admission.value:
            self._starved = True
            await self._admission.acquire()
            self._starved = False
        else:
            await self._admission.acquire()
        key = item.key
        row = _OpenRow(item, key, len(self._engine.specs))
        self._open[key] = row
        self.rows_admitted += 1
        for spec, decision in router.decide(item, key):
            column = spec.name
            if isinstance(decision, Answered):
                if decision.origin == "cached":
                    self.stats.cached[column] += 1
                if decision.origin == "held" and decision.target is not None:
                    self._sent_to[column].add(decision.target)
                await self._resolve(
                    column, [row], [decision.score], fresh=decision.origin != "earlier"
                )
                continue
            self._sent_to[column].add(decision.name)
            batcher = batchers.get(column)
            if batcher is None:
                await _put(jobs, _Job(column, decision, [row]))
            elif (full := batcher.add(item.wiki.dbname, row)) is not None:
                await _put(jobs, self._batch_job(column, full))

    async def _flush_lingering(
        self,
        batchers: dict[str, Batcher[_OpenRow]],
        jobs: MemoryObjectSendStream[_Job],
        nap: _Nap,
    ) -> None:
        # A partial batch leaves only when the producer has nothing else to give
        # (input is slow or every open row is waiting): while it is busy, batches fill.
        # At the end of input it returns and the producer's caller drains the rest.
        engine = self._engine
        while not nap.over:
            await nap.sleep(engine.sleep, engine.linger / 2)
            if nap.over or not self._starved:
                continue
            for name, batcher in batchers.items():
                for batch in batcher.due():
                    await _put(jobs, self._batch_job(name, batch))

    # -- the workers -----------------------------------------------------------------
    def _grow(self) -> None:
        while self._workers < self._engine.concurrency.limit and not self._closing:
            self._workers += 1
            self._workers_tg.start_soon(self._worker)

    async def _worker(self) -> None:
        try:
            await self._work_on()
        finally:
            self._workers -= 1

    async def _work_on(self) -> None:
        engine = self._engine
        slots = engine.slots
        while (job := await _take(self._work)) is not None:
            # The limit follows the latency; the slots hold it across calls.
            limit = max(engine.concurrency.limit, 1)
            if slots.total_tokens != limit:
                slots.total_tokens = limit
            # A free slot is taken without a turn of the event loop (`async with`
            # always yields one: ~6% of the CPU per request, measured with py-spy).
            try:
                slots.acquire_nowait()
            except anyio.WouldBlock:
                await slots.acquire()
            try:
                scores = await engine.dispatcher.send(
                    job.spec, [row.revision for row in job.rows], self.stats
                )
            except Stopped:
                return
            finally:
                slots.release()
            if engine.cache is not None:
                answers = [
                    (row.revision.wiki.dbname, row.revision.rev_id, score)
                    for row, score in zip(job.rows, scores, strict=True)
                ]
                await engine.keep(job.spec, answers)
            await self._resolve(job.column, job.rows, scores)
            if self._closing:
                continue
            limit = engine.concurrency.limit
            if self._workers > limit:
                return
            if self._workers < limit:
                self._grow()

    # -- rows out ----------------------------------------------------------------------
    async def _resolve(
        self, name: str, rows: list[_OpenRow], scores: list[Score], *, fresh: bool = True
    ) -> None:
        """`scores` holds one score per row, in the rows' order; `name` is the column."""
        stats = self.stats
        if fresh and self._on_answer is not None:
            # The journal first: an answer counts as done only once it has it.
            self._on_answer(
                name, [(row.key, score) for row, score in zip(rows, scores, strict=True)]
            )
        for row, score in zip(rows, scores, strict=True):
            row.scores[name] = score
            if score.error is None:
                stats.scored[name] += 1
            else:
                stats.errors[(name, score.error.value)] += 1
            row.remaining -= 1
            if row.remaining == 0:
                del self._open[row.key]
                scored = {s.name: row.scores[s.name] for s in self._engine.specs}
                await self._emit(ScoredRow(row.key, scored, kept=row.revision.kept))
                self._admission.release()
        if fresh and not sum(stats.scored.values()) and self._nothing_deployed():
            raise NoModelDeployedError(models=[s.name for s in self._engine.specs])

    def _nothing_deployed(self) -> bool:
        refusals = self._engine.dispatcher.refusals
        return all(refusals.all_undeployed(sent) for sent in self._sent_to.values())

    async def _emit_invalid(self, item: InvalidRow) -> None:
        message = str(item)
        specs = self._engine.specs
        for spec in specs:
            self.stats.errors[(spec.name, ErrorType.INVALID_INPUT.value)] += 1
        failed = Score.failed(ErrorType.INVALID_INPUT, message)
        await self._emit(ScoredRow(None, {s.name: failed for s in specs}, item, kept=item.kept))

    async def _emit(self, row: ScoredRow) -> None:
        self.rows_emitted += 1
        self._handed.append(row)
        try:
            try:
                self._out.send_nowait(row)
            except anyio.WouldBlock:
                await self._out.send(row)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The consumer left (closed its side): this call sends nothing more.
            self.cancel()


def check_every_row_out(admitted: int, emitted: int, still_open: int) -> None:
    """Raise IncompleteRunError unless every row admitted came out: the invariant a
    backfill can never break silently. A row still open never came out, whatever the
    count says."""
    if emitted == admitted and not still_open:
        return
    written = emitted if emitted > admitted else min(emitted, admitted - still_open)
    raise IncompleteRunError(written=written, expected=admitted)


async def _put(jobs: MemoryObjectSendStream[_Job], job: _Job) -> None:
    # send() yields to the loop on every job; while there is room the producer keeps
    # going (as asyncio.Queue.put did), so open rows fill up to max_open and batches fill.
    try:
        jobs.send_nowait(job)
    except anyio.WouldBlock:
        await jobs.send(job)


async def _take(work: MemoryObjectReceiveStream[_Job]) -> _Job | None:
    # receive() yields to the loop even when a job is waiting; taking it at once saves
    # a loop turn per request (measured in benchmarks/overhead.py). None: no more jobs.
    try:
        return work.receive_nowait()
    except anyio.WouldBlock:
        pass
    except anyio.EndOfStream:
        return None
    try:
        return await work.receive()
    except anyio.EndOfStream:
        return None


class _Nap:
    """A sleep that can be cut short for good, without cancelling its sleeper's work."""

    __slots__ = ("over", "_scope")

    def __init__(self) -> None:
        self.over = False
        self._scope: anyio.CancelScope | None = None

    async def sleep(self, sleep: Callable[[float], Awaitable[None]], seconds: float) -> None:
        with anyio.CancelScope() as self._scope:
            await sleep(seconds)
        self._scope = None

    def wake_for_good(self) -> None:
        self.over = True
        if self._scope is not None:
            self._scope.cancel()


def start(
    engine: Engine,
    group: TaskGroup,
    batches: AsyncIterable[Sequence[Item]],
    *,
    resume: ResumeState | None,
    on_answer: OnAnswer | None,
) -> Pipeline:
    """A new call's pipeline, running in `group`."""
    pipeline = Pipeline(engine, resume=resume, on_answer=on_answer)
    group.start_soon(pipeline.run, batches)
    return pipeline


__all__ = ["Engine", "OnAnswer", "Pipeline", "check_every_row_out", "start"]
