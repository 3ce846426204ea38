"""The engine through its library API: fan-out, dedup, batching, merge."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from lwbatch import Budget, Endpoint, InvalidRow, Rate, Scorer
from lwbatch.engine.pipeline import check_every_row_out
from lwbatch.errors import IncompleteRunError
from lwbatch.results import ErrorType
from lwbatch.settings import Connection, Hooks, Pacing
from tests.conftest import FakeClock, Script, ok, rev

BASE = "http://127.0.0.1:9"


def scorer(
    models: list[str],
    script: Script,
    clock: FakeClock,
    *,
    rate: Budget | None = None,
    lang: str = "en",
    hooks: Hooks | None = None,
    concurrency: int | None = None,
    max_open: int | None = None,
) -> Scorer:
    return Scorer(
        models,
        rate=rate or Budget.from_rate(Rate(10_000, 1.0)),
        lang=lang,
        connection=Connection(endpoint=Endpoint(base_url=BASE), transport=script.transport),
        pacing=Pacing(concurrency=concurrency, max_open=max_open, clock=clock, sleep=clock.sleep),
        hooks=hooks,
    )


def payloads(script: Script, model: str) -> list[object]:
    return [
        orjson.loads(r.content)
        for _, r in script.requests
        if r.url.path.endswith(f"/{model}:predict")
    ]


async def test_every_distinct_revision_goes_to_every_model_once(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: ok(r), fake_clock)
    revs = [3, 1, 2, 3, 1, 4]
    async with scorer(["enwiki-damaging", "enwiki-goodfaith"], script, fake_clock) as s:
        rows = [row async for row in s.score(revs)]
    assert sorted(r.rev_id for r in rows if r.rev_id) == [1, 2, 3, 4]
    assert all(set(r.scores) == {"enwiki-damaging", "enwiki-goodfaith"} for r in rows)
    assert sorted(p["rev_id"] for p in payloads(script, "enwiki-damaging")) == [1, 2, 3, 4]  # type: ignore[index]
    assert s.stats.duplicate_rows == 2 and s.stats.distinct_revisions == 4
    assert s.report().requests_sent == 8


async def test_batchable_model_sends_full_same_language_batches(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: ok(r), fake_clock)
    revs = [rev(i, "en") for i in range(1, 46)] + [rev(i, "de") for i in range(100, 103)]
    async with scorer(["revertrisk-language-agnostic"], script, fake_clock) as s:
        rows = [row async for row in s.score(revs)]
    assert len(rows) == 48 and all(r.scores["revertrisk-language-agnostic"].ok for r in rows)
    sent = payloads(script, "revertrisk-language-agnostic")
    sizes = sorted(
        (
            len(p["instances"]) if "instances" in p else 1,
            p["instances"][0]["lang"] if "instances" in p else p["lang"],
        )
        for p in sent
    )  # type: ignore[index,operator]
    assert sizes == [(3, "de"), (5, "en"), (20, "en"), (20, "en")]
    for p in sent:
        langs = {i["lang"] for i in p["instances"]}  # type: ignore[index]
        assert len(langs) == 1


async def test_single_revision_of_a_batchable_model_uses_the_single_payload(
    fake_clock: FakeClock,
) -> None:
    script = Script(lambda r, n: ok(r), fake_clock)
    async with scorer(["revertrisk-language-agnostic"], script, fake_clock, lang="fr") as s:
        [row] = [row async for row in s.score([77])]
    assert payloads(script, "revertrisk-language-agnostic") == [{"rev_id": 77, "lang": "fr"}]
    assert row.scores["revertrisk-language-agnostic"].ok


async def test_invalid_values_are_rows_with_invalid_input_and_never_sent(
    fake_clock: FakeClock,
) -> None:
    script = Script(lambda r, n: ok(r), fake_clock)
    async with scorer(["enwiki-damaging"], script, fake_clock) as s:
        rows = [row async for row in s.score([5, 0, -2, InvalidRow(9, None, "rev_id is null")])]
    errors = sorted(
        (r.rev_id or 0, r.scores["enwiki-damaging"].error_message)
        for r in rows
        if r.scores["enwiki-damaging"].error is ErrorType.INVALID_INPUT
    )
    assert errors == [
        (-2, "row 3: rev_id -2 is not a positive integer"),
        (0, "row 2: rev_id 0 is not a positive integer"),
        (0, "row 9: rev_id is null"),
    ]
    assert len(script.requests) == 1


async def test_open_rows_are_bounded_by_max_open(fake_clock: FakeClock) -> None:
    # Four workers and a job queue of 64 would take far more than 8 rows in at once.
    open_rows: list[int] = []

    def answer(request: httpx.Request, n: int) -> httpx.Response:
        open_rows.append(rows.rows_admitted - rows.rows_emitted)
        return ok(request)

    script = Script(answer, fake_clock)
    async with scorer(["enwiki-damaging"], script, fake_clock, concurrency=4, max_open=8) as s:
        rows = s.score(range(1, 2001))
        async for _row in rows:
            open_rows.append(rows.rows_admitted - rows.rows_emitted)
    # Reached, never passed: the bound is what holds the producer back.
    assert max(open_rows) == 8
    assert s.rows_emitted == 2000


async def test_a_consumer_that_stops_early_stops_the_pipeline(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: ok(r), fake_clock)
    async with scorer(["enwiki-damaging"], script, fake_clock, concurrency=2, max_open=4) as s:
        async for _row in s.score(range(1, 100_000)):
            break
    assert len(script.requests) < 100


def test_a_row_that_never_comes_out_fails_the_run_instead_of_passing_silently() -> None:
    check_every_row_out(admitted=6, emitted=6, still_open=0)
    with pytest.raises(IncompleteRunError) as dropped:
        check_every_row_out(admitted=6, emitted=5, still_open=0)
    assert str(dropped.value) == "1 of 6 rows are missing from the output"
    # A row still open never came out, whatever the count says.
    with pytest.raises(IncompleteRunError) as stuck:
        check_every_row_out(admitted=6, emitted=6, still_open=2)
    assert str(stuck.value) == "2 of 6 rows are missing from the output"
    with pytest.raises(IncompleteRunError) as extra:
        check_every_row_out(admitted=6, emitted=7, still_open=0)
    assert (extra.value.written, extra.value.expected) == (7, 6)


async def test_score_serves_calls_in_a_row_and_at_the_same_time(fake_clock: FakeClock) -> None:
    import anyio

    script = Script(lambda r, n: ok(r), fake_clock)
    async with scorer(["enwiki-damaging"], script, fake_clock) as s:
        first = [row.rev_id async for row in s.score(range(1, 51))]
        second = [row.rev_id async for row in s.score(range(1, 51))]
        together: dict[str, list[int | None]] = {}

        async def call(name: str, ids: range) -> None:
            rows = s.score(ids)
            together[name] = [row.rev_id async for row in rows]
            assert rows.stats.distinct_revisions == len(ids)

        async with anyio.create_task_group() as group:
            group.start_soon(call, "a", range(100, 140))
            group.start_soon(call, "b", range(200, 230))
        granted = s.limiter.statistics().granted
    # Each call has its own keys seen: the second call asks again what the first did.
    assert sorted(first) == sorted(second) == list(range(1, 51))
    assert sorted(together["a"]) == list(range(100, 140))
    assert sorted(together["b"]) == list(range(200, 230))
    # One client and one budget for all four calls: one request per revision asked.
    assert len(script.requests) == granted == 50 + 50 + 40 + 30


async def test_rows_that_cost_no_request_let_other_tasks_run_now_and_then(
    fake_clock: FakeClock,
) -> None:
    # A resume's first pieces are all done rows, a dump's repeats are duplicates: sorting
    # 8,192 of them at once held the loop for 10+ ms.
    script = Script(lambda r, n: ok(r), fake_clock)
    turns, done = 0, False

    async def other_task() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    async with scorer(["enwiki-damaging"], script, fake_clock) as s:
        other = asyncio.create_task(other_task())
        rows = [row async for row in s.score([7] * 10_241)]
        done = True
        await other
    assert [r.rev_id for r in rows] == [7]
    assert s.stats.duplicate_rows == 10_240
    assert turns >= 10_240 // 512
