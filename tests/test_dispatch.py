"""The client and dispatcher against scripted answers (httpx.MockTransport / respx)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import orjson
import pytest
import respx

import lwbatch
from lwbatch import Budget, Endpoint, Rate, RetryPolicy, Scorer, Token
from lwbatch.errors import (
    AuthenticationError,
    NoModelDeployedError,
    UnreachableError,
    UsageError,
)
from lwbatch.results import ErrorType, ScoredRow
from tests.conftest import FakeClock, Script, ok

BASE = "http://127.0.0.1:9"


async def score(
    models: list[str],
    revs: list[int],
    script: Script,
    clock: FakeClock,
    **options: object,
) -> list[ScoredRow]:
    options.setdefault("budget", Budget.from_rate(Rate(1000, 1.0)))
    options.setdefault("endpoint", Endpoint(base_url=BASE))
    async with Scorer(
        models, transport=script.transport, clock=clock, sleep=clock.sleep, **options
    ) as scorer:  # type: ignore[arg-type]
        rows = [row async for row in scorer.score(revs)]
    return sorted(rows, key=lambda r: r.rev_id or 0)


async def test_headers_user_agent_and_bearer_token(fake_clock: FakeClock) -> None:
    router = respx.MockRouter(assert_all_called=True)
    route = router.post(f"{BASE}/v1/models/enwiki-damaging:predict").mock(side_effect=ok)
    async with Scorer(
        ["enwiki-damaging"],
        endpoint=Endpoint(base_url=BASE),
        token=Token("s3cret-token"),
        contact="me@example.org",
        transport=httpx.MockTransport(router.async_handler),
        clock=fake_clock,
        sleep=fake_clock.sleep,
    ) as scorer:
        rows = [row async for row in scorer.score([42])]
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer s3cret-token"
    # Wikimedia's policy: name/version (contact) library/version.
    assert request.headers["user-agent"] == (
        f"lwbatch/{lwbatch.__version__} (me@example.org) httpx/{httpx.__version__}"
    )
    assert request.headers["content-type"] == "application/json"
    assert orjson.loads(request.content) == {"rev_id": 42}
    assert "host" not in {k for k, v in request.headers.items() if v.endswith("wikimedia.org")}
    assert rows[0].scores["enwiki-damaging"].ok


async def test_internal_endpoint_sends_host_header(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: ok(r), fake_clock)
    await score(
        ["enwiki-goodfaith", "revertrisk-language-agnostic"],
        [7],
        script,
        fake_clock,
        endpoint=Endpoint(base_url="https://inference.discovery.wmnet:30443", host_header=True),
    )
    hosts = sorted(r.headers["host"] for _, r in script.requests)
    assert hosts == [
        "enwiki-goodfaith.revscoring-editquality-goodfaith.wikimedia.org",
        "revertrisk-language-agnostic.revertrisk.wikimedia.org",
    ]
    assert all(
        str(r.url).startswith("https://inference.discovery.wmnet:30443/v1/models/")
        for _, r in script.requests
    )


async def test_5xx_is_retried_with_backoff_and_every_attempt_is_budgeted(
    fake_clock: FakeClock,
) -> None:
    script = Script(
        lambda r, n: httpx.Response(503, text="upstream busy") if n <= 2 else ok(r), fake_clock
    )
    async with Scorer(
        ["enwiki-damaging"],
        endpoint=Endpoint(base_url=BASE),
        transport=script.transport,
        budget=Budget.from_rate(Rate(1000, 1.0)),
        clock=fake_clock,
        sleep=fake_clock.sleep,
    ) as scorer:
        rows = [row async for row in scorer.score([5])]
    assert rows[0].scores["enwiki-damaging"].ok
    assert len(script.requests) == 3
    assert scorer.limiter.statistics().granted == 3
    assert scorer.stats.requests_by_outcome == {"503": 2, "200": 1}
    gaps = [b[0] - a[0] for a, b in zip(script.requests, script.requests[1:], strict=False)]
    assert all(gap > 0 for gap in gaps)  # backed off, not hammered


async def test_retries_are_bounded_then_transient_error(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: httpx.Response(500, json={"error": "MW API down"}), fake_clock)
    rows = await score(
        ["enwiki-damaging"], [5], script, fake_clock, retry=RetryPolicy(max_attempts=4)
    )
    score_ = rows[0].scores["enwiki-damaging"]
    assert score_.error is ErrorType.TRANSIENT_ERROR
    assert score_.error_message == "HTTP 500 after 4 attempt(s): MW API down"
    assert len(script.requests) == 4


async def test_timeouts_and_resets_are_transient(fake_clock: FakeClock) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            raise httpx.ReadTimeout("slow", request=request)
        if n == 2:
            raise httpx.RemoteProtocolError("reset", request=request)
        return ok(request)

    script = Script(answer, fake_clock)
    async with Scorer(
        ["enwiki-damaging"],
        endpoint=Endpoint(base_url=BASE),
        transport=script.transport,
        clock=fake_clock,
        sleep=fake_clock.sleep,
        budget=Budget.from_rate(Rate(1000, 1.0)),
    ) as scorer:
        rows = [row async for row in scorer.score([5])]
    assert rows[0].scores["enwiki-damaging"].ok
    assert scorer.stats.requests_by_outcome == {"timeout": 1, "connection": 1, "200": 1}


async def test_429_pauses_the_whole_pool_for_retry_after(fake_clock: FakeClock) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        if n == 3:
            return httpx.Response(429, text="Too many requests", headers={"Retry-After": "30"})
        return ok(request)

    script = Script(answer, fake_clock)
    rows = await score(["enwiki-damaging"], list(range(1, 21)), script, fake_clock, concurrency=8)
    assert all(r.scores["enwiki-damaging"].ok for r in rows)
    assert len(script.requests) == 21  # 20 revisions + the one retried after the 429
    limited_at = script.requests[2][0]
    later = [t for t, _ in script.requests[3:]]
    assert min(later) >= limited_at + 30.0  # nobody sent during the pause


async def test_401_aborts_the_run_without_showing_the_token(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: httpx.Response(401, text="Unauthorized"), fake_clock)
    with pytest.raises(AuthenticationError) as info:
        await score(
            ["enwiki-damaging"], [1, 2, 3], script, fake_clock, token=Token("tok-SECRET-123")
        )
    assert "401 Unauthorized" in str(info.value)
    assert "tok-SECRET-123" not in str(info.value) and "tok-SECRET-123" not in repr(info.value)


async def test_404_marks_the_model_undeployed_and_stops_sending_to_it(
    fake_clock: FakeClock,
) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        if "svwiki-reverted" in request.url.path:
            return httpx.Response(404, json={"httpCode": 404, "httpReason": "Not Found"})
        return ok(request)

    script = Script(answer, fake_clock)
    rows = await score(
        ["svwiki-reverted", "enwiki-damaging"],
        list(range(1, 51)),
        script,
        fake_clock,
        concurrency=1,
    )
    assert len(rows) == 50
    assert all(r.scores["svwiki-reverted"].error is ErrorType.MODEL_NOT_DEPLOYED for r in rows)
    assert all(r.scores["enwiki-damaging"].ok for r in rows)
    sent_to_undeployed = [r for _, r in script.requests if "svwiki-reverted" in r.url.path]
    assert len(sent_to_undeployed) == 1


async def test_after_a_404_jobs_waiting_for_the_budget_send_nothing(
    fake_clock: FakeClock,
) -> None:
    undeployed = "/v1/models/svwiki-reverted:predict"
    before_404: list[str] = []
    after_404: list[str] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        (after_404 if answered else before_404).append(request.url.path)
        # Answers take a few turns of the event loop, so that while the first request
        # for the undeployed model is on the wire, other jobs for it pass the budget.
        for _ in range(5):
            await asyncio.sleep(0)
        if request.url.path == undeployed:
            answered.append(True)
            return httpx.Response(404, json={"httpCode": 404, "httpReason": "Not Found"})
        return ok(request)

    answered: list[bool] = []
    async with Scorer(
        ["svwiki-reverted", "enwiki-damaging"],
        endpoint=Endpoint(base_url=BASE),
        transport=httpx.MockTransport(answer),
        budget=Budget.from_rate(Rate(20, 1.0)),
        concurrency=32,
        clock=fake_clock,
        sleep=fake_clock.sleep,
    ) as scorer:
        rows = [row async for row in scorer.score(range(1, 41))]
    assert len(rows) == 40
    assert all(r.scores["svwiki-reverted"].error is ErrorType.MODEL_NOT_DEPLOYED for r in rows)
    assert all(r.scores["enwiki-damaging"].ok for r in rows)
    # Jobs for the undeployed model were waiting for the budget when its 404 came back;
    # only requests already on the wire then may have gone, none after.
    assert before_404.count(undeployed) >= 1
    assert after_404.count(undeployed) == 0
    assert (before_404 + after_404).count("/v1/models/enwiki-damaging:predict") == 40


def refused(request: httpx.Request, n: int) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


async def test_an_endpoint_that_never_answers_aborts_after_ten_failed_connections(
    fake_clock: FakeClock,
) -> None:
    script = Script(refused, fake_clock)
    with pytest.raises(UnreachableError) as info:
        await score(["enwiki-damaging"], list(range(1, 200)), script, fake_clock, concurrency=4)
    assert str(info.value) == (
        "cannot reach http://127.0.0.1:9: [Errno 111] Connection refused (10 attempts in a row, "
        "none answered); check the base URL and the network"
    )
    assert len(script.requests) == 10


async def test_a_run_too_short_for_ten_failures_that_never_connected_still_aborts(
    fake_clock: FakeClock,
) -> None:
    script = Script(refused, fake_clock)
    with pytest.raises(UnreachableError, match=r"refused \(5 attempts in a row, none answered\)"):
        await score(["enwiki-damaging"], [1], script, fake_clock)
    assert len(script.requests) == 5


async def test_an_outage_after_the_endpoint_answered_is_retried_not_aborted(
    fake_clock: FakeClock,
) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        return ok(request) if n == 1 else refused(request, n)

    script = Script(answer, fake_clock)
    rows = await score(["enwiki-damaging"], [1, 2, 3, 4, 5], script, fake_clock, concurrency=1)
    assert [r.scores["enwiki-damaging"].error for r in rows] == [None] + 4 * [
        ErrorType.TRANSIENT_ERROR
    ]
    # Every later revision was tried the policy's 5 times: 1 + 4 x 5.
    assert len(script.requests) == 21


async def test_timeouts_before_any_answer_are_not_unreachable(fake_clock: FakeClock) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    script = Script(answer, fake_clock)
    rows = await score(["enwiki-damaging"], [1, 2, 3], script, fake_clock, concurrency=1)
    assert [r.scores["enwiki-damaging"].error for r in rows] == 3 * [ErrorType.TRANSIENT_ERROR]
    assert len(script.requests) == 15


async def test_a_closed_port_is_reported_as_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on `port` now; the real transport (aiohttp) must say so.
    with pytest.raises(
        UnreachableError,
        match=r"^cannot reach http://127\.0\.0\.1:\d+: "
        r"connection refused \(3 attempts in a row",
    ):
        async with Scorer(
            ["enwiki-damaging"],
            endpoint=Endpoint(base_url=f"http://127.0.0.1:{port}"),
            budget=Budget.unlimited(),
            retry=RetryPolicy(backoff_base=0.0, backoff_max=0.0, unreachable_after=3),
        ) as scorer:
            _ = [row async for row in scorer.score([1, 2, 3])]


async def test_all_models_undeployed_aborts(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: httpx.Response(404), fake_clock)
    with pytest.raises(NoModelDeployedError, match="svwiki-reverted"):
        await score(["svwiki-reverted"], list(range(1, 100)), script, fake_clock, concurrency=2)
    assert len(script.requests) <= 2


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            400,
            {
                "error": "The MW API does not have any info related to the rev-id "
                "provided as input (5)"
            },
            ErrorType.NOT_FOUND,
        ),
        (
            400,
            {"error": "Missing resource for rev-id 5: TextDeleted: Text deleted"},
            ErrorType.DELETED,
        ),
        (
            422,
            {"detail": "Could not make prediction for revision 5 (en). Reason: x"},
            ErrorType.UNSCORABLE,
        ),
        (400, {"detail": "bad lang"}, ErrorType.BAD_REQUEST),
        (302, {}, ErrorType.BAD_RESPONSE),
    ],
)
async def test_terminal_errors_are_never_retried(
    fake_clock: FakeClock, status: int, body: dict[str, str], error: ErrorType
) -> None:
    script = Script(lambda r, n: httpx.Response(status, json=body), fake_clock)
    rows = await score(["enwiki-damaging"], [5], script, fake_clock)
    assert rows[0].scores["enwiki-damaging"].error is error
    assert len(script.requests) == 1


def test_token_is_refused_over_plain_http_to_a_remote_host() -> None:
    calls: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200))
    with pytest.raises(UsageError, match="refusing to send the token over plain http"):
        Scorer(
            ["enwiki-damaging"],
            endpoint=Endpoint(base_url="http://liftwing.invalid"),
            token=Token("abc"),
            transport=transport,
        )
    assert calls == []


def test_token_never_shows_in_repr_or_str() -> None:
    token = Token("very-secret")
    assert "very-secret" not in repr(token) and "very-secret" not in str(token)
    assert token.header() == "Bearer very-secret"
