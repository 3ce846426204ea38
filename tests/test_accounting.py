"""The accounting invariant, property-based: every distinct input key ends in exactly one
row with one cell per model, and no (model, key) is answered twice.

Hypothesis draws the input (sizes, languages, duplicates, invalid rows), how it is paced
into the engine (batches, pauses between them and before the end), the batch size of
the batchable model, the pool, the budget, the answers (latencies, 503s, a model that
answers 404, batch items the model cannot score) and whether the run is stopped and
resumed. Each example runs on a looptime event loop: virtual time that jumps ahead
whenever every task waits, so pauses, latencies, lingering batches and the budget all
keep their real proportions and an example still takes milliseconds. Examples are
derandomized (the same code always runs the same examples); `HYPOTHESIS_PROFILE=deep`
explores more, at random.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import anyio
import httpx
import looptime
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lwbatch import Budget, Endpoint, Rate, RetryPolicy, Scorer
from lwbatch.engine.resume import WIKI_WIDE, ResumeState
from lwbatch.keys import RowKey
from lwbatch.protocol.catalog import Catalog, default_catalog
from lwbatch.results import ErrorType, InvalidRow, Revision, Score, ScoredRow
from lwbatch.settings import Connection, Hooks, Pacing
from lwbatch.testing.emulator import Emulator
from tests.conftest import rev

settings.register_profile(
    "ci",
    max_examples=50,
    deadline=None,
    derandomize=True,
    # A failure is reported as found, unshrunk (shrinking takes minutes), with the blob
    # that replays it: `@reproduce_failure(...)`, or HYPOTHESIS_PROFILE=deep to shrink.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "deep",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BATCHED = "revertrisk-language-agnostic"
# enwiki-damaging scores enwiki rows only; {wiki}-goodfaith takes each row's wiki's model.
POOL = ["enwiki-damaging", "{wiki}-goodfaith", BATCHED, "readability"]
LANGS = ["en", "de", "fr", "es", "it"]
EMU = Emulator()
Item = Revision | InvalidRow


@dataclass(frozen=True)
class Case:
    models: list[str]
    items: list[Item]
    chunks: list[int]  # sizes of the async batches the input arrives in
    pauses: list[float]  # seconds waited before each batch (and before the end)
    max_batch: int
    linger: float
    concurrency: int | None
    max_open: int | None
    budget: int  # requests per second
    fail_5xx: frozenset[int]  # attempt numbers (per model and key) answered 503
    undeployed: str | None
    unscorable: frozenset[int]  # rev_ids the batchable model cannot score
    latencies: list[float]  # seconds each answer takes, in turn
    stop_after: int | None  # rows to read before stopping; None runs to the end


@st.composite
def cases(draw: st.DrawFn) -> Case:
    models = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True))
    # Sizes drawn first: left to itself Hypothesis keeps lists short, and the end-of-input
    # races need more jobs than the job queue holds.
    size = draw(st.integers(0, 160))
    # One integer per row, cheap to draw: <= 0 is an invalid row, else a revision whose
    # id (1..100, so duplicates are common) and language follow from the value: each id
    # comes in three languages, three revisions of three wikis.
    values = draw(st.lists(st.integers(-6, 300), min_size=size, max_size=size))
    items: list[Item] = []
    for number, value in enumerate(values, start=1):
        if value > 0:
            items.append(rev(value % 100 + 1, LANGS[value // 100], keyed=True))
        else:
            rev_id = None if value < -3 else value
            items.append(InvalidRow(number, rev_id, "not a positive integer"))
    chunks = draw(st.lists(st.integers(1, 70), min_size=1, max_size=8))
    seconds = st.sampled_from([0.0, 0.001, 0.02, 0.1, 0.5])
    return Case(
        models=models,
        items=items,
        chunks=chunks,
        pauses=draw(st.lists(seconds, min_size=len(chunks) + 1, max_size=9)),
        max_batch=draw(st.integers(2, 8)),
        linger=draw(st.sampled_from([0.05, 0.2])),
        concurrency=draw(st.sampled_from([None, 1, 3, 16])),
        max_open=draw(st.sampled_from([None, 5, 40])),
        budget=draw(st.sampled_from([20, 200, 5000])),
        fail_5xx=frozenset(draw(st.sets(st.integers(1, 3), max_size=2))),
        # With every model undeployed the run aborts on purpose (NoModelDeployedError).
        undeployed=draw(st.none() | st.sampled_from([m for m in models if "{" not in m]))
        if len(models) > 1 and any("{" not in m for m in models)
        else None,
        unscorable=frozenset(draw(st.sets(st.integers(1, 100), max_size=6))),
        latencies=draw(st.lists(seconds, min_size=1, max_size=5)),
        stop_after=draw(st.one_of(st.none(), st.integers(0, 60))),
    )


@dataclass
class Service:
    """Lift Wing as a transport: scripted faults, and a record of what it answered."""

    case: Case
    attempts: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    terminal: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    answered_404: set[str] = field(default_factory=set)
    after_404: list[str] = field(default_factory=list)
    sent: int = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        model = request.url.path.split("/")[-1].removesuffix(":predict")
        payload = orjson.loads(request.content)
        instances = payload.get("instances", [payload])
        keys = [(model, str(i.get("lang", "")), int(i["rev_id"])) for i in instances]
        if model in self.answered_404:
            self.after_404.append(model)
        self.sent += 1
        await asyncio.sleep(self.case.latencies[self.sent % len(self.case.latencies)])
        for key in keys:
            self.attempts[key] += 1
        # A request fails as a whole when the attempt number of its first item says so.
        if self.attempts[keys[0]] in self.case.fail_5xx:
            return httpx.Response(503, json={"error": "upstream busy"})
        self.terminal.update(keys)
        if model == self.case.undeployed:
            self.answered_404.add(model)
            return httpx.Response(404, json={"httpCode": 404})
        spec = default_catalog().resolve(model)
        if model != BATCHED:
            lang = payload["lang"] if spec.needs_lang else ""
            return httpx.Response(200, json=EMU.answer(spec, payload["rev_id"], lang))
        predictions, errors = [], []
        for i in instances:
            if model == BATCHED and i["rev_id"] in self.case.unscorable:
                errors.append(
                    f"Could not make prediction for revision {i['rev_id']} ({i['lang']}). "
                    "Reason: revision not found"
                )
            else:
                predictions.append(EMU.answer(spec, i["rev_id"], i["lang"]))
        if not predictions:
            return httpx.Response(422, json={"detail": "; ".join(errors)})
        if "instances" not in payload:
            return httpx.Response(200, json=predictions[0])
        return httpx.Response(200, json={"predictions": predictions, "errors": errors})


def catalog_with_batch(max_batch: int) -> Catalog:
    families = [
        dataclasses.replace(f, max_batch=max_batch) if f.max_batch > 1 else f
        for f in default_catalog().families
    ]
    return Catalog(families)


async def paced(case: Case) -> AsyncIterator[Sequence[Item]]:
    position = 0
    sizes = iter(case.chunks)
    pauses = iter(case.pauses)
    while position < len(case.items):
        size = next(sizes, len(case.items))
        await asyncio.sleep(next(pauses, 0.0))
        yield case.items[position : position + size]
        position += size
    await asyncio.sleep(next(pauses, 0.0))


@dataclass
class RunResult:
    rows: list[ScoredRow]
    answers: list[tuple[str, RowKey, Score]]
    stopped: bool


async def one_run(case: Case, service: Service, resume: ResumeState | None) -> RunResult:
    answers: list[tuple[str, RowKey, Score]] = []

    def record(model: str, scored: list[tuple[RowKey, Score]]) -> None:
        answers.extend((model, key, score) for key, score in scored)

    scorer = Scorer(
        case.models,
        rate=Budget.from_rate(Rate(case.budget, 1.0)),
        connection=Connection(
            endpoint=Endpoint(base_url="http://127.0.0.1:9"),
            transport=httpx.MockTransport(service.handle),
            catalog=catalog_with_batch(case.max_batch),
        ),
        pacing=Pacing(
            concurrency=case.concurrency,
            max_open=case.max_open,
            linger=case.linger,
            retry=RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.05),
            clock=asyncio.get_running_loop().time,
        ),
        hooks=Hooks(on_answer=record),
    )
    rows: list[ScoredRow] = []
    async with scorer:
        async for row in scorer.score(paced(case), resume=resume):
            rows.append(row)
            if resume is None and case.stop_after is not None and len(rows) == case.stop_after:
                await scorer.stop(grace=10.0)
        if resume is None and case.stop_after == 0:
            await scorer.stop(grace=10.0)
    return RunResult(rows, answers, scorer.stopped)


def resume_state(first: RunResult) -> ResumeState:
    """What the journal would hold after `first`: finished rows and open rows' answers."""
    state = ResumeState()
    for row in first.rows:
        if row.row is not None:
            state.invalid_rows.add(row.row)
        else:
            assert row.key is not None
            state.done.add(row.key)
    for model, key, score in first.answers:
        if score.error in WIKI_WIDE:
            state.refused.add((model, key.wiki, score.error))
        if key not in state.done:
            state.partial.setdefault(key, {})[model] = score
    state.rows_done = len(first.rows)
    return state


async def scenario(case: Case) -> None:
    service = Service(case)
    first = await one_run(case, service, None)
    runs = [first]
    if first.stopped:
        runs.append(await one_run(case, service, resume_state(first)))
    rows = [row for run in runs for row in run.rows]

    distinct = {item.key for item in case.items if isinstance(item, Revision)}
    invalid = {item.row for item in case.items if isinstance(item, InvalidRow)}
    valid_rows = Counter(row.key for row in rows if row.row is None)
    invalid_rows = Counter(row.row for row in rows if row.row is not None)
    # Exactly one row per distinct key and per invalid input row: none lost, none twice.
    assert set(valid_rows) == distinct, distinct ^ set(valid_rows)
    assert all(n == 1 for n in valid_rows.values()), valid_rows.most_common(3)
    assert set(invalid_rows) == invalid and all(n == 1 for n in invalid_rows.values())
    for row in rows:
        assert set(row.scores) == set(case.models), row
    for row in rows:
        if row.row is not None:
            assert all(s.error is ErrorType.INVALID_INPUT for s in row.scores.values())
    # No (model, key) answered twice: not to the client, across stop and resume...
    delivered = Counter((m, r) for run in runs for m, r, _ in run.answers)
    assert all(n == 1 for n in delivered.values()), delivered.most_common(3)
    # ...and not by the service: retries follow only 503s.
    assert all(n == 1 for n in service.terminal.values()), service.terminal.most_common(3)
    # After a 404 reached the client, no request for that model left it.
    assert service.after_404 == []
    # enwiki-damaging is never asked for another wiki's revision.
    asked_en = {r for m, _, r in service.attempts if m == "enwiki-damaging"}
    assert asked_en <= {k.rev_id for k in valid_rows if k.wiki == "en"}
    for row in rows:
        if row.key is None:
            continue
        if "enwiki-damaging" in case.models and row.key.wiki != "en":
            assert row.scores["enwiki-damaging"].error is ErrorType.UNSUPPORTED_WIKI
        elif case.undeployed is not None:
            assert row.scores[case.undeployed].error is ErrorType.MODEL_NOT_DEPLOYED
    # {wiki}-goodfaith went to each row's own wiki's model.
    asked = {(m, r) for m, _, r in service.attempts if m.endswith("-goodfaith")}
    wanted = {(f"{k.wiki}wiki-goodfaith", k.rev_id) for k in valid_rows}
    assert asked <= wanted
    # Batch items the model could not score are final errors, never retried.
    if BATCHED in case.models and case.undeployed != BATCHED:
        for row in rows:
            if row.rev_id in case.unscorable and row.row is None:
                score = row.scores[BATCHED]
                assert score.error in (ErrorType.UNSCORABLE, ErrorType.TRANSIENT_ERROR), score


# A hang must end the test, not be caught by Hypothesis as one more failing example.
@pytest.mark.timeout(90, method="thread")
@given(cases())
def test_every_key_ends_in_one_row_and_no_answer_is_asked_twice(case: Case) -> None:
    run_in_virtual_time(scenario, case)


def run_in_virtual_time(main: Callable[[Case], Awaitable[None]], case: Case) -> None:
    # noop_cycles: turns of the loop looptime lets pass before it jumps the clock; the
    # default (42) is for code that schedules work from other threads, which this is not.
    loop_factory = partial(looptime.new_event_loop, noop_cycles=2, resolution=1e-9)
    anyio.run(main, case, backend_options={"loop_factory": loop_factory})
