"""The client and dispatcher against scripted answers (httpx.MockTransport / respx)."""

from __future__ import annotations

import asyncio
import gc
import random
import socket
from dataclasses import replace

import aiohttp
import httpx
import orjson
import pytest
import respx

import lwbatch
from lwbatch import Budget, Endpoint, Rate, RetryPolicy, Scorer, Token
from lwbatch.cli.messages import for_cli
from lwbatch.engine.dispatch import Dispatcher, Stopped
from lwbatch.engine.stats import RunStats
from lwbatch.errors import (
    AuthenticationError,
    NoModelDeployedError,
    UnreachableError,
    UsageError,
)
from lwbatch.pacing.limiter import BudgetLimiter
from lwbatch.protocol.catalog import default_catalog
from lwbatch.protocol.client import LiftWingClient
from lwbatch.protocol.payloads import build_payload, parse_retry_after
from lwbatch.results import ErrorType, Revision, Score, ScoredRow
from lwbatch.settings import Connection, Pacing
from tests.conftest import FakeClock, Script, ok

BASE = "http://127.0.0.1:9"


async def score(
    models: list[str],
    revs: list[int],
    script: Script,
    clock: FakeClock,
    *,
    connection: Connection | None = None,
    pacing: Pacing | None = None,
    rate: Budget | None = None,
) -> list[ScoredRow]:
    connection = replace(
        connection or Connection(endpoint=Endpoint(base_url=BASE)), transport=script.transport
    )
    pacing = replace(pacing or Pacing(), clock=clock, sleep=clock.sleep)
    async with Scorer(
        models,
        rate=rate or Budget.from_rate(Rate(1000, 1.0)),
        connection=connection,
        pacing=pacing,
    ) as scorer:
        rows = [row async for row in scorer.score(revs)]
    return sorted(rows, key=lambda r: r.rev_id or 0)


async def test_headers_user_agent_and_bearer_token(fake_clock: FakeClock) -> None:
    router = respx.MockRouter(assert_all_called=True)
    route = router.post(f"{BASE}/v1/models/enwiki-damaging:predict").mock(side_effect=ok)
    async with Scorer(
        ["enwiki-damaging"],
        connection=Connection(
            endpoint=Endpoint(base_url=BASE),
            token=Token("s3cret-token"),
            contact="me@example.org",
            transport=httpx.MockTransport(router.async_handler),
        ),
        pacing=Pacing(clock=fake_clock, sleep=fake_clock.sleep),
    ) as scorer:
        rows = [row async for row in scorer.score([42])]
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer s3cret-token"
    # Wikimedia's policy: name/version (contact) library/version.
    assert request.headers["user-agent"] == (
        f"lwbatch/{lwbatch.__version__} (me@example.org) aiohttp/{aiohttp.__version__}"
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
        connection=Connection(
            endpoint=Endpoint(base_url="https://inference.discovery.wmnet:30443", host_header=True)
        ),
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


class Recorded:
    """A dispatcher on scripted answers whose backoff sleeps are recorded.

    The limiter sleeps on the clock directly, so what `slept` holds is the backoff
    alone; jitter draws from a Random seeded with `seed`.
    """

    def __init__(
        self,
        script: Script,
        clock: FakeClock,
        *,
        retry: RetryPolicy,
        seed: int = 7,
        budget: Budget | None = None,
    ) -> None:
        self.clock = clock
        self.slept: list[float] = []
        self.client = LiftWingClient(
            Endpoint(base_url=BASE), transport=script.transport, clock=clock
        )
        self.limiter = BudgetLimiter(
            budget or Budget.from_rate(Rate(1000, 1.0)), clock=clock, sleep=clock.sleep
        )
        self.stats = RunStats()
        self.dispatcher = Dispatcher(
            self.client,
            self.limiter,
            retry=retry,
            sleep=self.sleep,
            rng=random.Random(seed),
        )

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await self.clock.sleep(seconds)

    async def __aenter__(self) -> Recorded:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.client.__aexit__(None, None, None)

    async def send(self, rev_id: int, model: str = "enwiki-damaging") -> Score:
        spec = default_catalog().resolve(model)
        (score,) = await self.dispatcher.send(spec, [Revision.in_lang(rev_id, "en")], self.stats)
        return score


async def test_5xx_is_retried_with_full_jitter_backoff_and_every_attempt_is_budgeted(
    fake_clock: FakeClock,
) -> None:
    script = Script(lambda r, n: httpx.Response(503, text="upstream busy"), fake_clock)
    policy = RetryPolicy(max_attempts=6, backoff_base=0.5, backoff_max=3.0)
    async with Recorded(script, fake_clock, retry=policy, seed=7) as run:
        score_ = await run.send(5)
    assert score_.error is ErrorType.TRANSIENT_ERROR
    assert len(script.requests) == 6
    assert run.limiter.statistics().granted == 6
    # Full jitter: the n-th backoff (n = 0, 1, ...) is uniform(0, min(3.0, 0.5 * 2**n)).
    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0]
    draws = random.Random(7)
    assert run.slept == [draws.uniform(0.0, ceiling) for ceiling in ceilings]
    assert all(0.0 < s <= c for s, c in zip(run.slept, ceilings, strict=True))
    # Each retry left no sooner than its backoff after the attempt before it (1e-9:
    # the clock's float rounding).
    times = [t for t, _ in script.requests]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(gap >= s - 1e-9 for gap, s in zip(gaps, run.slept, strict=True))


async def test_a_429_is_not_backed_off_the_limiters_pause_holds_it(fake_clock: FakeClock) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "30"}) if n <= 2 else ok(request)

    script = Script(answer, fake_clock)
    async with Recorded(script, fake_clock, retry=RetryPolicy()) as run:
        assert (await run.send(5)).ok
    assert not any(run.slept)
    times = [t for t, _ in script.requests]
    assert times[1] >= times[0] + 30.0 and times[2] >= times[1] + 30.0
    assert run.limiter.statistics().granted == 3


async def test_429s_and_transient_failures_are_counted_apart(fake_clock: FakeClock) -> None:
    # 503, 429, 429, 503: with max_attempts=2 the second 503 ends it; the 429s count
    # against max_rate_limited only, and only the first 503 is backed off.
    statuses = [503, 429, 429, 503]

    def answer(request: httpx.Request, n: int) -> httpx.Response:
        # Retry-After on the 429s only: a 503 that carries one is not backed off.
        status = statuses[n - 1]
        headers = {"Retry-After": "1"} if status == 429 else {}
        return httpx.Response(status, text="busy", headers=headers)

    script = Script(answer, fake_clock)
    retry = RetryPolicy(max_attempts=2, max_rate_limited=3)
    async with Recorded(script, fake_clock, retry=retry) as run:
        score_ = await run.send(5)
    assert len(script.requests) == 4
    # One backoff, the first of the policy's (uniform(0, 0.5)), after the first 503.
    assert [s for s in run.slept if s] == [random.Random(7).uniform(0.0, 0.5)]
    assert score_.error is ErrorType.TRANSIENT_ERROR
    assert score_.error_message == "HTTP 503 after 2 attempt(s): busy"
    assert score_.attempts == 4  # every request the answer took, 429s included


async def test_an_answer_carries_its_attempts_and_last_latency(fake_clock: FakeClock) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(503, text="busy") if n == 1 else ok(request)

    script = Script(answer, fake_clock)
    async with Recorded(script, fake_clock, retry=RetryPolicy(max_attempts=3)) as run:
        score_ = await run.send(5)
    assert score_.ok and score_.attempts == 2
    assert score_.latency_ms is not None and score_.latency_ms >= 0


async def test_a_429_without_retry_after_waits_the_gateways_60_seconds(
    fake_clock: FakeClock,
) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(429, text="Too many requests") if n == 1 else ok(request)

    script = Script(answer, fake_clock)
    async with Recorded(script, fake_clock, retry=RetryPolicy()) as run:
        assert (await run.send(5)).ok
    first, second = (t for t, _ in script.requests)
    assert second - first == 60.0
    assert not any(run.slept)


async def test_a_503_with_retry_after_pauses_the_limiter_instead_of_backing_off(
    fake_clock: FakeClock,
) -> None:
    script = Script(
        lambda r, n: httpx.Response(503, text="upstream busy", headers={"Retry-After": "20"}),
        fake_clock,
    )
    async with Recorded(script, fake_clock, retry=RetryPolicy(max_attempts=3)) as run:
        score_ = await run.send(5)
    # Still a transient attempt each time: the policy's 3, then given up.
    assert score_ == Score.failed(
        ErrorType.TRANSIENT_ERROR, "HTTP 503 after 3 attempt(s): upstream busy"
    )
    assert run.slept == []
    times = [t for t, _ in script.requests]
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == [20.0, 20.0]
    assert run.limiter.statistics().paused_until == times[-1] + 20.0


async def test_a_503_with_an_unreadable_retry_after_is_backed_off(fake_clock: FakeClock) -> None:
    script = Script(
        lambda r, n: httpx.Response(503, text="busy", headers={"Retry-After": "soon"}),
        fake_clock,
    )
    async with Recorded(script, fake_clock, retry=RetryPolicy(max_attempts=2), seed=3) as run:
        score_ = await run.send(5)
    assert score_.error is ErrorType.TRANSIENT_ERROR
    assert run.slept == [random.Random(3).uniform(0.0, 0.5)]
    assert run.limiter.statistics().paused_until == float("-inf")


async def test_429s_are_bounded_then_rate_limited(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: httpx.Response(429, headers={"Retry-After": "2"}), fake_clock)
    async with Recorded(script, fake_clock, retry=RetryPolicy(max_rate_limited=3)) as run:
        score_ = await run.send(5)
    assert score_.error is ErrorType.RATE_LIMITED
    assert score_.error_message == "HTTP 429 3 times in a row"
    assert len(script.requests) == 3
    assert not any(run.slept)


async def test_after_a_404_jobs_for_the_model_take_no_budget(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: httpx.Response(404), fake_clock)
    async with Recorded(script, fake_clock, retry=RetryPolicy()) as run:
        first = await run.send(1, "svwiki-reverted")
        second = await run.send(2, "svwiki-reverted")
    assert first.error is second.error is ErrorType.MODEL_NOT_DEPLOYED
    assert len(script.requests) == 1
    assert run.limiter.statistics().granted == 1  # the second job never asked the budget


async def test_once_stopped_nothing_is_sent_and_no_budget_taken(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: ok(r), fake_clock)
    async with Recorded(script, fake_clock, retry=RetryPolicy()) as run:
        run.dispatcher.stop()
        with pytest.raises(Stopped):
            await run.send(1)
        await run.dispatcher.drained()
    assert script.requests == []
    assert run.limiter.statistics().granted == 0


async def test_no_reference_cycles_per_job(fake_clock: FakeClock) -> None:
    # Cyclic garbage waits for a full collection, whose pause shows as send jitter
    # (see lwbatch/pacing/gc_pauses.py). Successes and retries both leave none.
    script = Script(lambda r, n: httpx.Response(503) if n % 3 == 0 else ok(r), fake_clock)
    async with Recorded(script, fake_clock, retry=RetryPolicy(), budget=Budget.unlimited()) as run:
        await run.send(1)
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            gc.collect()
            for rev_id in range(2, 102):
                assert (await run.send(rev_id)).ok
            garbage = gc.collect()
        finally:
            if was_enabled:
                gc.enable()
    assert len(script.requests) > 140  # a third of the attempts were retried
    assert garbage < 10


async def test_retries_are_bounded_then_transient_error(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: httpx.Response(500, json={"error": "MW API down"}), fake_clock)
    rows = await score(
        ["enwiki-damaging"],
        [5],
        script,
        fake_clock,
        pacing=Pacing(retry=RetryPolicy(max_attempts=4)),
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
        rate=Budget.from_rate(Rate(1000, 1.0)),
        connection=Connection(endpoint=Endpoint(base_url=BASE), transport=script.transport),
        pacing=Pacing(clock=fake_clock, sleep=fake_clock.sleep),
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
    rows = await score(
        ["enwiki-damaging"], list(range(1, 21)), script, fake_clock, pacing=Pacing(concurrency=8)
    )
    assert all(r.scores["enwiki-damaging"].ok for r in rows)
    assert len(script.requests) == 21  # 20 revisions + the one retried after the 429
    limited_at = script.requests[2][0]
    later = [t for t, _ in script.requests[3:]]
    assert min(later) >= limited_at + 30.0  # nobody sent during the pause


async def test_503_retry_after_pauses_the_whole_pool(fake_clock: FakeClock) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        if n == 3:
            return httpx.Response(503, text="Service Unavailable", headers={"Retry-After": "30"})
        return ok(request)

    script = Script(answer, fake_clock)
    rows = await score(
        ["enwiki-damaging"], list(range(1, 21)), script, fake_clock, pacing=Pacing(concurrency=8)
    )
    assert all(r.scores["enwiki-damaging"].ok for r in rows)
    assert len(script.requests) == 21
    limited_at = script.requests[2][0]
    assert min(t for t, _ in script.requests[3:]) >= limited_at + 30.0


async def test_401_aborts_the_run_without_showing_the_token(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: httpx.Response(401, text="Unauthorized"), fake_clock)
    with pytest.raises(AuthenticationError) as info:
        await score(
            ["enwiki-damaging"],
            [1, 2, 3],
            script,
            fake_clock,
            connection=Connection(endpoint=Endpoint(base_url=BASE), token=Token("tok-SECRET-123")),
        )
    assert str(info.value) == (
        f"401 Unauthorized from {BASE}/v1/models/enwiki-damaging:predict: the token is invalid "
        "or expired; create a new one and put it in `token`, or run without one (anonymous tier)"
    )
    assert "tok-SECRET-123" not in str(info.value) and "tok-SECRET-123" not in repr(info.value)


CHALLENGE = {"WWW-Authenticate": 'Bearer realm="api.wikimedia.org"'}


async def test_a_bearer_challenge_to_a_run_without_a_token_says_a_token_is_needed(
    fake_clock: FakeClock,
) -> None:
    script = Script(lambda r, n: httpx.Response(401, headers=CHALLENGE), fake_clock)
    with pytest.raises(AuthenticationError) as info:
        await score(["enwiki-damaging"], [1], script, fake_clock)
    assert str(info.value) == (
        f"401 Unauthorized from {BASE}/v1/models/enwiki-damaging:predict: anonymous access is "
        "disabled on this endpoint and a token is needed; create one and put it in `token`"
    )
    assert for_cli(str(info.value)).endswith("put it in LIFTWING_TOKEN or --token-file")
    assert len(script.requests) == 1


async def test_a_bearer_challenge_to_a_token_says_the_token_is_bad(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: httpx.Response(401, headers=CHALLENGE), fake_clock)
    with pytest.raises(AuthenticationError) as info:
        await score(
            ["enwiki-damaging"],
            [1],
            script,
            fake_clock,
            connection=Connection(endpoint=Endpoint(base_url=BASE), token=Token("tok-SECRET-9")),
        )
    assert "the token is invalid or expired" in str(info.value)
    assert "tok-SECRET-9" not in str(info.value) and "tok-SECRET-9" not in repr(info.value)


async def test_a_401_without_a_bearer_challenge_to_a_run_without_a_token(
    fake_clock: FakeClock,
) -> None:
    script = Script(
        lambda r, n: httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'}),
        fake_clock,
    )
    with pytest.raises(AuthenticationError) as info:
        await score(["enwiki-damaging"], [1], script, fake_clock)
    assert str(info.value) == (
        f"401 Unauthorized from {BASE}/v1/models/enwiki-damaging:predict: the endpoint refuses "
        "requests without credentials; if it takes a bearer token, put one in `token`"
    )


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
        pacing=Pacing(concurrency=1),
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
        rate=Budget.from_rate(Rate(20, 1.0)),
        connection=Connection(
            endpoint=Endpoint(base_url=BASE), transport=httpx.MockTransport(answer)
        ),
        pacing=Pacing(concurrency=32, clock=fake_clock, sleep=fake_clock.sleep),
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
        await score(
            ["enwiki-damaging"],
            list(range(1, 200)),
            script,
            fake_clock,
            pacing=Pacing(concurrency=4),
        )
    assert str(info.value) == (
        "cannot reach http://127.0.0.1:9: [Errno 111] Connection refused (10 attempts in a row, "
        "none answered); check the endpoint and the network"
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
    rows = await score(
        ["enwiki-damaging"], [1, 2, 3, 4, 5], script, fake_clock, pacing=Pacing(concurrency=1)
    )
    assert [r.scores["enwiki-damaging"].error for r in rows] == [None] + 4 * [
        ErrorType.TRANSIENT_ERROR
    ]
    # Every later revision was tried the policy's 5 times: 1 + 4 x 5.
    assert len(script.requests) == 21


async def test_timeouts_before_any_answer_are_not_unreachable(fake_clock: FakeClock) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    script = Script(answer, fake_clock)
    rows = await score(
        ["enwiki-damaging"], [1, 2, 3], script, fake_clock, pacing=Pacing(concurrency=1)
    )
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
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=f"http://127.0.0.1:{port}")),
            pacing=Pacing(
                retry=RetryPolicy(backoff_base=0.0, backoff_max=0.0, unreachable_after=3)
            ),
        ) as scorer:
            _ = [row async for row in scorer.score([1, 2, 3])]


async def test_all_models_undeployed_aborts(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: httpx.Response(404), fake_clock)
    with pytest.raises(NoModelDeployedError, match="svwiki-reverted"):
        await score(
            ["svwiki-reverted"],
            list(range(1, 100)),
            script,
            fake_clock,
            pacing=Pacing(concurrency=2),
        )
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
            connection=Connection(
                endpoint=Endpoint(base_url="http://liftwing.invalid"),
                token=Token("abc"),
                transport=transport,
            ),
        )
    assert calls == []


def test_token_never_shows_in_repr_or_str() -> None:
    token = Token("very-secret")
    assert "very-secret" not in repr(token) and "very-secret" not in str(token)
    assert token.header() == "Bearer very-secret"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("30", 30.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("86400", 3600.0),  # capped at an hour
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: go now
        ("Fri, 01 Jan 9999 00:00:00 GMT", 3600.0),
        ("soon", 5.0),  # unreadable: the default
        (None, 5.0),
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date(header: str | None, seconds: float) -> None:
    assert parse_retry_after(header, default=5.0) == seconds


def test_payload_is_one_instance_or_a_batch() -> None:
    catalog = default_catalog()
    damaging = catalog.resolve("enwiki-damaging")
    revertrisk = catalog.resolve("revertrisk-language-agnostic")
    assert orjson.loads(build_payload(damaging, [Revision.in_lang(1, "en")])) == {"rev_id": 1}
    assert orjson.loads(
        build_payload(revertrisk, [Revision.in_lang(1, "de"), Revision.in_lang(2, "en")])
    ) == {"instances": [{"rev_id": 1, "lang": "de"}, {"rev_id": 2, "lang": "en"}]}


async def test_a_token_that_worked_may_be_refreshed_again_within_one_job(
    fake_clock: FakeClock,
) -> None:
    from lwbatch.oauth import Credentials

    tokens = iter(["t1", "t2", "t3", "t4"])
    answers = iter(
        [
            ("t1", httpx.Response(401)),  # expired: refresh, send again
            ("t2", httpx.Response(503)),  # the new token got through: it worked
            ("t2", httpx.Response(401)),  # expired while the job waited: refresh again
            ("t3", None),
        ]
    )

    def model(request: httpx.Request) -> httpx.Response:
        token, response = next(answers)
        assert request.headers["authorization"] == f"Bearer {token}"
        return response if response is not None else ok(request)

    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/token").mock(
            side_effect=lambda _: httpx.Response(200, json={"access_token": next(tokens)})
        )
        router.post(f"{BASE}/v1/models/enwiki-damaging:predict").mock(side_effect=model)
        creds = Credentials(client_id="c", client_secret="s", token_url=f"{BASE}/token")
        async with Scorer(
            ["enwiki-damaging"],
            rate=Budget.unlimited(),
            connection=Connection(
                endpoint=Endpoint(base_url=BASE),
                credentials=creds,
                transport=httpx.MockTransport(router.async_handler),
            ),
            pacing=Pacing(clock=fake_clock, sleep=fake_clock.sleep),
        ) as scorer:
            rows = [row async for row in scorer.score([42])]
    assert rows[0].scores["enwiki-damaging"].ok
    assert next(tokens) == "t4"  # three tokens: the first and two refreshes
