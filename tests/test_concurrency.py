"""The in-flight limit: Little's law on observed latency, and the worker pool following it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine

import httpx
import pytest

from lwbatch import Budget, Endpoint, Rate, Scorer
from lwbatch.pacing.concurrency import Concurrency
from lwbatch.pacing.limiter import BudgetLimiter
from lwbatch.settings import Connection, Pacing
from tests.conftest import FakeClock, ok

BASE = "http://127.0.0.1:9"
Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


def test_fixed_concurrency_never_moves() -> None:
    concurrency = Concurrency(100.0, fixed=16)
    for _ in range(1000):
        concurrency.observe(3.0)
    assert concurrency.limit == 16
    assert concurrency.most == 16
    assert concurrency.describe() == "limit fixed at 16"


def test_adaptive_limit_is_headroom_times_rate_times_mean_latency() -> None:
    concurrency = Concurrency(100.0)
    # Before any answer: an assumed 1 s latency.
    assert concurrency.limit == math.ceil(1.75 * 100 * 1.0) + 8
    for latency in (0.2, 0.4, 0.6):  # mean 0.4 s, exact over the first answers
        concurrency.observe(latency)
    assert concurrency.limit == math.ceil(1.75 * 100 * 0.4) + 8
    assert concurrency.snapshot().observed == 3
    assert concurrency.describe() == ("limit 78, adapted: 1.75 x 100.0/s x mean latency 0.40 s + 8")


def test_adaptive_limit_follows_a_service_that_slows_down() -> None:
    concurrency = Concurrency(50.0, memory=100)
    for _ in range(100):
        concurrency.observe(0.1)
    assert concurrency.limit == math.ceil(1.75 * 50 * 0.1) + 8
    for _ in range(2000):
        concurrency.observe(2.0)
    assert concurrency.limit == math.ceil(1.75 * 50 * 2.0) + 8


@pytest.mark.parametrize(
    ("rate", "latency", "limit"),
    [(1.0, 0.001, 9), (10_000.0, 5.0, 1024), (math.inf, 5.0, 64)],
    ids=["one-plus-floor", "ceiling", "unlimited"],
)
def test_adaptive_limit_is_clamped(rate: float, latency: float, limit: int) -> None:
    concurrency = Concurrency(rate)
    concurrency.observe(latency)
    assert concurrency.limit == limit


def test_bad_fixed_concurrency_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency must be >= 1, got 0"):
        Concurrency(10.0, fixed=0)


class Gauge:
    """A transport that answers after `latency` seconds of fake time and yields to the loop
    meanwhile, recording how many requests it held at each arrival."""

    def __init__(self, clock: FakeClock, latency: float) -> None:
        self.clock = clock
        self.latency = latency
        self.holding = 0
        self.at_arrival: list[int] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.holding += 1
        self.at_arrival.append(self.holding)
        for _ in range(20):
            await asyncio.sleep(0)
        self.clock.now += self.latency
        self.holding -= 1
        return ok(request)


async def run(gauge: Gauge, clock: FakeClock, revisions: int, *, concurrency: int) -> Scorer:
    async with Scorer(
        ["enwiki-damaging"],
        rate=Budget.from_rate(Rate(10_000, 1.0)),
        connection=Connection(
            endpoint=Endpoint(base_url=BASE), transport=httpx.MockTransport(gauge.handle)
        ),
        pacing=Pacing(concurrency=concurrency, clock=clock, sleep=clock.sleep),
    ) as scorer:
        rows = [row async for row in scorer.score(range(1, revisions + 1))]
    assert len(rows) == revisions
    return scorer


async def test_fixed_concurrency_caps_requests_in_flight(fake_clock: FakeClock) -> None:
    gauge = Gauge(fake_clock, 0.0)
    scorer = await run(gauge, fake_clock, 300, concurrency=4)
    assert max(gauge.at_arrival) == 4
    assert scorer.stats.peak_in_flight == 4


async def pool_sizes(
    clock: FakeClock, latency: Callable[[int], float], revisions: int
) -> tuple[Scorer, list[int]]:
    """Score at 100/s with answers taking `latency(n)` fake seconds for the n-th request;
    the scorer and its number of workers at each request."""
    workers: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        workers.append(scorer.workers)
        clock.now += latency(len(workers))
        return ok(request)

    scorer = damaging_scorer(answer, clock, Rate(100, 1.0))
    async with scorer:
        rows = [row async for row in scorer.score(range(1, revisions + 1))]
    assert len(rows) == revisions
    return scorer, workers


def damaging_scorer(answer: Handler, clock: FakeClock, rate: Rate) -> Scorer:
    return Scorer(
        ["enwiki-damaging"],
        rate=Budget.from_rate(rate),
        connection=Connection(
            endpoint=Endpoint(base_url=BASE), transport=httpx.MockTransport(answer)
        ),
        pacing=Pacing(clock=clock, sleep=clock.sleep),
    )


async def test_the_worker_pool_shrinks_to_the_adapted_limit(fake_clock: FakeClock) -> None:
    # 100/s and answers in 0.05 s: Little's law wants 1.75 x 100 x 0.05 + 8 = 17.
    scorer, workers = await pool_sizes(fake_clock, lambda _n: 0.05, 1500)
    assert scorer.concurrency.limit == 17
    assert workers[0] == math.ceil(1.75 * 100 * 1.0) + 8  # before any answer: 1 s assumed
    assert workers[1000] == 17
    assert max(workers[500:]) == 17
    # Once the input is done, each worker leaves after its last request.
    assert scorer.workers == 0
    assert "limit 17, adapted: 1.75 x 100.0/s x mean latency 0.05 s + 8" in (
        scorer.report().render()
    )


async def test_an_unlimited_budget_never_waits(fake_clock: FakeClock) -> None:
    budget = Budget.parse("unlimited")
    assert budget.is_unlimited and math.isinf(budget.rate)
    assert budget.describe() == "unlimited"
    limiter = BudgetLimiter(budget, clock=fake_clock, sleep=fake_clock.sleep)
    for _ in range(10_000):
        await limiter.acquire()
    assert limiter.statistics().granted == 10_000
    assert fake_clock.slept == 0.0


async def test_an_unlimited_budget_still_obeys_a_429_pause(fake_clock: FakeClock) -> None:
    limiter = BudgetLimiter(Budget.unlimited(), clock=fake_clock, sleep=fake_clock.sleep)
    start = fake_clock()
    limiter.pause(2.0)
    await limiter.acquire()
    assert fake_clock() >= start + 2.0


async def test_the_worker_pool_grows_when_the_service_slows_down(fake_clock: FakeClock) -> None:
    scorer, workers = await pool_sizes(fake_clock, lambda n: 0.05 if n <= 600 else 0.5, 5000)
    assert workers[600] == 17  # 1.75 x 100/s x 0.05 s + 8
    # Exponentially weighted over ~500 answers: at 0.5 s Little's law wants 96.
    assert scorer.concurrency.limit == math.ceil(1.75 * 100 * 0.5) + 8
    assert max(workers[-100:]) == 96


async def test_the_report_never_shows_a_peak_above_the_limit_next_to_it(
    fake_clock: FakeClock,
) -> None:
    # The first 100 requests are held until all 100 are in flight (the limit starts
    # high: 1 s latency assumed); later answers are instant, so the limit falls far
    # below that peak. The summary must not print the peak next to the final limit.
    held: list[asyncio.Event] = []
    release = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        if len(held) < 100:
            held.append(release)
            if len(held) == 100:
                release.set()
            await release.wait()
        return ok(request)

    scorer = damaging_scorer(answer, fake_clock, Rate(2000, 1.0))
    async with scorer:
        rows = [row async for row in scorer.score(range(1, 1001))]
    assert len(rows) == 1000
    report = scorer.report()
    assert report.peak_in_flight == 100
    assert scorer.concurrency.limit < 100
    assert report.limit_at_peak >= 100
    lines = report.render().splitlines()
    assert (
        f"in flight (peak)           100   limit {report.limit_at_peak:,} when the peak was reached"
        in lines
    )
    assert any(
        line.startswith("concurrency ")
        and line.endswith(
            f"limit {scorer.concurrency.limit}, adapted: 1.75 x 2000.0/s x mean latency "
            f"{scorer.concurrency.snapshot().mean_latency:.2f} s + 8 (at the end)"
        )
        for line in lines
    ), lines


async def test_a_fixed_concurrency_holds_across_calls_at_the_same_time(
    fake_clock: FakeClock,
) -> None:
    import anyio

    gauge = Gauge(fake_clock, 0.0)
    async with Scorer(
        ["enwiki-damaging"],
        rate=Budget.from_rate(Rate(10_000, 1.0)),
        connection=Connection(
            endpoint=Endpoint(base_url=BASE), transport=httpx.MockTransport(gauge.handle)
        ),
        pacing=Pacing(concurrency=4, clock=fake_clock, sleep=fake_clock.sleep),
    ) as scorer:

        async def call(ids: range) -> None:
            assert len([row async for row in scorer.score(ids)]) == len(ids)

        async with anyio.create_task_group() as group:
            group.start_soon(call, range(1, 201))
            group.start_soon(call, range(1001, 1201))
        assert scorer.workers == 0  # every worker left with its call
    assert len(gauge.at_arrival) == 400
    assert max(gauge.at_arrival) == 4


async def test_a_call_closed_early_sends_nothing_more_and_the_others_go_on(
    fake_clock: FakeClock,
) -> None:
    sent: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return ok(request)

    async with damaging_scorer(answer, fake_clock, Rate(10_000, 1.0)) as scorer:
        left = scorer.score(range(1, 5001))
        async for _row in left:
            break
        await left.aclose()
        at_close = len(sent)
        # Requests already on their way may finish; no new one starts for it.
        after = [row async for row in scorer.score(range(10_001, 10_101))]
        assert len(after) == 100
        assert len(sent) - at_close <= scorer.concurrency.most + 100
        async with scorer.score(range(20_001, 20_011)) as rows:
            assert len([row async for row in rows]) == 10
    assert len(sent) < 1000
