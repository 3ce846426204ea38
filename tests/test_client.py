"""The HTTP client: what it sends, how it reads, and how transport errors are told apart.

Most tests here use the real transport (httpx-aiohttp on aiohttp) against servers on
127.0.0.1, because what they pin is that transport's behaviour: which httpx exception
it raises for which network failure, with which aiohttp exception chained as the
cause. lwbatch relies on that mapping (lwbatch/protocol/client.py); an upgrade of
httpx-aiohttp or aiohttp that changes it must fail here.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import anyio
import httpx
import orjson
import pytest
import respx
from aiohttp.abc import AbstractResolver, ResolveResult
from httpx_aiohttp import AiohttpTransport

from lwbatch import Endpoint, Token
from lwbatch.protocol.catalog import default_catalog
from lwbatch.protocol.client import LiftWingClient, TransportFailure, user_agent
from lwbatch.testing.emulator import EmulatorConfig, running

SPEC = default_catalog().resolve("enwiki-damaging")
PAYLOAD = b'{"rev_id": 12345}'
ANSWER = b'{"ok": true}'

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Wire:
    """A raw HTTP/1.1 server on 127.0.0.1: counts connections, records request heads."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler or self.answer
        self.connections = 0
        self.heads: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.release = asyncio.Event()  # ends handlers that wait (see `hang`)

    async def read_request(self, reader: asyncio.StreamReader) -> bool:
        """Read one request; False when the client closed the connection instead."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        lines = head.decode("latin-1").split("\r\n")[1:-2]
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        self.heads.append(headers)
        self.bodies.append(await reader.readexactly(int(headers.get("content-length", "0"))))
        return True

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """200 with a small JSON body, for as many requests as the connection carries."""
        while await self.read_request(reader):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
            )
            await writer.drain()

    async def close(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read the request, then close the connection without a word."""
        await self.read_request(reader)

    async def truncate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Promise 100 bytes of body, send 10, close."""
        await self.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()

    async def redirect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """302 to another path of this server, for as many requests as come."""
        while await self.read_request(reader):
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async def hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read the request and never answer (until the test ends)."""
        await self.read_request(reader)
        await self.release.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            self.release.set()
            server.close()
            await server.wait_closed()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NoLookups(AbstractResolver):
    """A resolver that answers every name as not found, as getaddrinfo does for a name
    that does not exist, without asking anyone: no DNS query leaves the machine."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        raise OSError(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        return None


async def transport_error(transport: AiohttpTransport, url: str, within: float = 5.0) -> Exception:
    """What the transport raises for one request, reading the body included."""
    request = httpx.Request(
        "POST", url, content=PAYLOAD, extensions={"timeout": httpx.Timeout(within).as_dict()}
    )
    with pytest.raises(httpx.TransportError) as info:
        response = await transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
    return info.value


# -- the mapping lwbatch relies on, pinned ----------------------------------------------
async def test_pinned_a_refused_connection_is_connect_timeout_caused_by_connector_error() -> None:
    async with AiohttpTransport() as transport:
        exc = await transport_error(transport, f"http://127.0.0.1:{closed_port()}/")
    assert type(exc) is httpx.ConnectTimeout
    assert type(exc.__cause__) is aiohttp.ClientConnectorError
    assert exc.__cause__.errno == errno.ECONNREFUSED


async def test_pinned_a_name_that_does_not_resolve_is_caused_by_a_dns_error() -> None:
    resolver = NoLookups()
    transport = AiohttpTransport(
        client=lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver))
    )
    async with transport:
        exc = await transport_error(transport, "http://liftwing.invalid/")
    assert resolver.asked == ["liftwing.invalid"]
    assert type(exc) is httpx.ConnectTimeout
    assert type(exc.__cause__) is aiohttp.ClientConnectorDNSError


@pytest.mark.parametrize(
    ("handler", "within", "error", "cause"),
    [
        # A connection closed before the answer: a server disconnect.
        ("close", 5.0, httpx.ConnectTimeout, aiohttp.ServerDisconnectedError),
        # A body cut short: a read error caused by a payload error.
        ("truncate", 5.0, httpx.ReadError, aiohttp.ClientPayloadError),
        # No answer within the timeout: a read timeout.
        ("hang", 0.2, httpx.ReadTimeout, aiohttp.SocketTimeoutError),
    ],
)
async def test_pinned_how_the_transport_reports_a_server_failing_mid_request(
    handler: str, within: float, error: type[Exception], cause: type[Exception]
) -> None:
    wire = Wire()
    wire.handler = getattr(wire, handler)
    async with wire.running() as url, AiohttpTransport() as transport:
        with anyio.fail_after(10):
            exc = await transport_error(transport, url, within=within)
    assert type(exc) is error
    assert type(exc.__cause__) is cause


# -- the same failures as lwbatch reports them ------------------------------------------
async def post_failure(client: LiftWingClient) -> TransportFailure:
    async with client:
        with pytest.raises(TransportFailure) as info:
            await client.post(SPEC, PAYLOAD)
    return info.value


async def test_a_refused_connection_is_unreachable() -> None:
    endpoint = Endpoint(base_url=f"http://127.0.0.1:{closed_port()}")
    failure = await post_failure(LiftWingClient(endpoint))
    assert (failure.kind, failure.unreachable) == ("connection", "connection refused")
    assert str(failure) == "cannot connect (connection refused)"


async def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    transport = AiohttpTransport(
        client=lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=NoLookups()))
    )
    endpoint = Endpoint(base_url="https://liftwing.invalid")
    failure = await post_failure(LiftWingClient(endpoint, transport=transport))
    assert (failure.kind, failure.unreachable) == ("connection", "the host name does not resolve")


async def test_a_connection_cut_by_the_server_is_a_connection_failure_not_a_timeout() -> None:
    # The emulator aborts the connection (its reset fault), as a crashing server would.
    with running(EmulatorConfig(reset_rate=1.0)) as (_, base_url):
        failure = await post_failure(LiftWingClient(Endpoint(base_url=base_url)))
    assert (failure.kind, failure.unreachable) == ("connection", None)
    assert str(failure) == "connection closed before an answer (ServerDisconnectedError)"


async def test_a_body_cut_short_is_a_connection_failure() -> None:
    wire = Wire()
    wire.handler = wire.truncate
    async with wire.running() as url:
        failure = await post_failure(LiftWingClient(Endpoint(base_url=url)))
    assert (failure.kind, failure.unreachable) == ("connection", None)
    assert str(failure) == "connection closed mid-answer (ClientPayloadError)"


async def test_the_timeout_given_is_the_one_applied() -> None:
    wire = Wire()
    wire.handler = wire.hang
    async with wire.running() as url:
        with anyio.fail_after(10):  # the default timeout would wait minutes
            failure = await post_failure(LiftWingClient(Endpoint(base_url=url), timeout=0.3))
    assert (failure.kind, failure.unreachable) == ("timeout", None)
    assert str(failure) == "no answer within the timeout (SocketTimeoutError)"
    # Not the default timeout (tens of seconds), and not sooner than asked.
    assert 0.3 <= failure.elapsed < 3.0


# -- what goes on the wire ---------------------------------------------------------------
async def test_headers_and_body_reach_the_server() -> None:
    wire = Wire()
    async with wire.running() as url:
        client = LiftWingClient(
            Endpoint(base_url=url), token=Token("s3cret"), contact="me@example.org"
        )
        async with client:
            reply = await client.post(SPEC, PAYLOAD)
    assert (reply.status, reply.body, reply.retry_after, reply.www_authenticate) == (
        200,
        ANSWER,
        None,
        None,
    )
    head = wire.heads[0]
    assert head["host"] == url.removeprefix("http://")
    assert head["user-agent"] == user_agent("me@example.org")
    assert head["content-type"] == "application/json"
    assert head["authorization"] == "Bearer s3cret"
    assert head["content-length"] == str(len(PAYLOAD))
    assert head["accept-encoding"] == "gzip, deflate"
    assert wire.bodies == [PAYLOAD]


async def test_the_internal_endpoint_routes_on_the_host_header() -> None:
    wire = Wire()
    async with wire.running() as url:
        client = LiftWingClient(Endpoint(base_url=url, host_header=True))
        async with client:
            await client.post(SPEC, PAYLOAD)
    assert wire.heads[0]["host"] == "enwiki-damaging.revscoring-editquality-damaging.wikimedia.org"


async def test_connections_are_kept_alive_and_capped() -> None:
    wire = Wire()
    async with wire.running() as url:
        client = LiftWingClient(Endpoint(base_url=url), max_connections=4)
        async with client:
            for _ in range(20):
                await client.post(SPEC, PAYLOAD)
            assert wire.connections == 1  # one after the other: one connection, reused
            replies = await asyncio.gather(*(client.post(SPEC, PAYLOAD) for _ in range(40)))
    assert [r.status for r in replies] == 40 * [200]
    assert 2 <= wire.connections <= 4  # 40 at once: more connections, never past the cap


async def test_scores_from_the_emulator_with_a_token_it_checks() -> None:
    with running(EmulatorConfig(token="right")) as (emulator, base_url):
        client = LiftWingClient(Endpoint(base_url=base_url), token=Token("right"))
        async with client:
            reply = await client.post(SPEC, PAYLOAD)
        wrong = LiftWingClient(Endpoint(base_url=base_url), token=Token("wrong"))
        async with wrong:
            refused = await wrong.post(SPEC, PAYLOAD)
    assert reply.status == 200
    assert orjson.loads(reply.body) == emulator.answer(SPEC, 12345, "")
    assert refused.status == 401


async def test_a_401_challenge_is_read_back_from_the_wire() -> None:
    challenge = b'Bearer realm="api.wikimedia.org", error="invalid_token"'

    async def unauthorized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await wire.read_request(reader)
        writer.write(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: %s\r\n"
            b"Content-Length: 12\r\n\r\nUnauthorized" % challenge
        )
        await writer.drain()

    wire = Wire(unauthorized)
    async with wire.running() as url, LiftWingClient(Endpoint(base_url=url)) as client:
        reply = await client.post(SPEC, PAYLOAD)
    assert (reply.status, reply.body, reply.www_authenticate) == (
        401,
        b"Unauthorized",
        challenge.decode(),
    )


def test_the_client_says_whether_it_sends_a_token_but_never_which() -> None:
    endpoint = Endpoint(base_url="http://127.0.0.1:9")
    with_token = LiftWingClient(endpoint, token=Token("s3cret-xyz"))
    assert with_token.has_token is True
    assert LiftWingClient(endpoint).has_token is False
    assert "s3cret-xyz" not in repr(with_token)


async def test_what_the_transport_is_handed() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(429, headers={"Retry-After": "7"})

    client = LiftWingClient(
        Endpoint(base_url="http://127.0.0.1:9"),
        token=Token("s3cret"),
        timeout=7.5,
        transport=httpx.MockTransport(answer),
    )
    async with client:
        reply = await client.post(SPEC, PAYLOAD)
    assert (reply.status, reply.retry_after) == (429, "7")
    (request,) = seen
    assert (request.method, str(request.url)) == (
        "POST",
        "http://127.0.0.1:9/v1/models/enwiki-damaging:predict",
    )
    # Only encodings httpx can always decode (see the client on aiohttp's defaults).
    assert dict(request.headers) == {
        "host": "127.0.0.1:9",
        "content-length": str(len(PAYLOAD)),
        "content-type": "application/json",
        "user-agent": user_agent(None),
        "accept-encoding": "gzip, deflate",
        "authorization": "Bearer s3cret",
    }
    assert request.content == PAYLOAD
    assert request.extensions["timeout"] == {
        "connect": 7.5,
        "read": 7.5,
        "write": 7.5,
        "pool": 7.5,
    }


async def test_cookies_are_never_sent_back() -> None:
    router = respx.MockRouter(assert_all_called=True)
    route = router.post("http://127.0.0.1:9/v1/models/enwiki-damaging:predict").mock(
        return_value=httpx.Response(200, json={}, headers={"Set-Cookie": "session=abc; Path=/"})
    )
    client = LiftWingClient(
        Endpoint(base_url="http://127.0.0.1:9"), transport=httpx.MockTransport(router.async_handler)
    )
    async with client:
        await client.post(SPEC, PAYLOAD)
        await client.post(SPEC, PAYLOAD)
    assert [call.request.headers.get("cookie") for call in route.calls] == [None, None]


async def test_the_transport_is_opened_and_closed_with_the_client() -> None:
    events: list[str] = []

    class Recording(httpx.AsyncBaseTransport):
        async def __aenter__(self) -> Recording:
            events.append("open")
            return self

        async def aclose(self) -> None:
            events.append("close")

    async with LiftWingClient(Endpoint(base_url="http://127.0.0.1:9"), transport=Recording()):
        assert events == ["open"]
    assert events == ["open", "close"]


async def test_no_reference_cycles_per_request() -> None:
    # Cyclic garbage is freed only by a full collection, whose pause (70-100 ms with
    # many requests in flight) shows as a burst of send jitter; see lwbatch/pacing.
    wire = Wire()
    async with wire.running() as url, LiftWingClient(Endpoint(base_url=url)) as client:
        await client.post(SPEC, PAYLOAD)  # connection and caches made
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            gc.collect()
            for _ in range(200):
                await client.post(SPEC, PAYLOAD)
            garbage = gc.collect()
        finally:
            if was_enabled:
                gc.enable()
    assert garbage < 20  # under 0.1 objects per request


async def test_a_redirect_is_an_answer_not_followed() -> None:
    # A POST re-sent as a GET elsewhere (with the token) would come back as a page's 200.
    wire = Wire()
    wire.handler = wire.redirect
    async with (
        wire.running() as url,
        LiftWingClient(Endpoint(base_url=url), token=Token("s3cret")) as client,
    ):
        reply = await client.post(SPEC, PAYLOAD)
    assert reply.status == 302
    assert len(wire.heads) == 1
