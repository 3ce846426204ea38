"""The one place that talks HTTP to Lift Wing.

By default requests go to an aiohttp session directly. httpx stays the seam: a caller
(and every test that fakes a server) passes an httpx transport (``httpx.MockTransport``,
respx, ``httpx-aiohttp``'s) as ``transport=`` and requests then go through its public
API, ``await transport.handle_async_request(request)``. Measured here, 20,000 requests at
64 in flight against the emulator, CPU per request: aiohttp directly 90-101 us, the same
requests through httpx-aiohttp's transport 183-204 us, httpx's own pool 1.8-2 ms
(encode/httpx#3215). Either way there is no client object on top: lwbatch needs none of
a cookie jar, redirects or auth, and httpx's client binds each response's stream back to
the response, a reference cycle that only a full GC frees (70-100 ms pauses mid-run
that let a server-side window count N+1). Default headers, the timeout, reading and
closing the response are done here.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import aiohttp
import certifi
from yarl import URL

from lwbatch._version import __version__
from lwbatch.config import DEFAULT_TIMEOUT, Endpoint, Token
from lwbatch.protocol.catalog import ModelSpec

if TYPE_CHECKING:
    import httpx


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


def _unconnected(exc: BaseException | None) -> str | None:
    """Why aiohttp could not open a connection, or None if `exc` is not such a failure."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the host name does not resolve"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientConnectorSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        # asyncio's strerror is "Connect call failed (addr)"; the errno says why.
        return os.strerror(exc.errno).lower() if exc.errno else "connection failed"
    return None


def _unreachable_reason(exc: httpx.TransportError) -> str | None:
    """Why a connection could not be opened, or None if the failure came later."""
    import httpx

    cause = exc.__cause__
    reason = _unconnected(cause)
    if reason is not None:
        return reason
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
    import httpx

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


def _direct_failure(exc: Exception, elapsed: float) -> TransportFailure:
    """An aiohttp exception (the default path) as lwbatch reports it."""
    reason = _unconnected(exc)
    if reason is not None:
        return TransportFailure(
            "connection", f"cannot connect ({reason})", elapsed, unreachable=reason
        )
    if isinstance(exc, aiohttp.ServerTimeoutError | aiohttp.ConnectionTimeoutError | TimeoutError):
        return TransportFailure(
            "timeout", f"no answer within the timeout ({type(exc).__name__})", elapsed
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return TransportFailure(
            "connection", f"connection closed before an answer ({type(exc).__name__})", elapsed
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportFailure(
            "connection", f"connection closed mid-answer ({type(exc).__name__})", elapsed
        )
    return TransportFailure(
        "connection", f"connection failed ({type(exc).__name__}: {exc})", elapsed
    )


def _tls(verify: bool) -> ssl.SSLContext | bool:
    """What httpx verifies against: SSL_CERT_FILE / SSL_CERT_DIR where set (an internal
    CA), else certifi's bundle; or no verification."""
    if not verify:
        return False
    cafile = os.environ.get("SSL_CERT_FILE")
    capath = os.environ.get("SSL_CERT_DIR")
    if cafile and os.path.isfile(cafile):
        return ssl.create_default_context(cafile=cafile)
    if capath and os.path.isdir(capath):
        return ssl.create_default_context(capath=capath)
    return ssl.create_default_context(cafile=certifi.where())


def user_agent(contact: str | None) -> str:
    """Wikimedia's User-Agent policy: name/version (contact) library/version."""
    contact_part = f" ({contact})" if contact else ""
    return f"lwbatch/{__version__}{contact_part} aiohttp/{aiohttp.__version__}"


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
        self._transport = transport
        self._session: aiohttp.ClientSession | None = None
        self._max_connections = max_connections
        self._verify = verify
        self._aiohttp_timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
        )
        # Sent with each request on a transport, as httpx.AsyncClient would (httpx-aiohttp
        # turns its connect, read and pool values into aiohttp's sock_connect, sock_read
        # and connect, as the session here is given them).
        # httpx is imported only for a transport (`import httpx` costs 55-85 ms of
        # start-up: it loads its own command line).
        self._timeout: dict[str, float | None] = dict.fromkeys(
            ("connect", "read", "write", "pool"), timeout
        )
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": user_agent(contact),
            # What both paths decode (left to itself, aiohttp would also ask for zstd
            # where backports.zstd is installed, which httpx reads only with zstandard).
            "Accept-Encoding": "gzip, deflate",
        }
        if token is not None:
            self._headers["Authorization"] = token.header()
        # Per model, parsed once: httpx parses a str URL and headers on every request
        # (the URL alone measured 7% of the CPU).
        self._targets: dict[str, tuple[httpx.URL, httpx.Headers]] = {}
        self._direct: dict[str, tuple[URL, dict[str, str]]] = {}

    def set_token(self, token: Token) -> None:
        """Send `token` from now on (a refreshed one)."""
        self._headers["Authorization"] = token.header()
        self._targets.clear()
        self._direct.clear()

    @property
    def has_token(self) -> bool:
        """Whether requests carry a bearer token (never the token itself)."""
        return "Authorization" in self._headers

    async def __aenter__(self) -> LiftWingClient:
        if self._transport is not None:
            await self._transport.__aenter__()
            return self
        # Idle connections are kept for a minute: re-opening them when load rises adds
        # tens of milliseconds of send jitter, which a server-side window sees.
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=60.0,
            # Plain http (the emulator, a tunnel) needs no TLS context: ~2.7 MB for one.
            ssl=False if self.endpoint.is_plain_http else _tls(self._verify),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._aiohttp_timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._transport is not None:
            await self._transport.__aexit__(exc_type, exc, tb)
        elif self._session is not None:
            await self._session.close()
            self._session = None

    def _target(self, spec: ModelSpec) -> tuple[httpx.URL, httpx.Headers]:
        import httpx

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
        if self._transport is None:
            return await self._post_direct(spec, payload)
        import httpx

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

    async def _post_direct(self, spec: ModelSpec, payload: bytes) -> Reply:
        session = self._session
        if session is None:
            raise RuntimeError("LiftWingClient is used outside `async with`")
        url, headers = self._direct_target(spec)
        started = self._clock()
        try:
            # Never follows a redirect: a 3xx is an answer (a POST re-sent as a GET, with
            # the token, would come back as some page's 200).
            async with session.post(
                url, data=payload, headers=headers, allow_redirects=False
            ) as response:
                body = await response.read()
                status = response.status
                answer_headers = response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _direct_failure(exc, self._clock() - started) from None
        return Reply(
            status=status,
            body=body,
            retry_after=answer_headers.get("Retry-After"),
            latency=self._clock() - started,
            www_authenticate=answer_headers.get("WWW-Authenticate"),
        )

    def _direct_target(self, spec: ModelSpec) -> tuple[URL, dict[str, str]]:
        target = self._direct.get(spec.name)
        if target is None:
            headers = dict(self._headers)
            if self.endpoint.host_header:
                headers["Host"] = spec.host
            target = self._direct[spec.name] = (URL(self.endpoint.url(spec.name)), headers)
        return target

    def __repr__(self) -> str:
        return f"<LiftWingClient {self.endpoint.base_url}>"
