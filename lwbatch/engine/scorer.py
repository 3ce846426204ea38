"""The scoring engine: revisions in, merged rows out, inside a request budget.

    producer ──jobs (bounded)──> workers ──> Dispatcher (limiter, HTTP, retries)
       │                              │
       └── admission (max open rows) <┴── a row leaves once every model is terminal

The producer admits a revision only while fewer than `max_open` rows are open, and
fans it out to every model in turn, so models interleave per revision and complete
rows accumulate even under a tight budget. Memory is bounded by `max_open`, the job
queue and the compressed bitmap of seen rev_ids, not by the input size.

The number of workers follows :class:`~lwbatch.pacing.concurrency.Concurrency`: unless the
user fixed it, Little's law on the observed latency and the budget's rate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

import anyio
import httpx
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from lwbatch.config import (
    DEFAULT_TIMEOUT,
    Budget,
    Endpoint,
    RetryPolicy,
    Tier,
    Token,
)
from lwbatch.engine.batching import Batcher
from lwbatch.engine.dispatch import Dispatcher, Stopped
from lwbatch.engine.resume import ResumeState
from lwbatch.engine.stats import RunReport, RunStats
from lwbatch.engine.targets import Targets
from lwbatch.errors import (
    IncompleteRunError,
    LWBatchError,
    NoModelDeployedError,
    UsageError,
    primary_error,
)
from lwbatch.keys import KeySet, RowKey
from lwbatch.oauth import Credentials, TokenRefresher
from lwbatch.pacing import gc_pauses
from lwbatch.pacing.concurrency import Concurrency
from lwbatch.pacing.limiter import BudgetLimiter
from lwbatch.pacing.shared import SharedLedger
from lwbatch.protocol.catalog import Catalog, ModelSpec, default_catalog
from lwbatch.protocol.client import LiftWingClient
from lwbatch.results import ErrorType, InvalidRow, Revision, Score, ScoredRow
from lwbatch.seams import Item, Limiter, ScoreCache
from lwbatch.tokens import BudgetChoice, choose_budget
from lwbatch.wikis import wikipedia

log = logging.getLogger("lwbatch")

DEFAULT_LINGER = 0.05
# Jobs made ready ahead of the workers; a job holds at most one batch of rows.
_QUEUE = 64


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


class Scorer:
    """Scores revisions with several Lift Wing models; an async context manager.

    >>> async with Scorer(["enwiki-damaging", "revertrisk-language-agnostic"],
    ...                   endpoint=Endpoint(base_url="http://127.0.0.1:8080")) as scorer:
    ...     async for row in scorer.score([1234, 5678]):
    ...         print(row.rev_id, row.scores["enwiki-damaging"].prediction)

    models: Lift Wing model names (see configs/models.toml for the families).
    endpoint, token, contact, timeout, verify, transport: where and how requests go
    (the public gateway by default; `transport` replaces the HTTP stack in tests).
    tier, budget: the request budget (the tier's, by default); or `limiter`, any
    :class:`~lwbatch.seams.Limiter` (a share of a budget several processes split); or
    `ledger`, the budget every process of this identity on the machine draws from
    (:meth:`SharedLedger.open <lwbatch.pacing.shared.SharedLedger.open>`, for the same
    budget; the caller closes it).
    cache: answers kept by earlier runs (:class:`~lwbatch.seams.ScoreCache`); fresh final
    answers are added. credentials: OAuth2 credentials that get a token when there is
    none and a new one after a 401 (the request is then sent once more).
    concurrency: requests in flight; None adapts to the latency observed.
    retry: retries of transient failures and 429s.
    lang: the Wikipedia of revisions that do not name their wiki (plain rev_ids).
    linger: seconds a partial batch may wait for more revisions of its language.
    max_open: revisions in flight at once (bounds memory; default from concurrency).
    clock, sleep: injectable time, for tests.
    gc_control: time Python's garbage collections (fewer 429s on tight budgets); turns
    automatic collection off while the Scorer is open.
    on_send(t): called for every attempt as it leaves; on_answer(model, [(key, score)]):
    for every answer, before its row counts as done (a journal hooks in here).

    ``await scorer.stop(grace)`` ends a run early: rows already complete still come
    out, then :meth:`score`'s iteration ends and :attr:`stopped` is True.
    """

    def __init__(
        self,
        models: Sequence[str],
        *,
        endpoint: Endpoint | None = None,
        token: Token | None = None,
        contact: str | None = None,
        tier: Tier | None = None,
        budget: Budget | None = None,
        concurrency: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        lang: str = "en",
        linger: float = DEFAULT_LINGER,
        max_open: int | None = None,
        verify: bool = True,
        catalog: Catalog | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        limiter: Limiter | None = None,
        gc_control: bool = False,
        on_send: Callable[[float], None] | None = None,
        on_answer: Callable[[str, list[tuple[RowKey, Score]]], None] | None = None,
        cache: ScoreCache | None = None,
        credentials: Credentials | None = None,
        ledger: SharedLedger | None = None,
    ) -> None:
        if ledger is not None and limiter is not None:
            raise UsageError("give a `limiter` or a `ledger` to share, not both")
        if limiter is not None and (budget is not None or tier is not None):
            raise UsageError("`limiter` carries its own budget; give `budget`/`tier` or `limiter`")
        if gc_control and limiter is not None and not isinstance(limiter, BudgetLimiter):
            # Collections are timed inside BudgetLimiter.acquire(); another limiter
            # would leave automatic collection off with nothing running it.
            raise UsageError("`gc_control` needs lwbatch's own BudgetLimiter as `limiter`")
        self.specs = (catalog or default_catalog()).resolve_all(models)
        self._by_name = {s.name: s for s in self.specs}
        # Which budget, and why: the caller's, else the tier's, else what the token says.
        self.budget_choice = (
            BudgetChoice(limiter.budget, "rate", "the limiter's")
            if limiter is not None
            else choose_budget(budget=budget, tier=tier, token=token, oauth=credentials is not None)
        )
        self.budget = self.budget_choice.budget
        # None adapts to the latency observed (Little's law); a number fixes it.
        self.concurrency = Concurrency(self.budget.rate, fixed=concurrency)
        self.default_wiki = wikipedia(lang)
        self._targets = Targets(self.specs, self.default_wiki)
        # Per column, the models its rows were sent to: when every one of them answered
        # 404 and nothing scored, the endpoint serves none of the models asked for.
        self._sent_to: dict[str, set[str]] = {s.name: set() for s in self.specs}
        self.linger = linger
        self.max_open = max_open or max(4 * self.concurrency.most, 1024)
        self.stats = RunStats()
        self._clock = clock
        self._sleep = sleep
        endpoint = endpoint or Endpoint.external()
        if endpoint.is_external_gateway:
            hidden = [s.name for s in self.specs if s.family.experimental]
            if hidden:
                raise UsageError(
                    f"{', '.join(hidden)}: served only in Lift Wing's experimental "
                    "namespace, which the public API gateway does not route; use the "
                    "internal endpoint, or a base URL that reaches it (`endpoint`)"
                )
        if credentials is not None and endpoint.is_plain_http and not endpoint.is_loopback:
            raise UsageError(
                f"refusing to send tokens over plain http to {endpoint.base_url}: they would "
                "travel in clear text; use https"
            )
        self._client = LiftWingClient(
            endpoint,
            token=token,
            contact=contact,
            timeout=timeout,
            max_connections=self.concurrency.most,
            verify=verify,
            transport=transport,
            clock=clock,
        )
        # An injected limiter is, for example, this process' share of a job-wide budget.
        self.limiter: Limiter = limiter or BudgetLimiter(
            self.budget,
            clock=clock,
            sleep=sleep,
            loopback=self._client.endpoint.is_loopback,
            ledger=ledger,
        )
        # `on_send(t)` sees the clock time of every attempt as it leaves (the ledger).
        self._on_send = on_send
        self._unwatch: Callable[[], None] | None = None
        self._gc_control = gc_control
        self._dispatcher = Dispatcher(
            self._client,
            self.limiter,
            self.stats,
            retry=retry or RetryPolicy(),
            sleep=sleep,
            on_latency=self.concurrency.observe,
            refresher=None if credentials is None else TokenRefresher(credentials, verify=verify),
            # Workers that shrink away finish their request first, so the cap in force
            # is the larger of the limit and the workers still alive.
            limit=lambda: max(self.concurrency.limit, self._workers),
            clock=clock,
        )
        self._tg: TaskGroup | None = None
        self._started: float | None = None
        self._finished: float | None = None
        self.rows_emitted = 0
        # Rows this run must emit (new distinct revisions and new invalid rows).
        self.rows_admitted = 0
        self.stopped = False
        self._on_answer = on_answer
        self._cache = cache
        self._cache_failed = False
        self._credentials = credentials
        self._verify = verify
        self._resume = ResumeState()
        self._open: dict[RowKey, _OpenRow] = {}
        self._run_scope = anyio.CancelScope()
        self._starved = False
        self._streams: list[_Rows] = []
        self._workers = 0
        self._closing = False

    @property
    def cache(self) -> ScoreCache | None:
        return self._cache

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    async def __aenter__(self) -> Scorer:
        if self._credentials is not None and not self._client.has_token:
            self._client.set_token(await self._credentials.fetch_async(verify=self._verify))
        if self._on_send is not None:
            # Watched only while open: an injected limiter outlives this Scorer.
            self._unwatch = self.limiter.watch(self._on_send)
        await self._client.__aenter__()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        if self._gc_control:
            gc_pauses.hold()
        if self.budget_choice.doubtful:
            choice = self.budget_choice
            log.warning("budget %s: %s", choice.budget.describe(), choice.reason)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        # A consumer that stops early must not leave the pipeline running.
        self._tg.cancel_scope.cancel()
        try:
            await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            raise primary_error(group) from None
        finally:
            if self._gc_control:
                gc_pauses.release()
            if self._unwatch is not None:
                self._unwatch()
                self._unwatch = None
            for rows in self._streams:
                rows.close()
            await self._client.__aexit__(None, None, None)

    def score(
        self,
        revisions: Iterable[int | Item] | AsyncIterable[Sequence[Item]],
        *,
        resume: ResumeState | None = None,
    ) -> AsyncIterator[ScoredRow]:
        """Merged rows for `revisions` (ints, :class:`Revision` s, or async batches).

        Rows come out as they complete, in no particular order; one per distinct key
        and one per :class:`InvalidRow`. With `resume` (from a journal), revisions an
        earlier run finished are skipped and unfinished ones keep the answers they had.
        """
        if self._tg is None:
            raise RuntimeError("use `async with Scorer(...) as scorer:` before score()")
        if resume is not None:
            self._resume = resume
            self._targets.restore(resume, self._dispatcher)
            if resume.ledger:
                # Wall-clock times from the journal, moved onto this process' clock.
                offset = self._clock() - time.time()
                self.limiter.restore([t + offset for t in resume.ledger])
        batches = revisions if isinstance(revisions, AsyncIterable) else self._chunks(revisions)
        send, receive = anyio.create_memory_object_stream[ScoredRow](max_buffer_size=1024)
        self._tg.start_soon(self._run, batches, send)
        rows = _Rows(receive, send)
        self._streams.append(rows)
        return rows

    def open_answers(self) -> list[tuple[str, RowKey, Score]]:
        """Answers already in for revisions whose row is not complete yet."""
        return [(m, key, s) for key, row in self._open.items() for m, s in row.scores.items()]

    @property
    def in_flight(self) -> int:
        return self._dispatcher.in_flight

    @property
    def workers(self) -> int:
        """Workers alive: each holds at most one request; their number follows the limit."""
        return self._workers

    async def stop(self, grace: float) -> None:
        """Take no new work, let requests in flight finish for up to `grace` s, then end.

        Rows already complete still come out; unfinished rows keep the answers they
        got (the `on_answer` hook has seen them), so a journaled run loses nothing.
        """
        self.stopped = True
        self._dispatcher.stop()
        with anyio.move_on_after(grace):
            await self._dispatcher.drained()
        self._run_scope.cancel()

    def report(self, *, output: str | None = None) -> RunReport:
        end = self._finished or time.monotonic()
        sharing = self.limiter.sharing() if isinstance(self.limiter, BudgetLimiter) else None
        return RunReport.from_stats(
            self.stats,
            models=self.models,
            elapsed=end - (self._started or end),
            budget=self.budget.describe(),
            budget_rate=self.budget.rate,
            concurrency=self.concurrency.describe(),
            output=output,
            budget_source=self.budget_choice.source,
            budget_reason=self.budget_choice.reason,
            sharing=sharing,
        )

    async def _chunks(self, revisions: Iterable[int | Item]) -> AsyncIterator[Sequence[Item]]:
        chunk: list[Item] = []
        for number, value in enumerate(revisions, start=1):
            if isinstance(value, Revision | InvalidRow):
                chunk.append(value)
            elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
                chunk.append(Revision(value, self.default_wiki, ""))
            else:
                rev_id = value if isinstance(value, int) and not isinstance(value, bool) else None
                chunk.append(
                    InvalidRow(number, rev_id, f"rev_id {value!r} is not a positive integer")
                )
            if len(chunk) >= 1024:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    # -- the pipeline --------------------------------------------------------------
    async def _run(
        self, batches: AsyncIterable[Sequence[Item]], out: MemoryObjectSendStream[ScoredRow]
    ) -> None:
        self._started = time.monotonic()
        self._out = out
        self._admission = anyio.Semaphore(self.max_open, fast_acquire=True)
        jobs, work = anyio.create_memory_object_stream[_Job](max_buffer_size=_QUEUE)
        batchers = {
            s.name: Batcher[_OpenRow](s.max_batch, self.linger, self._clock)
            for s in self.specs
            if s.max_batch > 1
        }
        # stop() cancels this scope; closing `out` then ends the consumer's loop.
        async with out, work, jobs:
            with self._run_scope:
                async with anyio.create_task_group() as tg:
                    self._workers_tg = tg
                    self._work = work
                    self._grow()
                    nap = _Nap()
                    async with anyio.create_task_group() as lingering:
                        if batchers:
                            lingering.start_soon(self._flush_lingering, batchers, jobs, nap)
                        try:
                            await self._produce(batches, batchers, jobs)
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
        self._finished = time.monotonic()
        if not self.stopped:
            # A run too short to reach the limit of failed connections in a row must not
            # pass for complete either: every row would be transient_error.
            self._dispatcher.raise_if_never_reached()
            self._check_accounting()

    def _check_accounting(self) -> None:
        """Every row admitted came out: the invariant a backfill can never break silently."""
        if self.rows_emitted != self.rows_admitted or self._open:
            # A row still open never came out, whatever the count says.
            written = min(self.rows_emitted, self.rows_admitted - len(self._open))
            if self.rows_emitted > self.rows_admitted:
                written = self.rows_emitted
            raise IncompleteRunError(written=written, expected=self.rows_admitted)

    def _batch_job(self, name: str, rows: list[_OpenRow]) -> _Job:
        # Batched models name no wiki (no template): the column's model takes the batch.
        return _Job(name, self._by_name[name], rows)

    async def _produce(
        self,
        batches: AsyncIterable[Sequence[Item]],
        batchers: dict[str, Batcher[_OpenRow]],
        jobs: MemoryObjectSendStream[_Job],
    ) -> None:
        stats = self.stats
        resume = self._resume
        seen = KeySet()
        models = len(self.specs)
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
            for item in batch:
                stats.rows_read += 1
                if isinstance(item, InvalidRow):
                    stats.invalid_rows += 1
                    if not stats.first_invalid:
                        stats.first_invalid = str(item)
                    if item.row is not None and item.row in resume.invalid_rows:
                        stats.rows_resumed += 1
                    else:
                        self.rows_admitted += 1
                        await self._emit_invalid(item)
                    continue
                key = item.key
                if key in seen:
                    stats.duplicate_rows += 1
                    continue
                seen.add(key)
                stats.distinct_revisions += 1
                if key in resume.done:
                    stats.rows_resumed += 1
                    continue
                if self.stopped:
                    return
                if not self._admission.value:
                    self._starved = True
                    await self._admission.acquire()
                    self._starved = False
                else:
                    await self._admission.acquire()
                row = _OpenRow(item, key, models)
                self._open[key] = row
                self.rows_admitted += 1
                earlier = resume.partial.get(key)
                if earlier:
                    for spec in self.specs:
                        if spec.name in earlier:
                            await self._resolve(spec.name, [row], [earlier[spec.name]], fresh=False)
                for spec in self.specs:
                    column = spec.name
                    if column in row.scores:
                        continue
                    target = self._targets.of(spec, item)
                    if isinstance(target, Score):
                        await self._resolve(column, [row], [target])
                        continue
                    if self._cache is not None:
                        kept = self._cache.get(target.name, item.wiki.dbname, item.rev_id)
                        if kept is not None:
                            stats.cached[column] += 1
                            await self._resolve(column, [row], [kept])
                            continue
                    self._sent_to[column].add(target.name)
                    held = self._dispatcher.held_back(target, [item])
                    if held is not None:
                        await self._resolve(column, [row], held)
                        continue
                    batcher = batchers.get(column)
                    if batcher is None:
                        await _put(jobs, _Job(column, target, [row]))
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
        while not nap.over:
            await nap.sleep(self._sleep, self.linger / 2)
            if nap.over or not self._starved:
                continue
            for name, batcher in batchers.items():
                for batch in batcher.due():
                    await _put(jobs, self._batch_job(name, batch))

    def _grow(self) -> None:
        while self._workers < self.concurrency.limit and not self._closing:
            self._workers += 1
            self._workers_tg.start_soon(self._worker)

    async def _worker(self) -> None:
        while (job := await _take(self._work)) is not None:
            try:
                scores = await self._dispatcher.send(job.spec, [row.revision for row in job.rows])
            except Stopped:
                return
            if self._cache is not None:
                await self._keep(job, scores)
            await self._resolve(job.column, job.rows, scores)
            if self._closing:
                continue
            limit = self.concurrency.limit
            if self._workers > limit:
                self._workers -= 1
                return
            if self._workers < limit:
                self._grow()

    async def _keep(self, job: _Job, scores: list[Score]) -> None:
        cache = self._cache
        assert cache is not None
        answers = [
            (row.revision.wiki.dbname, row.revision.rev_id, score)
            for row, score in zip(job.rows, scores, strict=True)
        ]
        try:
            # In a thread: a write may wait for another process's write to finish.
            await anyio.to_thread.run_sync(cache.put, job.spec.name, answers)
        except LWBatchError as exc:
            # The answers are in the output all the same; only a later run pays again.
            if not self._cache_failed:
                self._cache_failed = True
                log.warning("%s; answers are not kept in the cache", exc)

    async def _resolve(
        self, name: str, rows: list[_OpenRow], scores: list[Score], *, fresh: bool = True
    ) -> None:
        """`scores` holds one score per row, in the rows' order; `name` is the column."""
        stats = self.stats
        if fresh and self._on_answer is not None:
            # Durable first: an answer counts as done only once the journal has it.
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
                scored = {s.name: row.scores[s.name] for s in self.specs}
                await self._emit(ScoredRow(row.key, scored, kept=row.revision.kept))
                self._admission.release()
        if fresh and not sum(stats.scored.values()) and self._nothing_deployed():
            raise NoModelDeployedError(models=list(self.models))

    def _nothing_deployed(self) -> bool:
        undeployed = self._dispatcher.undeployed
        return all(sent and sent <= undeployed for sent in self._sent_to.values())

    async def _emit_invalid(self, item: InvalidRow) -> None:
        message = str(item)
        for spec in self.specs:
            self.stats.errors[(spec.name, ErrorType.INVALID_INPUT.value)] += 1
        failed = Score.failed(ErrorType.INVALID_INPUT, message)
        await self._emit(
            ScoredRow(None, {s.name: failed for s in self.specs}, item, kept=item.kept)
        )

    async def _emit(self, row: ScoredRow) -> None:
        self.rows_emitted += 1
        try:
            self._out.send_nowait(row)
        except anyio.WouldBlock:
            await self._out.send(row)


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


class _Rows:
    """The async iterator `Scorer.score` returns."""

    def __init__(
        self,
        receive: MemoryObjectReceiveStream[ScoredRow],
        send: MemoryObjectSendStream[ScoredRow],
    ) -> None:
        self._receive = receive
        # Closed here too: a pipeline cancelled before it started never closes it.
        self._send = send

    def __aiter__(self) -> _Rows:
        return self

    async def __anext__(self) -> ScoredRow:
        try:
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            pass
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self.close()
            raise StopAsyncIteration from None
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self.close()
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._receive.close()
        self._send.close()
