"""The one place that talks HTTP to Lift Wing.

Requests go straight to an httpx transport through its public API,
``await transport.handle_async_request(request)``, with no ``httpx.AsyncClient`` on
top: lwbatch needs none of the client's cookie jar (11% of lwbatch's CPU, measured),
redirects or auth, and the client binds each response's stream back to the response,
a reference cycle that only a full GC frees (measured: 70-100 ms pauses mid-run that
let a server-side window count N+1). What the client did and lwbatch needs is done
here: default headers, the timeout (the request's ``timeout`` extension), reading and
closing the response.

The transport is ``httpx-aiohttp``'s: httpx 0.28's own pool measured 130-490 req/s at
8-128 in flight on this machine (encode/httpx#3215) against ~1,100-1,600 req/s on
aiohttp. Tests inject ``httpx.MockTransport`` (or respx) instead.
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
from lwbatch.protocol.catalog import ModelSpec


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, reduced to what the dispatcher needs."""

    status: int
    body: bytes
    retry_after: str | None
    latency: float
    # A 401's challenge: `Bearer ...` when the endpoint wants a token.
    www_authenticate: str | None = None


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


# httpx-aiohttp raises an httpx exception with the aiohttp one as its __cause__
# (`raise mapped from exc`), and maps coarsely: every aiohttp ClientConnectionError,
# a refused connection, a name that does not resolve and a server closing the
# connection mid-request included, becomes httpx.ConnectTimeout. The cause tells them
# apart. tests/test_client.py pins that mapping against the real transport, so an
# upgrade that changes it fails there, not in a run.


def _unreachable_reason(exc: httpx.TransportError) -> str | None:
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


def _was_cut(exc: httpx.TimeoutException) -> bool:
    """A connection error in a timeout's clothes (see above), not a timeout."""
    cause = exc.__cause__
    return isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(
        cause, aiohttp.ServerTimeoutError | aiohttp.ConnectionTimeoutError
    )


def _failure(exc: httpx.TransportError, elapsed: float) -> TransportFailure:
    """The transport's exception as lwbatch reports it."""
    reason = _unreachable_reason(exc)
    if reason is not None:
        return TransportFailure(
            "connection", f"cannot connect ({reason})", elapsed, unreachable=reason
        )
    if not isinstance(exc, httpx.TimeoutException):
        return TransportFailure(
            "connection", f"connection failed ({type(exc).__name__}: {exc})", elapsed
        )
    if _was_cut(exc):
        return TransportFailure(
            "connection",
            f"connection closed before an answer ({type(exc.__cause__).__name__})",
            elapsed,
        )
    return TransportFailure(
        "timeout", f"no answer within the timeout ({type(exc).__name__})", elapsed
    )


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
        # Connection checked token, contact and timeout; this takes them as they are.
        self.endpoint = endpoint
        if transport is None:
            # Idle connections are kept for a minute: re-opening them when load rises
            # adds tens of milliseconds of send jitter, which a server-side window sees.
            limits = httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=60.0,
            )
            transport = AiohttpTransport(limits=limits, verify=verify)
        self._transport = transport
        # Sent with each request, as httpx.AsyncClient would: httpx-aiohttp turns its
        # connect, read and pool values into aiohttp's sock_connect, sock_read and connect.
        self._timeout = httpx.Timeout(timeout).as_dict()
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": user_agent(contact),
            # What httpx.AsyncClient asked for here. Left to aiohttp, it would also ask
            # for zstd once backports.zstd is installed, which httpx (the one decoding,
            # since httpx-aiohttp turns aiohttp's decompression off) reads only with
            # zstandard.
            "Accept-Encoding": "gzip, deflate",
        }
        if token is not None:
            self._headers["Authorization"] = token.header()
        # Per model, parsed once: httpx parses a str URL and headers on every request
        # (the URL alone measured 7% of the CPU).
        self._targets: dict[str, tuple[httpx.URL, httpx.Headers]] = {}

    def set_token(self, token: Token) -> None:
        """Send `token` from now on (a refreshed one)."""
        self._headers["Authorization"] = token.header()
        self._targets.clear()

    @property
    def has_token(self) -> bool:
        """Whether requests carry a bearer token (never the token itself)."""
        return "Authorization" in self._headers

    async def __aenter__(self) -> LiftWingClient:
        await self._transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._transport.__aexit__(exc_type, exc, tb)

    def _target(self, spec: ModelSpec) -> tuple[httpx.URL, httpx.Headers]:
        target = self._targets.get(spec.name)
        if target is None:
            headers = httpx.Headers(self._headers)
            if self.endpoint.host_header:
                # The internal endpoint routes on the Host header, one per model server.
                headers["Host"] = spec.host
            target = self._targets[spec.name] = (httpx.URL(self.endpoint.url(spec.name)), headers)
        return target

    async def post(self, spec: ModelSpec, payload: bytes) -> Reply:
        """One request. Raises :class:`TransportFailure` when no answer arrives."""
        url, headers = self._target(spec)
        request = httpx.Request(
            "POST", url, headers=headers, content=payload, extensions={"timeout": self._timeout}
        )
        started = self._clock()
        try:
            response = await self._transport.handle_async_request(request)
            try:
                body = await response.aread()
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            raise _failure(exc, self._clock() - started) from None
        return Reply(
            status=response.status_code,
            body=body,
            retry_after=response.headers.get("retry-after"),
            latency=self._clock() - started,
            www_authenticate=response.headers.get("www-authenticate"),
        )

    def __repr__(self) -> str:
        return f"<LiftWingClient {self.endpoint.base_url}>"
