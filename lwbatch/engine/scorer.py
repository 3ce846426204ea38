"""The Scorer: a long-lived client for several Lift Wing models, inside a request budget.

It holds the HTTP client, the limiter, the dispatcher and the concurrency; each
:meth:`Scorer.score` call runs a pipeline of its own (lwbatch/engine/pipeline.py), with
its own open rows and accounting. Calls one after another, or at the same time, share
the client and the budget, as requests of one httpx Client share its connections.

The number of workers follows :class:`~lwbatch.pacing.concurrency.Concurrency`: unless the
user fixed it, Little's law on the observed latency and the budget's rate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from lwbatch.compat import accepts_old_keywords
from lwbatch.config import Budget, Endpoint, Tier
from lwbatch.engine.dispatch import Dispatcher
from lwbatch.engine.pipeline import Engine, OnAnswer, Pipeline, start
from lwbatch.engine.resume import ResumeState
from lwbatch.engine.router import Router
from lwbatch.engine.stats import RunReport, RunStats
from lwbatch.errors import LWBatchError, UsageError, primary_error
from lwbatch.identity import Identity
from lwbatch.oauth import TokenRefresher
from lwbatch.pacing import gc_pauses
from lwbatch.pacing.concurrency import Concurrency
from lwbatch.pacing.limiter import BudgetLimiter
from lwbatch.pacing.shared import SharedLedger
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.protocol.client import LiftWingClient
from lwbatch.results import InvalidRow, Revision, Score
from lwbatch.seams import Item, Limiter, ScoreCache
from lwbatch.settings import Connection, Hooks, Pacing, read_rate, read_tier
from lwbatch.wikis import wikipedia

log = logging.getLogger("lwbatch")


class Scorer:
    """Scores revisions with several Lift Wing models; an async context manager.

    >>> async with Scorer(["enwiki-damaging", "revertrisk-language-agnostic"],
    ...                   connection=Connection(endpoint=Endpoint(base_url=URL))) as scorer:
    ...     async for row in scorer.score([1234, 5678]):
    ...         print(row.rev_id, row.scores["enwiki-damaging"].prediction)

    models: Lift Wing model names (see configs/models.toml for the families).
    rate, tier: the request budget (N/PERIOD or a Budget; a tier's name); by default
    what the token says. lang: the Wikipedia of revisions that do not name their wiki
    (plain rev_ids). connection: where and as whom (:class:`~lwbatch.Connection`).
    pacing: concurrency, retries, a limiter of your own (:class:`~lwbatch.Pacing`).
    cache: answers kept by earlier runs (:class:`~lwbatch.seams.ScoreCache`); fresh final
    answers are added. identity: a token and budget already resolved
    (:class:`~lwbatch.identity.Identity`). ledger: the budget every process of this
    identity on the machine draws from (the caller closes it). hooks: `on_send` hears
    every request as it leaves while the Scorer is open; `on_answer`, every fresh answer
    of a call that gives none of its own.

    ``await scorer.stop(grace)`` ends every call early: rows already complete still come
    out, then the iterations end and :attr:`stopped` is True.
    """

    @accepts_old_keywords("connection", "pacing", "hooks")
    def __init__(
        self,
        models: Sequence[str],
        *,
        rate: str | Budget | None = None,
        tier: Tier | str | None = None,
        lang: str = "en",
        connection: Connection | None = None,
        pacing: Pacing | None = None,
        cache: ScoreCache | None = None,
        identity: Identity | None = None,
        ledger: SharedLedger | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        connection = connection or Connection()
        self._hooks = hooks or Hooks()
        pacing = pacing or Pacing()
        budget, tier_ = read_rate(rate), read_tier(tier)
        if identity is not None and (budget is not None or tier_ is not None):
            raise UsageError("`identity` carries the budget; give `rate`/`tier` or `identity`")
        if ledger is not None and pacing.limiter is not None:
            raise UsageError("give a `limiter` or a `ledger` to share, not both")
        names = [models] if isinstance(models, str) else list(models)
        self.specs = connection.models().resolve_all(names)
        self._connection = connection
        self._pacing = pacing
        self._identity = identity
        # Which budget, and why: the identity's, else the caller's, else the tier's, else
        # what the token says.
        self.budget_choice = (
            identity.choice
            if identity is not None
            else Identity.of(connection, pacing, budget=budget, tier=tier_).choice
        )
        self.budget = self.budget_choice.budget
        self.concurrency = Concurrency(self.budget.rate, fixed=pacing.concurrency)
        self._slots = anyio.CapacityLimiter(self.concurrency.limit)
        self.default_wiki = wikipedia(lang)
        self.max_open = pacing.max_open or max(4 * self.concurrency.most, 1024)
        endpoint = connection.endpoint
        _refuse_experimental(self.specs, endpoint)
        self._client = LiftWingClient(
            endpoint,
            token=identity.token if identity is not None else connection.token,
            contact=connection.contact,
            timeout=connection.timeout,
            max_connections=self.concurrency.most,
            verify=connection.verify,
            transport=connection.transport,
            clock=pacing.clock,
        )
        # An injected limiter is, for example, this process' share of a job-wide budget.
        self.limiter: Limiter = pacing.limiter or BudgetLimiter(
            self.budget,
            clock=pacing.clock,
            sleep=pacing.sleep,
            loopback=endpoint.is_loopback,
            ledger=ledger,
        )
        self._dispatcher = self._dispatch(connection, pacing)
        self._cache = cache
        self._cache_failed = False
        self._tg: TaskGroup | None = None
        self._calls: list[Pipeline] = []
        self._latest: Pipeline | None = None
        self._unwatch: Callable[[], None] | None = None
        self.stopped = False

    def _dispatch(self, connection: Connection, pacing: Pacing) -> Dispatcher:
        credentials = connection.credentials
        return Dispatcher(
            self._client,
            self.limiter,
            retry=pacing.retry,
            sleep=pacing.sleep,
            on_latency=self.concurrency.observe,
            refresher=None
            if credentials is None
            else TokenRefresher(credentials, verify=connection.verify),
            # Workers that shrink away finish their request first, so the cap in force
            # is the larger of the limit and the workers still alive.
            limit=lambda: max(self.concurrency.limit, self.workers),
            clock=pacing.clock,
        )

    @property
    def cache(self) -> ScoreCache | None:
        return self._cache

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    async def __aenter__(self) -> Scorer:
        credentials = self._connection.credentials
        if credentials is not None and not self._client.has_token:
            self._client.set_token(await credentials.fetch_async(verify=self._connection.verify))
        if self._hooks.on_send is not None:
            # Watched only while open: an injected limiter outlives this Scorer.
            self._unwatch = self.limiter.watch(self._hooks.on_send)
        await self._client.__aenter__()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        if self._pacing.gc_control:
            gc_pauses.hold()
        if self._identity is None and self.budget_choice.doubtful:
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
        # A consumer that stops early must not leave the pipelines running.
        self._tg.cancel_scope.cancel()
        try:
            await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            raise primary_error(group) from None
        finally:
            if self._pacing.gc_control:
                gc_pauses.release()
            if self._unwatch is not None:
                self._unwatch()
                self._unwatch = None
            for call in self._calls:
                call.close()
            await self._client.__aexit__(None, None, None)

    def score(
        self,
        revisions: Iterable[int | Item] | AsyncIterable[Sequence[Item]],
        *,
        resume: ResumeState | None = None,
        on_answer: OnAnswer | None = None,
    ) -> Pipeline:
        """Merged rows for `revisions` (ints, :class:`Revision` s, or async batches).

        Rows come out as they complete, in no particular order; one per distinct key
        and one per :class:`InvalidRow`. With `resume` (from a journal), revisions an
        earlier run finished are skipped and unfinished ones keep the answers they had.
        `on_answer(model, [(key, score)])` sees every fresh answer before its row counts
        as done (a journal hooks in here). Each call has its own rows and accounting
        (the returned pipeline's `stats`); calls share this Scorer's budget.
        """
        if self._tg is None:
            raise RuntimeError("use `async with Scorer(...) as scorer:` before score()")
        batches = revisions if isinstance(revisions, AsyncIterable) else self._chunks(revisions)
        engine = Engine(
            specs=self.specs,
            dispatcher=self._dispatcher,
            concurrency=self.concurrency,
            slots=self._slots,
            router=self._router,
            cache=self._cache,
            keep=self._keep,
            linger=self._pacing.linger,
            max_open=self.max_open,
            clock=self._pacing.clock,
            sleep=self._pacing.sleep,
        )
        on_answer = on_answer if on_answer is not None else self._hooks.on_answer
        call = start(engine, self._tg, batches, resume=resume, on_answer=on_answer)
        # Only calls still running are kept (stop() ends them); the latest one reports.
        self._calls = [c for c in self._calls if c.finished is None and not c.stopped]
        self._calls.append(call)
        self._latest = call
        return call

    def _router(self, resume: ResumeState | None) -> Router:
        router = Router(
            self.specs,
            self.default_wiki,
            cache=self._cache,
            resume=resume,
            held_back=self._dispatcher.held_back,
        )
        if resume is not None:
            router.targets.restore(resume, self._dispatcher.refusals)
        return router

    async def _keep(self, spec: ModelSpec, answers: list[tuple[str, int, Score]]) -> None:
        cache = self._cache
        assert cache is not None
        try:
            # In a thread: a write may wait for another process's write to finish.
            await anyio.to_thread.run_sync(cache.put, spec.name, answers)
        except LWBatchError as exc:
            # The answers are in the output all the same; only a later run pays again.
            if not self._cache_failed:
                self._cache_failed = True
                log.warning("%s; answers are not kept in the cache", exc)

    @property
    def _last(self) -> Pipeline | None:
        return self._latest

    @property
    def stats(self) -> RunStats:
        """The latest call's counters (an empty set before the first call)."""
        last = self._last
        return last.stats if last is not None else RunStats()

    @property
    def rows_emitted(self) -> int:
        last = self._last
        return last.rows_emitted if last is not None else 0

    @property
    def in_flight(self) -> int:
        return self._dispatcher.in_flight

    @property
    def workers(self) -> int:
        """Workers alive: each holds at most one request; their number follows the limit."""
        return sum(call.workers for call in self._calls)

    async def stop(self, grace: float) -> None:
        """Take no new work, let requests in flight finish for up to `grace` s, then end
        every call. Rows already complete still come out; unfinished rows keep the
        answers they got (the `on_answer` hook has seen them), so a journaled run loses
        nothing."""
        self.stopped = True
        for call in self._calls:
            call.halt()
        self._dispatcher.stop()
        with anyio.move_on_after(grace):
            await self._dispatcher.drained()
        for call in self._calls:
            call.cancel()

    def report(self, *, output: str | None = None, call: Pipeline | None = None) -> RunReport:
        """The report of `call` (the latest by default)."""
        call = call or self._last
        stats = call.stats if call is not None else RunStats()
        end = (call.finished if call is not None else None) or time.monotonic()
        started = (call.started if call is not None else None) or end
        sharing = self.limiter.sharing() if isinstance(self.limiter, BudgetLimiter) else None
        return RunReport.from_stats(
            stats,
            models=self.models,
            elapsed=end - started,
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


def _refuse_experimental(specs: Sequence[ModelSpec], endpoint: Endpoint) -> None:
    hidden = [s.name for s in specs if s.family.experimental]
    if hidden and endpoint.is_external_gateway:
        raise UsageError(
            f"{', '.join(hidden)}: served only in Lift Wing's experimental namespace, which "
            "the public API gateway does not route; use the internal endpoint, or a base "
            "URL that reaches it (`endpoint`)"
        )


__all__ = ["Scorer"]
