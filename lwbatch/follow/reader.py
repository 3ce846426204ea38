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

    async def messages(self) -> AsyncIterator[tuple[str, str]]:
        """(id, data) of every message event, across reconnects."""
        timeout = httpx.Timeout(10.0, read=READ_TIMEOUT)
        async with httpx.AsyncClient(transport=self._transport, timeout=timeout) as client:
            failures = 0
            while True:
                headers = dict(self._headers)
                params = {}
                if self.last_id:
                    headers["Last-Event-ID"] = self.last_id
                elif self._since is not None:
                    params["since"] = str(self._since)
                self.connections += 1
                try:
                    async with aconnect_sse(
                        client, "GET", self.url, headers=headers, params=params
                    ) as source:
                        await _check(source.response, self.url)
                        async for sse in source.aiter_sse():
                            if sse.event != "message" or not sse.data:
                                continue
                            failures = 0
                            if sse.id:
                                self.last_id = sse.id
                            yield sse.id, sse.data
                    why = "the stream ended the connection"
                except (httpx.TransportError, SSEError) as exc:
                    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                except _Retry as exc:
                    why = str(exc)
                pause = min(BACKOFF_FIRST * 2**failures, BACKOFF_MOST)
                failures += 1
                self.reconnects += 1
                log.info("event stream: %s; reconnecting in %.1f s", why, pause)
                await self._sleep(pause)


class _Retry(Exception):
    pass


async def _check(response: httpx.Response, url: str) -> None:
    if response.status_code == 200:
        return
    body = (await response.aread())[:300].decode("utf-8", "replace").strip()
    if response.status_code in (429, 502, 503, 504) or response.status_code >= 500:
        raise _Retry(f"the stream answered {response.status_code}")
    if response.status_code == 400 and "timestamp" in body:
        raise UsageError(f"--since: the stream does not take this time ({body})")
    raise RunAborted(f"the event stream {url} answered {response.status_code}: {body}")


__all__ = ["StreamReader"]
