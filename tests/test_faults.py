"""Faults of the servers themselves: a poison revision that fails its whole batch is
found by splitting the batch, and a (model, wiki) that keeps failing the same way is
given up on for the run (lwbatch/engine/faults.py, lwbatch/engine/dispatch.py).

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
from lwbatch.engine.faults import PROBE_AGAIN, ServerFaults
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
            self.stats,
            retry=retry,
            sleep=clock.sleep,
            rng=random.Random(1),
            clock=clock,
        )

    async def send(self, model: str, revisions: list[Revision]) -> list[Score]:
        async with self.client:
            return await self.dispatcher.send(default_catalog().resolve(model), revisions)

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
async def test_a_poison_revision_is_found_and_only_it_fails(fake_clock: FakeClock) -> None:
    harness = Harness(fake_clock, poisoned_by(101), RetryPolicy(max_attempts=3))
    # A batch of en is answered: the (model, wiki) works.
    assert await harness.send(RR, en(*range(1, 21))) == [RR_SCORE] * 20
    assert harness.requests == 1
    batch = list(range(101, 121))
    scores = await harness.send(RR, en(*batch))
    # 3 attempts of the batch, then halves, one attempt each, down to 101:
    # [101-110] [111-120], [101-105] [106-110], [101-102] [103-105], [101] [102] = 8.
    assert harness.requests == 1 + 3 + 8
    assert scores[1:] == [RR_SCORE] * 19
    assert scores[0] == Score.failed(
        ErrorType.TRANSIENT_ERROR, f"HTTP 500 after 1 attempt(s): {FETCH_FAILURE}"
    )
    # Counted from the batch's first attempt: 3 + 4 pieces it was in.
    assert scores[0].attempts == 7
    # Both halves are tried before a failing one is split again.
    assert [sorted(sent_revs(r)) for _, r in harness.script.requests[4:]] == [
        list(range(101, 111)),
        list(range(111, 121)),
        list(range(101, 106)),
        list(range(106, 111)),
        [101, 102],
        [103, 104, 105],
        [101],
        [102],
    ]


async def test_two_poison_revisions_in_one_batch(fake_clock: FakeClock) -> None:
    harness = Harness(fake_clock, poisoned_by(103, 118), RetryPolicy(max_attempts=2))
    await harness.send(RR, en(1, 2))
    scores = await harness.send(RR, en(*range(101, 121)))
    failed = [rev for rev, s in zip(range(101, 121), scores, strict=True) if not s.ok]
    assert failed == [103, 118]
    # 1 + 2 attempts + 2 halves + per half [5 5], [2 3] or [3 2], then 2 singles of a
    # pair or a pair and 2 singles: [101-110] -> [101-105] -> [101,102] [103-105] ->
    # [103] [104,105]; [111-120] -> [116-120] -> [116,117] [118-120] -> [118] [119,120].
    assert harness.requests == 1 + 2 + 2 + 2 * (2 + 2 + 2)


async def test_every_batch_poisoned_and_nothing_answered_yet(fake_clock: FakeClock) -> None:
    # Nothing of en was answered: the first failed batch probes with its two halves, one
    # of which answers, and from then on failed batches are split.
    harness = Harness(fake_clock, poisoned_by(7, 27), RetryPolicy(max_attempts=2))
    first = await harness.send(RR, en(*range(1, 21)))
    second = await harness.send(RR, en(*range(21, 41)))
    assert [r for r, s in zip(range(1, 41), first + second, strict=True) if not s.ok] == [7, 27]
    # Per batch 2 attempts, then 20 -> 10 + 10, 10 -> 5 + 5, 5 -> 2 + 3, 2 -> 1 + 1.
    assert harness.requests == 2 * (2 + 8)


async def test_an_outage_is_probed_once_not_split(fake_clock: FakeClock) -> None:
    # Nothing answers: the probe's two halves fail too, and for PROBE_AGAIN seconds no
    # other failed batch of that (model, wiki) is split.
    harness = Harness(fake_clock, poisoned_by(*range(1, 200)), RetryPolicy(max_attempts=3))
    scores = await harness.send(RR, en(*range(101, 121)))
    assert harness.requests == 3 + 2
    assert {s.error for s in scores} == {ErrorType.TRANSIENT_ERROR}
    await harness.send(RR, en(*range(121, 141)))
    assert harness.requests == 3 + 2 + 3
    fake_clock.now += PROBE_AGAIN
    await harness.send(RR, en(*range(141, 161)))
    assert harness.requests == 3 + 2 + 3 + 3 + 2  # probed again
    # Another wiki is probed on its own.
    await harness.send(RR, [Revision.in_lang(r, "de") for r in range(1, 21)])
    assert harness.requests == 3 + 2 + 3 + 3 + 2 + 3 + 2


async def test_failed_batches_wait_for_the_probe(fake_clock: FakeClock) -> None:
    # Three poisoned batches fail at once: one probes, the others wait for it and are
    # split once it shows that the model answers.
    harness = Harness(fake_clock, poisoned_by(5, 25, 45), RetryPolicy(max_attempts=1))
    results: dict[int, list[Score]] = {}

    async def send(start: int) -> None:
        results[start] = await harness.dispatcher.send(
            default_catalog().resolve(RR), en(*range(start, start + 20))
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
    # Each: 1 attempt, then [1-10] [11-20], [1-5] [6-10], [1,2] [3-5], [3] [4,5], [4] [5].
    assert harness.requests == 3 * (1 + 10)


async def test_an_outage_is_probed_once_by_batches_failing_at_once(fake_clock: FakeClock) -> None:
    # Three batches fail together in an outage: one probes (2 requests), the others wait
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
        await harness.dispatcher.send(spec, en(*range(start, start + 20)))

    async with harness.client, anyio.create_task_group() as group:
        for start in (1, 21, 41):
            group.start_soon(send, start)
    assert harness.requests_sent == 3 * 2 + 2


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


async def test_the_pieces_of_a_split_count_towards_giving_up(fake_clock: FakeClock) -> None:
    # A batch model that fails every request of a wiki with one body once it has
    # answered one: the pieces' failures count, and the wiki is given up on.
    def answer(request: httpx.Request) -> httpx.Response:
        if sent_revs(request) == [1, 2]:
            return httpx.Response(200, json={"predictions": [rr_item(1), rr_item(2)]})
        return fail(500, "RuntimeError : model crashed")

    harness = Harness(fake_clock, answer, RetryPolicy(max_attempts=1, server_fault_after=3))
    await harness.send(RR, en(1, 2))
    scores = await harness.send(RR, en(*range(101, 121)))
    labels = {s.error for s in scores}
    assert labels == {ErrorType.TRANSIENT_ERROR, ErrorType.SERVER_ERROR}
    # Not the 1 + 38 of splitting all the way down to every single revision.
    assert harness.requests < 1 + 1 + 38


async def test_splits_are_capped_per_model_and_wiki(fake_clock: FakeClock) -> None:
    harness = Harness(fake_clock, poisoned_by(101), RetryPolicy(max_attempts=2, max_splits=1))
    await harness.send(RR, en(1, 2))
    scores = await harness.send(RR, en(*range(101, 121)))
    # One split: the good half is scored; the poisoned half fails whole.
    assert harness.requests == 1 + 2 + 2
    assert [s.ok for s in scores] == [False] * 10 + [True] * 10


async def test_each_split_counts_once_against_the_cap(fake_clock: FakeClock) -> None:
    harness = Harness(fake_clock, poisoned_by(101), RetryPolicy(max_attempts=2, max_splits=2))
    await harness.send(RR, en(1, 2))
    scores = await harness.send(RR, en(*range(101, 121)))
    # Two splits: 20 -> 10 + 10, the poisoned 10 -> 5 + 5; 101-105 fail whole.
    assert harness.requests == 1 + 2 + 2 + 2
    assert [s.ok for s in scores] == [False] * 5 + [True] * 15


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
    # 1 + 2 attempts + [101,102] [103,104] + [101] [102]
    assert harness.requests == 1 + 2 + 2 + 2


# -- giving up on a (model, wiki) ---------------------------------------------------------
def aq(*rev_ids: int, lang: str = "ann") -> list[list[Revision]]:
    return [[Revision.in_lang(r, lang)] for r in rev_ids]


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
    assert scores[3] == Score.failed(
        ErrorType.SERVER_ERROR,
        "articlequality answered 500 \"KeyError : 'ann'\" for 3 annwiki revisions in a row "
        "and scored none in between: the rest of annwiki is not sent this run (a rerun asks "
        "again)",
    )
    assert scores[3].cacheable is False and scores[3].attempts is None
    # Another wiki of the same model is sent as ever.
    harness.script.answer = lambda request, _n: httpx.Response(
        200, json={"score": 0.5, "model_version": "1", "revision_id": 1}
    )
    assert await harness.send("articlequality", aq(1, lang="en")[0]) == [AQ_SCORE]


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
        f"articlequality answered 500 {long[:200]!r} for 1 annwiki revisions in a row and "
        "scored none in between: the rest of annwiki is not sent this run (a rerun asks again)"
    )


def test_bodies_are_remembered_up_to_a_bound() -> None:
    # Bodies are kept to tell an outage (one body on two pairs) from a fault of one pair;
    # the oldest are forgotten, so memory does not grow with the run.
    def seen(bodies: int) -> ServerFaults:
        faults = ServerFaults(after=2, max_splits=0)
        faults.failed(("m", "awiki"), 500, "body 0", [1])
        for n in range(1, bodies):
            faults.failed(("m", "bwiki"), 500, f"body {n}", [n])
        return faults

    # 256 bodies known: "body 0" on a second pair is an outage, never given up.
    faults = seen(256)
    faults.failed(("m", "cwiki"), 500, "body 0", [1, 2])
    assert faults.given_up(("m", "cwiki")) is None
    # The 257th pushes out the oldest, "body 0", and keeps the newest.
    faults = seen(257)
    faults.failed(("m", "dwiki"), 500, "body 0", [1, 2])
    assert faults.given_up(("m", "dwiki")) is not None
    faults.failed(("m", "ewiki"), 500, "body 256", [1, 2])
    assert faults.given_up(("m", "ewiki")) is None


async def test_a_success_in_between_starts_the_count_again(fake_clock: FakeClock) -> None:
    good = {3, 6}

    def answer(request: httpx.Request) -> httpx.Response:
        rev = sent_revs(request)[0]
        if rev in good:
            return httpx.Response(200, json={"score": 0.5, "model_version": "1"})
        return fail(500, KEY_ERROR)

    harness = Harness(fake_clock, answer, RetryPolicy(max_attempts=1, server_fault_after=3))
    scores = [(await harness.send("articlequality", job))[0] for job in aq(*range(1, 12))]
    # 1 2 fail, 3 scores, 4 5 fail, 6 scores, 7 8 9 fail: given up; 10 11 not sent.
    assert harness.requests == 9
    assert [s.error.value if s.error else "ok" for s in scores] == [
        "transient_error",
        "transient_error",
        "ok",
        "transient_error",
        "transient_error",
        "ok",
        "transient_error",
        "transient_error",
        "transient_error",
        "server_error",
        "server_error",
    ]


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
