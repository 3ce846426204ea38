"""The output's lock and sweep, adoption cut short, disk errors, and the process left alone.

Mirrors lwbatch/durability/ (lock.py, journal.py) and the invariants lwbatch/run.py keeps
around them; the resume scenarios themselves are in tests/test_journal.py.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import Budget, Endpoint, Rate, RetryPolicy
from lwbatch.cli import main
from lwbatch.durability.disk import Disk
from lwbatch.durability.journal import FileJournal, decode_answer, encode_answer, journal_dir
from lwbatch.durability.lock import OutputLock
from lwbatch.engine.resume import ResumeState
from lwbatch.engine.scorer import Scorer
from lwbatch.errors import OutputError, UsageError
from lwbatch.io.rows import RowBuffer
from lwbatch.keys import KeyLayout, RowKey
from lwbatch.protocol.catalog import default_catalog
from lwbatch.results import ErrorType, Score, ScoredRow
from lwbatch.run import score_file_async
from lwbatch.seams import Source
from lwbatch.settings import Connection, Files, Hooks, Pacing
from tests.conftest import EmulatorFactory, write_parquet

MODEL = "enwiki-damaging"
UNKNOWN = 2_100_000_001
NO_SPACE = "No space left on device"


def revisions(tmp_path: Path, count: int) -> Path:
    """`count` distinct revisions, then an unknown one and an invalid one (0)."""
    ids = [*range(10_000, 10_000 + count), UNKNOWN, 0]
    return write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array(ids, pa.int64())})


async def run(
    inp: Path, out: Path, base_url: str, *, pacing: Pacing | None = None, **options: Any
) -> Any:
    return await score_file_async(
        inp,
        out,
        models=[MODEL],
        rate=Budget.from_rate(Rate(5000, 1.0)),
        connection=Connection(endpoint=Endpoint(base_url=base_url)),
        pacing=pacing or Pacing(concurrency=16),
        **options,
    )


def file_journal(out: Path) -> FileJournal:
    return FileJournal(
        out,
        models=[MODEL],
        manifest={"input": {"path": "in.parquet", "size": 1}, "id_column": "rev_id", "lang": "en"},
    )


def open_journal(journal: FileJournal) -> ResumeState:
    return journal.open(restart=False, retry_failed=True, ledger_keep=0)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def errors_by_rev(path: Path) -> dict[int | None, str | None]:
    return {row["rev_id"]: row[MODEL]["error"] for row in pq.read_table(path).to_pylist()}


# -- the lock -------------------------------------------------------------------------
def test_a_second_open_is_refused_until_the_first_suspends_or_removes(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    first = file_journal(out)
    open_journal(first)
    answer = Score(True, {"false": 0.25, "true": 0.75}, "0.5.1")
    first.record_answers(MODEL, [(RowKey("", 7), answer)])
    # A file of this output's kind: if it is the holder's, it is live.
    live = tmp_path / ".out.parquet.4242.tmp"
    live.write_bytes(b"the first run's rows")

    second = file_journal(out)
    with pytest.raises(UsageError) as refused:
        open_journal(second)
    assert str(refused.value) == (
        f"another lwbatch run is writing {out}; wait for it to finish, or choose another output"
    )
    assert live.exists()  # only the holder of the lock sweeps

    first.suspend()
    state = open_journal(second)  # takes over the first's journal
    assert state.partial == {RowKey("", 7): {MODEL: answer}}
    assert not live.exists()  # now stale: swept

    with pytest.raises(UsageError, match="another lwbatch run is writing"):
        open_journal(file_journal(out))
    second.remove()
    third = file_journal(out)
    state = open_journal(third)  # the journal was retired: a fresh one
    assert (state.resumed, state.partial) == (False, {})
    third.remove()
    assert names(tmp_path) == []  # no lock file, journal or retired journal left


async def test_a_run_whose_on_start_raises_leaves_no_lock_behind(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = revisions(tmp_path, 5)
    out = tmp_path / "out.parquet"

    def refuse(_source: Source, _scorer: Scorer) -> None:
        raise RuntimeError("the caller refuses")

    with emulator() as (emu, base_url):
        with pytest.raises(RuntimeError, match="^the caller refuses$"):
            await run(inp, out, base_url, hooks=Hooks(on_start=refuse))
        assert emu.stats.requests == 0
        assert names(tmp_path) == ["in.parquet"]  # no lock file, no journal
        report = await run(inp, out, base_url)
    assert report.rows_written == 7
    assert names(tmp_path) == ["in.parquet", "out.parquet"]


def test_a_lock_released_while_another_run_takes_it_is_never_held_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.parquet"
    first = OutputLock(out)
    first.acquire()
    real_flock = fcntl.flock
    interleaved: list[int] = []

    def first_lets_go_in_between(fd: int, operation: int) -> None:
        # The late run has opened the lock file (the path's inode); the first run
        # releases before the late run's flock(2): the schedule of two processes.
        if not interleaved:
            interleaved.append(fd)
            first.release()
        real_flock(fd, operation)

    late = OutputLock(out)
    monkeypatch.setattr(fcntl, "flock", first_lets_go_in_between)
    late.acquire()
    monkeypatch.setattr(fcntl, "flock", real_flock)
    third = OutputLock(out)
    try:
        with pytest.raises(UsageError, match="another lwbatch run is writing"):
            third.acquire()
    finally:
        third.release()
        late.release()


# -- the sweep ------------------------------------------------------------------------
async def test_taking_the_lock_sweeps_this_outputs_leftovers_and_nothing_else(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = revisions(tmp_path, 5)
    out = tmp_path / "out.parquet"
    stale = [tmp_path / ".out.parquet.4242.tmp", tmp_path / ".out.parquet.999999.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    retired = [
        tmp_path / ".out.parquet.lwbatch.done-4242",
        tmp_path / ".out.parquet.lwbatch.done-7",
    ]
    for path in retired:
        path.mkdir()
        (path / "answers-000001.log").write_bytes(b"old")
    others = [
        tmp_path / ".other.parquet.4242.tmp",
        tmp_path / ".other.parquet.lwbatch.done-4242",
        tmp_path / ".other.parquet.lwbatch",
        tmp_path / ".other.parquet.lock",
    ]
    others[0].write_bytes(b"another run's live rows")
    others[1].mkdir()
    others[2].mkdir()
    others[3].write_bytes(b"")
    seen: list[list[str]] = []

    def started(_source: Source, _scorer: Scorer) -> None:
        seen.append(names(tmp_path))

    with emulator() as (_, base_url):
        await run(inp, out, base_url, hooks=Hooks(on_start=started))
    other_names = sorted(p.name for p in others)
    # Swept when the run took the lock, before any request.
    assert seen == [
        sorted(["in.parquet", ".out.parquet.lock", ".out.parquet.lwbatch", *other_names])
    ]
    assert names(tmp_path) == sorted(["in.parquet", "out.parquet", *other_names])
    assert others[0].read_bytes() == b"another run's live rows"


@pytest.mark.parametrize(
    ("output", "stale", "live"),
    [
        ("runs[12].parquet", ".runs[12].parquet.4242.tmp", ".runs1.parquet.4242.tmp"),
        ("out.parquet", ".out.parquet.4242.tmp", ".out.parquet.v2.parquet.4242.tmp"),
    ],
    ids=["glob characters", "a longer name"],
)
def test_the_sweep_removes_only_this_outputs_files(
    tmp_path: Path, output: str, stale: str, live: str
) -> None:
    (tmp_path / stale).write_bytes(b"stale")
    (tmp_path / live).write_bytes(b"another run's live rows")
    lock = OutputLock(tmp_path / output)
    lock.acquire()
    lock.release()
    assert names(tmp_path) == [live]


# -- adoption cut short -----------------------------------------------------------------
class Killed(BaseException):
    """The process dying at this instant (as far as the files on disk can tell)."""


class NoRoomForTheManifest(Disk):
    def write_atomic(self, path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, NO_SPACE)


class KilledBeforeRenames(Disk):
    def publish(self, temp: Path, path: Path) -> None:
        raise Killed


@pytest.mark.parametrize(
    ("cut", "left"),
    [
        ("right after mkdir", []),
        ("while writing the segment", ["rows-000000.tmp"]),
        ("before the segment's rename", ["rows-000000.tmp"]),
        ("before the manifest", ["rows-000000.parquet"]),
    ],
)
async def test_an_adoption_cut_short_is_done_again_asking_only_transient_failures(
    tmp_path: Path,
    emulator: EmulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    cut: str,
    left: list[str],
) -> None:
    inp = revisions(tmp_path, 40)
    out = tmp_path / "out.parquet"
    once = RetryPolicy(max_attempts=1)
    with emulator(error_rate=0.3, error_statuses=(503,), seed=5) as (_, base_url):
        await run(inp, out, base_url, pacing=Pacing(retry=once))
    first = errors_by_rev(out)
    transient = {rev for rev, error in first.items() if error == "transient_error"}
    assert 0 < len(transient) < 40  # some rows to adopt, some to ask again

    # The rerun that adopts the finished output is cut short: the state a crash leaves
    # (the first two), or a real adoption stopped by a failing call.
    if cut == "right after mkdir":
        journal_dir(out).mkdir()
    elif cut == "while writing the segment":
        journal_dir(out).mkdir()
        (journal_dir(out) / "rows-000000.tmp").write_bytes(b"PAR1\x15\x04")
    else:
        stopped: type[BaseException]
        disk: Disk
        if cut == "before the manifest":
            disk, stopped = NoRoomForTheManifest(), OutputError
        else:
            disk, stopped = KilledBeforeRenames(), Killed
        with emulator() as (emu, base_url), pytest.raises(stopped):
            await run(inp, out, base_url, files=Files(disk=disk))
        assert emu.stats.requests == 0
    assert names(journal_dir(out)) == left

    with emulator() as (emu, base_url):
        report = await run(inp, out, base_url)
    # Adopted again: only the transient failures were asked, each once.
    assert emu.stats.requests == len(transient) == report.requests_sent
    assert set(emu.stats.answered) == {(MODEL, "enwiki", rev) for rev in transient}
    asked_again = {rev: "not_found" if rev == UNKNOWN else None for rev in transient}
    assert errors_by_rev(out) == {**first, **asked_again}
    assert not journal_dir(out).exists()


# -- disk errors --------------------------------------------------------------------------
class FullDisk(Disk):
    """Writes to the files `prefix`* in `directory` (or to segments) fail with ENOSPC
    once armed."""

    def __init__(self, directory: Path, prefix: str, *, armed: bool) -> None:
        self.prefix = str(directory / prefix) if prefix else str(directory) + os.sep
        self.segments = prefix == "segment"
        self.armed = armed
        self.failed = 0

    def append(self, fd: int, data: bytes) -> None:
        if self.armed and os.readlink(f"/proc/self/fd/{fd}").startswith(self.prefix):
            self.failed += 1
            raise OSError(errno.ENOSPC, NO_SPACE)
        super().append(fd, data)

    def write_table(self, path: Path, table: pa.Table) -> None:
        if self.armed and self.segments:
            self.failed += 1
            raise OSError(errno.ENOSPC, NO_SPACE)
        super().write_table(path, table)


@pytest.mark.parametrize(
    ("where", "doing"),
    [("answers-", "write to"), ("ledger.f64", "write to"), ("segment", "write to"), ("", "open")],
    ids=["answer log", "ledger", "segment", "open"],
)
async def test_a_journal_disk_error_is_one_output_error_naming_the_journal(
    tmp_path: Path,
    emulator: EmulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    doing: str,
) -> None:
    inp = revisions(tmp_path, 20)
    out = tmp_path / "out.parquet"
    disk = FullDisk(journal_dir(out), where, armed=doing == "open")

    def started(_source: Source, _scorer: Scorer) -> None:
        disk.armed = True  # from the first request on

    with emulator() as (_, base_url):
        with pytest.raises(OutputError) as info:
            await run(inp, out, base_url, hooks=Hooks(on_start=started), files=Files(disk=disk))
        assert type(info.value) is OutputError
        assert str(info.value) == (
            f"{out}: cannot {doing} its journal .out.parquet.lwbatch ({NO_SPACE})"
        )
        assert info.value.path == out
        assert disk.failed > 0
        assert not (tmp_path / ".out.parquet.lock").exists()
        report = await run(inp, out, base_url)  # the disk has room again
    assert report.rows_written == 22
    assert errors_by_rev(out)[0] == "invalid_input"


def test_a_journal_disk_error_is_one_line_and_exit_1_at_the_cli(
    tmp_path: Path,
    emulator: EmulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inp = revisions(tmp_path, 5)
    out = tmp_path / "out.parquet"

    def no_space_for_segments(_disk: Disk, _path: Path, _table: pa.Table) -> None:
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setattr(Disk, "write_table", no_space_for_segments)
    with emulator() as (_, base_url):
        code = main(
            ["score", str(inp), "-o", str(out), "-m", MODEL]
            + ["--base-url", base_url, "--rate", "1000/s", "-q"]
        )
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines()[-1] == (
        f"lwbatch: error: {out}: cannot write to its journal .out.parquet.lwbatch ({NO_SPACE})"
    )
    assert "internal error" not in err and "Traceback" not in err
    assert not out.exists()


# -- answer lines ---------------------------------------------------------------------------
def test_answer_lines_round_trip_and_foreign_keys_are_skipped() -> None:
    score = Score(True, {"false": 0.25, "true": 0.75}, "0.5.1")
    failed = Score.failed(ErrorType.TRANSIENT_ERROR, "503 Service Unavailable")
    seven, eight = RowKey("", 7), RowKey("", 8)
    assert decode_answer(encode_answer(MODEL, seven, score)) == (MODEL, seven, score)
    assert decode_answer(encode_answer(MODEL, eight, failed)) == (MODEL, eight, failed)
    keyed = RowKey("zh_yuewiki", 7)
    line = encode_answer(MODEL, keyed, score)
    assert line.startswith(b'["enwiki-damaging",["zh_yuewiki",7],')
    assert decode_answer(line) == (MODEL, keyed, score)
    # The journal's first form kept the bare rev_id.
    old = b'["enwiki-damaging",7,true,{"false":0.25,"true":0.75},"0.5.1",null,null]'
    assert decode_answer(old) == (MODEL, RowKey("", 7), score)
    line = encode_answer(MODEL, RowKey("", 7), score)
    for foreign in (b'"7"', b"[true]", b"true", b"[7,8]", b"[]", b'{"rev_id":7}', b"7.0"):
        assert decode_answer(line.replace(b"[7]", foreign, 1)) is None, foreign
    assert decode_answer(line[: len(line) // 2]) is None  # torn by a crash


# -- the process is the caller's --------------------------------------------------------------
@pytest.fixture
def gc_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


@pytest.mark.parametrize("gc_control", [False, True], ids=["default", "gc_control"])
@pytest.mark.parametrize("gc_enabled", [True, False], ids=["gc on", "gc off"])
async def test_a_run_leaves_signal_handlers_and_gc_as_it_found_them(
    tmp_path: Path,
    emulator: EmulatorFactory,
    gc_restored: None,
    gc_enabled: bool,
    gc_control: bool,
) -> None:
    inp = revisions(tmp_path, 20)
    handled = (signal.SIGINT, signal.SIGTERM)
    handlers = {s: signal.getsignal(s) for s in handled}
    inside: set[tuple[bool, bool]] = set()

    def progress(_rows: int) -> None:
        inside.add((gc.isenabled(), {s: signal.getsignal(s) for s in handled} == handlers))

    (gc.enable if gc_enabled else gc.disable)()
    with emulator() as (_, base_url):
        report = await run(
            inp,
            tmp_path / "out.parquet",
            base_url,
            hooks=Hooks(progress=progress),
            pacing=Pacing(gc_control=gc_control),
        )
    after = gc.isenabled()
    assert report.rows_written == 22
    # gc_control switches automatic collection off while the run lasts, and only then.
    assert inside == {(gc_enabled and not gc_control, True)}
    assert after is gc_enabled
    assert {s: signal.getsignal(s) for s in handled} == handlers


async def test_a_run_without_a_journal_holds_the_output_lock_too(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = revisions(tmp_path, 5)
    out = tmp_path / "out.parquet"
    refused: list[str] = []

    def journaled_run_starts(_source: Source, _scorer: Scorer) -> None:
        # A journaled run on the same output would sweep this run's temporary file.
        with pytest.raises(UsageError) as info:
            file_journal(out).open(restart=False, retry_failed=True, ledger_keep=0)
        refused.append(str(info.value))

    with emulator() as (_, base_url):
        report = await run(
            inp,
            out,
            base_url,
            files=Files(journal=False),
            hooks=Hooks(on_start=journaled_run_starts),
        )
    assert refused == [
        f"another lwbatch run is writing {out}; wait for it to finish, or choose another output"
    ]
    assert report.rows_written == 7
    assert names(tmp_path) == ["in.parquet", "out.parquet"]


def test_answers_that_hold_for_a_whole_wiki_come_back_from_the_log_and_the_segments(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.parquet"
    models = ["{wiki}-damaging", "readability"]

    def journal() -> FileJournal:
        return FileJournal(
            out, models=models, manifest={"input": {"path": "in"}}, layout=KeyLayout("wiki")
        )

    first = journal()
    open_journal(first)
    gone = Score.failed(ErrorType.MODEL_NOT_DEPLOYED, "dewiki-damaging answered 404")
    refused = Score.failed(ErrorType.UNSUPPORTED_WIKI, "Unsupported lang: vo.")
    fine = Score(0.5, None, "1")
    # Only in the answer log: rows still open when the run stopped.
    still_open = [
        ("{wiki}-damaging", RowKey("dewiki", 1), gone),
        ("readability", RowKey("vowiki", 2), refused),
        ("readability", RowKey("enwiki", 3), fine),
    ]
    for model, key, score in still_open:
        first.record_answers(model, [(key, score)])
    # In a segment: a finished row.
    buffer = RowBuffer(default_catalog().resolve_all(models), KeyLayout("wiki"))
    buffer.add(ScoredRow(RowKey("frwiki", 4), {"{wiki}-damaging": gone, "readability": refused}))
    table, invalid = buffer.take()
    first.commit_rows(table, invalid, still_open)
    first.suspend()

    state = open_journal(journal())
    assert state.refused == {
        ("{wiki}-damaging", "dewiki", ErrorType.MODEL_NOT_DEPLOYED),
        ("readability", "vowiki", ErrorType.UNSUPPORTED_WIKI),
        ("{wiki}-damaging", "frwiki", ErrorType.MODEL_NOT_DEPLOYED),
        ("readability", "frwiki", ErrorType.UNSUPPORTED_WIKI),
    }


def test_the_sweep_leaves_a_live_runs_file_whose_name_looks_like_a_part(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    # Output `x.jsonl.copy` names its temporary file as output `x.jsonl` names its
    # hidden copy's: while its process lives, the file is not x.jsonl's to sweep.
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                          stdin=subprocess.PIPE) as other:  # fmt: skip
        live = tmp_path / f".x.jsonl.copy.{other.pid}.tmp"
        dead = tmp_path / f".x.jsonl.part1.{2**22 + 7}.tmp"  # above any pid handed out
        live.write_bytes(b"another run's rows")
        dead.write_bytes(b"stale")
        lock = OutputLock(tmp_path / "x.jsonl")
        lock.acquire()
        lock.release()
        assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
        other.stdin.close()  # type: ignore[union-attr]
    assert os.getpid() != other.pid
