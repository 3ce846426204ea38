"""Resumable runs, in process: stop, resume, refuse, retry only what can succeed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from lwbatch import Budget, Rate, RetryPolicy, Token
from lwbatch.durability.journal import journal_dir
from lwbatch.engine.scorer import Scorer
from lwbatch.errors import IncompleteRunError, Interrupted, UsageError
from lwbatch.io.parquet_sink import ParquetSink
from lwbatch.results import ScoredRow
from lwbatch.settings import Connection, Files, Hooks, Pacing
from tests.conftest import EmulatorFactory, FakeClock, score_until, write_parquet

MODELS = ["enwiki-damaging", "enwiki-goodfaith", "revertrisk-language-agnostic"]
UNKNOWN = 2_100_000_001


def revisions(tmp_path: Path, count: int = 300) -> Path:
    ids = list(range(10_000, 10_000 + count)) + [UNKNOWN, 10_000, 0]
    return write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array(ids, pa.int64())})


async def run(
    inp: Path, out: Path, base_url: str, *, models: list[str] = MODELS, **options: Any
) -> Any:
    options.setdefault("rate", Budget.from_rate(Rate(5000, 1.0)))
    options.setdefault("pacing", Pacing(concurrency=16))
    return await score_until(inp, out, base_url, models=models, **options)


def table_rows(path: Path) -> list[dict[str, Any]]:
    return sorted(pq.read_table(path).to_pylist(), key=lambda r: (r["rev_id"] is None, r["rev_id"]))


async def test_a_stopped_run_resumes_without_asking_anything_twice(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = revisions(tmp_path)
    with emulator() as (emu, base_url):
        await run(inp, tmp_path / "clean.parquet", base_url)
    clean = table_rows(tmp_path / "clean.parquet")
    out = tmp_path / "out.parquet"
    with emulator() as (emu, base_url):
        with pytest.raises(
            Interrupted, match="run again with the same input and output to resume"
        ) as info:
            await run(inp, out, base_url, stop_after=100)
        assert info.value.exit_code == 130
        assert not out.exists() and journal_dir(out).is_dir()
        first = sum(emu.stats.answered.values())
        report = await run(inp, out, base_url)
    assert table_rows(out) == clean
    assert max(emu.stats.answered.values()) == 1  # nothing was asked twice
    assert 0 < first < sum(emu.stats.answered.values())
    assert report.rows_resumed >= 100 and report.rows_written == 302
    assert not journal_dir(out).exists()


async def test_rerunning_a_finished_run_asks_nothing(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = revisions(tmp_path, 50)
    out = tmp_path / "out.parquet"
    with emulator() as (emu, base_url):
        await run(inp, out, base_url)
        before = emu.stats.requests
        first = table_rows(out)
        report = await run(inp, out, base_url)
    assert emu.stats.requests == before  # not_found and unscorable are terminal: never again
    assert table_rows(out) == first
    assert report.requests_sent == 0 and report.rows_resumed == 52


async def test_transient_failures_are_asked_again_on_the_next_run(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = revisions(tmp_path, 40)
    out = tmp_path / "out.parquet"
    quick = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02)
    with emulator(error_rate=1.0, error_statuses=(503,)) as (_, base_url):
        await run(inp, out, base_url, models=["enwiki-damaging"], pacing=Pacing(retry=quick))
    errors = {r["enwiki-damaging"]["error"] for r in table_rows(out)}
    assert errors == {"transient_error", "invalid_input"}
    with emulator() as (emu, base_url):
        report = await run(
            inp, out, base_url, models=["enwiki-damaging"], pacing=Pacing(retry=quick)
        )
    rows = table_rows(out)
    assert len(rows) == 42
    assert {r["enwiki-damaging"]["error"] for r in rows} == {None, "not_found", "invalid_input"}
    assert emu.stats.requests == 41 and report.rows_resumed == 1  # the invalid row stays


async def test_without_retry_failed_transient_failures_stay(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = revisions(tmp_path, 10)
    out = tmp_path / "out.parquet"
    quick = RetryPolicy(max_attempts=1)
    with emulator(error_rate=1.0, error_statuses=(500,)) as (_, base_url):
        await run(inp, out, base_url, models=["enwiki-damaging"], pacing=Pacing(retry=quick))
    with emulator() as (emu, base_url):
        await run(inp, out, base_url, models=["enwiki-damaging"], files=Files(retry_failed=False))
    assert emu.stats.requests == 0


async def test_another_model_list_or_input_is_refused_and_restart_discards(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = revisions(tmp_path, 60)
    out = tmp_path / "out.parquet"
    with emulator() as (emu, base_url):
        with pytest.raises(Interrupted):
            await run(inp, out, base_url, stop_after=10)
        with pytest.raises(
            UsageError, match="another model list .*rerun it as it was.*`restart=True`"
        ):
            await run(inp, out, base_url, models=["enwiki-damaging"])
        other = write_parquet(tmp_path / "other.parquet", {"rev_id": pa.array([1, 2], pa.int64())})
        with pytest.raises(UsageError, match="another input file"):
            await run(other, out, base_url)
        requests = emu.stats.requests
        await run(inp, out, base_url, models=["enwiki-damaging"], files=Files(restart=True))
    assert emu.stats.requests - requests == 61  # everything asked again, one model
    assert pq.read_schema(out).names == ["rev_id", "enwiki-damaging"]


async def test_a_file_lwbatch_did_not_write_is_not_replaced(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = revisions(tmp_path, 5)
    out = tmp_path / "out.parquet"
    out.write_bytes(b"someone else's results")
    with emulator() as (_, base_url), pytest.raises(UsageError, match="was not written by lwbatch"):
        await run(inp, out, base_url)
    assert out.read_bytes() == b"someone else's results"


async def test_the_budget_counts_the_requests_of_the_interrupted_run(
    tmp_path: Path, emulator: EmulatorFactory, fake_clock: FakeClock
) -> None:
    # An hourly window of 20, on a fake clock: the limiter's waits cost no real time.
    # The interrupted run sends a few requests; the rerun, a new Scorer, may send only
    # the rest of those 20 before the window has passed. Without the ledger it would
    # start from an empty window and send all 20 at once (one per 180 s of pacing).
    window = Rate(20, 3600.0)
    pace = window.period / window.requests
    inp = revisions(tmp_path, 60)
    out = tmp_path / "out.parquet"
    options: dict[str, Any] = {
        "models": ["enwiki-damaging"],
        "rate": Budget.from_rate(window),
        "pacing": Pacing(concurrency=2, clock=fake_clock, sleep=fake_clock.sleep),
    }
    first: list[float] = []
    second: list[float] = []
    with emulator() as (_, base_url):
        with pytest.raises(Interrupted):
            await run(
                inp, out, base_url, stop_after=2, hooks=Hooks(on_send=first.append), **options
            )
        # The ledger holds wall-clock times, milliseconds old by now: on the fake clock
        # the rerun places the interrupted run's requests just before this.
        rerun = fake_clock()
        await run(inp, out, base_url, hooks=Hooks(on_send=second.append), **options)
    assert 0 < len(first) < window.requests  # the interrupted run left room in its window
    # What the window has room for leaves at once, paced; the rest only as the window
    # of the interrupted run's requests ends (within half a pace either way).
    room = window.requests - len(first)
    assert second[0] - rerun < pace / 2
    assert [t for t in second if t < rerun + window.period - pace / 2] == second[:room]
    assert second[room] - rerun < window.period + pace / 2
    scored = [r["rev_id"] for r in table_rows(out) if r["enwiki-damaging"]["error"] is None]
    assert scored == list(range(10_000, 10_060))


async def test_the_token_never_reaches_the_journal(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    secret = "journal-secret-91b2"
    inp = revisions(tmp_path, 200)
    out = tmp_path / "out.parquet"
    with emulator(token=secret) as (emu, base_url), pytest.raises(Interrupted):
        await run(inp, out, base_url, stop_after=50, connection=Connection(token=Token(secret)))
    assert emu.stats.by_status["200"] > 0
    files = [p for p in journal_dir(out).rglob("*") if p.is_file()]
    assert {p.name.split("-")[0] for p in files} >= {"manifest.json", "answers", "ledger.f64"}
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


def csv_with(bad: str) -> Any:
    def make(directory: Path) -> Path:
        lines = ["rev_id", "20001", bad] + [str(i) for i in range(20002, 20040)]
        path = directory / "in.csv"
        path.write_text("\n".join(lines) + "\n")
        return path

    return make


def parquet_with(bad: Any, kind: pa.DataType) -> Any:
    def make(directory: Path) -> Path:
        values = [20001, bad] + list(range(20002, 20040))
        return write_parquet(directory / "in.parquet", {"rev_id": pa.array(values, kind)})

    return make


# Every bad id of the bad-input corpus, in a file that also has rows to score.
BAD_IDS = {
    "negative": (csv_with("-5"), -5, "row 2: rev_id -5 is not a positive integer"),
    "zero": (csv_with("0"), 0, "row 2: rev_id 0 is not a positive integer"),
    "null": (parquet_with(None, pa.int64()), None, "row 2: rev_id is null"),
    "float": (parquet_with(2.5, pa.float64()), None, "row 2: rev_id 2.5 is not an integer"),
    "text": (csv_with("abc"), None, "row 2: rev_id 'abc' is not an integer"),
    "above int64": (
        csv_with("99999999999999999999"),
        None,
        "row 2: rev_id 99999999999999999999 does not fit in int64",
    ),
}
LIFE_MODELS = ["enwiki-damaging", "revertrisk-language-agnostic"]


@pytest.mark.parametrize("kind", list(BAD_IDS))
async def test_a_bad_id_survives_rerun_and_resume_with_the_clean_output(
    tmp_path: Path, emulator: EmulatorFactory, kind: str
) -> None:
    make, value, message = BAD_IDS[kind]
    inp = make(tmp_path)
    clean, rerun, resumed = (tmp_path / f"{n}.parquet" for n in ("clean", "rerun", "resumed"))
    with emulator() as (emu, base_url):
        await run(inp, clean, base_url, models=LIFE_MODELS)
        await run(inp, rerun, base_url, models=LIFE_MODELS)
        before = emu.stats.requests
        report = await run(inp, rerun, base_url, models=LIFE_MODELS)
        assert emu.stats.requests == before and report.rows_resumed == 40
        with pytest.raises(Interrupted):
            await run(inp, resumed, base_url, models=LIFE_MODELS, stop_after=10)
        assert journal_dir(resumed).is_dir() and not resumed.exists()
        await run(inp, resumed, base_url, models=LIFE_MODELS)
    expected_bad = {
        "rev_id": value,
        **{
            m: {
                "prediction": None,
                "probability": None,
                "model_version": None,
                "error": "invalid_input",
                "error_message": message,
            }
            for m in LIFE_MODELS
        },
    }
    rows = table_rows(clean)
    assert len(rows) == 40
    assert [r for r in rows if r["enwiki-damaging"]["error"]] == [expected_bad]
    scored = sorted(r["rev_id"] for r in rows if r["enwiki-damaging"]["error"] is None)
    assert scored == list(range(20001, 20040))
    assert table_rows(rerun) == rows
    assert table_rows(resumed) == rows


def lose_two_rows_in_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    score = Scorer.score

    class Lossy:
        """The rows of a call, less two: lost between the engine and the sink."""

        def __init__(self, rows: Any) -> None:
            self._rows = rows

        def __getattr__(self, name: str) -> Any:
            return getattr(self._rows, name)

        def __aiter__(self) -> Lossy:
            return self

        async def __anext__(self) -> ScoredRow:
            while True:
                row: ScoredRow = await self._rows.__anext__()
                if row.rev_id not in (10_007, 10_031):
                    return row

    def lossy(self: Scorer, *args: Any, **kwargs: Any) -> Any:
        return Lossy(score(self, *args, **kwargs))

    monkeypatch.setattr(Scorer, "score", lossy)


def lose_two_rows_in_the_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    write = ParquetSink.write

    def lossy(self: ParquetSink, rows: pa.Table) -> None:
        keep = pc.invert(pc.is_in(rows.column("rev_id"), pa.array([10_007, 10_031])))
        write(self, rows.filter(keep))

    monkeypatch.setattr(ParquetSink, "write", lossy)


@pytest.mark.parametrize("lose", [lose_two_rows_in_the_engine, lose_two_rows_in_the_sink])
async def test_a_run_with_rows_missing_exits_with_its_work_saved_and_a_rerun_completes_it(
    tmp_path: Path, emulator: EmulatorFactory, monkeypatch: pytest.MonkeyPatch, lose: Any
) -> None:
    # Break lwbatch on purpose, once between the engine and the sink, once inside the sink.
    inp = revisions(tmp_path, 60)
    out = tmp_path / "out.parquet"
    with emulator() as (emu, base_url):
        await run(inp, tmp_path / "clean.parquet", base_url)
        clean_requests = emu.stats.requests
        lose(monkeypatch)
        with pytest.raises(IncompleteRunError) as info:
            await run(inp, out, base_url)
        monkeypatch.undo()
        assert str(info.value) == (
            f"2 of 62 rows are missing from the output; progress is saved in "
            f"{journal_dir(out)}: run again with the same input and output to complete it"
        )
        assert info.value.exit_code == 1
        assert not out.exists() and journal_dir(out).is_dir()
        first = emu.stats.requests - clean_requests
        report = await run(inp, out, base_url)
        second = emu.stats.requests - clean_requests - first
    assert table_rows(out) == table_rows(tmp_path / "clean.parquet")
    assert first == clean_requests
    if lose is lose_two_rows_in_the_engine:
        # The 60 rows that reached the journal are kept; only the two lost rows are
        # asked again: 2 x enwiki-damaging, 2 x enwiki-goodfaith, 1 revertrisk batch.
        assert (second, report.rows_resumed) == (5, 60)
    else:
        # Lost in the sink, the rows are in a journal segment: the rerun asks nothing.
        assert (second, report.rows_resumed) == (0, 62)
    assert report.rows_written == 62


def downgrade_to_format_1(out: Path) -> None:
    """Make a journal look as the lwbatch before (wiki, rev_id) keys wrote it."""
    path = journal_dir(out) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format"] = 1
    del manifest["wiki_column"]
    path.write_text(json.dumps(manifest))


async def test_a_journal_of_the_rev_id_keyed_format_resumes_when_the_input_names_no_wiki(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = revisions(tmp_path, 100)
    out = tmp_path / "out.parquet"
    with emulator() as (_, base_url):
        with pytest.raises(Interrupted):
            await run(inp, out, base_url, stop_after=30)
        downgrade_to_format_1(out)
        report = await run(inp, out, base_url)
    assert report.rows_resumed >= 30 and report.rows_written == 102


async def test_a_journal_of_the_rev_id_keyed_format_is_refused_for_an_input_with_wikis(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    ids = list(range(10_000, 10_100))
    inp = write_parquet(
        tmp_path / "in.parquet", {"rev_id": pa.array(ids, pa.int64()), "lang": ["en"] * 100}
    )
    out = tmp_path / "out.parquet"
    with emulator() as (_, base_url):
        with pytest.raises(Interrupted):
            await run(inp, out, base_url, stop_after=30)
        downgrade_to_format_1(out)
        with pytest.raises(UsageError) as info:
            await run(inp, out, base_url)
    assert str(info.value) == (
        f"{out} belongs to a run of an earlier lwbatch, which keyed rows by rev_id alone; "
        "this input's 'lang' column now keys them by (wiki, rev_id): pass `restart=True` to "
        "score it afresh, or choose another output"
    )
    assert journal_dir(out).is_dir()  # the earlier run's answers are not thrown away


def test_answer_lines_keep_latency_and_attempts_and_old_lines_still_read() -> None:
    from lwbatch.durability.journal import decode_answer, encode_answer
    from lwbatch.keys import RowKey
    from lwbatch.results import Score

    score = Score(True, {"true": 0.9}, "0.5.1", latency_ms=12.5, attempts=3)
    line = encode_answer("enwiki-damaging", RowKey("", 7), score)
    decoded = decode_answer(line.rstrip(b"\n"))
    assert decoded is not None
    model, key, again = decoded
    assert (model, key, again, again.latency_ms, again.attempts) == (
        "enwiki-damaging", RowKey("", 7), score, 12.5, 3,
    )  # fmt: skip
    old = b'["enwiki-damaging",[7],true,{"true":0.9},"0.5.1",null,null]'
    decoded = decode_answer(old)
    assert decoded is not None and decoded[2] == score and decoded[2].attempts is None
    assert decode_answer(b'["enwiki-damaging",[7],true,{"true":0.9},"0.5.1",null]') is None


async def test_the_callers_on_answer_hears_every_answer_beside_the_journal(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    heard: list[tuple[str, int]] = []

    def on_answer(model: str, answers: list[tuple[Any, Any]]) -> None:
        heard.extend((model, key.rev_id) for key, _ in answers)

    inp = revisions(tmp_path, 10)
    with emulator() as (_, base_url):
        await run(
            inp, tmp_path / "o.parquet", base_url, models=["enwiki-damaging"],
            hooks=Hooks(on_answer=on_answer),
        )  # fmt: skip
    # 10 revisions, the unknown one; the repeat and the invalid row are never sent.
    assert sorted(heard) == [("enwiki-damaging", r) for r in [*range(10_000, 10_010), UNKNOWN]]


async def test_a_journal_that_read_a_wiki_db_column_as_nothing_is_refused_in_words(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    from lwbatch.errors import RestartNeeded

    ids = list(range(10_000, 10_060))
    inp = write_parquet(
        tmp_path / "in.parquet",
        {"wiki_db": ["enwiki", "dewiki"] * 30, "rev_id": pa.array(ids, pa.int64())},
    )
    out = tmp_path / "out.parquet"
    with emulator() as (_, base_url):
        with pytest.raises(Interrupted):
            await run(inp, out, base_url, models=["{wiki}-damaging"], stop_after=10)
        # As lwbatch 0.1 wrote it for this table, without --wiki-column.
        path = journal_dir(out) / "manifest.json"
        manifest = json.loads(path.read_text())
        path.write_text(json.dumps({**manifest, "wiki_column": None}))
        with pytest.raises(RestartNeeded) as refused:
            await run(inp, out, base_url, models=["{wiki}-damaging"])
        assert str(refused.value) == (
            f"{out} belongs to a run that read this input's wiki_db column as nothing "
            "(lwbatch before 0.2 scored every row as one wiki's); it now keys rows by "
            "(wiki_db, rev_id): pass `restart=True` to score it afresh, or choose another "
            "output"
        )
        report = await run(
            inp, out, base_url, models=["{wiki}-damaging"], files=Files(restart=True)
        )
    assert report.rows_written == 60
