"""The follower: stream events in, scored rows out in batches, each batch with the
stream position that comes after it.

Events are read in stream order. Those that cost no request (canaries, other wikis,
other namespaces, bots when unwanted, events seen already, revisions sampled out) are
dropped at once; the others go to a :class:`~lwbatch.Scorer` call, whose rows come back
in any order. The position only moves past an event once its row is out, so a batch
holds every row up to its position and none after: store the rows, then the
position, and a restart from that position loses nothing and repeats nothing.

EventStreams resumes at the first event of the position's millisecond, and delivers
at least once; so the keys written in the last seconds of event time ride along with
the position, and a restart drops them when they come again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
import orjson

from lwbatch.engine.scorer import Scorer
from lwbatch.errors import RunAborted, UsageError
from lwbatch.keys import KeySet, RowKey
from lwbatch.results import Revision, ScoredRow
from lwbatch.streaming.events import StreamEvent, parse_event, positions
from lwbatch.streaming.reader import StreamReader
from lwbatch.wikis import wikis

log = logging.getLogger("lwbatch")

# Keys written in this much event time before the position ride along with it (and
# those of each partition's last millisecond, however old: a resume sends it again).
RECENT_MS = 10_000
RECENT_MOST = 100_000
# A Scorer call remembers every key it was given and answers a key it saw before with
# no row; so the follower forgets the keys it saw only between calls, and starts a new
# call once it remembers this many (kept as a bitmap, ~2 bytes each, as the call does).
KEYS_PER_CALL = 1_000_000
# Keys kept from one call to the next, against redeliveries (they come within seconds).
SEEN_MS = 600_000
SEEN_MOST = 20_000


class StreamGapError(RunAborted):
    """The stream no longer holds the events right after the stored position."""


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a follower stands: the stream's id after the last event whose row is out,
    and the keys written in the last seconds before it. Store it with your rows, give
    it back as `resume` (JSON: :meth:`to_json` / :meth:`from_json`)."""

    id: str | None = None
    recent: tuple[tuple[str, int], ...] = ()
    time_ms: int | None = None  # the event time at the position

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"id": self.id, "time_ms": self.time_ms, "recent": [list(k) for k in self.recent]}
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> StreamPosition:
        try:
            value = orjson.loads(data)
            return cls(
                id=value["id"],
                time_ms=value.get("time_ms"),
                recent=tuple((str(w), int(r)) for w, r in value.get("recent", ())),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a stream position ({exc})") from None


@dataclass(frozen=True, slots=True)
class Filters:
    """Which revisions of the stream to score: `wikis` (database names; None: every
    wiki), `namespaces` (None: every one), `bots`, and a `sample` share (0-1]."""

    wikis: frozenset[str] | None = None
    namespaces: frozenset[int] | None = frozenset({0})
    bots: bool = True
    sample: float | None = None

    def __post_init__(self) -> None:
        if self.sample is not None and not 0.0 < self.sample <= 1.0:
            raise UsageError(f"`sample` must be a share in (0, 1], got {self.sample}")

    def drop_reason(self, event: StreamEvent) -> str | None:
        if event.canary:
            return "canary"
        if event.key is None:
            return "no revision"
        if self.wikis is not None and event.key.wiki not in self.wikis:
            return "other wikis"
        if self.namespaces is not None and event.namespace not in self.namespaces:
            return "other namespaces"
        if not self.bots and event.bot:
            return "bots"
        return None

    def sampled(self, key: RowKey) -> bool:
        """Whether `key` is in the sample: by a hash of the key, so every run agrees."""
        if self.sample is None or self.sample >= 1.0:
            return True
        digest = hashlib.blake2b(f"{key.wiki}:{key.rev_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self.sample * 2**64


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows and the position right after the last of them."""

    rows: list[tuple[ScoredRow, int]]  # each row with its event's time (UTC ms)
    position: StreamPosition
    last: bool = False  # the follower has stopped: no batch comes after this one


@dataclass(slots=True)
class _Entry:
    id: str
    key: RowKey
    time_ms: int
    partition: tuple[tuple[str, int], int] | None  # (topic-partition, its id's timestamp)
    after: str | None = None  # the id of the last dropped event read after this one
    after_ms: int | None = None
    row: ScoredRow | None = None


@dataclass(slots=True)
class FollowCounts:
    events: int = 0  # messages read (redelivered ones too)
    revisions: int = 0  # sent to be scored
    rows: int = 0  # handed out in batches
    dropped: Counter[str] = field(default_factory=Counter)  # why events cost nothing
    wanted: int = 0  # revisions the filters take, sampled out or not
    first_ms: int | None = None  # event time of the first and the last event read
    last_ms: int | None = None

    @property
    def wanted_per_second(self) -> float | None:
        """Revisions the filters take per second of event time: what the wikis make,
        whatever the budget lets through."""
        if self.first_ms is None or self.last_ms is None or self.last_ms <= self.first_ms:
            return None
        return self.wanted / ((self.last_ms - self.first_ms) / 1000)


class Follower:
    """Reads `reader`, scores with `scorer` (entered by the caller), hands out batches.

    until_ms: stop at the first event made at or after it. max_revisions: stop after
    that many revisions are sent. accept_gap: go on when the stream lost events after
    `start` (else :class:`StreamGapError`).
    """

    def __init__(
        self,
        scorer: Scorer,
        reader: StreamReader,
        *,
        stream: str = "revision-create",
        filters: Filters | None = None,
        start: StreamPosition | None = None,
        until_ms: int | None = None,
        max_revisions: int | None = None,
        accept_gap: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scorer = scorer
        self.reader = reader
        self.stream = stream
        self.filters = filters or Filters()
        start = start or StreamPosition()
        self.position = start
        self.counts = FollowCounts()
        self._until = until_ms
        self._max = max_revisions
        self._accept_gap = accept_gap
        self._clock = clock
        self._pending: deque[_Entry] = deque()
        self._by_key: dict[RowKey, _Entry] = {}
        self._ready: list[tuple[ScoredRow, int]] = []
        # Keys read (any run's, for the ones of `start`): dropped when they come again.
        self._seen = KeySet()
        # The latest keys seen, with their event time: what a new call keeps.
        self._latest: deque[tuple[int, RowKey]] = deque(maxlen=SEEN_MOST)
        self._recent: deque[tuple[int, RowKey]] = deque()
        # Per topic-partition: its last timestamp written, and the keys written at it.
        self._edges: dict[tuple[str, int], tuple[int, list[RowKey]]] = {}
        carried = [RowKey(wiki, rev_id) for wiki, rev_id in start.recent]
        at = start.time_ms or 0
        for key in carried:
            self._seen.add(key)
            self._latest.append((at, key))
            # They ride along with the next positions too, until time moves past them.
            self._recent.append((at, key))
        # Checked against the first event of each partition after the resume.
        self._gap_check = positions(start.id) if start.id else {}
        for partition, stamp in self._gap_check.items():
            self._edges[partition] = (stamp, list(carried))
        self._id, self._time_ms = start.id, start.time_ms
        self._connection = 0
        self._messages: AsyncIterator[tuple[str, str]] | None = None
        self._ended = False
        self._stop = False

    # -- what the caller sees ------------------------------------------------------
    def stop(self) -> None:
        """Read no more events; the batches end once the rows in flight are out."""
        self._stop = True

    async def aclose(self) -> None:
        """Close the stream's connection."""
        if self._messages is not None:
            await self._messages.aclose()  # type: ignore[attr-defined]

    @property
    def lag_seconds(self) -> float | None:
        """How far the position's event time is behind now."""
        if self._time_ms is None:
            return None
        return max(time.time() - self._time_ms / 1000, 0.0)

    async def batches(self, *, seconds: float, rows: int) -> AsyncIterator[Batch]:
        """A batch every `seconds` or `rows` rows, whichever comes first, while the
        position moves; the last one has ``last=True``."""
        next_at = self._clock() + seconds
        while not self._ended:
            self._forget()
            call = self.scorer.score(self._revisions())
            out = call.__aiter__()
            while True:
                finished = False
                with anyio.move_on_after(max(next_at - self._clock(), 0.0)):
                    try:
                        self._done(await out.__anext__())
                    except StopAsyncIteration:
                        finished = True
                if finished and (self.scorer.stopped or self._stop):
                    self._ended = True
                due = self._clock() >= next_at or len(self._ready) >= rows
                if due or (finished and self._ended):
                    batch = self._take(last=finished and self._ended)
                    if batch.rows or batch.last or batch.position != self.position:
                        self.position = batch.position
                        yield batch
                    next_at = self._clock() + seconds
                if finished:
                    break

    # -- reading -----------------------------------------------------------------------
    async def _revisions(self) -> AsyncIterator[list[Revision]]:
        all_wikis = wikis()
        if self._messages is None:
            # One generator, so one connection, for every call of the run.
            self._messages = self.reader.messages()
        async for event_id, data in self._messages:
            self.counts.events += 1
            if not event_id:
                raise RunAborted(
                    f"the stream {self.reader.url} sends events without an id: a follower "
                    "could not say where it stands, so it cannot resume without a gap"
                )
            if self.reader.connections != self._connection:
                self._connection = self.reader.connections
                if self.reader.resumed_with:
                    # A reconnect may come after the retention too: check it again.
                    self._gap_check = positions(self.reader.resumed_with)
            try:
                event = parse_event(event_id, data, self.stream)
            except ValueError as exc:
                log.warning("event stream: an event lwbatch cannot read, skipped: %s", exc)
                self.counts.dropped["unreadable"] += 1
                self._passed(event_id, None)
                continue
            counts = self.counts
            counts.first_ms = event.time_ms if counts.first_ms is None else counts.first_ms
            counts.last_ms = event.time_ms
            if self._gap_check:
                self._check_gap(event)
            if self._until is not None and event.time_ms >= self._until:
                self._ended = True
                return
            reason = self.filters.drop_reason(event)
            key = event.key
            if reason is None and key is not None and key in self._seen:
                reason = "seen already"
            if reason is None and key is not None:
                self._seen.add(key)
                self._latest.append((event.time_ms, key))
                counts.wanted += 1
                if not self.filters.sampled(key):
                    reason = "sampled out"
            if reason is not None or key is None:
                counts.dropped[reason or "no revision"] += 1
                self._passed(event_id, event.time_ms)
                if self._stop:
                    self._ended = True
                    return
                continue
            partition = None
            if event.partition is not None:
                stamp = positions(event_id).get(event.partition, event.time_ms)
                partition = (event.partition, stamp)
            entry = _Entry(event_id, key, event.time_ms, partition)
            self._pending.append(entry)
            self._by_key[key] = entry
            counts.revisions += 1
            yield [
                Revision(
                    key.rev_id,
                    all_wikis.from_dbname(key.wiki),
                    page_id=event.page_id,
                    page_title=event.page_title,
                    kept=(event.time_ms,),
                )
            ]
            if self._max is not None and counts.revisions >= self._max or self._stop:
                self._ended = True
                return
            if len(self._seen) >= KEYS_PER_CALL:
                return  # a new call: see KEYS_PER_CALL
        self._ended = True

    def _forget(self) -> None:
        """Between calls: keep only the keys seen lately, against redeliveries."""
        if not self._latest:
            return
        newest = self._latest[-1][0]
        self._seen = KeySet(key for at, key in self._latest if at >= newest - SEEN_MS)

    def _check_gap(self, event: StreamEvent) -> None:
        mine = positions(event.id)
        for partition, stored in list(self._gap_check.items()):
            now = mine.get(partition)
            if now is None:
                continue
            del self._gap_check[partition]
            if now > stored:
                if not self._accept_gap:
                    raise StreamGapError(_gap_message(stored, now))
                log.warning("event stream: %s; going on (accepted)", _gap_message(stored, now))
        if not mine:
            self._gap_check.clear()

    def _passed(self, event_id: str, time_ms: int | None) -> None:
        """An event that costs nothing: the position moves past it with the event
        before it."""
        if self._pending:
            last = self._pending[-1]
            last.after, last.after_ms = event_id, time_ms
        else:
            self._id = event_id
            if time_ms is not None:
                self._time_ms = time_ms

    # -- rows ----------------------------------------------------------------------------
    def _done(self, row: ScoredRow) -> None:
        assert row.key is not None, "the follower sends no invalid rows"
        entry = self._by_key.pop(row.key)
        entry.row = row
        pending = self._pending
        while pending and pending[0].row is not None:
            done = pending.popleft()
            assert done.row is not None
            self._ready.append((done.row, done.time_ms))
            self._recent.append((done.time_ms, done.key))
            if done.partition is not None:
                where, stamp = done.partition
                edge = self._edges.get(where)
                if edge is None or edge[0] < stamp:
                    self._edges[where] = (stamp, [done.key])
                elif edge[0] == stamp:
                    edge[1].append(done.key)
            self._id = done.after or done.id
            self._time_ms = done.after_ms or done.time_ms

    def _take(self, *, last: bool) -> Batch:
        rows, self._ready = self._ready, []
        self.counts.rows += len(rows)
        recent = self._recent
        if self._time_ms is not None:
            while recent and recent[0][0] < self._time_ms - RECENT_MS:
                recent.popleft()
        while len(recent) > RECENT_MOST:
            recent.popleft()
        keys = dict.fromkeys(k for _, k in recent)
        for _, at_edge in self._edges.values():
            keys.update(dict.fromkeys(at_edge))
        recent_keys = tuple((k.wiki, k.rev_id) for k in keys)
        return Batch(rows, StreamPosition(self._id, recent_keys, self._time_ms), last=last)


def _gap_message(stored: int, first: int) -> str:
    def at(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    return (
        f"the stream no longer holds the events from {at(stored)} to {at(first)} UTC "
        f"({(first - stored) / 1000:,.1f} s): the follower was stopped longer than the "
        "stream keeps events, so their revisions are missing from the output; give "
        "`accept_gap=True` to go on from there"
    )


__all__ = [
    "Batch",
    "Filters",
    "FollowCounts",
    "Follower",
    "StreamGapError",
    "StreamPosition",
]
