"""An emulated `mediawiki.revision-create` stream, served as EventStreams serves it.

Deterministic: event n is made `n // per_ms * step` ms after the stream's start, and
everything in it follows from n, so tests know what a stretch of the stream holds
without asking it. The stream starts `history` seconds before the emulator did (so
`since` reaches back) and goes on in real time. Like production it uses timestamps in
its ids: `Last-Event-ID` (and `since`) resume at the first event of that millisecond,
so events of the same millisecond come again. It also mixes in canary events, sends
some events twice, and can drop each connection after a number of events.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from lwbatch.errors import UsageError
from lwbatch.streaming.events import parse_time, positions

TOPIC = "eqiad.mediawiki.revision-create"
FIRST_REV_ID = 500_000_000
# The wikis of event n, in turn (enwiki twice: the largest Wikipedia).
WIKIS = ("enwiki", "dewiki", "wikidatawiki", "enwiki", "frwiki", "commonswiki")


@dataclass(frozen=True, slots=True)
class StreamConfig:
    rate: float = 20.0  # events per second
    per_ms: int = 2  # events that share one millisecond (and so one id)
    history: float = 3600.0  # seconds of stream before the emulator started
    # Seconds of stream kept; a resume from an older position starts at the oldest
    # event kept (a gap), as Kafka's retention makes it.
    retention: float | None = None
    canary_every: int = 50  # every Nth event is a canary (meta.domain "canary")
    redeliver_every: int = 40  # after every Nth event, the one before it comes again
    drop_after: int | None = None  # events per connection, then the connection drops

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise UsageError("the stream's rate must be > 0 events per second")
        if self.per_ms < 1:
            raise UsageError("the stream's events per millisecond must be >= 1")
        if self.drop_after is not None and self.drop_after < 1:
            raise UsageError("a stream connection must carry at least 1 event")


@dataclass(slots=True)
class StreamStats:
    connections: int = 0
    events_sent: int = 0
    # The Last-Event-ID (or since) each connection asked for, in order.
    resumed_from: list[str | None] = field(default_factory=list)


class EmulatedStream:
    """The stream's events and its route (``GET /v2/stream/{streams}``)."""

    def __init__(self, config: StreamConfig | None = None, *, start: float | None = None) -> None:
        self.config = config or StreamConfig()
        # Whole seconds, so that runs of one emulator agree on every event's time.
        began = time.time() if start is None else start
        self.start_ms = int(began - self.config.history) * 1000
        self.step_ms = max(1, round(self.config.per_ms * 1000 / self.config.rate))
        self.stats = StreamStats()

    # -- the events ----------------------------------------------------------------
    def time_ms(self, n: int) -> int:
        return self.start_ms + n // self.config.per_ms * self.step_ms

    def first_at(self, ms: int) -> int:
        """The first event made at or after `ms`."""
        if ms <= self.start_ms:
            return 0
        return math.ceil((ms - self.start_ms) / self.step_ms) * self.config.per_ms

    def event(self, n: int) -> dict[str, Any]:
        """Event n, as mediawiki/revision/create shapes it."""
        config = self.config
        wiki = WIKIS[n % len(WIKIS)]
        canary = n % config.canary_every == config.canary_every - 1
        ms = self.time_ms(n)
        dt = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
        return {
            "$schema": "/mediawiki/revision/create/2.0.0",
            "meta": {
                "stream": "mediawiki.revision-create",
                "domain": "canary" if canary else f"{wiki}.example.org",
                "dt": dt.replace("+00:00", "Z"),
                "id": f"00000000-0000-4000-8000-{n:012d}",
                "topic": TOPIC,
                "partition": 0,
            },
            "database": wiki,
            "page_id": 1000 + n % 997,
            "page_title": f"Page_{n % 997}",
            "page_namespace": 1 if n % 7 == 3 else 0,
            "rev_id": FIRST_REV_ID + n,
            "rev_parent_id": FIRST_REV_ID + n - 6 if n >= 6 else None,
            "rev_timestamp": dt.replace("+00:00", "Z"),
            "performer": {
                "user_text": f"User {n % 13}",
                "user_is_bot": n % 11 == 5,
                "user_groups": ["*", "user"],
            },
        }

    def event_id(self, n: int) -> str:
        position = [{"topic": TOPIC, "partition": 0, "timestamp": self.time_ms(n)}]
        return orjson.dumps(position).decode()

    # -- serving ---------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        streams = request.match_info.get("streams", "")
        if streams not in ("mediawiki.revision-create", "revision-create"):
            return web.json_response(
                {"error": f"the emulator serves mediawiki.revision-create only, not {streams}"},
                status=404,
            )
        last_id = request.headers.get("Last-Event-ID")
        since = request.query.get("since")
        self.stats.connections += 1
        self.stats.resumed_from.append(last_id or (f"since={since}" if since else None))
        now_ms = int(time.time() * 1000)
        if last_id:
            start_ms = _position_ms(last_id)
            if start_ms is None:
                return web.json_response({"error": "invalid Last-Event-ID"}, status=400)
        elif since:
            try:
                start_ms = parse_time(since, now_ms=now_ms)
            except ValueError:
                return web.json_response(
                    {"type": "invalid_timestamp", "detail": f"bad since: {since}"}, status=400
                )
        else:
            start_ms = now_ms
        if self.config.retention is not None:
            start_ms = max(start_ms, now_ms - int(self.config.retention * 1000))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        n, sent = self.first_at(start_ms), 0
        try:
            while self.config.drop_after is None or sent < self.config.drop_after:
                wait = self.time_ms(n) / 1000 - time.time()
                if wait > 0:
                    await asyncio.sleep(min(wait, 15.0))
                    if wait > 15.0:
                        await response.write(b": keepalive\n\n")
                        continue
                await response.write(self._block(n, n))
                sent += 1
                every = self.config.redeliver_every
                if n % every == every - 1 and n > 0:
                    await response.write(self._block(n - 1, n))  # at least once: again
                    sent += 1
                n += 1
        except ConnectionResetError:
            pass  # the client left
        return response

    def _block(self, n: int, at: int) -> bytes:
        self.stats.events_sent += 1
        data = orjson.dumps(self.event(n)).decode()
        return f"event: message\nid: {self.event_id(at)}\ndata: {data}\n\n".encode()


def _position_ms(last_id: str) -> int | None:
    found = positions(last_id)
    return min(found.values()) if found else None


__all__ = ["FIRST_REV_ID", "TOPIC", "WIKIS", "EmulatedStream", "StreamConfig", "StreamStats"]
