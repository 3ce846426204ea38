"""Stream events as `lwbatch follow` needs them: which revision, of which wiki, when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from lwbatch.keys import RowKey

# The streams follow reads, by the name --stream takes.
STREAMS = {
    "revision-create": "mediawiki.revision-create",
    "recentchange": "mediawiki.recentchange",
}
DEFAULT_BASE = "https://stream.wikimedia.org/v2/stream/"


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of the stream; `key` is None for events that make no revision
    (recentchange's log and categorize events)."""

    id: str  # the SSE id: where the stream stands once this event is read
    time_ms: int  # when the event happened (meta.dt), UTC milliseconds
    key: RowKey | None
    namespace: int | None
    bot: bool
    canary: bool
    page_id: int | None = None
    page_title: str | None = None
    # The Kafka topic-partition it came from (EventStreams adds it to meta), if known.
    partition: tuple[str, int] | None = None


def parse_event(event_id: str, data: str, stream: str) -> StreamEvent:
    """The event of one SSE message; ValueError for one that is not of `stream`'s shape."""
    try:
        body: Any = orjson.loads(data)
        meta = body["meta"]
        time_ms = _ms(meta["dt"])
        canary = meta.get("domain") == "canary"
        topic, number = meta.get("topic"), meta.get("partition")
        partition = (str(topic), int(number)) if topic is not None and number is not None else None
        if stream == "recentchange":
            revision = body.get("revision") or {}
            new = revision.get("new") if body.get("type") in ("edit", "new") else None
            wiki = body.get("wiki")
            key = RowKey(wiki, int(new)) if new and wiki else None
            return StreamEvent(
                event_id,
                time_ms,
                key,
                body.get("namespace"),
                bool(body.get("bot")),
                canary,
                page_title=body.get("title"),
                partition=partition,
            )
        performer = body.get("performer") or {}
        return StreamEvent(
            event_id,
            time_ms,
            RowKey(body["database"], int(body["rev_id"])),
            body.get("page_namespace"),
            bool(performer.get("user_is_bot")),
            canary,
            page_id=body.get("page_id"),
            page_title=body.get("page_title"),
            partition=partition,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"an event of another shape ({type(exc).__name__}: {exc})") from None


def positions(event_id: str) -> dict[tuple[str, int], int]:
    """(topic, partition) -> timestamp (or offset) of an EventStreams id; {} if foreign."""
    try:
        entries = orjson.loads(event_id)
        return {
            (str(e["topic"]), int(e["partition"])): int(e.get("timestamp", e.get("offset")))
            for e in entries
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return {}


def _ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_time(text: str, *, now_ms: int) -> int:
    """A --since/--until value: "now", UTC milliseconds, or an ISO 8601 time (UTC unless
    it says otherwise), as UTC milliseconds. ValueError if it is none of them."""
    value = text.strip()
    if value == "now":
        return now_ms
    if value.isdigit():
        return int(value)
    try:
        return _ms(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give now, an ISO 8601 time such as "
            "2026-12-08T10:00:00Z, or UTC milliseconds"
        ) from None


__all__ = ["DEFAULT_BASE", "STREAMS", "StreamEvent", "parse_event", "parse_time", "positions"]
