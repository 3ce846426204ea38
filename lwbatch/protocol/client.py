"""The one place that talks HTTP to Lift Wing.

One shared ``httpx.AsyncClient`` with keep-alive and a connection cap. Under it sits the
``httpx-aiohttp`` transport: httpx 0.28's own pool measured 130-490 req/s at 8-128 in
flight on this machine (encode/httpx#3215) against ~1,100-1,600 req/s for the same
client on aiohttp. Tests inject ``httpx.MockTransport`` (or respx) instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from lwbatch._version import __version__
from lwbatch.config import DEFAULT_TIMEOUT, Endpoint, Token
from lwbatch.errors import UsageError
from lwbatch.protocol.catalog import ModelSpec


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, reduced to what the dispatcher needs."""

    status: int
    body: bytes
    retry_after: str | None
    latency: float


_EMPTY = httpx.ByteStream(b"")


def _was_cut(exc: httpx.TimeoutException) -> bool:
    """httpx-aiohttp maps every aiohttp connection error, a server closing the
    connection mid-request included, to httpx.ConnectTimeout; tell those apart."""
    cause = exc.__cause__
    return isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(
        cause, aiohttp.ServerTimeoutError | aiohttp.ConnectionTimeoutError
    )


class _NoCookies(httpx.Cookies):
    """Lift Wing sets no cookies we need; httpx's jar cost 11% of lwbatch's CPU."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _Client(httpx.AsyncClient):
    """httpx's client without a cookie jar (it parses every response through
    urllib's cookie machinery, measured at 11% of the CPU of a run)."""

    _jar = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        return None


class TransportFailure(Exception):
    """No HTTP answer: timeout or connection error (kind is `timeout` or `connection`).

    `unreachable` names why no connection could be made at all (refused, name not
    resolved, TLS handshake failed); it is None once a connection existed.
    """

    def __init__(
        self, kind: str, message: str, elapsed: float = 0.0, *, unreachable: str | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.elapsed = elapsed
        self.unreachable = unreachable


def _unreachable_reason(exc: BaseException) -> str | None:
    """Why a connection could not be opened, or None if the failure came later."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientConnectorDNSError):
        return "the host name does not resolve"
    if isinstance(cause, aiohttp.ClientConnectorCertificateError | aiohttp.ClientConnectorSSLError):
        return "TLS handshake failed"
    if isinstance(cause, aiohttp.ClientConnectorError):
        # asyncio's strerror is "Connect call failed (addr)"; the errno says why.
        return os.strerror(cause.errno).lower() if cause.errno else "connection failed"
    if cause is None and isinstance(exc, httpx.ConnectError):
        # httpx's own transports (and MockTransport in tests) raise ConnectError directly.
        return str(exc) or "connection failed"
    return None


def user_agent(contact: str | None) -> str:
    """Wikimedia's User-Agent policy: name/version (contact) library/version."""
    contact_part = f" ({contact})" if contact else ""
    return f"lwbatch/{__version__}{contact_part} httpx/{httpx.__version__}"


class LiftWingClient:
    """POSTs JSON payloads to `{base}/v1/models/{model}:predict`."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        token: Token | None = None,
        contact: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = 256,
        verify: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        if token is not None and endpoint.is_plain_http and not endpoint.is_loopback:
            raise UsageError(
                f"refusing to send the token over plain http to {endpoint.base_url}: "
                "it would travel in clear text; use https"
            )
        if contact is not None and any(c in contact for c in "\r\n\x00"):
            raise UsageError("--contact must be a single line (an e-mail address or URL)")
        if timeout <= 0:
            raise UsageError(f"--timeout must be > 0 seconds, got {timeout:g}")
        self.endpoint = endpoint
        # Idle connections are kept for a minute: re-opening them when load rises adds
        # tens of milliseconds of send jitter, which a server-side window sees.
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=60.0,
        )
        if transport is None:
            transport = AiohttpTransport(limits=limits, verify=verify)
        headers = {"Content-Type": "application/json", "User-Agent": user_agent(contact)}
        if token is not None:
            headers["Authorization"] = token.header()
        self._http = _Client(
            transport=transport,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=limits,
            verify=verify,
        )
        # Parsed once: httpx parses a str URL on every request (7% of the CPU).
        self._urls: dict[str, httpx.URL] = {}
        self._host_headers: dict[str, dict[str, str]] = {}

    async def __aenter__(self) -> LiftWingClient:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    async def post(self, spec: ModelSpec, payload: bytes) -> Reply:
        """One request. Raises :class:`TransportFailure` when no answer arrives."""
        url = self._urls.get(spec.name)
        if url is None:
            url = self._urls[spec.name] = httpx.URL(self.endpoint.url(spec.name))
            self._host_headers[spec.name] = {"Host": spec.host} if self.endpoint.host_header else {}
        started = self._clock()
        try:
            response = await self._http.post(
                url, content=payload, headers=self._host_headers[spec.name]
            )
        except httpx.TransportError as exc:
            elapsed = self._clock() - started
            reason = _unreachable_reason(exc)
            if reason is not None:
                raise TransportFailure(
                    "connection", f"cannot connect ({reason})", elapsed, unreachable=reason
                ) from None
            if not isinstance(exc, httpx.TimeoutException):
                raise TransportFailure(
                    "connection", f"connection failed ({type(exc).__name__}: {exc})", elapsed
                ) from None
            if _was_cut(exc):
                raise TransportFailure(
                    "connection",
                    f"connection closed before an answer ({type(exc.__cause__).__name__})",
                    elapsed,
                ) from None
            raise TransportFailure(
                "timeout", f"no answer within the timeout ({type(exc).__name__})", elapsed
            ) from None
        reply = Reply(
            status=response.status_code,
            body=response.content,
            retry_after=response.headers.get("retry-after"),
            latency=self._clock() - started,
        )
        # httpx binds every response's stream back to the response, a reference cycle
        # that outlives the request and is freed only by a full GC: measured, 70-100 ms
        # pauses mid-run that let a server-side window count N+1. The body is read and
        # the stream closed, so unbinding it lets reference counting free it at once.
        response.stream = _EMPTY
        return reply

    def __repr__(self) -> str:
        return f"<LiftWingClient {self.endpoint.base_url}>"
