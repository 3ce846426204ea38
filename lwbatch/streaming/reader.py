"""One SSE connection at a time to EventStreams, resumed with `Last-Event-ID`.

httpx-sse parses the wire format; this module keeps the connection going: a dropped
connection (deploys, idle proxies) is the normal path, so it reconnects with the id of
the last event read and a growing pause, never two connections at once (the service
limits them per client IP).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import httpx
from httpx_sse import SSEError, aconnect_sse

from lwbatch.errors import RunAborted, UsageError

log = logging.getLogger("lwbatch")

BACKOFF_FIRST = 0.2  # seconds before the first reconnect; doubles up to BACKOFF_MOST
BACKOFF_MOST = 30.0
# A connection that says nothing this long (not even a keep-alive comment) is dead.
READ_TIMEOUT = 60.0
# Failures in a row before any event came, after which the URL is taken to be wrong.
FIRST_TRIES = 6


class StreamReader:
    """The events of `url` from `last_id` (else `since_ms`, else now), for ever."""

    def __init__(
        self,
        url: str,
        *,
        last_id: str | None = None,
        since_ms: int | None = None,
        user_agent: str,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.url = url
        self.last_id = last_id
        self._since = since_ms
        self._headers = {"User-Agent": user_agent}
        self._transport = transport
        self._sleep = sleep
        self.connections = 0
        self.reconnects = 0
        self.resumed_with: str | None = None  # the Last-Event-ID of the latest connection
        self._failures = 0
        self._heard = False

    async def messages(self) -> AsyncIterator[tuple[str, str]]:
        """(id, data) of every message event, across reconnects."""
        timeout = httpx.Timeout(10.0, read=READ_TIMEOUT)
        async with httpx.AsyncClient(transport=self._transport, timeout=timeout) as client:
            while True:
                headers = dict(self._headers)
                params = {}
                if self.last_id:
                    headers["Last-Event-ID"] = self.last_id
                elif self._since is not None:
                    params["since"] = str(self._since)
                self.resumed_with = self.last_id
                self.connections += 1
                try:
                    async with aconnect_sse(
                        client, "GET", self.url, headers=headers, params=params
                    ) as source:
                        await _check(source.response, self.url)
                        async for sse in source.aiter_sse():
                            if sse.event != "message" or not sse.data:
                                continue
                            self._failures, self._heard = 0, True
                            if sse.id:
                                self.last_id = sse.id
                            yield sse.id, sse.data
                    why = "the stream ended the connection"
                except (httpx.TransportError, SSEError) as exc:
                    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                except _Retry as exc:
                    why = str(exc)
                self._failures += 1
                failures = self._failures
                if not self._heard and failures >= FIRST_TRIES:
                    raise RunAborted(
                        f"cannot read the event stream {self.url} ({why}, {failures} tries): "
                        "check the URL (`stream_url`) and the network"
                    )
                pause = min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MOST)
                self.reconnects += 1
                # A dropped connection is routine; several in a row are worth a warning.
                say = log.warning if failures >= 3 else log.info
                say("event stream: %s; reconnecting in %.1f s", why, pause)
                await self._sleep(pause)


class _Retry(Exception):
    pass


async def _check(response: httpx.Response, url: str) -> None:
    if response.status_code == 200:
        return
    body = " ".join((await response.aread())[:2000].decode("utf-8", "replace").split())[:200]
    if response.status_code in (429, 502, 503, 504) or response.status_code >= 500:
        raise _Retry(f"the stream answered {response.status_code}")
    if response.status_code == 400 and "timestamp" in body:
        raise UsageError(f"`since`: the stream does not take this time ({body})")
    raise RunAborted(f"the event stream {url} answered {response.status_code}: {body}")


__all__ = ["StreamReader"]
