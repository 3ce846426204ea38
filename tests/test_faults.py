"""Faults of the servers themselves: a poison revision that fails its whole batch is
found by splitting the batch, and a (model, wiki) that keeps failing the same way is
given up on (lwbatch/engine/faults.py, lwbatch/engine/dispatch.py).

Answers are scripted by hand: each test says which requests fail and with what body, and
counts the requests sent against the number worked out in its comment.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import anyio.lowlevel
import httpx
import orjson
import pytest

from lwbatch import Budget, Endpoint, RetryPolicy
from lwbatch.engine.dispatch import Dispatcher
from lwbatch.engine.faults import PROBE_AGAIN, REVISIT, FailingWikis
from lwbatch.engine.stats import RunStats
from lwbatch.pacing.limiter import BudgetLimiter
from lwbatch.protocol.catalog import default_catalog
from lwbatch.protocol.client import LiftWingClient
from lwbatch.results import ErrorType, Revision, Score
from tests.conftest import FakeClock, Script

BASE = "http://127.0.0.1:9"
RR = "revertrisk-language-agnostic"
FETCH_FAILURE = (
    "An error happened while fetching info for revision from the MediaWiki API, please "
    "contact the ML-Team if the issue persists."
)
KEY_ERROR = "KeyError : 'ann'"


def rr_item(rev_id: int) -> dict[str, object]:
    return {
        "model_name": RR,
        "model_version": "3",
        "wiki_db": "enwiki",
        "revision_id": rev_id,
        "output": {"prediction": False, "probabilities": {"true": 0.25, "false": 0.75}},
    }


RR_SCORE = Score(prediction=False, probability={"true": 0.25, "false": 0.75}, model_version="3")
AQ_SCORE = Score(prediction=0.5, model_version="1")


def sent_revs(request: httpx.Request) -> list[int]:
    data = orjson.loads(request.content)
    return (
        [item["rev_id"] for item in data["instances"]] if "instances" in data else [data["rev_id"]]
    )


def fail(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": message})


class Harness:
    def __init__(
        self,
        clock: FakeClock,
        answer: Callable[[httpx.Request], httpx.Response],
        retry: RetryPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.script = Script(lambda request, _n: answer(request), clock)
        self.client = LiftWingClient(
            Endpoint(base_url=BASE), transport=transport or self.script.transport, clock=clock
        )
        self.stats = RunStats()
        self.dispatcher = Dispatcher(
            self.client,
            BudgetLimiter(Budget.unlimited(), clock=clock, sleep=clock.sleep),
            retry=retry,
            sleep=clock.sleep,
            rng=random.Random(1),
            clock=clock,
        )

    async def send(self, model: str, revisions: list[Revision]) -> list[Score]:
        async with self.client:
            return await self.dispatcher.send(
                default_catalog().resolve(model), revisions, self.stats
            )

    @property
    def requests(self) -> int:
        return len(self.script.requests)

    @property
    def requests_sent(self) -> int:
        return self.stats.requests_sent


def en(*rev_ids: int) -> list[Revision]:
    return [Revision.in_lang(r, "en") for r in rev_ids]


def poisoned_by(*poison: int) -> Callable[[httpx.Request], httpx.Response]:
    """revertrisk's batch server: 500 for the whole request if any revision is poison."""

    def answer(request: httpx.Request) -> httpx.Response:
        revs = sent_revs(request)
        if set(revs) & set(poison):
            return fail(500, FETCH_FAILURE)
        if "instances" in orjson.loads(request.content):
            return httpx.Response(200, json={"predictions": [rr_item(r) for r in revs]})
        return httpx.Response(200, json=rr_item(revs[0]))

    return answer


# -- splitting a batch ------------------------------------------------------------------
ALONE = f"HTTP 500 when sent alone, after its batch of 20 failed: {FETCH_FAILURE}"


async def test_a_poison_revision_is_found_and_only_it_fails(fake_clock: FakeClock) -> None:
    harness = Harness(fake_clock, poisoned_by(101), RetryPolicy(max_attempts=3))
    assert await harness.send(RR, en(*range(1, 21))) == [RR_SCORE] * 20
    assert harness.requests == 1
    scores = await harness.send(RR, en(*range(101, 121)))
    assert scores[1:] == [RR_SCORE] * 19
    assert scores[0] == Score.failed(ErrorType.TRANSIENT_ERROR, ALONE)
    # Nothing of en answered during this batch's retries, so it probes: down the first
    # failing half until a piece answers ([102]), then the rest as usual.
    assert [sorted(sent_revs(r)) for _, r in harness.script.requests[4:]] == [
        list(range(101, 111)),
        list(range(101, 106)),
        [101, 102],
        [101],
        [102],
        [103, 104, 105],
        list(range(106, 111)),
        list(range(111, 121)),
    ]
    assert harness.requests == 1 + 3 + 8
    # Counted from the batch's first attempt: 3, then the 4 pieces it was in.
    assert scores[0].attempts == 7


async def test_a_batch_failing_while_others_are_answered_is_split_without_a_probe(
    fake_clock: FakeClock,
) -> None:
    # A good batch is answered while the poisoned one waits to retry: the model works,
    # so the poisoned batch is split without waiting for a probe.
    made: list[list[int]] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        made.append(sorted(sent_revs(request)))
        await anyio.lowlevel.checkpoint()
        return poisoned_by(101)(request)

    harness = Harness(
        fake_clock,
        poisoned_by(101),
        RetryPolicy(max_attempts=3),
        transport=httpx.MockTransport(answer),
    )
    spec = default_catalog().resolve(RR)
    results: dict[int, list[Score]] = {}

    async def send(start: int) -> None:
        results[start] = await harness.dispatcher.send(
            spec, en(*range(start, start + 20)), harness.stats
        )

    async with harness.client, anyio.create_task_group() as group:
        group.start_soon(send, 101)
        group.start_soon(send, 1)
    assert results[1] == [RR_SCORE] * 20
    assert [s.ok for s in results[101]] == [False] + [True] * 19
    # The good batch, 3 attempts, then [101-110] [101-105] [101,102] [101] [102]
    # [103-105] [106-110] [111-120].
    assert len(made) == 1 + 3 + 8


async def test_two_poison_revisions_in_one_batch(fake_clock: FakeClock) -> None:
    harness = Harness(fake_clock, poisoned_by(103, 118), RetryPolicy(max_attempts=2))
    await harness.send(RR, en(1, 2))
    scores = await harness.send(RR, en(*range(101, 121)))
    failed = [rev for rev, s in zip(range(101, 121), scores, strict=True) if not s.ok]
    assert failed == [103, 118]
    # 1 + 2 attempts, then [101-110] [101-105] [101,102] (answers: the model works)
    # [103-105] [103] [104,105] [106-110] [111-120] [111-115] [116-120] [116,117]
    # [118-120] [118] [119,120].
    assert harness.requests == 1 + 2 + 14


async def test_two_poison_revisions_one_in_each_half_of_the_first_batch(
    fake_clock: FakeClock,
) -> None:
    # Nothing answered yet, and both halves of the probe fail: the probe goes down the
    # first half, finds [1,2] answered, and everything is split as usual.
    harness = Harness(fake_clock, poisoned_by(5, 15, 25), RetryPolicy(max_attempts=1))
    first = await harness.send(RR, en(*range(1, 21)))
    second = await harness.send(RR, en(*range(21, 41)))
    failed = [r for r, s in zip(range(1, 41), first + second, strict=True) if not s.ok]
    assert failed == [5, 15, 25]


async def test_every_batch_poisoned_and_nothing_answered_yet(fake_clock: FakeClock) -> None:
    harness = Harness(fake_clock, poisoned_by(7, 27), RetryPolicy(max_attempts=2))
    first = await harness.send(RR, en(*range(1, 21)))
    second = await harness.send(RR, en(*range(21, 41)))
    assert [r for r, s in zip(range(1, 41), first + second, strict=True) if not s.ok] == [7, 27]
    # Per batch 2 attempts, then [1-10] [1-5] (answered) [6-10] [6,7] [8-10] [6] [7]
    # [11-20]: 8.
    assert harness.requests == 2 * (2 + 8)


async def test_an_outage_is_probed_once_not_split(fake_clock: FakeClock) -> None:
    # Nothing answers: the probe goes down [101-110] [101-105] [101,102] [101] [102] and,
    # having met no answer, sends no other half; for PROBE_AGAIN seconds no failed batch
    # of that (model, wiki) is split.
    harness = Harness(fake_clock, poisoned_by(*range(1, 200)), RetryPolicy(max_attempts=3))
    scores = await harness.send(RR, en(*range(101, 121)))
    assert harness.requests == 3 + 5
    assert {s.error for s in scores} == {ErrorType.TRANSIENT_ERROR}
    assert scores[19].error_message == f"HTTP 500 after 3 attempt(s): {FETCH_FAILURE}"
    await harness.send(RR, en(*range(121, 141)))
    assert harness.requests == 3 + 5 + 3
    fake_clock.now += PROBE_AGAIN
    await harness.send(RR, en(*range(141, 161)))
    assert harness.requests == 3 + 5 + 3 + 3 + 5  # probed again
    # Another wiki is probed on its own.
    await harness.send(RR, [Revision.in_lang(r, "de") for r in range(1, 21)])
    assert harness.requests == 3 + 5 + 3 + 3 + 5 + 3 + 5


async def test_an_outage_is_probed_once_by_batches_failing_at_once(fake_clock: FakeClock) -> None:
    # Three batches fail together in an outage: one probes (5 requests), the others wait
    # for its verdict and are not split.
    async def answer(request: httpx.Request) -> httpx.Response:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()  # let the other requests interleave
        return fail(500, FETCH_FAILURE)

    harness = Harness(
        fake_clock,
        lambda request: fail(500, FETCH_FAILURE),
        RetryPolicy(max_attempts=2),
        transport=httpx.MockTransport(answer),
    )
    spec = default_catalog().resolve(RR)

    async def send(start: int) -> None:
        await harness.dispatcher.send(spec, en(*range(start, start + 20)), harness.stats)

    async with harness.client, anyio.create_task_group() as group:
        for start in (1, 21, 41):
            group.start_soon(send, start)
    assert harness.requests_sent == 3 * 2 + 5


async def test_failed_batches_wait_for_the_probe_and_then_split(fake_clock: FakeClock) -> None:
    # Three poisoned batches fail at once: one probes and finds the model answering;
    # the two that waited for it are then split too.
    async def answer(request: httpx.Request) -> httpx.Response:
        await anyio.lowlevel.checkpoint()
        return poisoned_by(5, 25, 45)(request)

    harness = Harness(
        fake_clock,
        poisoned_by(),
        RetryPolicy(max_attempts=1),
        transport=httpx.MockTransport(answer),
    )
    results: dict[int, list[Score]] = {}
    spec = default_catalog().resolve(RR)

    async def send(start: int) -> None:
        results[start] = await harness.dispatcher.send(
            spec, en(*range(start, start + 20)), harness.stats
        )

    async with harness.client, anyio.create_task_group() as group:
        for start in (1, 21, 41):
            group.start_soon(send, start)
    failed = [
        rev
        for start in (1, 21, 41)
        for rev, score in zip(range(start, start + 20), results[start], strict=True)
        if not score.ok
    ]
    assert failed == [5, 25, 45]


async def test_a_probe_cancelled_does_not_hold_the_others(fake_clock: FakeClock) -> None:
    # The batch that probes is cancelled mid-probe (its run stops): the batch waiting for
    # the verdict goes on, without splitting (nothing was answered).
    probe_sent = anyio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        if sent_revs(request) == list(range(1, 11)):  # the probe's first half
            probe_sent.set()
            await anyio.sleep_forever()
        await anyio.lowlevel.checkpoint()
        return fail(500, FETCH_FAILURE)

    harness = Harness(
        fake_clock,
        poisoned_by(),
        RetryPolicy(max_attempts=1),
        transport=httpx.MockTransport(answer),
    )
    spec = default_catalog().resolve(RR)
    results: dict[int, list[Score]] = {}
    probing = anyio.CancelScope()

    async def send(start: int) -> None:
        results[start] = await harness.dispatcher.send(
            spec, en(*range(start, start + 20)), harness.stats
        )

    async def probe() -> None:
        with probing:
            await send(1)

    async with harness.client, anyio.create_task_group() as group:
        group.start_soon(probe)
        await probe_sent.wait()
        group.start_soon(send, 21)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()  # the second batch fails and waits
        assert 21 not in results
        probing.cancel()
    assert 1 not in results
    assert {s.error for s in results[21]} == {ErrorType.TRANSIENT_ERROR}
    assert harness.requests_sent == 1 + 1 + 1  # two batches, and the probe's first half


async def test_no_probe_when_no_split_is_allowed(fake_clock: FakeClock) -> None:
    harness = Harness(fake_clock, poisoned_by(5), RetryPolicy(max_attempts=2, max_splits=0))
    scores = await harness.send(RR, en(*range(1, 21)))
    assert harness.requests == 2
    assert {s.error for s in scores} == {ErrorType.TRANSIENT_ERROR}


async def test_a_batch_of_two_is_split_too(fake_clock: FakeClock) -> None:
    harness = Harness(fake_clock, poisoned_by(101), RetryPolicy(max_attempts=2))
    await harness.send(RR, en(1, 2))
    scores = await harness.send(RR, en(101, 102))
    assert [s.ok for s in scores] == [False, True]
    assert harness.requests == 1 + 2 + 2


async def test_splits_are_capped_per_model_and_wiki(fake_clock: FakeClock) -> None:
    # max_splits counts batches: the first poisoned batch is split to its end, the
    # second not at all.
    harness = Harness(fake_clock, poisoned_by(101, 121), RetryPolicy(max_attempts=2, max_splits=1))
    await harness.send(RR, en(1, 2))
    first = await harness.send(RR, en(*range(101, 121)))
    second = await harness.send(RR, en(*range(121, 141)))
    assert [s.ok for s in first] == [False] + [True] * 19
    assert [s.ok for s in second] == [False] * 20
    assert harness.requests == 1 + (2 + 8) + 2


async def test_a_split_piece_may_be_refused_for_good(fake_clock: FakeClock) -> None:
    # A piece whose revisions are all missing gets the all-failed 422: a final answer.
    def answer(request: httpx.Request) -> httpx.Response:
        revs = sent_revs(request)
        if 101 in revs and len(revs) > 1:
            return fail(500, FETCH_FAILURE)
        if revs == [101]:
            keys = "(101, 'en')"
            return httpx.Response(
                422,
                json={
                    "detail": f"Could not make prediction for revisions dict_keys([{keys}]). "
                    "Reason: ['revision_missing']"
                },
            )
        return httpx.Response(200, json={"predictions": [rr_item(r) for r in revs]})

    harness = Harness(fake_clock, answer, RetryPolicy(max_attempts=2))
    await harness.send(RR, en(1, 2))
    scores = await harness.send(RR, en(101, 102, 103, 104))
    assert scores[0].error is ErrorType.NOT_FOUND
    assert scores[1:] == [RR_SCORE] * 3
    # 1 + 2 attempts + [101,102] [101] [102] [103,104]
    assert harness.requests == 1 + 2 + 4


async def test_what_was_answered_is_kept_when_the_run_stops_mid_split(
    fake_clock: FakeClock,
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        revs = sent_revs(request)
        if revs == list(range(101, 111)):
            harness.dispatcher.stop()  # Ctrl-C while the first half is on the wire
        return poisoned_by(115)(request)

    harness = Harness(fake_clock, answer, RetryPolicy(max_attempts=1))
    scores = await harness.send(RR, en(*range(101, 121)))
    assert scores[:10] == [RR_SCORE] * 10
    assert {s.error_message for s in scores[10:]} == {
        "not sent: the run stopped while its batch was being split"
    }
    assert harness.requests == 2


# -- giving up on a (model, wiki) ---------------------------------------------------------
def aq(*rev_ids: int, lang: str = "ann") -> list[list[Revision]]:
    return [[Revision.in_lang(r, lang)] for r in rev_ids]


GIVEN_UP = (
    "articlequality answered 500 \"KeyError : 'ann'\" to 3 requests for annwiki in a row, "
    "and nothing for annwiki in this run: not sent (asked again by a rerun)"
)


async def test_a_wiki_that_fails_every_revision_the_same_way_is_given_up(
    fake_clock: FakeClock,
) -> None:
    harness = Harness(
        fake_clock,
        lambda request: fail(500, KEY_ERROR),
        RetryPolicy(max_attempts=2, server_fault_after=3),
    )
    scores = [(await harness.send("articlequality", job))[0] for job in aq(*range(1, 11))]
    # Three revisions use up their 2 attempts each; the other seven are not sent.
    assert harness.requests == 6
    assert [s.error for s in scores] == [ErrorType.TRANSIENT_ERROR] * 3 + [
        ErrorType.SERVER_ERROR
    ] * 7
    assert scores[3] == Score.failed(ErrorType.SERVER_ERROR, GIVEN_UP)
    assert scores[3].cacheable is False and scores[3].attempts is None
    # Another wiki of the same model is sent as ever.
    harness.script.answer = lambda request, _n: httpx.Response(
        200, json={"score": 0.5, "model_version": "1", "revision_id": 1}
    )
    assert await harness.send("articlequality", aq(1, lang="en")[0]) == [AQ_SCORE]
    # Every REVISIT seconds one job goes to see whether annwiki recovered: it has.
    fake_clock.now += REVISIT
    assert await harness.send("articlequality", aq(11)[0]) == [AQ_SCORE]
    assert [(await harness.send("articlequality", job))[0] for job in aq(12, 13)] == [
        AQ_SCORE,
        AQ_SCORE,
    ]
    assert harness.requests == 6 + 1 + 3


async def test_a_revisit_that_fails_again_waits_another_while(fake_clock: FakeClock) -> None:
    harness = Harness(
        fake_clock,
        lambda request: fail(500, KEY_ERROR),
        RetryPolicy(max_attempts=1, server_fault_after=2),
    )
    for job in aq(1, 2, 3):
        await harness.send("articlequality", job)
    assert harness.requests == 2
    fake_clock.now += REVISIT
    revisit, after = [(await harness.send("articlequality", job))[0] for job in aq(4, 5)]
    assert (revisit.error, after.error) == (ErrorType.TRANSIENT_ERROR, ErrorType.SERVER_ERROR)
    assert harness.requests == 3


async def test_a_wiki_that_answered_in_the_run_is_never_given_up(fake_clock: FakeClock) -> None:
    # One model, one wiki: its server answered, then fails with one body (an outage of
    # what it fetches from): retried as ever, however long it lasts.
    good = {1, 2}

    def answer(request: httpx.Request) -> httpx.Response:
        if sent_revs(request)[0] in good:
            return httpx.Response(200, json={"score": 0.5, "model_version": "1"})
        return fail(500, KEY_ERROR)

    harness = Harness(fake_clock, answer, RetryPolicy(max_attempts=1, server_fault_after=3))
    scores = [(await harness.send("articlequality", job))[0] for job in aq(*range(1, 12))]
    assert harness.requests == 11
    assert [s.error for s in scores[2:]] == [ErrorType.TRANSIENT_ERROR] * 9


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        # The same body on two wikis: an outage of what they share (MediaWiki).
        (
            "outage",
            lambda request: fail(
                500,
                "An error happened while fetching feature values from the MediaWiki API, "
                "please contact the ML-Team if the issue persists.",
            ),
        ),
        # Bodies that vary: no one fault repeats.
        ("varying", lambda request: fail(500, f"KeyError : {sent_revs(request)[0] // 2 % 2}")),
        # The gateway's statuses are never the model's own fault.
        ("gateway", lambda request: fail(503, KEY_ERROR)),
        # revertrisk's fetch failure is for splitting, not for giving up.
        ("fetch-failure", lambda request: fail(500, FETCH_FAILURE)),
    ],
)
async def test_what_is_not_given_up(
    fake_clock: FakeClock, name: str, answer: Callable[[httpx.Request], httpx.Response]
) -> None:
    harness = Harness(fake_clock, answer, RetryPolicy(max_attempts=1, server_fault_after=2))
    scores = []
    for rev in range(1, 9):
        # Alternate two wikis' models: the outage's body then shows on both.
        model = "enwiki-damaging" if rev % 2 else "dewiki-damaging"
        scores += await harness.send(model, [Revision.in_lang(rev, "en")])
    assert harness.requests == 8, name
    assert {s.error for s in scores} == {ErrorType.TRANSIENT_ERROR}


async def test_a_long_body_is_named_in_short(fake_clock: FakeClock) -> None:
    long = "KeyError : '" + "x" * 300 + "'"
    harness = Harness(
        fake_clock,
        lambda request: fail(500, long),
        RetryPolicy(max_attempts=1, server_fault_after=1),
    )
    await harness.send("articlequality", aq(1)[0])
    [score] = await harness.send("articlequality", aq(2)[0])
    assert score.error_message == (
        f"articlequality answered 500 {long[:200]!r} to 1 requests for annwiki in a row, and "
        "nothing for annwiki in this run: not sent (asked again by a rerun)"
    )


def test_bodies_are_remembered_up_to_a_bound() -> None:
    # Bodies are kept to tell an outage (one body on two pairs) from a fault of one pair;
    # the oldest are forgotten, so memory does not grow with the run.
    def seen(bodies: int) -> FailingWikis:
        failing = FailingWikis(after=2)
        failing.failed(("m", "awiki"), 500, "body 0")
        for n in range(1, bodies):
            failing.failed(("m", "bwiki"), 500, f"body {n}")
        return failing

    # 256 bodies known: "body 0" on a second pair is an outage, never given up.
    failing = seen(256)
    for _ in range(2):
        failing.failed(("m", "cwiki"), 500, "body 0")
    assert failing.refusal(("m", "cwiki")) is None
    # The 257th pushes out the oldest, "body 0", and keeps the newest.
    failing = seen(257)
    for _ in range(2):
        failing.failed(("m", "dwiki"), 500, "body 0")
    assert failing.refusal(("m", "dwiki")) is not None
    for _ in range(2):
        failing.failed(("m", "ewiki"), 500, "body 256")
    assert failing.refusal(("m", "ewiki")) is None


async def test_the_pieces_of_a_split_count_towards_giving_up(fake_clock: FakeClock) -> None:
    # A batch model that fails every request of a wiki with one body and answered
    # nothing: the probe's pieces count, and the wiki is given up on.
    harness = Harness(
        fake_clock,
        lambda request: fail(500, "RuntimeError : model crashed"),
        RetryPolicy(max_attempts=1, server_fault_after=3),
    )
    first = await harness.send(RR, en(*range(1, 21)))
    # 1 attempt, then the probe: [1-10] [1-5] [1,2] [1] [2]; [1] and [2] fail alone (2).
    assert harness.requests == 1 + 5
    assert [s.error for s in first] == [ErrorType.TRANSIENT_ERROR] * 20
    # The probe found an outage: the next batch is not split, and its failure is the
    # third with that body: the wiki is given up on.
    second = await harness.send(RR, en(*range(21, 41)))
    assert harness.requests == 1 + 5 + 1
    assert {s.error for s in second} == {ErrorType.TRANSIENT_ERROR}
    third = await harness.send(RR, en(*range(41, 61)))
    assert {s.error for s in third} == {ErrorType.SERVER_ERROR}
    assert harness.requests == 1 + 5 + 1
