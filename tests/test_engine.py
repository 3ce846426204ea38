"""The engine through its library API: fan-out, dedup, batching, merge."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from lwbatch import Budget, Endpoint, InvalidRow, Rate, Scorer
from lwbatch.durability.journal import ResumeState
from lwbatch.errors import IncompleteRunError
from lwbatch.results import ErrorType, ScoredRow
from tests.conftest import FakeClock, Script, ok, rev

BASE = "http://127.0.0.1:9"


def scorer(models: list[str], script: Script, clock: FakeClock, **options: object) -> Scorer:
    options.setdefault("budget", Budget.from_rate(Rate(10_000, 1.0)))
    return Scorer(
        models,
        endpoint=Endpoint(base_url=BASE),
        transport=script.transport,
        clock=clock,
        sleep=clock.sleep,
        **options,
    )  # type: ignore[arg-type]


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
        open_rows.append(s.rows_admitted - s.rows_emitted)
        return ok(request)

    script = Script(answer, fake_clock)
    async with scorer(["enwiki-damaging"], script, fake_clock, concurrency=4, max_open=8) as s:
        async for _row in s.score(range(1, 2001)):
            open_rows.append(s.rows_admitted - s.rows_emitted)
    # Reached, never passed: the bound is what holds the producer back.
    assert max(open_rows) == 8
    assert s.rows_emitted == 2000


async def test_a_consumer_that_stops_early_stops_the_pipeline(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: ok(r), fake_clock)
    async with scorer(["enwiki-damaging"], script, fake_clock, concurrency=2, max_open=4) as s:
        async for _row in s.score(range(1, 100_000)):
            break
    assert len(script.requests) < 100


async def test_a_row_that_never_comes_out_fails_the_run_instead_of_passing_silently(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Break the engine on purpose: the row of revision 3 is dropped on its way out.
    emit = Scorer._emit

    async def lossy(self: Scorer, row: ScoredRow) -> None:
        if row.rev_id != 3:
            await emit(self, row)

    monkeypatch.setattr(Scorer, "_emit", lossy)
    script = Script(lambda r, n: ok(r), fake_clock)
    rows: list[ScoredRow] = []
    with pytest.raises(IncompleteRunError) as info:
        async with scorer(["enwiki-damaging"], script, fake_clock) as s:
            rows.extend([row async for row in s.score([1, 2, 3, 4, 5, 0])])
    assert str(info.value) == "1 of 6 rows are missing from the output"
    assert sorted(r.rev_id for r in rows if r.rev_id is not None) == [0, 1, 2, 4, 5]


async def test_requests_of_an_earlier_run_in_the_ledger_hold_back_the_first_grants(
    fake_clock: FakeClock,
) -> None:
    # An earlier process sent a whole window's budget (40 per 2 s) 0.5 s ago, by the
    # wall clock; this run may send its first request only when that window has passed.
    script = Script(lambda r, n: ok(r), fake_clock)
    sent: list[float] = []
    start = fake_clock()
    budget = Budget.from_rate(Rate(40, 2.0))
    async with scorer(
        ["enwiki-damaging"], script, fake_clock, budget=budget, on_send=sent.append
    ) as s:
        # Stamped just before score() reads the wall clock: no real time passes between.
        state = ResumeState(ledger=[time.time() - 0.5] * 40)
        rows = [row async for row in s.score([1, 2, 3], resume=state)]
    assert len(rows) == 3
    # The rest of that window (1.5 s) plus at most the budget's margin (<= 0.1 s):
    # earlier, the ledger was ignored; later, its times were misplaced on this clock.
    assert 1.5 - 0.01 <= sent[0] - start <= 1.5 + 0.1
