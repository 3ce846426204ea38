"""`lwbatch.follow(...)`: the follower for Python callers who keep rows themselves.

    async with lwbatch.follow(["enwiki-damaging"], wikis=["enwiki"]) as rows:
        async for batch in rows.batches(seconds=30):
            store(batch.rows)                       # (row, event time in UTC ms) pairs
            save(batch.position.to_json())          # after its rows

Give the position back as `resume=` and nothing is lost or repeated. Iterating `rows`
gives one row at a time; the last row of each batch carries the batch's position.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from lwbatch.errors import UsageError
from lwbatch.results import ScoredRow
from lwbatch.settings import Files, RunSettings
from lwbatch.streaming.core import Batch, Filters, FollowCounts, Follower, StreamPosition
from lwbatch.streaming.events import DEFAULT_BASE, STREAMS, parse_time
from lwbatch.streaming.reader import StreamReader


@dataclass(frozen=True, slots=True)
class Followed:
    """A scored row and its event's time. The last row of each batch carries the
    position after it: store it once the rows up to it are stored (rows after the last
    position stored come again on a resume)."""

    row: ScoredRow
    event_time: datetime
    position: StreamPosition | None


@dataclass(frozen=True, slots=True)
class StreamSource:
    """Which stream: `name` (revision-create or recentchange) at Wikimedia's
    EventStreams, or `url`, another stream's full URL (an emulator's); `transport` for
    tests that fake the stream."""

    name: str = "revision-create"
    url: str | None = None
    transport: httpx.AsyncBaseTransport | None = None

    def __post_init__(self) -> None:
        if self.name not in STREAMS:
            raise UsageError(f"`stream` must be one of {', '.join(STREAMS)}, not {self.name!r}")
        if self.url is not None:
            try:
                url = httpx.URL(self.url)
            except httpx.InvalidURL:
                url = None
            if url is None or url.scheme not in ("http", "https") or not url.host:
                raise UsageError(f"`stream_url` {self.url!r} is not an http(s) URL")
            if url.userinfo:
                raise UsageError("`stream_url` holds a user name or password: leave them out")

    @property
    def full_url(self) -> str:
        return self.url or DEFAULT_BASE + STREAMS[self.name]


class Following:
    """An open follower: ``async with`` it, then iterate rows or :meth:`batches`.

    settings: the models, budget, connection, pacing and cache (`files.cache`), as
    every entry point takes them. filters: which revisions (:class:`Filters`). source:
    which stream. since/until: UTC milliseconds or text (ISO 8601, "now"). resume: a
    stored position (then `since` is ignored, as EventStreams lets Last-Event-ID win).
    """

    def __init__(
        self,
        settings: RunSettings,
        *,
        filters: Filters | None = None,
        source: StreamSource | None = None,
        since: str | int | None = None,
        until: str | int | None = None,
        max_revisions: int | None = None,
        resume: StreamPosition | None = None,
        accept_gap: bool = False,
    ) -> None:
        if max_revisions is not None and max_revisions < 1:
            raise UsageError(f"`max_revisions` must be >= 1, got {max_revisions}")
        now_ms = int(time.time() * 1000)
        self._now_ms = now_ms
        self.settings = settings
        self.filters = filters or Filters()
        self.source = source or StreamSource()
        self.since_ms = _time("since", since, now_ms)
        self.until_ms = _time("until", until, now_ms)
        self.max_revisions = max_revisions
        self.resume = resume
        self.accept_gap = accept_gap
        self._stack: AsyncExitStack | None = None
        self.follower: Follower | None = None

    @property
    def models(self) -> list[str]:
        return list(self.settings.models)

    def _check_span(self) -> None:
        """A new output starts at `since` (default: now): `until` must come after it."""
        if self.resume is not None or self.until_ms is None:
            return
        start = self.since_ms if self.since_ms is not None else self._now_ms
        if self.until_ms <= start:
            said = "`since`" if self.since_ms is not None else "now (no `since`)"
            raise UsageError(
                f"`until` is not after {said}, where a new output starts: nothing to "
                "follow; give `since` for the first run of a job that stops at `until`"
            )

    async def __aenter__(self) -> Following:
        self._check_span()
        from lwbatch.engine.scorer import Scorer
        from lwbatch.identity import Identity
        from lwbatch.protocol.client import user_agent

        settings = self.settings
        async with AsyncExitStack() as stack:
            identity = await Identity.resolve(
                settings.connection, settings.pacing, budget=settings.budget, tier=settings.tier
            )
            identity.warn_if_doubtful()
            cache = settings.files.cache
            if isinstance(cache, Path):
                from lwbatch.cache import SqliteScoreCache
                from lwbatch.threads import on_thread

                cache = await on_thread(partial(SqliteScoreCache, cache))
                stack.callback(cache.close)
            ledger = await identity.open_ledger(settings.pacing)
            if ledger is not None:
                stack.push_async_callback(ledger.aclose)
            scorer = Scorer(
                settings.models,
                connection=settings.connection,
                pacing=settings.pacing,
                cache=cache,
                identity=identity,
                ledger=ledger,
            )
            # The stream closes after the Scorer: leaving it cancels the call that reads
            # the stream, and a generator in the middle of a read cannot be closed.
            stack.push_async_callback(self._close_stream)
            await stack.enter_async_context(scorer)
            reader = StreamReader(
                self.source.full_url,
                last_id=self.resume.id if self.resume is not None else None,
                # EventStreams lets Last-Event-ID win over since: so does a resume.
                since_ms=self.since_ms if self.resume is None else None,
                user_agent=user_agent(settings.connection.contact),
                transport=self.source.transport,
            )
            self.follower = Follower(
                scorer,
                reader,
                stream=self.source.name,
                filters=self.filters,
                start=self.resume,
                until_ms=self.until_ms,
                max_revisions=self.max_revisions,
                accept_gap=self.accept_gap,
            )
            self._stack = stack.pop_all()
        return self

    async def _close_stream(self) -> None:
        if self.follower is not None:
            await self.follower.aclose()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    @property
    def options(self) -> dict[str, object]:
        """The choices a stored output keeps: a restart must make the same ones."""
        filters = self.filters
        return {
            "models": list(self.models),
            "wikis": sorted(filters.wikis) if filters.wikis is not None else "all",
            "namespaces": sorted(filters.namespaces) if filters.namespaces is not None else "all",
            "bots": filters.bots,
            "sample": filters.sample,
            "stream": self.source.name,
        }

    def _open(self) -> Follower:
        if self.follower is None or self._stack is None:
            raise RuntimeError("use `async with lwbatch.follow(...) as rows:` first")
        return self.follower

    async def stop(self, grace: float = 10.0) -> None:
        """Read no more events; rows of the revisions in flight come out for up to
        `grace` seconds, then the last batch (``last=True``)."""
        follower = self._open()
        follower.stop()
        await follower.scorer.stop(grace)

    @property
    def counts(self) -> FollowCounts:
        return self._open().counts

    async def batches(self, *, seconds: float = 1.0, rows: int = 10_000) -> AsyncIterator[Batch]:
        """Batches of rows every `seconds` or `rows`, each with the position after it."""
        async for batch in self._open().batches(seconds=seconds, rows=rows):
            yield batch

    async def __aiter__(self) -> AsyncIterator[Followed]:
        async for batch in self.batches():
            for index, (row, time_ms) in enumerate(batch.rows, start=1):
                when = datetime.fromtimestamp(time_ms / 1000, UTC)
                last = index == len(batch.rows)
                yield Followed(row, when, batch.position if last else None)


def follow(
    models: Sequence[str],
    *,
    filters: Filters | None = None,
    since: str | int | None = None,
    until: str | int | None = None,
    max_revisions: int | None = None,
    resume: StreamPosition | None = None,
    accept_gap: bool = False,
    stream: StreamSource | str | None = None,
    **run: Any,
) -> Following:
    """Score new revisions from Wikimedia's event stream as they are made.

    filters: which revisions (``Filters(wikis=frozenset({"enwiki"}))``; namespace 0 by
    default). stream: a :class:`StreamSource`, or a stream's full URL. since, until,
    max_revisions, resume, accept_gap: see :class:`Following`. The other keywords are
    those of :func:`lwbatch.score`: `rate`, `tier`, `connection`, `pacing`, and
    `cache` (a :class:`~lwbatch.ScoreCache` or an SQLite file's path).
    """
    cache = run.pop("cache", None)
    files = Files(cache=Path(cache) if isinstance(cache, str) else cache, journal=False)
    if isinstance(stream, str):
        stream = StreamSource(name=stream) if stream in STREAMS else StreamSource(url=stream)
    source = stream
    return Following(
        RunSettings.of(models, files=files, **run),
        filters=filters,
        source=source,
        since=since,
        until=until,
        max_revisions=max_revisions,
        resume=resume,
        accept_gap=accept_gap,
    )


def _time(name: str, value: str | int | None, now_ms: int) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return parse_time(value, now_ms=now_ms)
    except ValueError as exc:
        raise UsageError(f"`{name}`: {exc}") from None


__all__ = ["Followed", "Following", "StreamSource", "follow"]
